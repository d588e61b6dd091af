"""The migration runner: plan, then copy in streaming batches with explicit id and metadata
mapping, checkpoints, parallel writers and retries."""

from __future__ import annotations

from vmtest.migrate.mapping import IdMapper, MetadataPolicy
from vmtest.migrate.runner import (
    MigrationOptions,
    MigrationReport,
    Plan,
    copy_store,
    default_state_path,
    make_plan,
    migrate,
)

__all__ = [
    "IdMapper",
    "MetadataPolicy",
    "MigrationOptions",
    "MigrationReport",
    "Plan",
    "copy_store",
    "default_state_path",
    "make_plan",
    "migrate",
]
