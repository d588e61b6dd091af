"""Repository-level conftest: only what the project's own tests need (pytester is enabled
with ``-p pytester`` in pyproject.toml, so this file stays harmless when the suite is run
from a checkout by a path)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a test that takes more than a few seconds")
    config.addinivalue_line("markers", "every_plugin: the pytest processes the test starts "
                            "load every installed plugin (tests/conftest.py: UNUSED_PLUGINS)")
