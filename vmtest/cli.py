"""The ``vmtest`` command: check, migrate, inspect, demo.

Every error vmtest raises on purpose is printed as one message with a hint and exits 2; a
check that finds the migration unfaithful exits 1, as pytest does.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from vmtest.errors import VmtestError

EXIT_USAGE = 2


def _check(args: argparse.Namespace, rest: list[str]) -> int:
    import pytest

    argv = [f"--source={args.source}", f"--target={args.target}", *rest]
    return int(pytest.main(argv))


def _migrate(args: argparse.Namespace, rest: list[str]) -> int:
    from tqdm import tqdm

    from vmtest.migrate import copy_store
    from vmtest.stores import open_store

    with open_store(args.source) as source:
        total = source.count()
        with tqdm(total=total, unit="rec", desc="migrate", disable=None) as bar:
            report = copy_store(
                source, args.target, batch_size=args.batch_size,
                on_unsupported=args.on_unsupported, metric=args.metric,
                document_field=args.document_field,
                progress=bar.update,
            )
    print(f"copied {report.copied} records in {report.batches} batches "
          f"({report.seconds:.1f} s, {report.rate:,.0f} records/s) into {report.target}")
    if report.affected_fields:
        print("metadata changed by --on-unsupported="
              f"{args.on_unsupported}: " + ", ".join(
                  f"{k} ({n} records)" for k, n in sorted(report.affected_fields.items())))
    if args.verify:
        return _check(argparse.Namespace(source=args.source, target=args.target), rest)
    return 0


def _inspect(args: argparse.Namespace, rest: list[str]) -> int:
    from vmtest.stores import open_store

    with open_store(args.uri) as store:
        print(json.dumps(store.describe().to_dict(), indent=2, default=str))
    return 0


def _demo(args: argparse.Namespace, rest: list[str]) -> int:
    from vmtest.demo import run_demo

    return run_demo(Path(args.dir), size=args.size, dimension=args.dimension, extra=rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmtest",
        description="Prove, with evidence, that a vector-database migration is faithful.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser(
        "check", help="run the validation suite (any further arguments go to pytest)",
        description="Run the validation suite on two stores. Arguments vmtest does not know "
        "go to pytest: --junitxml=PATH, -k EXPR, --tolerance=1e-5, ...",
    )
    check.add_argument("--source", required=True, metavar="URI")
    check.add_argument("--target", required=True, metavar="URI")
    check.set_defaults(run=_check)

    migrate = sub.add_parser("migrate", help="copy a store into another, in streaming batches")
    migrate.add_argument("--source", required=True, metavar="URI")
    migrate.add_argument("--target", required=True, metavar="URI")
    migrate.add_argument("--batch-size", type=int, default=500, metavar="N")
    migrate.add_argument("--on-unsupported", choices=("error", "json", "drop"), default="error",
                         help="metadata the target cannot hold: refuse (default), keep as "
                         "JSON text, or drop the field")
    migrate.add_argument("--metric", choices=("cosine", "l2", "ip", "l1"), default=None,
                         help="the target's metric (default: the source's)")
    migrate.add_argument("--document-field", default="document", metavar="NAME",
                         help="payload field for documents in stores without a document column")
    migrate.add_argument("--verify", action="store_true",
                         help="run the validation suite afterwards and exit with its verdict")
    migrate.set_defaults(run=_migrate)

    inspect = sub.add_parser("inspect", help="print what a store says about itself, as JSON")
    inspect.add_argument("uri", metavar="URI")
    inspect.set_defaults(run=_inspect)

    demo = sub.add_parser(
        "demo", help="build an example Chroma store, migrate it to Qdrant, validate, report"
    )
    demo.add_argument("--dir", default="reports", help="where the stores and reports go")
    demo.add_argument("--size", type=int, default=2000, metavar="N")
    demo.add_argument("--dimension", type=int, default=128, metavar="D")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command not in ("check", "migrate", "demo"):
        parser.error("unrecognized arguments: " + " ".join(rest))
    try:
        return int(args.run(args, rest))
    except VmtestError as exc:
        print(f"vmtest: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("vmtest: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
