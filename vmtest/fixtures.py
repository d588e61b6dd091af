"""The fixtures of the vmtest plugin. Each is small and can be overridden in a conftest.py;
``pytest --fixtures`` shows their docstrings.

The stores are opened here, by session fixtures, only when a test asks for them: collecting
(``--collect-only``) opens nothing and migrates nothing, and a conftest.py that overrides
``vmtest_source_store`` or ``vmtest_target_store`` decides how a store is reached. Under
pytest-xdist the suite runs as one group on one worker, so each store is read once per run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from vmtest.checks.result import FAILED, NOT_APPLICABLE, CheckResult
from vmtest.errors import ConfigError, VmtestError
from vmtest.settings import Settings
from vmtest.state import RESULT_KEY, state_of

if TYPE_CHECKING:
    from vmtest.compare import Comparison
    from vmtest.stores.base import Inventory, VectorStore
    from vmtest.uri import StoreURI


@pytest.fixture(scope="session")
def vmtest_settings(pytestconfig: pytest.Config) -> Settings:
    """The resolved vmtest options (command line, then VMTEST_* environment, then ini)."""
    return state_of(pytestconfig).settings


def _needs(settings: Settings, what: str) -> None:
    if not settings.validating:
        raise pytest.UsageError(f"this test needs {what} (pytest --source=URI --target=URI)")


@contextlib.contextmanager
def _opened(option: str, uri: StoreURI | str) -> Iterator[VectorStore]:
    from vmtest.stores import open_store

    try:
        store = open_store(uri)
    except VmtestError as exc:  # named by the option it came from, as a usage error
        raise ConfigError(f"{option}={uri}: {exc.message}", hint=exc.hint) from None
    with store:
        yield store


@pytest.fixture(scope="session")
def vmtest_source_store(vmtest_settings: Settings) -> Iterator[VectorStore]:
    """The store migrated from (--source), opened once per session and closed at its end."""
    _needs(vmtest_settings, "--source")
    assert vmtest_settings.source is not None
    with _opened("--source", vmtest_settings.source) as store:
        yield store


@pytest.fixture(scope="session")
def vmtest_target_uri(pytestconfig: pytest.Config, vmtest_settings: Settings,
                      vmtest_source_store: VectorStore) -> Iterator[StoreURI | str]:
    """The URI of the store migrated to: --target, or with --migrate-to=KIND a fresh store of
    that kind, provisioned and filled by the migration runner once per run (and removed
    afterwards)."""
    _needs(vmtest_settings, "--target")
    if vmtest_settings.target is not None:
        yield vmtest_settings.target
        return
    from vmtest.migrate import migrate
    from vmtest.provision import provision

    assert vmtest_settings.migrate_to is not None
    with provision(vmtest_settings.migrate_to, provider=vmtest_settings.provision,
                   images=dict(vmtest_settings.container_image or ())) as uri:
        report = migrate(vmtest_source_store, uri)
        reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"vmtest: migrated {report.copied} records into {uri} "
                                f"({report.rate:,.0f} records/s)")
        yield uri


@pytest.fixture(scope="session")
def vmtest_target_store(vmtest_target_uri: StoreURI | str) -> Iterator[VectorStore]:
    """The store migrated to, opened once per session and closed at its end."""
    with _opened("--target", vmtest_target_uri) as store:
        yield store


@pytest.fixture(scope="session")
def vmtest_documents_store(vmtest_settings: Settings) -> Iterator[VectorStore]:
    """The document store of the target's system (--vmtest-documents), opened once per
    session: the references check reads its ids."""
    if vmtest_settings.documents is None:
        raise pytest.UsageError("this test needs --vmtest-documents=URI")
    with _opened("--vmtest-documents", vmtest_settings.documents) as store:
        yield store


@pytest.fixture(scope="session")
def vmtest_source_documents_store(vmtest_settings: Settings) -> Iterator[VectorStore | None]:
    """The document store of the source's system (--vmtest-source-documents), opened once per
    session; None when not given (the references check then judges the target alone)."""
    if vmtest_settings.source_documents is None:
        yield None
        return
    with _opened("--vmtest-source-documents", vmtest_settings.source_documents) as store:
        yield store


@pytest.fixture(scope="session")
def vmtest_comparison(vmtest_source_store: VectorStore, vmtest_target_store: VectorStore,
                      vmtest_settings: Settings) -> Iterator[Comparison]:
    """Both stores, read once per session and matched by id; every check reads from it."""
    from vmtest.compare import Comparison

    comparison = Comparison(vmtest_source_store, vmtest_target_store, vmtest_settings)
    try:
        yield comparison
    finally:
        comparison.close()  # the spill folder, if the comparison spilled


@pytest.fixture(scope="session")
def source_store(vmtest_source_store: VectorStore) -> VectorStore:
    """The opened source store (a vmtest VectorStore: count, iter_batches, fetch, search);
    the same as vmtest_source_store."""
    return vmtest_source_store


@pytest.fixture(scope="session")
def target_store(vmtest_target_store: VectorStore) -> VectorStore:
    """The opened target store; the same as vmtest_target_store."""
    return vmtest_target_store


@pytest.fixture(scope="session")
def source_inventory(vmtest_comparison: Comparison) -> Inventory:
    """What the source says about itself: count, dimension, metric, dtype, index."""
    return vmtest_comparison.source_inventory


@pytest.fixture(scope="session")
def target_inventory(vmtest_comparison: Comparison) -> Inventory:
    """What the target says about itself."""
    return vmtest_comparison.target_inventory


@pytest.fixture
def vmtest_check(request: pytest.FixtureRequest) -> Callable[[CheckResult], None]:
    """Record a CheckResult (it rides on the test's report to the JSON and HTML reports and,
    as properties, to JUnit) and fail the test, with the offending records listed, when it
    failed; a check with nothing to compare is skipped with its reason (never a pass)."""

    def check(result: CheckResult) -> None:
        request.node.stash[RESULT_KEY] = result.to_dict()
        if result.status == FAILED:
            pytest.fail(result.explain(), pytrace=False)
        if result.status == NOT_APPLICABLE:
            pytest.skip(result.summary)

    return check
