"""The ``vmtest`` command: check, plan, migrate, sync, shadow, cutover, inspect, report, demo.

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
from typing import TYPE_CHECKING, NoReturn

from vmtest.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    ConfigError,
    PlanRefusedError,
    VmtestError,
)
from vmtest.libwarnings import captured
from vmtest.migrate.mapping import POLICIES
from vmtest.migrate.runner import MigrationOptions, MigrationReport

if TYPE_CHECKING:
    from vmtest.uri import StoreURI

#: The runner's defaults, which the command's options show and use.
RUNNER = MigrationOptions()


def _check(args: argparse.Namespace, rest: list[str]) -> int:
    if getattr(args, "system", None):
        return _check_system(args, rest)
    if args.source is None:
        raise ConfigError("vmtest check needs --source=URI and --target=URI (or "
                          "--system=FILE.toml: the stores of one RAG system)")
    orphans = getattr(args, "orphans_since", None)
    if args.target is None:
        if orphans is None:
            raise ConfigError("vmtest check needs --target=URI (or --orphans-since=MARK to "
                              "check the old store alone)")
        return _orphans(args.source, Path(orphans))
    argv = [f"--source={args.source}", f"--target={args.target}", *rest]
    if getattr(args, "executor", None):
        argv.append(f"--vmtest-executor={args.executor}")
    if getattr(args, "ray_address", None):
        argv.append(f"--vmtest-ray-address={args.ray_address}")
    if orphans is not None:
        argv.append(f"--vmtest-orphans-since={orphans}")
    return run_pytest(argv)


def run_pytest(argv: Sequence[str]) -> int:
    """``pytest.main(argv)`` in this process, with the objects this process made before it
    frozen (:func:`gc.freeze`) for its duration. At its end pytest collects garbage five
    times over (to surface exceptions raised in ``__del__``); with the stores' libraries
    imported each collection walks some 650,000 objects that cannot be garbage (0.4 s each
    here), 2 s per session: three times a ``--system`` run's whole work on a small store.
    The session's own objects are collected as before.

    In this process the modules the command used before (a migration's store libraries, an
    earlier part's suite) are imported already: pytest cannot rewrite their asserts and warns
    so, for plugins among them (anyio) and the suite (the suite asserts through
    vmtest_check; it need not). Nothing a user can act on: that one warning is ignored, last,
    so a user's ``-W error`` does not turn it into a crash."""
    import gc

    import pytest

    gc.freeze()
    try:
        return int(pytest.main([*argv, "-W", "ignore::pytest.PytestAssertRewriteWarning"]))
    finally:
        gc.unfreeze()


#: The reports a system run writes per part: pytest's options that would name them.
_PART_REPORTS = ("--vmtest-json", "--vmtest-html", "--junitxml", "--junit-xml")


def _check_system(args: argparse.Namespace, rest: list[str]) -> int:
    """The suite over each part of a system file, one pytest session each (the path
    ``vmtest check`` takes), then one verdict and one report over all of them."""
    import shlex

    from vmtest.report import write_document
    from vmtest.report.system import (
        part_entry,
        render_system_html,
        system_document,
        system_lines,
    )
    from vmtest.system import read_system
    from vmtest.uri import parse, redact_argument

    for name in ("source", "target", "orphans_since"):
        if getattr(args, name, None):
            raise ConfigError(f"--{name.replace('_', '-')} goes with one pair of stores; "
                              "--system=FILE.toml names the stores of each part")
    owned = next((a.split("=")[0] for a in rest if a.split("=")[0] in _PART_REPORTS), None)
    if owned:
        raise ConfigError(f"{owned}: a system run writes each part's reports itself",
                          hint="--reports=DIR names their folder")
    system = read_system(Path(args.system))
    folder = Path(args.reports) if args.reports else Path("reports") / system.path.stem
    folder = folder.resolve()
    entries = []
    for number, part in enumerate(system.parts, 1):
        files = {kind: folder / f"{part.name}.{ext}"
                 for kind, ext in (("json", "json"), ("html", "html"), ("junit", "xml"))}
        for path in files.values():  # last run's: never read as this run's
            path.unlink(missing_ok=True)
        print(f"vmtest: {system.path}: part {number} of {len(system.parts)}, {part.name}",
              flush=True)
        source, target = part.text("source"), part.text("target")
        code = _check(argparse.Namespace(
            source=source, target=target, executor=getattr(args, "executor", None),
            ray_address=getattr(args, "ray_address", None)), [
            *part.argv(), f"--vmtest-json={files['json']}", f"--vmtest-html={files['html']}",
            f"--junitxml={files['junit']}", "-o", f"junit_suite_name={part.name}", *rest])
        if code not in (EXIT_OK, EXIT_FAILED):  # a usage error, an interruption: no verdict
            print(f"vmtest: {system.path}: part {part.name} stopped with exit {code}; no "
                  "system verdict, no system report", file=sys.stderr)
            return code
        document = json.loads(files["json"].read_text(encoding="utf-8")) \
            if files["json"].exists() else None
        entries.append(part_entry(part.name, str(parse(str(source))), str(parse(str(target))),
                                  code, document, files))
    command = shlex.join(["vmtest", "check", f"--system={system.path}",
                          f"--reports={folder}", *map(redact_argument, rest)])
    document = system_document(system.path, entries, f"cd {shlex.quote(str(Path.cwd()))} && "
                               + command)
    for line in system_lines(document):
        print(line)
    for written in write_document(document, json_path=folder / "system.json",
                               html_path=folder / "system.html", rootdir=Path.cwd(),
                               render=render_system_html):
        print(f"report: {written}")
    return EXIT_OK if document["verdict"] == "passed" else EXIT_FAILED


def _orphans(source: str, mark: Path) -> int:
    from vmtest.checks.orphans import check_orphans
    from vmtest.live.orphans import orphans_since
    from vmtest.stores import open_store

    with open_store(source) as store:
        result = check_orphans(orphans_since(mark, store))
    print(result.explain() if not result.passed else f"orphans: {result.summary}")
    return EXIT_OK if result.passed else EXIT_FAILED


def _sync(args: argparse.Namespace, rest: list[str]) -> int:
    if args.journal:
        return _replay(args)
    if not args.source:
        raise ConfigError("vmtest sync needs --source=URI (or --journal=PATH to replay a "
                          "dual-write journal into --target)")
    import signal

    from vmtest.live.sync import SyncOptions, default_state_path, sync
    from vmtest.report import write_document
    from vmtest.report.live import render_sync_html, sync_verdict_line
    from vmtest.stores import open_store
    from vmtest.uri import parse

    source_uri, target_uri = parse(args.source), parse(args.target)
    state = Path(args.state) if args.state else default_state_path(source_uri, target_uri)
    signalled: list[int] = []
    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, lambda *_: signalled.append(1))
    off_file = Path(args.writes_off_file) if args.writes_off_file else None

    def writes_off() -> bool:
        return bool(signalled) or (off_file is not None and off_file.exists())

    options = SyncOptions(migration=_options(args), delete_extra=args.delete_extra,
                          until_converged=args.until_converged, generations=args.generations,
                          interval_s=args.interval, tolerance=args.tolerance,
                          use_feed=not args.no_feed, executor=args.executor or "local",
                          ray_address=args.ray_address, partitions=args.partitions)
    with open_store(source_uri) as source:
        report = sync(source, target_uri, options, state_path=state, restart=args.restart,
                      writes_off=writes_off,
                      progress=lambda g: print(g.line(), file=sys.stderr, flush=True),
                      note=lambda text: print(f"vmtest: {text}", file=sys.stderr))
    document = report.to_dict()
    chosen = [None if not p or p.lower() == "none" else Path(p) for p in (args.json, args.html)]
    for path in write_document(document, json_path=chosen[0], html_path=chosen[1],
                               rootdir=Path.cwd(), render=render_sync_html):
        print(f"report: {path}")
    for m in report.outstanding[:20]:
        print(f"  {m.kind}: {m.key} (first seen {m.lasted_s:.1f} s before the last generation)")
    if len(report.outstanding) > 20:
        print(f"  ... and {len(report.outstanding) - 20} more (JSON report)")
    print(sync_verdict_line(document))
    if args.until_converged:
        return EXIT_OK if report.converged else EXIT_FAILED
    return EXIT_OK if report.faithful else EXIT_FAILED


