"""The vmtest pytest plugin: options, configuration, collection, reports, terminal summary.

Hooks only; the fixtures live in :mod:`vmtest.fixtures`, the checks in :mod:`vmtest.checks`.
It imports no database driver: stores load their driver when a URI asks for them.
"""

from __future__ import annotations

import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from vmtest.checks.result import category_of
from vmtest.errors import EXIT_FAILED, EXIT_USAGE, PlanRefusedError, VmtestError
from vmtest.libwarnings import captured
from vmtest.settings import OPTIONS, UNSET, Settings
from vmtest.state import RESULT_KEY, STATE, SessionState, state_of

pytest_plugins = ["vmtest.fixtures"]

SUITE_PACKAGE = "vmtest.suites"
#: The xdist group the suite's checks share (see _keep_the_suite_on_one_worker).
SUITE_GROUP = "vmtest-suite"


def suite_dir() -> Path:
    """Where the validation suite lives (suites/ in a checkout, vmtest/suites installed)."""
    import vmtest.suites

    return Path(vmtest.suites.__file__).parent


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vmtest", "vmtest: validate a vector-database migration")
    for opt in OPTIONS:
        help_text = f"{opt.help} (env {opt.env}, ini {opt.ini}; default: {opt.shown_default})"
        if opt.is_flag:
            group.addoption(opt.flag, action="store_true", default=UNSET,
                            dest=f"vmtest_opt_{opt.name}", help=help_text)
        else:
            # a string here, converted in pytest_configure: a bad value is then one line
            # naming the option and where it came from, not argparse's usage block
            group.addoption(opt.flag, metavar=opt.metavar, default=UNSET,
                            dest=f"vmtest_opt_{opt.name}", help=help_text)
        parser.addini(opt.ini, help=opt.help, default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "latency: a latency check (deselect with -m 'not latency')"
    )
    config.addinivalue_line(
        "markers", "vmtest_suite: a check of the vmtest validation suite (needs --source/--target)"
    )
    config.addinivalue_line("markers", "xdist_group(name): run on one pytest-xdist worker")
    config.addinivalue_line(
        "markers", "vmtest_needs(setting): a suite check that runs only when that setting is "
        "given (the orphans check: --vmtest-orphans-since)")
    cli = {opt.name: config.getoption(f"vmtest_opt_{opt.name}") for opt in OPTIONS}
    ini = {opt.ini: str(config.getini(opt.ini) or "") for opt in OPTIONS}
    try:
        settings = Settings.resolve(cli, ini)
    except VmtestError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[STATE] = SessionState(settings=settings, command=_command_line(config))
    config.pluginmanager.register(ResultCollector(config), "vmtest-results")
    if settings.validating and config.args_source != pytest.Config.ArgsSource.ARGS:
        # `pytest --source=.. --target=..` with no paths runs exactly the validation suite.
        config.args = [str(suite_dir())]
    if settings.validating:
        _keep_the_suite_on_one_worker(config)


