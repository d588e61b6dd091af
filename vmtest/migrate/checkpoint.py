"""The runner's checkpoint: how far a migration got, written atomically as batches are
acknowledged (after each one into an append-only target; at most once a second into one that
takes a batch written twice as once), so that the same command run again continues where it
stopped.

Progress is counted in source records (not batches), so the batch size and the number of
workers may change between runs. Append-only targets also record their write position, which
is rewound on resume: a batch that half-landed before a crash is neither lost nor doubled.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vmtest.errors import MigrationError

VERSION = 1


@dataclass
class Checkpoint:
    source: str
    target: str
    options: dict[str, Any]
    source_count: int
    done: int = 0
    last_id: str | None = None
    #: The target's id of the last record written: a resume first checks the target holds it.
    last_target_id: Any = None
    target_position: Any = None
    finished: bool = False
    version: int = VERSION
    history: list[dict[str, Any]] = field(default_factory=list)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(asdict(self), fh, indent=1, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')}")
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise MigrationError(
                f"the state file {path} cannot be read ({exc})",
                hint="remove it, or pass --restart to begin again",
            ) from exc

    def belongs_to(self, source: str, target: str, options: dict[str, Any]) -> bool:
        return (self.source, self.target, self.options) == (source, target, options)
