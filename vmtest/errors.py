"""One exception family. Every error says what went wrong and what to do next."""

from __future__ import annotations


class VmtestError(Exception):
    """Base of every error vmtest raises on purpose.

    ``hint`` tells the user what to do next; ``str()`` joins both so that a CLI or a
    pytest usage error can print it as it is.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  hint: {hint}")


class ConfigError(VmtestError):
    """The user's input (an option, a URI, a file) is wrong: a usage error."""


class InvalidURIError(ConfigError):
    """A store URI that cannot be parsed, or names an unknown scheme."""


class MissingDriverError(ConfigError):
    """The store's Python driver is not installed."""

    def __init__(self, scheme: str, module: str, extra: str) -> None:
        super().__init__(
            f"the {scheme}:// store needs the Python package {module!r}, which is not installed",
            hint=f"pip install 'vmtest[{extra}]'",
        )


class StoreNotFoundError(ConfigError):
    """The URI points at a collection, table or file that does not exist."""


class StoreUnreachableError(VmtestError):
    """A server could not be reached, or stopped answering (every call has a timeout)."""


class SchemaMismatchError(VmtestError):
    """An existing target's dimension or metric differs from what the source needs."""


class MigrationError(VmtestError):
    """A migration could not go on; nothing it reported as done was lost."""
