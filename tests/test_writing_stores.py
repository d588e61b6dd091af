"""docs/writing-stores.md walks through adding a store; this runs its example as written: the
code block becomes a module, one registry line registers it, and the store is migrated into,
provisioned, and validated by the suite, faithful and with a record lost."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_matrix import run
from vmtest import stores
from vmtest.migrate import copy_store
from vmtest.stores import RecordBatch, open_store

DOC = Path(__file__).parent.parent / "docs" / "writing-stores.md"


@pytest.fixture
def npz_registered(tmp_path, monkeypatch):
    """The documented module, written out and registered under npz:// (the one registry
    line of the walk-through)."""
    text = DOC.read_text()
    code = re.search(r"## The module.*?```python\n(.*?)```", text, re.S)
    assert code is not None, "the walk-through's code block is gone"
    package = tmp_path / "example"
    package.mkdir()
    (package / "npz_store.py").write_text(code.group(1))
    monkeypatch.syspath_prepend(str(package))
    monkeypatch.setitem(stores.BUILTIN, "npz", "npz_store:NpzStore")
    return tmp_path


def test_the_documented_store_migrates_and_validates(npz_registered, chroma_source):
    target = f"npz://{npz_registered}/copy.npz?metric=cosine"
    with open_store(chroma_source) as src:
        copy_store(src, target)
    code, report = run(npz_registered, chroma_source, target)
    assert code == 0, [c["summary"] for c in report["checks"] if c["status"] != "passed"]
    assert report["target"]["kind"] == "npz"

    def lose_one(batch: RecordBatch) -> RecordBatch:
        return batch.take([i for i, m in enumerate(batch.metadatas)
                           if m.get("original_id", batch.ids[i]) != "doc-000003"])

    broken = f"npz://{npz_registered}/broken.npz?metric=cosine"
    with open_store(chroma_source) as src:
        copy_store(src, broken, transform=lose_one)
    code, report = run(npz_registered, chroma_source, broken)
    assert code == 1
    ids = next(c for c in report["checks"] if c["name"] == "ids")
    assert ids["offenders"][0]["id"] == "doc-000003"


def test_the_documented_store_is_provisioned_by_its_own_recipe(npz_registered):
    from vmtest.provision import kinds, provision

    assert "npz" in kinds("process")
    with provision("npz") as uri:
        assert uri.startswith("npz://") and uri.endswith(".npz?metric=cosine")
    from vmtest.errors import StoreNotFoundError

    with pytest.raises(StoreNotFoundError, match="does not exist"):
        open_store(f"npz://{npz_registered}/nope.npz")
