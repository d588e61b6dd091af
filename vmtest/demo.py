"""The quick start's main job, on embedded stores: build an example Chroma store, migrate it
into a local Qdrant folder with the runner, validate the migration, write the reports."""

from __future__ import annotations

import shutil
from pathlib import Path

from vmtest.datasets import clustered
from vmtest.migrate import copy_store
from vmtest.stores import CollectionSpec, open_store


def build_example_source(uri: str, *, size: int, dimension: int, seed: int = 0) -> None:
    batch = clustered(size, dimension, seed=seed)
    with open_store(uri, create=CollectionSpec(dimension, "cosine")) as store:
        for start in range(0, size, 1000):
            store.upsert(batch.take(range(start, min(start + 1000, size))))


def run_demo(directory: Path, *, size: int, dimension: int, extra: list[str]) -> int:
    import pytest

    directory = directory.resolve()
    work = directory / "demo"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    source = f"chroma://{work}/chroma?collection=docs"
    target = f"qdrant://{work}/qdrant?collection=docs"
    print(f"building the example source: {size} x {dimension} clustered embeddings in {source}")
    build_example_source(source, size=size, dimension=dimension)
    with open_store(source) as src:
        report = copy_store(src, target)
    print(f"migrated {report.copied} records into {target} ({report.rate:,.0f} records/s)")
    return int(pytest.main([
        f"--source={source}", f"--target={target}",
        f"--junitxml={directory / 'junit.xml'}",
        f"--vmtest-json={directory / 'vmtest.json'}",
        f"--vmtest-html={directory / 'vmtest.html'}",
        "--vmtest-filter-field=topic",
        *extra,
    ]))
