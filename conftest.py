"""Repository-level conftest: only what the project's own tests need."""

pytest_plugins = ["pytester"]