def _replay(args: argparse.Namespace) -> int:
    from vmtest.live.dualwrite import Journal, replay
    from vmtest.stores import open_store

    journal = Journal(args.journal)
    if not journal.path.exists():
        raise ConfigError(f"no dual-write journal at {journal.path}",
                          hint="DualWriteStore(primary, secondary, journal=PATH) writes one")
    with open_store(args.target) as target:
        report = replay(journal, target,
                        batch_size=args.batch_size or target.DEFAULT_BATCH_SIZE)
    print(f"replayed {report.entries} journal entries up to #{report.upto}: "
          f"{report.upserted} records written, {report.deleted} deleted into {args.target}; "
          f"journal depth now {journal.depth()}")
    return EXIT_OK


def _cutover_mark(args: argparse.Namespace, rest: list[str]) -> int:
    from vmtest.live.orphans import mark
    from vmtest.stores import open_store

    with open_store(args.store) as store:
        header = mark(store, Path(args.out))
    print(f"marked {header['count']:,} records of {header['store']} at {header['marked_at']} "
          f"in {args.out}; later: vmtest check --orphans-since={args.out} "
          f"--source='{args.store}'")
    return EXIT_OK


def _cutover_start(args: argparse.Namespace, rest: list[str]) -> int:
    from vmtest.live.gates import Condition, GateConfig
    from vmtest.live.stages import Cutover, CutoverConfig, headline

    counted = bool(args.error_count_query and args.request_count_query)
    if bool(args.error_count_query) != bool(args.request_count_query):
        raise ConfigError("--error-count-query and --request-count-query go together (errors "
                          "and requests counted over one window)")
    conditions = [] if not args.prometheus else [
        Condition(name, query, op, limit, unit, trials) for name, query, op, limit, unit, trials
        in (("error_rate", args.error_count_query if counted else args.error_rate_query, "<",
             args.max_error_rate, "", args.request_count_query if counted else None),
            ("p99_latency", args.p99_query, "<", args.max_p99, " s", None),
            ("cache_hit_rate", args.cache_hit_query, ">", args.min_cache_hit, "", None))
        if query and query.lower() != "none"]

    def absolute(path: str | None) -> str | None:
        return str(Path(path).resolve()) if path else None

    gate = GateConfig(
        interval_s=args.interval, count=args.count, failure_limit=args.failure_limit,
        inconclusive_limit=args.inconclusive_limit,
        consecutive_error_limit=args.consecutive_error_limit,
        initial_delay_s=args.initial_delay, prometheus=args.prometheus,
        conditions=tuple(conditions), suite_report=absolute(args.suite_report),
        shadow_report=absolute(args.shadow_report))
    config = CutoverConfig(flag_file=str(absolute(args.flag_file)), steps=args.steps,
                           gate=gate, flag_key=args.flag_key, source=args.source,
                           target=args.target)
    cutover = Cutover(args.state)
    print(headline(cutover.start(config, force=args.force)))
    return EXIT_OK


