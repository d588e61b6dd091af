"""One exception family. Every error says what went wrong and what to do next."""

from __future__ import annotations


class VmtestError(Exception):
    """Base of every error vmtest raises on purpose.

    ``hint`` tells the user what to do next; ``str()`` joins both on one line (a CI log
    shows it whole), so that a CLI or a pytest usage error can print it as it is.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = one_line(message)
        self.hint = one_line(hint) if hint else hint
        super().__init__(self.message if not self.hint else f"{self.message} (hint: {self.hint})")


def one_line(text: str, limit: int = 400) -> str:
    """A message folded onto one line and cut to ``limit`` characters: a driver's error can
    span pages (a gRPC status, a server's stack) and a person needs its gist."""
    folded = " ".join(str(text).split())
    return folded if len(folded) <= limit else folded[: limit - 3] + "..."


#: Exit codes, the same through pytest and every subcommand of ``vmtest``: 0 the checks and
#: gates passed; 1 a check or a gate failed; 4 a usage error (a bad option or URI, a store
#: that cannot be opened); 2 interrupted, as pytest does.
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE = 0, 1, 2, 4


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


class NativeCopyFailed(MigrationError):
    """A store's own whole-collection copy was tried and failed, leaving nothing behind: the
    runner copies record by record instead and says why."""


class PlanRefusedError(MigrationError):
    """The plan found that the migration would lose or change data: refused before writing.
    A gate that failed, not a usage error: exit 1."""
