"""The fixtures of the vmtest plugin. Each is small and can be overridden in a conftest.py;
``pytest --fixtures`` shows their docstrings."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from vmtest.checks.result import FAILED, NOT_APPLICABLE, CheckResult
from vmtest.compare import Comparison
from vmtest.settings import Settings
from vmtest.state import state_of
from vmtest.stores.base import Inventory, VectorStore

RESULT_PROPERTY = "vmtest.result"


@pytest.fixture(scope="session")
def vmtest_settings(pytestconfig: pytest.Config) -> Settings:
    """The resolved vmtest options (command line, then VMTEST_* environment, then ini)."""
    return state_of(pytestconfig).settings


@pytest.fixture(scope="session")
def vmtest_comparison(pytestconfig: pytest.Config) -> Comparison:
    """Both stores, read once per session and matched by id; every check reads from it."""
    comparison = state_of(pytestconfig).comparison
    if comparison is None:
        raise pytest.UsageError(
            "this test needs --source=URI and --target=URI (the stores to compare)"
        )
    return comparison


@pytest.fixture(scope="session")
def source_store(vmtest_comparison: Comparison) -> VectorStore:
    """The opened source store (a vmtest VectorStore: count, iter_batches, fetch, search)."""
    return vmtest_comparison.source_store


@pytest.fixture(scope="session")
def target_store(vmtest_comparison: Comparison) -> VectorStore:
    """The opened target store."""
    return vmtest_comparison.target_store


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
    """Record a CheckResult (its figures become JUnit properties and land in the JSON and
    HTML reports) and fail the test, with the offending records listed, when it failed; a
    check with nothing to compare is skipped with its reason (never a pass)."""

    def record_property(name: str, value: Any) -> None:
        # user_properties directly, as record_property does, without its warning under the
        # default junit_family: pytest's JUnit writer emits them whatever the family.
        request.node.user_properties.append((name, value))

    def check(result: CheckResult) -> None:
        for key, value in result.figures.items():
            if isinstance(value, (int, float, str, bool)) or value is None:
                record_property(f"vmtest.{result.name}.{key}", value)
        for key, value in result.thresholds.items():
            record_property(f"vmtest.{result.name}.threshold.{key}", value)
        record_property(RESULT_PROPERTY, json.dumps(result.to_dict(), default=str))
        if result.status == FAILED:
            pytest.fail(result.explain(), pytrace=False)
        if result.status == NOT_APPLICABLE:
            pytest.skip(result.summary)

    return check
