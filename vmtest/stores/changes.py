"""A store's change feed: the ids of the records written or deleted since a position.

``vmtest sync`` re-checks only those keys after its first generation, so a generation costs in
proportion to the changes, not to the store. A store that has a feed returns one from
:meth:`VectorStore.change_feed`; the others raise :class:`ChangeFeedUnavailable` and sync
reads both stores' digests every generation instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from vmtest.errors import ConfigError
from vmtest.stores.base import RecordId


class ChangeFeedUnavailable(ConfigError):
    """This store, or this server's configuration, offers no change feed (the message says
    why: no such ability, wal_level is not logical, no privilege...)."""


class ChangeFeed(ABC):
    """Changes since the last confirmed position, held by the store's server (a
    PostgreSQL replication slot) so that a sync killed and restarted misses none."""

    #: The feed's name on the server (a sync resumed with it reuses the feed).
    name: str
    #: Whether the feed already existed (a resumed sync): it then holds every change since
    #: the last confirmed position, and the first generation may use it.
    resumed: bool = False
    #: What the feed is, for the report ("PostgreSQL logical decoding, slot vmtest_...").
    description: str = ""

    @abstractmethod
    def changes(self) -> tuple[list[RecordId] | None, Any]:
        """The ids written or deleted since the confirmed position, up to now, and the
        position to confirm once they have been dealt with. Reading does not consume. None
        for the ids: the feed cannot say which (a TRUNCATE): compare every record."""

    @abstractmethod
    def confirm(self, position: Any) -> None:
        """Everything up to ``position`` has been dealt with: the server may let it go."""

    @abstractmethod
    def drop(self) -> None:
        """Remove the feed from the server (a replication slot left behind keeps WAL)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection; the feed stays on the server unless dropped."""
