"""The vmtest pytest plugin: options, configuration, collection, reports, terminal summary.

Hooks only; the fixtures live in :mod:`vmtest.fixtures`, the checks in :mod:`vmtest.checks`.
It imports no database driver: stores load their driver when a URI asks for them.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from vmtest.checks.result import category_of
from vmtest.errors import VmtestError
from vmtest.libwarnings import captured
from vmtest.settings import OPTIONS, UNSET, Settings
from vmtest.state import STATE, SessionState, state_of

pytest_plugins = ["vmtest.fixtures"]

SUITE_PACKAGE = "vmtest.suites"


def suite_dir() -> Path:
    """Where the validation suite lives (suites/ in a checkout, vmtest/suites installed)."""
    import vmtest.suites

    return Path(vmtest.suites.__file__).parent


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vmtest", "vmtest: validate a vector-database migration")
    for opt in OPTIONS:
        default = "not set" if opt.default is None else opt.default
        help_text = f"{opt.help} (env {opt.env}, ini {opt.ini}; default: {default})"
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


def _command_line(config: pytest.Config) -> str:
    """The command that reproduces this run, passwords in URIs left out."""
    import shlex

    from vmtest.uri import redact_argument

    args = [redact_argument(str(a)) for a in config.invocation_params.args]
    return shlex.join(["pytest", *args])


def pytest_sessionstart(session: pytest.Session) -> None:
    state = state_of(session.config)
    settings = state.settings
    if not settings.validating or _is_xdist_controller(session.config):
        return
    with captured(state.library_warnings):
        _open_stores(session, state)


def _open_stores(session: pytest.Session, state: SessionState) -> None:
    from vmtest.compare import Comparison
    from vmtest.stores import open_store

    settings = state.settings
    assert settings.source is not None
    stack = state.resources
    try:
        try:
            source = stack.enter_context(open_store(settings.source))
        except VmtestError as exc:
            raise pytest.UsageError(f"--source={settings.source}: {exc}") from None
        target_uri = settings.target or _migrate_into_fresh_store(session.config, source, stack)
        try:
            target = stack.enter_context(open_store(target_uri))
        except VmtestError as exc:
            raise pytest.UsageError(f"--target={target_uri}: {exc}") from None
    except BaseException:
        stack.close()
        raise
    state.comparison = Comparison(source, target, settings)
    stack.callback(state.comparison.close)  # the spill folder, if the comparison spilled


def _migrate_into_fresh_store(config: pytest.Config, source: Any, stack: Any) -> str:
    """--migrate-to: provision a fresh store, run the migration runner into it."""
    from vmtest.errors import MigrationError
    from vmtest.migrate import migrate
    from vmtest.provision import provision

    settings = state_of(config).settings
    assert settings.migrate_to is not None
    try:
        uri = stack.enter_context(provision(settings.migrate_to, provider=settings.provision))
    except VmtestError as exc:
        raise pytest.UsageError(f"--migrate-to={settings.migrate_to}: {exc}") from None
    try:
        report = migrate(source, uri)
    except MigrationError as exc:
        pytest.exit(f"vmtest: the migration into {uri} did not complete: {exc}", returncode=1)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"vmtest: migrated {report.copied} records into {uri} "
                            f"({report.rate:,.0f} records/s)")
    return uri


def pytest_unconfigure(config: pytest.Config) -> None:
    if STATE in config.stash:
        config.stash[STATE].resources.close()


def _is_xdist_controller(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "numprocesses", None)) and not hasattr(
        config, "workerinput"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if state_of(config).settings.validating:
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
    report = yield
    # An error vmtest raised on purpose (a server that died, a store that refused a read)
    # reads as its message, not as a traceback through the driver.
    if call.excinfo is not None and isinstance(call.excinfo.value, VmtestError):
        report.longrepr = f"{type(call.excinfo.value).__name__}: {call.excinfo.value}"
    return report


class ResultCollector:
    """Collects each check's result from its test report (so it also works under
    pytest-xdist, where reports reach the controller) and writes the reports at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from vmtest.fixtures import RESULT_PROPERTY

        state = state_of(self.config)
        if "vmtest_suite" not in report.keywords and not any(
            name == RESULT_PROPERTY for name, _ in report.user_properties
        ):
            return
        props = dict(report.user_properties)
        base = {"nodeid": report.nodeid, "duration": report.duration}
        if RESULT_PROPERTY in props and report.when == "call":
            result = json.loads(str(props[RESULT_PROPERTY]))
            state.results[report.nodeid] = {**base, "outcome": report.outcome, **result}
            if result["name"] == "inventory":
                state.inventories = result.get("evidence") or {}
        elif (report.failed or report.skipped) and report.nodeid not in state.results:
            status = "skipped" if report.skipped else "error"
            name = report.nodeid.rsplit("::", 1)[-1].split("[")[0].removeprefix("test_")
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
        if state.results:
            from vmtest.report import write_reports

            rootdir = Path(str(self.config.invocation_params.dir))
            state.written = write_reports(state, rootdir=rootdir)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        state = state_of(self.config)
        if not state.results:
            return
        from vmtest.report import summary_lines

        terminalreporter.section("vmtest")
        for line, markup in summary_lines(state):
            terminalreporter.line(line, **markup)


def _short(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    text = str(report.longrepr or "")
    return text.strip().splitlines()[-1] if text.strip() else report.outcome
