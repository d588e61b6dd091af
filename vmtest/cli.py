"""The ``vmtest`` command: check, plan, migrate, inspect, report, demo.

One exit-code rule for pytest and every subcommand (:mod:`vmtest.errors`): 0 the checks and
gates passed, 1 a check or a gate failed (a plan that refuses included), 4 a usage error
(printed as one line with a hint, never a traceback), 2 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from vmtest.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PlanRefusedError,
    VmtestError,
)
from vmtest.libwarnings import captured
from vmtest.migrate.mapping import POLICIES
from vmtest.migrate.runner import MigrationOptions

#: The runner's defaults, which the command's options show and use.
RUNNER = MigrationOptions()


def _check(args: argparse.Namespace, rest: list[str]) -> int:
    import pytest

    argv = [f"--source={args.source}", f"--target={args.target}", *rest]
    return int(pytest.main(argv))


def _options(args: argparse.Namespace) -> MigrationOptions:
    return MigrationOptions(
        batch_size=args.batch_size, workers=args.workers, on_unsupported=args.on_unsupported,
        metric=args.metric, document_field=args.document_field, retries=args.retries,
        reembed=args.reembed, model=args.model or args.reembed,
    )


def _plan(args: argparse.Namespace, rest: list[str]) -> int:
    from vmtest.migrate import make_plan
    from vmtest.stores import open_store

    with open_store(args.source) as source:
        plan = make_plan(source, args.target, _options(args), probe=True)
    print("\n".join(plan.describe()))
    print("nothing was written (plan)")
    return EXIT_FAILED if plan.refusals() else EXIT_OK


def _migrate(args: argparse.Namespace, rest: list[str]) -> int:
    from tqdm import tqdm

    from vmtest.migrate import default_state_path, migrate
    from vmtest.stores import open_store
    from vmtest.uri import parse

    if args.dry_run:
        return _plan(args, rest)
    source_uri, target_uri = parse(args.source), parse(args.target)
    state = Path(args.state) if args.state else default_state_path(source_uri, target_uri)
    with open_store(source_uri) as source:
        total = source.count()
        with tqdm(total=total, unit="rec", desc="migrate", disable=None) as bar:
            report = migrate(source, target_uri, _options(args), state_path=state,
                             restart=args.restart, progress=bar.update)
            if report.resumed_from:
                bar.update(report.resumed_from)
    if report.resumed_from and not report.copied:
        print(f"nothing to do: {report.state_path} says all {report.resumed_from} records "
              "were migrated (--restart to begin again)")
        return 0
    resumed = f" (resumed after {report.resumed_from})" if report.resumed_from else ""
    print(f"copied {report.copied} records{resumed} in {report.batches} batches "
          f"({report.seconds:.1f} s, {report.rate:,.0f} records/s) into {report.target}; "
          f"state {report.state_path}")
    if report.affected_fields:
        print("metadata changed by --on-unsupported="
              f"{args.on_unsupported}: " + ", ".join(
                  f"{k} ({n} records)" for k, n in sorted(report.affected_fields.items())))
    if args.verify:
        if args.reembed:  # another model: the suite compares search quality, not vectors
            # the embedder's libraries are imported by now: pytest cannot rewrite their
            # asserts, which it would warn about for plugins among them (anyio)
            rest = ["-W", "ignore::pytest.PytestAssertRewriteWarning",
                    f"--vmtest-source-model={args.source_model}",
                    f"--vmtest-target-model={args.model or args.reembed}",
                    f"--vmtest-target-embedder={args.reembed}", *rest]
        return _check(argparse.Namespace(source=args.source, target=args.target), rest)
    return 0


def _inspect(args: argparse.Namespace, rest: list[str]) -> int:
    from vmtest.stores import open_store

    with open_store(args.uri) as store:
        print(json.dumps(store.describe().to_dict(), indent=2, default=str))
    return 0


def _merge(args: argparse.Namespace, rest: list[str]) -> int:
    from vmtest.report import document_lines, write_document
    from vmtest.report.merge import load_shares, merge_documents

    document = merge_documents(load_shares([Path(p) for p in args.reports]))
    chosen = [None if not p or p.lower() == "none" else Path(p) for p in (args.json, args.html)]
    for path in write_document(document, json_path=chosen[0], html_path=chosen[1],
                               rootdir=Path.cwd()):
        print(f"report: {path}")
    for line, _ in document_lines(document):
        print(line)
    return 0 if document["verdict"] == "passed" else 1


def _demo(args: argparse.Namespace, rest: list[str]) -> int:
    from vmtest.demo import run_demo

    return run_demo(Path(args.dir), size=args.size, dimension=args.dimension, extra=rest)


def _runner_arguments(cmd: argparse.ArgumentParser) -> None:
    # the defaults are the runner's own (MigrationOptions), declared there once
    cmd.add_argument("--batch-size", type=_positive, default=RUNNER.batch_size, metavar="N",
                     help=f"records per write (default {RUNNER.batch_size})")
    cmd.add_argument("--workers", type=_positive, default=RUNNER.workers, metavar="N",
                     help=f"parallel writers, where the target benefits (default "
                     f"{RUNNER.workers})")
    cmd.add_argument("--on-unsupported", choices=POLICIES, default=RUNNER.on_unsupported,
                     help="metadata the target cannot hold: refuse before writing (error, the "
                     "default), keep it as JSON text (json), or drop the field (drop)")
    cmd.add_argument("--metric", choices=("cosine", "l2", "ip", "l1"), default=RUNNER.metric,
                     help="the target's metric (default: the source's)")
    cmd.add_argument("--document-field", default=RUNNER.document_field, metavar="NAME",
                     help="payload field for documents in stores without a document column "
                     f"(default {RUNNER.document_field})")
    cmd.add_argument("--retries", type=int, default=RUNNER.retries, metavar="N",
                     help="retries of a batch on transient errors, with backoff (default "
                     f"{RUNNER.retries})")
    cmd.add_argument("--state", default=None, metavar="PATH",
                     help="checkpoint file (default: beside a file target, else under reports/)")
    cmd.add_argument("--restart", action="store_true",
                     help="ignore an existing checkpoint and begin again")
    cmd.add_argument("--reembed", default=None, metavar="MODULE:CALLABLE",
                     help="new vectors from the documents, in batches (a model change), e.g. "
                     "vmtest.embed:minilm")
    cmd.add_argument("--model", default=None, metavar="NAME",
                     help="the name of the --reembed model (default: the callable's name)")
    cmd.add_argument("--source-model", default="unknown", metavar="NAME",
                     help="the name of the model the source's vectors come from (recorded by "
                     "--verify)")
    cmd.add_argument("--dry-run", action="store_true", help="plan only: write nothing")
    cmd.add_argument("--verify", action="store_true",
                     help="run the validation suite afterwards and exit with its verdict")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line and exit 4 (pytest's code for it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vmtest",
        description="Prove, with evidence, that a vector-database migration is faithful.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser(
        "check", help="run the validation suite (any further arguments go to pytest)",
        description="Run the validation suite on two stores. Arguments vmtest does not know "
        "go to pytest: --junitxml=PATH, -k EXPR, --vmtest-tolerance=1e-5, ...",
    )
    check.add_argument("--source", required=True, metavar="URI")
    check.add_argument("--target", required=True, metavar="URI")
    check.set_defaults(run=_check)

    for name, target_flag, helptext in (
        ("migrate", "--target", "copy a store into another in streaming batches, resumably"),
        ("export", "--to", "export a store to jsonl:///FILE or parquet:///DIR (same runner)"),
        ("import", "--to", "import a jsonl:// or parquet:// export into a store (same runner)"),
        ("plan", "--target", "say what a migration would do, and what is lossy; write nothing"),
    ):
        cmd = sub.add_parser(name, help=helptext, description=helptext)
        cmd.add_argument("--source", required=True, metavar="URI")
        cmd.add_argument(target_flag, required=True, metavar="URI", dest="target")
        _runner_arguments(cmd)
        cmd.set_defaults(run=_plan if name == "plan" else _migrate)

    inspect = sub.add_parser("inspect", help="print what a store says about itself, as JSON")
    inspect.add_argument("uri", metavar="URI")
    inspect.set_defaults(run=_inspect)

    report = sub.add_parser("report", help="work with reports")
    report_sub = report.add_subparsers(dest="report_command", required=True)
    merge = report_sub.add_parser(
        "merge", help="combine the JSON reports of a --vmtest-shard=I/N run into one verdict",
        description="Combine the JSON reports of the N shares of a --vmtest-shard=I/N run into "
        "one "
        "verdict, one JSON and one HTML report. Exits 0 when faithful, 1 when not.")
    merge.add_argument("reports", nargs="+", metavar="SHARE.json")
    merge.add_argument("--json", default="reports/vmtest.json", metavar="PATH")
    merge.add_argument("--html", default="reports/vmtest.html", metavar="PATH")
    merge.set_defaults(run=_merge)

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
    if rest and args.command not in ("check", "migrate", "import", "export", "demo"):
        parser.error("unrecognized arguments: " + " ".join(rest))
    library_warnings: list[str] = []
    try:
        with captured(library_warnings):
            return int(args.run(args, rest))
    except PlanRefusedError as exc:
        print(f"vmtest: refused: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except VmtestError as exc:
        print(f"vmtest: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("vmtest: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        for line in library_warnings:
            print(f"vmtest: a library warned: {line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
