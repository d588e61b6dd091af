"""Copy one store into another in streaming batches (the runner's core)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vmtest.errors import MigrationError
from vmtest.matching import DEFAULT_DOCUMENT_FIELD
from vmtest.migrate.mapping import IdMapper, MetadataPolicy, map_batch
from vmtest.stores import CollectionSpec, VectorStore, open_store
from vmtest.stores.base import RecordBatch
from vmtest.uri import StoreURI

Transform = Callable[[RecordBatch], RecordBatch]


@dataclass
class CopyReport:
    source: str
    target: str
    copied: int = 0
    batches: int = 0
    seconds: float = 0.0
    affected_fields: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.copied / self.seconds if self.seconds else 0.0


def target_spec(source: VectorStore, *, metric: str | None = None) -> CollectionSpec:
    inv = source.describe()
    if inv.dimension is None or (metric or inv.metric) is None:
        raise MigrationError(
            f"the source {source.uri} does not say its dimension and metric",
            hint="give the file store its metric in the URI: ?metric=cosine (or l2, ip)",
        )
    return CollectionSpec(dimension=inv.dimension, metric=metric or inv.metric or "l2",
                          dtype=inv.dtype or "float32")


def copy_store(
    source: VectorStore,
    target: str | StoreURI,
    *,
    batch_size: int = 1000,
    on_unsupported: str = "error",
    document_field: str = DEFAULT_DOCUMENT_FIELD,
    metric: str | None = None,
    transform: Transform | None = None,
    progress: Callable[[int], object] | None = None,
) -> CopyReport:
    """Copy every record of ``source`` into the store ``target`` names (created from the
    source's shape when it does not exist). Metadata the target cannot hold is found by a scan
    before anything is written. ``transform`` rewrites each mapped batch before it is written
    (the tests use it to corrupt a copy on purpose)."""
    started = time.perf_counter()
    spec = target_spec(source, metric=metric)
    with open_store(target, create=spec) as dest:
        report = CopyReport(source=str(source.uri), target=str(dest.uri))
        ids = IdMapper(dest)
        policy = MetadataPolicy(dest, on_unsupported)
        for batch in source.iter_batches(batch_size, with_vectors=False):
            policy.scan(batch.metadatas)
        report.affected_fields = dict(policy.affected)
        if policy.affected and on_unsupported == "error":
            raise MigrationError(
                f"the target {dest.uri} cannot hold these metadata fields: "
                + ", ".join(f"{k} ({n} records)" for k, n in sorted(policy.affected.items())),
                hint="nothing was written; choose --on-unsupported=json or drop",
            )
        for batch in source.iter_batches(batch_size):
            mapped = map_batch(batch, source, ids, policy, document_field)
            if transform is not None:
                mapped = transform(mapped)
            dest.upsert(mapped)
            report.copied += len(mapped)
            report.batches += 1
            if progress is not None:
                progress(len(mapped))
    report.seconds = time.perf_counter() - started
    return report