def _command_line(config: pytest.Config) -> str:
    """The command that reproduces this run, passwords in URIs left out."""
    import shlex

    from vmtest.uri import redact_argument

    args = [redact_argument(str(a)) for a in config.invocation_params.args]
    folder = str(config.invocation_params.dir)
    return f"cd {shlex.quote(folder)} && " + shlex.join(["pytest", *args])


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse a local path that holds no store before any test runs (no store is opened
    here: the fixtures open them when a check asks)."""
    settings = state_of(session.config).settings
    if not settings.validating:
        return
    from vmtest.stores import store_class

    for option, uri in (("--source", settings.source), ("--target", settings.target)):
        if uri is None:
            continue
        try:
            store_class(uri.scheme).check_local_path(uri, None)
        except VmtestError as exc:
            raise pytest.UsageError(f"{option}={uri}: {exc}") from None


#: xdist's distribution modes that would spread the suite's checks over workers, each of
#: which would then open and read both stores again.
_SPREADING = ("load", "worksteal")


def _keep_the_suite_on_one_worker(config: pytest.Config) -> None:
    """Under pytest-xdist, the suite runs as one group on one worker (``loadgroup``): each
    store is opened and read once per run, whatever -n is, and a local folder that allows
    one process at a time (Qdrant's local mode) is opened by one process. Other tests still
    spread over the workers."""
    if hasattr(config, "workerinput"):
        # xdist's workers tag the group's tests for the controller's scheduler
        config.option.loadgroup = config.workerinput.get("vmtest_loadgroup", False)
    elif getattr(config.option, "dist", "no") in _SPREADING:
        config.option.dist = "loadgroup"


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: unknown where xdist is not loaded
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist, on the controller: tell each worker the suite runs as one group."""
    node.workerinput["vmtest_loadgroup"] = node.config.getoption("dist") == "loadgroup"


def pytest_unconfigure(config: pytest.Config) -> None:
    if STATE not in config.stash:
        return
    state = config.stash[STATE]
    if state.stopped_by is not None and not hasattr(config, "workerinput"):
        sys.stderr.write(f"ERROR: {state.stopped_by[1]}\n")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist tags the grouped tests
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    settings = state_of(config).settings
    if settings.validating:
        # a check that needs an input (vmtest_needs("orphans_since")) runs only when given it
        # (a flag: when it is on)
        unasked = [item for item in items if any(
            getattr(settings, name) is None or getattr(settings, name) is False
            for marker in item.iter_markers("vmtest_needs")
            for name in marker.args)]
        if unasked:
            config.hook.pytest_deselected(items=unasked)
            items[:] = [item for item in items if item not in unasked]
        for item in items:
            if item.get_closest_marker("vmtest_suite"):
                item.add_marker(pytest.mark.xdist_group(SUITE_GROUP))
        return
    if any(item.get_closest_marker("vmtest_suite") for item in items):
        raise pytest.UsageError(
            "the vmtest validation suite needs the stores to compare: "
            "pytest --source=URI --target=URI"
        )


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = state_of(config).settings
    if not settings.validating:
        return []
    target = settings.target or f"a fresh {settings.migrate_to} store ({settings.provision})"
    return [
        f"vmtest: source {settings.source}",
        f"vmtest: target {target}",
        f"vmtest: tolerance atol={settings.tolerance:g} rtol={settings.rtol:g}, "
        f"sample={settings.sample or 'all records'}, seed={settings.seed}",
    ]


def _library_warnings_held(item: pytest.Item) -> Generator[None, None, None]:
    """Around a suite check's setup, call and teardown: the libraries' warnings are recorded
    for the reports, never raised as errors by the filters in force (``-W error``)."""
    if item.get_closest_marker("vmtest_suite") is None or STATE not in item.config.stash:
        return (yield)
    with captured(state_of(item.config).library_warnings):
        return (yield)


pytest_runtest_setup = pytest.hookimpl(wrapper=True)(_library_warnings_held)
pytest_runtest_call = pytest.hookimpl(wrapper=True)(_library_warnings_held)
pytest_runtest_teardown = pytest.hookimpl(wrapper=True)(_library_warnings_held)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """The check's result rides on its report (plain data: it survives pytest-xdist's trip
    to the controller, as Hypothesis's does); an error vmtest raised on purpose (a store that
    cannot be opened, a server that died) reads as one line, not a traceback."""
    report = yield
    if STATE not in item.config.stash or not _checks_the_stores(item):
        return report
    state = state_of(item.config)
    if call.when == "call" and RESULT_KEY in item.stash:
        report.vmtest_result = item.stash[RESULT_KEY]  # type: ignore[attr-defined]
        if _junit_family(item.config) in PROPERTIES_ON_TESTCASES:
            # pytest's JUnit writer takes a test case's properties from its teardown report,
            # which copies them from the item
            item.user_properties.extend(junit_properties(item.stash[RESULT_KEY]))
    if call.excinfo is not None and isinstance(call.excinfo.value, VmtestError):
        error = call.excinfo.value
        report.longrepr = f"{type(error).__name__}: {error}"
        exit_code = EXIT_FAILED if isinstance(error, PlanRefusedError) else EXIT_USAGE
        report.vmtest_stop = (exit_code, str(error))  # type: ignore[attr-defined]
    report.vmtest_library_warnings = list(state.library_warnings)  # type: ignore[attr-defined]
    return report


#: The plugin's fixtures that open or read the stores.
STORE_FIXTURES = frozenset({"vmtest_source_store", "vmtest_target_uri", "vmtest_target_store",
                            "vmtest_comparison", "source_store", "target_store",
                            "source_inventory", "target_inventory", "vmtest_check",
                            "vmtest_documents_store", "vmtest_source_documents_store"})


def _checks_the_stores(item: pytest.Item) -> bool:
    """A check of the suite, or a team's own test that uses the plugin's store fixtures: its
    result and its usage errors are vmtest's to report."""
    return item.get_closest_marker("vmtest_suite") is not None or bool(
        STORE_FIXTURES & set(getattr(item, "fixturenames", ())))


def junit_properties(result: dict[str, Any]) -> list[tuple[str, Any]]:
    """A check's figures and thresholds as JUnit properties (scalars only)."""
    name = result["name"]
    out: list[tuple[str, Any]] = [
        (f"vmtest.{name}.{key}", value) for key, value in result["figures"].items()
        if isinstance(value, (int, float, str, bool)) or value is None]
    out += [(f"vmtest.{name}.threshold.{key}", value)
            for key, value in result["thresholds"].items()]
    out.append((f"vmtest.{name}.status", result["status"]))
    return out


def _junit_family(config: pytest.Config) -> str:
    return str(config.getini("junit_family") or "xunit2")


#: JUnit families whose schema allows <properties> inside a <testcase>; under xunit2 (pytest's
#: default) the figures go to the test suite's properties instead.
PROPERTIES_ON_TESTCASES = ("xunit1", "legacy")


def _junit_writer(config: pytest.Config) -> Any:
    """pytest's JUnit writer, when --junitxml is on: the plugin object that takes suite-level
    properties (what the record_testsuite_property fixture calls)."""
    for plugin in config.pluginmanager.get_plugins():
        if hasattr(plugin, "add_global_property") and hasattr(plugin, "logfile"):
            return plugin
    return None


class ResultCollector:
    """Collects each check's result from its test report (so it also works under
    pytest-xdist, where reports reach the controller) and writes the reports at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        state = state_of(self.config)
        for line in getattr(report, "vmtest_library_warnings", ()):
            if line not in state.library_warnings:
                state.library_warnings.append(line)
        result = getattr(report, "vmtest_result", None)
        stop = getattr(report, "vmtest_stop", None)
        if stop is not None and state.stopped_by is None:
            state.stopped_by = (int(stop[0]), str(stop[1]))
            self.session.shouldstop = str(stop[1])
        if result is None and "vmtest_suite" not in report.keywords:
            return
        base = {"nodeid": report.nodeid, "duration": report.duration,
                "worker": getattr(report, "worker_id", None) or "main"}
        if result is not None:
            state.results[report.nodeid] = {**base, "outcome": report.outcome, **result}
            if result["name"] == "inventory":
                state.inventories = result.get("evidence") or {}
            if _junit_family(self.config) not in PROPERTIES_ON_TESTCASES:
                writer = _junit_writer(self.config)
                if writer is not None:
                    for name, value in junit_properties(result):
                        writer.add_global_property(name, value)
        elif (report.failed or report.skipped) and report.nodeid not in state.results:
            status = "skipped" if report.skipped else "error"
            # test_ids, test_ids[param], test_ids@vmtest-suite (an xdist group): "ids"
            test = report.nodeid.rsplit("::", 1)[-1]
            name = test.split("[")[0].split("@")[0].removeprefix("test_")
            state.results[report.nodeid] = {
                **base, "outcome": status, "status": status, "name": name,
                "category": category_of(name),
                "summary": _short(report),
                "figures": {}, "thresholds": {}, "offending_total": 0, "offenders": [],
                "warnings": [], "evidence": {},
            }

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput"):
            return
        state = state_of(self.config)
        if state.stopped_by is not None:
            # a store that cannot be opened, a server that died: a usage error, not a verdict
            session.exitstatus = state.stopped_by[0]
        elif state.settings.validating and session.exitstatus == pytest.ExitCode.OK \
                and state.results and not any(
                    r["status"] in ("passed", "warning") for r in state.results.values()):
            # every check skipped or not applicable: no verdict, so no exit 0
            state.no_verdict = True
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if state.results and state.stopped_by is None:
            # a run stopped by a usage error has no verdict: it writes no report (and leaves
            # the last run's reports as they were)
            from vmtest.report import write_reports

            rootdir = Path(str(self.config.invocation_params.dir))
            state.written = write_reports(state, rootdir=rootdir)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        state = state_of(self.config)
        if not state.results or state.stopped_by is not None:
            return
        from vmtest.report import summary_lines

        terminalreporter.section("vmtest")
        for line, markup in summary_lines(state):
            terminalreporter.line(line, **markup)
        if state.no_verdict:
            terminalreporter.line("vmtest: no check gave a verdict (every one was skipped or "
                                  "not applicable): exit 1, not a pass", red=True, bold=True)


def _short(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    text = str(report.longrepr or "")
    return text.strip().splitlines()[-1] if text.strip() else report.outcome
