"""Helpers shared by vmtest's own tests: build real stores, run the suite as a user does."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from vmtest.migrate import copy_store
from vmtest.stores import CollectionSpec, RecordBatch, open_store

#: The fidelity checks and the schema check; the search checks have their own tests.
FIDELITY = ("-m", "not latency", "-k", "not recall")
#: Plugins installed here that the suite does not use: left out of the suite's subprocess
#: runs, they save about 3 of a run's 10 seconds (hypothesis alone imports for 1.3 s);
#: test_plugin.py runs the suite with every plugin loaded.
QUIET = tuple(arg for name in ("randomly", "hypothesispytest", "benchmark", "html", "anyio",
                               "metadata") for arg in ("-p", f"no:{name}"))


def build_chroma(path: Path, batch: RecordBatch, metric: str = "cosine") -> str:
    uri = f"chroma://{path}?collection=docs"
    with open_store(uri, create=CollectionSpec(batch.vectors.shape[1], metric)) as store:
        store.upsert(batch)
    return uri



def run_suite(pytester: pytest.Pytester, source: str, target: str, *args: str,
              select: Sequence[str] = FIDELITY, quiet: bool = True):
    """Run the suite in a subprocess as a user would; return the result and the JSON report.
    ``quiet`` leaves out the plugins the suite does not use (:data:`QUIET`)."""
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        f"--source={source}", f"--target={target}", f"--vmtest-json={report}",
        "--vmtest-html=none", *select, *(QUIET if quiet else ()), *args,
    )
    data = json.loads(report.read_text()) if report.exists() else None
    return result, data


def failed_checks(data: dict) -> set[str]:
    return {c["name"] for c in data["checks"] if c["status"] in ("failed", "error")}


def qdrant_copy(source: str, tmp: Path, transform: Callable[[RecordBatch], RecordBatch] | None
                = None, **kwargs) -> str:
    target = f"qdrant://{tmp}/qdrant?collection=docs"
    with open_store(source) as src:
        copy_store(src, target, batch_size=128, transform=transform, **kwargs)
    return target