def _cutover_status(args: argparse.Namespace, rest: list[str]) -> int:
    from vmtest.live.stages import Cutover

    cutover = Cutover(args.state)
    state = cutover.load()
    if args.json:
        print(json.dumps(state, indent=2))
    else:
        print("\n".join(cutover.status_lines()))
    if args.html:
        from vmtest.report import write_document
        from vmtest.report.cutover import render_cutover_html

        for path in write_document(state, json_path=None, html_path=Path(args.html),
                                   rootdir=Path.cwd(), render=render_cutover_html):
            print(f"report: {path}", file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK


def _cutover_advance(args: argparse.Namespace, rest: list[str]) -> int:
    from vmtest.live.stages import Cutover, headline

    cutover = Cutover(args.state)
    code = cutover.advance(until_complete=args.until_complete, take_over=args.take_over)
    print(headline(cutover.state))
    return code


def _cutover_rollback(args: argparse.Namespace, rest: list[str]) -> int:
    from vmtest.live.stages import Cutover, headline

    cutover = Cutover(args.state)
    code = cutover.rollback(args.reason)
    print(headline(cutover.state))
    return code


def _steps(text: str) -> tuple[float, ...]:
    from vmtest.live.stages import parse_steps

    try:
        return parse_steps(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def _whole(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def _cutover_stage_commands(cutover_sub: argparse._SubParsersAction) -> None:
    """start, status, advance, rollback: the stages with gates (vmtest.live.stages)."""
    from vmtest.live.gates import DEFAULT_ERROR_RATE_QUERY, DEFAULT_P99_QUERY

    state = dict(default="reports/cutover.json", metavar="PATH",
                 help="the cutover's state file (default reports/cutover.json)")
    start = cutover_sub.add_parser(
        "start", help="begin a staged cutover at 'off' (the flag at 0%%), recording its gates",
        description="Begin a staged cutover: off, dual-write, shadow, live at each of "
        "--steps, ramp-down, complete. Records the flag file, the steps and the gates; "
        "checks that Prometheus answers its queries (else exit 4, nothing written).")
    start.add_argument("--flag-file", required=True, metavar="PATH",
                       help="the flagd flag file the application reads (written atomically)")
    start.add_argument("--flag-key", default="vmtest-cutover", metavar="KEY")
    start.add_argument("--steps", type=_steps, default=(5.0, 10.0, 50.0, 100.0),
                       metavar="P,P,...", help="the live steps, percentages of keys routed "
                       "to the target (default 5,10,50,100; the last is 100)")
    start.add_argument("--source", metavar="URI", help="the source store (recorded)")
    start.add_argument("--target", metavar="URI", help="the target store (recorded)")
    start.add_argument("--state", **state)
    start.add_argument("--force", action="store_true",
                       help="replace an existing state (not one still routing traffic)")
    gate = start.add_argument_group("gates (Argo Rollouts' analysis)")
    gate.add_argument("--interval", type=_seconds, default=60.0, metavar="S",
                      help="seconds between a gate's measurements (default 60)")
    gate.add_argument("--count", type=_positive, default=5, metavar="N",
                      help="measurements per gate (default 5)")
    gate.add_argument("--failure-limit", type=_whole, default=1, metavar="F",
                      help="failed measurements allowed; one more rolls back (default 1)")
    gate.add_argument("--inconclusive-limit", type=_whole, default=1, metavar="I",
                      help="inconclusive measurements allowed; one more pauses (default 1)")
    gate.add_argument("--consecutive-error-limit", type=_whole, default=4, metavar="E",
                      help="measurements in a row that cannot read their evidence "
                      "(Prometheus down) allowed; one more pauses (default 4)")
    gate.add_argument("--initial-delay", type=_seconds, default=0.0, metavar="S",
                      help="wait before a metrics gate's first measurement (default 0)")
    gate.add_argument("--prometheus", metavar="URL",
                      help="Prometheus to query in the live steps and ramp-down")
    gate.add_argument("--error-rate-query", default=DEFAULT_ERROR_RATE_QUERY, metavar="PROMQL",
                      help="the target's error rate ('none' to skip; default %(default)s)")
    gate.add_argument("--error-count-query", default=None, metavar="PROMQL",
                      help="errors counted over a window (sum(increase(...[1m]))); with "
                      "--request-count-query the error rate decides on its exact interval "
                      "(straddling --max-error-rate: inconclusive) instead of --error-rate-query's"
                      " point value")
    gate.add_argument("--request-count-query", default=None, metavar="PROMQL",
                      help="requests counted over the same window")
    gate.add_argument("--max-error-rate", type=float, default=0.01, metavar="X",
                      help="success: error rate < X (default 0.01)")
    gate.add_argument("--p99-query", default=DEFAULT_P99_QUERY, metavar="PROMQL",
                      help="the target's p99 latency in seconds ('none' to skip; default "
                      "%(default)s)")
    gate.add_argument("--max-p99", type=float, default=0.5, metavar="S",
                      help="success: p99 latency < S seconds (default 0.5)")
    gate.add_argument("--cache-hit-query", default=None, metavar="PROMQL",
                      help="the target's cache hit rate (default: not checked)")
    gate.add_argument("--min-cache-hit", type=float, default=0.3, metavar="X",
                      help="success: cache hit rate > X (default 0.3)")
    gate.add_argument("--suite-report", metavar="PATH",
                      help="the suite's JSON report (reports/vmtest.json): its verdict")
    gate.add_argument("--shadow-report", metavar="PATH",
                      help="shadow figures: a JSON file with a 'status' of passed, failed or "
                      "warning (inconclusive)")
    start.set_defaults(run=_cutover_start)

    status = cutover_sub.add_parser("status", help="where the cutover stands, its timeline")
    status.add_argument("--state", **state)
    status.add_argument("--json", action="store_true", help="print the state as JSON")
    status.add_argument("--html", metavar="PATH", help="also write the timeline as HTML")
    status.set_defaults(run=_cutover_status)

    advance = cutover_sub.add_parser(
        "advance", help="run the current stage's gate; if it passes, enter the next stage",
        description="Run the current stage's gate and enter the next stage if it passes. A "
        "failed gate rolls back (the flag to 0%%, exit 1); an inconclusive one pauses (exit "
        "1; advance again to resume). A gate cut short (kill -9) starts over.")
    advance.add_argument("--state", **state)
    advance.add_argument("--until-complete", action="store_true",
                         help="go on through every stage until complete (or a gate stops it)")
    advance.add_argument("--take-over", action="store_true",
                         help="run even if the state names another advance (that is gone)")
    advance.set_defaults(run=_cutover_advance)

    rollback = cutover_sub.add_parser(
        "rollback", help="route every key back to the source now (the flag to 0%%)")
    rollback.add_argument("--state", **state)
    rollback.add_argument("--reason", default="rolled back by hand", metavar="TEXT")
    rollback.set_defaults(run=_cutover_rollback)


def _options(args: argparse.Namespace) -> MigrationOptions:
    given = {name: getattr(args, name) for name in (
        "batch_size", "workers", "on_unsupported", "metric", "document_field", "retries",
        "reembed", "strict_floats", "transfer") if hasattr(args, name)}
    if getattr(args, "mapping", None):
        from vmtest.schema_map import read_schema_map

        try:
            read_schema_map(Path(args.mapping))  # a mistake in it: one line, exit 4
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--mapping={args.mapping}: {exc}") from None
        given["mapping"] = Path(args.mapping)
    model = getattr(args, "model", None) or given.get("reembed")
    return MigrationOptions(**given, model=model)


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
    if getattr(args, "executor", None) == "ray" or getattr(args, "partitions", None):
        return _migrate_partitioned(args, rest, source_uri, target_uri, state)
    with open_store(source_uri) as source:
        total = source.count()
        with tqdm(total=total, unit="rec", desc="migrate", disable=None) as bar:
            report = migrate(source, target_uri, _options(args), state_path=state,
                             restart=args.restart, progress=bar.update)
            if report.resumed_from:
                bar.update(report.resumed_from)
    for note in report.notes:
        print(f"vmtest: {note}", file=sys.stderr)
    if report.resumed_from and not report.copied:
        print(f"nothing to do: {report.state_path} says all {report.resumed_from} records "
              "were migrated (--restart to begin again)")
        return 0
    resumed = f" (resumed after {report.resumed_from})" if report.resumed_from else ""
    how = f"in {report.batches} batches" if report.method == "records" else \
        f"as {report.method}"
    print(f"copied {report.copied} records{resumed} {how} "
          f"({report.seconds:.1f} s, {report.rate:,.0f} records/s) into {report.target}; "
          f"state {report.state_path}")
    return _migrated(args, rest, report)


def _migrate_partitioned(args: argparse.Namespace, rest: list[str], source_uri: StoreURI,
                         target_uri: StoreURI, state: Path) -> int:
    from vmtest.migrate.partitioned import migrate_partitioned
    from vmtest.stores import open_store

    with open_store(source_uri) as source:
        report = migrate_partitioned(
            source, target_uri, _options(args), partitions=args.partitions,
            executor=args.executor or "local", ray_address=args.ray_address,
            state_path=state, restart=args.restart,
            note=lambda text: print(f"vmtest: {text}", file=sys.stderr))
    if report.partitions_kept and not report.partitions_run:
        print(f"nothing to do: {report.state_path} keeps all {len(report.partitions_kept)} "
              "partitions as migrated (--restart to begin again)")
        return 0
    kept = (f" ({len(report.partitions_kept)} partitions, {report.resumed_from} records, "
            "kept from an earlier run)") if report.partitions_kept else ""
    print(f"copied {report.copied} records in {len(report.partitions_run)} partitions{kept} "
          f"({report.seconds:.1f} s, {report.rate:,.0f} records/s) into {report.target}; "
          f"state {report.state_path}")
    return _migrated(args, rest, report)


def _migrated(args: argparse.Namespace, rest: list[str], report: MigrationReport) -> int:
    """What a migration changed that the user should know, then --verify."""
    if report.affected_fields:
        print("metadata changed by --on-unsupported="
              f"{args.on_unsupported}: " + ", ".join(
                  f"{k} ({n} records)" for k, n in sorted(report.affected_fields.items())))
    if report.rounded_fields:
        print(f"floats the target may have rounded (by up to {report.rounding_ulps} ulps, its "
              "declared rounding): " + ", ".join(
                  f"{k} ({n} values)" for k, n in sorted(report.rounded_fields.items()))
              + "; the suite's metadata check counts those it did")
    if args.verify:
        if args.reembed:  # another model: the suite compares search quality, not vectors
            rest = [f"--vmtest-source-model={args.source_model}",
                    f"--vmtest-target-model={args.model or args.reembed}",
                    f"--vmtest-target-embedder={args.reembed}", *rest]
        if args.strict_floats:
            rest = ["--vmtest-strict-floats", *rest]
        if getattr(args, "mapping", None):
            rest = [f"--vmtest-mapping={args.mapping}", *rest]
        # a migration on Ray is checked on Ray
        return _check(argparse.Namespace(
            source=args.source, target=args.target, executor=getattr(args, "executor", None),
            ray_address=getattr(args, "ray_address", None)), rest)
    return 0


def _shadow(args: argparse.Namespace, rest: list[str]) -> int:
    from tqdm import tqdm

    from vmtest.live.shadow import (
        document,
        load_query_log,
        shadow,
        summary_lines,
        verdict_line,
        warm_up,
    )
    from vmtest.matching import Matching
    from vmtest.stores import open_store
    from vmtest.uri import parse

    source_uri, target_uri = parse(args.source), parse(args.target)
    log = load_query_log(Path(args.query_log), args.embedder)  # a bad line: nothing opened
    with open_store(source_uri) as source, open_store(target_uri) as target:
        warm = None
        if args.warm_up:
            warm = warm_up(target, log, k=args.k, max_rounds=args.warm_up_rounds,
                           max_seconds=args.warm_up_seconds, confidence=args.confidence,
                           seed=args.seed)
            print(warm.line())
        with tqdm(total=len(log), unit="query", desc="shadow", disable=None) as bar:
            result = shadow(source, target, log, k=args.k, tolerance=args.tolerance,
                            max_error_rate=args.max_error_rate, confidence=args.confidence,
                            seed=args.seed, matching=Matching(args.id_field),
                            progress=bar.update)
    for line in summary_lines(result):
        print(line)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document(result, warm, source=str(source_uri),
                                            target=str(target_uri), query_log=log.path),
                                   indent=2, default=str) + "\n", encoding="utf-8")
        print(f"report: {path}")
    print(verdict_line(result))
    return EXIT_OK if result.passed else EXIT_FAILED


def _setting(name: str) -> argparse.Namespace:
    """A Settings option's converter (as an argparse type) and default: declared once there."""
    from vmtest.settings import OPTIONS

    option = next(o for o in OPTIONS if o.name == name)

    def convert(text: str) -> object:
        try:
            return option.convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return argparse.Namespace(type=convert, default=option.default)


def _shadow_command(sub: argparse._SubParsersAction) -> None:
    from vmtest.live.shadow import WARM_MAX_ROUNDS, WARM_MAX_SECONDS

    shadow = sub.add_parser(
        "shadow", help="replay a query log on both stores: the source twice (its noise "
        "floor), then the target against it",
        description="Replay a query log (JSON Lines: vector or text, filter, k, user) on both "
        "stores. Each query runs twice on the source, whose agreement with itself is the noise "
        "floor, and once on the target; the target fails when its overlap@k with the source is "
        "lower than the floor by more than --tolerance on a confidence interval, or when it "
        "raises on more queries than --max-error-rate allows. Exit 0 passed (an inconclusive "
        "answer is a warning), 1 failed, 4 a usage error.")
    shadow.add_argument("--source", required=True, metavar="URI")
    shadow.add_argument("--target", required=True, metavar="URI")
    shadow.add_argument("--query-log", required=True, metavar="FILE",
                        help="the queries, one JSON object a line")
    shadow.add_argument("--embedder", metavar="MODULE:CALLABLE",
                        help="embeds text queries as the source's model does (e.g. "
                        "vmtest.embed:minilm)")
    k, tolerance = _setting("k"), _setting("shadow_tolerance")
    max_error_rate, confidence = _setting("shadow_max_error_rate"), _setting("confidence")
    seed = _setting("seed")
    shadow.add_argument("--k", type=k.type, default=k.default, metavar="K",
                        help=f"top-k of a query that logs none (default {k.default})")
    shadow.add_argument("--tolerance", type=tolerance.type, default=tolerance.default,
                        metavar="D", help="how much lower than the noise floor the target's "
                        f"mean overlap@k may be (default {tolerance.default})")
    shadow.add_argument("--max-error-rate", type=max_error_rate.type,
                        default=max_error_rate.default, metavar="RATE",
                        help="the share of queries the target may fail on where the source "
                        f"answered (default {max_error_rate.default})")
    shadow.add_argument("--confidence", type=confidence.type, default=confidence.default,
                        metavar="P", help=f"of the intervals (default {confidence.default})")
    shadow.add_argument("--seed", type=seed.type, default=seed.default, metavar="N",
                        help="seeds the order of the calls and the bootstrap (default "
                        f"{seed.default})")
    shadow.add_argument("--id-field", default=None, metavar="NAME",
                        help="payload field holding the source id in the target (original_id "
                        "and __id__ are recognised without it)")
    shadow.add_argument("--warm-up", action="store_true",
                        help="first replay the most frequent queries on the target until its "
                        "p99 holds still; print the cold and the warm p99")
    shadow.add_argument("--warm-up-rounds", type=_positive, default=WARM_MAX_ROUNDS,
                        metavar="N", help=f"most warm-up rounds (default {WARM_MAX_ROUNDS})")
    shadow.add_argument("--warm-up-seconds", type=float, default=WARM_MAX_SECONDS,
                        metavar="S", help="time bound of the warm-up, checked between rounds "
                        f"(default {WARM_MAX_SECONDS:g})")
    shadow.add_argument("--json", default=None, metavar="PATH",
                        help="also write the figures, the worst queries and the warm-up here")
    shadow.set_defaults(run=_shadow)


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


def _runner_arguments(cmd: argparse.ArgumentParser, only: Sequence[str] | None = None
                      ) -> None:
    """The runner's options (all, or ``only`` these flags); their defaults are the runner's
    own (MigrationOptions), declared there once."""
    table: list[tuple[str, dict]] = [
        ("--batch-size", dict(type=_positive, default=RUNNER.batch_size, metavar="N",
                              help="records per read and write (default: the target store's, "
                              "chosen by measurement; 1000 for the stores built in)")),
        ("--workers", dict(type=_positive, default=RUNNER.workers, metavar="N",
                           help="parallel writers into a database target (default: the "
                           "target store's, chosen by measurement: 2 into a Qdrant server, "
                           "else 1)")),
        ("--on-unsupported", dict(
            choices=POLICIES, default=RUNNER.on_unsupported,
            help="metadata the target cannot hold: refuse before writing (error, the "
            "default), keep it as JSON text (json), or drop the field (drop)")),
        ("--metric", dict(choices=("cosine", "l2", "ip", "l1"), default=RUNNER.metric,
                          help="the target's metric (default: the source's)")),
        ("--document-field", dict(
            default=RUNNER.document_field, metavar="NAME",
            help="payload field for documents in stores without a document column "
            f"(default {RUNNER.document_field})")),
        ("--retries", dict(type=int, default=RUNNER.retries, metavar="N",
                           help="retries of a batch on transient errors, with backoff "
                           f"(default {RUNNER.retries})")),
        ("--state", dict(default=None, metavar="PATH",
                         help="checkpoint file (default: beside a local target, so it travels "
                         "with it: TARGET.vmtest-state.json; for a server, under reports/); "
                         "a resume first checks the target still holds what it says")),
        ("--restart", dict(action="store_true",
                           help="ignore an existing checkpoint and begin again")),
        ("--mapping", dict(default=None, metavar="FILE.toml",
                           help="a schema mapping (tables rename, convert, add, drop): the "
                           "fields are written as it says; --verify checks the copy with it")),
        ("--strict-floats", dict(action="store_true",
                                 help="refuse metadata floats the target may round (within its "
                                 "declared rounding, e.g. a Qdrant server's last digit) instead "
                                 "of copying and counting them")),
        ("--transfer", dict(
            choices=("auto", "records"), default=RUNNER.transfer,
            help="auto (the default): a copy that changes nothing, into a new collection of "
            "the same engine that copies whole collections itself, goes that way, bit for bit "
            "(a Qdrant server into another: a collection snapshot, versions that recover it, "
            "no cluster); records: record by record, always")),
        ("--reembed", dict(default=None, metavar="MODULE:CALLABLE",
                           help="new vectors from the documents, in batches (a model change), "
                           "e.g. vmtest.embed:minilm")),
        ("--model", dict(default=None, metavar="NAME",
                         help="the name of the --reembed model (default: the callable's "
                         "name)")),
        ("--source-model", dict(default="unknown", metavar="NAME",
                                help="the name of the model the source's vectors come from "
                                "(recorded by --verify)")),
        ("--dry-run", dict(action="store_true", help="plan only: write nothing")),
        ("--verify", dict(action="store_true",
                          help="run the validation suite afterwards and exit with its "
                          "verdict")),
    ]
    for flag, kwargs in table:
        if only is None or flag in only:
            cmd.add_argument(flag, **kwargs)


def _executor_arguments(cmd: argparse.ArgumentParser, what: str, also: str = "",
                        partitions: tuple[str, str] | None = None) -> None:
    """--executor and --ray-address, as check, migrate and sync take them; and
    --partitions=N for a command that writes partition by partition (migrate, sync):
    ``partitions`` says what it does with them, and what else holds."""
    if partitions is not None:
        also = "--partitions=N also applies; the target must write by id, and on Ray be a " \
            "server"
    cmd.add_argument("--executor", choices=("local", "ray"), default=None,
                     help=f"where {what} run: local (this process, the default) or ray "
                     f"(partition by partition, as Ray tasks; {also})")
    cmd.add_argument("--ray-address", metavar="ADDR",
                     help="the Ray cluster of --executor=ray (default: a local one started "
                     "for the run)")
    if partitions is not None:
        does, holds = partitions
        cmd.add_argument("--partitions", type=_positive, default=None, metavar="N",
                         help=f"{does}, about N of them (with --executor=ray at least 4, and "
                         f"no more than 1,000,000 records each); {holds}")


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
        description="Run the validation suite on two stores, or with --system on each pair "
        "of a system file. Arguments vmtest does not know go to pytest: --junitxml=PATH, "
        "-k EXPR, --vmtest-tolerance=1e-5, ...",
    )
    check.add_argument("--source", metavar="URI")
    check.add_argument("--target", metavar="URI")
    check.add_argument("--system", metavar="FILE.toml",
                       help="instead of --source and --target: the stores of one RAG system "
                       "(its vector index, document store and chat history), each pair run in "
                       "turn, one verdict and one report over all (docs/checks.md)")
    check.add_argument("--reports", metavar="DIR",
                       help="with --system: the folder of each part's JSON, HTML and JUnit "
                       "report and of system.json and system.html (default reports/ and the "
                       "system file's name: reports/rag for rag.toml)")
    _executor_arguments(check, "the record-by-record checks", "--vmtest-partitions=N, "
                        "--vmtest-partition-state=DIR also apply")
    check.add_argument("--orphans-since", metavar="MARK",
                       help="also list the source's records created, changed or deleted since "
                       "this cutover mark (alone, without --target: only that)")
    check.set_defaults(run=_check)

    sync = sub.add_parser(
        "sync", help="catch up a copy that fell behind, generation after generation",
        description="Compare both stores and repair the target: records missing or changed "
        "are copied again, extras deleted (--delete-extra) or listed. Later generations "
        "re-check what mismatched plus what changed since (the source's change feed where it "
        "has one, else both stores' digests). --until-converged goes on until a generation "
        "begun after writes-off (--writes-off-file, or SIGUSR1) finds nothing. --journal "
        "replays a dual-write journal into --target instead.")
    sync.add_argument("--source", metavar="URI",
                      help="the store the application writes to (not with --journal)")
    sync.add_argument("--target", required=True, metavar="URI",
                      help="the copy to catch up (created from the source when absent)")
    sync.add_argument("--delete-extra", action="store_true",
                      help="delete the target's records the source does not have")
    sync.add_argument("--until-converged", action="store_true",
                      help="run until a generation begun after writes-off finds nothing; "
                      "exit 0 only then")
    sync.add_argument("--generations", type=_positive, default=None, metavar="N",
                      help="run at most N generations")
    sync.add_argument("--interval", type=float, default=1.0, metavar="S",
                      help="pause after a generation that found nothing (default 1 s)")
    sync.add_argument("--writes-off-file", metavar="PATH",
                      help="writes are off once this file exists (or on SIGUSR1)")
    sync.add_argument("--tolerance", type=float, default=1e-6, metavar="ATOL",
                      help="vectors within this tolerance are the same (default 1e-06)")
    sync.add_argument("--no-feed", action="store_true",
                      help="read both stores' digests every generation, even where the "
                      "source has a change feed")
    sync.add_argument("--journal", metavar="PATH",
                      help="replay this dual-write journal into --target (last write per "
                      "key wins, deletes included)")
    sync.add_argument("--json", default="reports/sync.json", metavar="PATH",
                      help="the JSON report ('none' to skip)")
    sync.add_argument("--html", default="reports/sync.html", metavar="PATH",
                      help="the HTML report ('none' to skip)")
    sync.add_argument("--state", default=None, metavar="PATH",
                      help="sync state (default: beside a local target, "
                      "TARGET.COLLECTION.vmtest-sync.json; for a server, under reports/)")
    _runner_arguments(sync, only=("--batch-size", "--on-unsupported", "--document-field",
                                  "--retries", "--restart"))
    _executor_arguments(sync, "the comparisons of every key", partitions=(
        "compare (and repair) the source partition by partition", "generations that follow "
        "the change feed stay in this process"))
    sync.set_defaults(run=_sync)

    cutover = sub.add_parser(
        "cutover", help="the switch: stages with gates (start, status, advance, rollback), "
        "and the mark of the old store")
    cutover_sub = cutover.add_subparsers(dest="cutover_command", required=True)
    mark = cutover_sub.add_parser(
        "mark", help="record the old store's digests at the switch (for --orphans-since)")
    mark.add_argument("--store", required=True, metavar="URI")
    mark.add_argument("--out", default="reports/cutover-mark.json", metavar="PATH",
                      help="where the mark is written (default reports/cutover-mark.json)")
    mark.set_defaults(run=_cutover_mark)
    _cutover_stage_commands(cutover_sub)

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
        if name == "migrate":
            _executor_arguments(cmd, "the copies", partitions=(
                "copy the source partition by partition", "a rerun redoes only the "
                "partitions that did not finish"))
        cmd.set_defaults(run=_plan if name == "plan" else _migrate)

    _shadow_command(sub)

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
