"""The migration runner: plan, then copy in streaming batches with explicit id and metadata
mapping."""

from __future__ import annotations

from vmtest.migrate.copy import CopyReport, copy_store
from vmtest.migrate.mapping import IdMapper, MetadataPolicy

__all__ = ["CopyReport", "IdMapper", "MetadataPolicy", "copy_store"]
