"""Property: every migration between supported stores either round-trips awkward records
exactly (every fidelity check passes) or refuses with a clear error before writing anything.
Never a silent change."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support import fresh_uri
from vmtest.checks.fidelity import check_documents, check_ids, check_metadata, check_vectors
from vmtest.errors import MigrationError
from vmtest.matching import Matching, align, read_snapshot
from vmtest.migrate import migrate
from vmtest.provision import kinds
from vmtest.stores import CollectionSpec, RecordBatch, open_store

TARGETS = kinds("process")

ids = st.one_of(
    st.integers(min_value=0, max_value=2**53),
    st.sampled_from(["007", "7", "0", "-1", "1e3", " 7", "NaN", ""]),
    st.text(min_size=1, max_size=80),
    st.uuids().map(str),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3)),
    max_leaves=6,
)
flat = st.one_of(  # what every store holds: half the examples stay within it
    st.booleans(), st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
)
metadata = st.one_of(
    st.dictionaries(st.text(min_size=1, max_size=12), flat, max_size=4),
    st.dictionaries(st.text(min_size=1, max_size=12), values, max_size=4),
)
records = st.lists(
    st.tuples(
        ids,
        metadata,
        st.one_of(st.none(), st.just(""), st.text(max_size=60), st.just("nul \x00 inside")),
    ),
    min_size=1, max_size=12,
)


def _absent(target_uri: str) -> bool:
    """Nothing was written: opening the target finds no store (no file, no folder that holds
    one, no collection or table)."""
    from vmtest.errors import StoreNotFoundError

    try:
        open_store(target_uri).close()
    except StoreNotFoundError:
        return True
    return False


@pytest.mark.parametrize("kind", TARGETS)
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=records, seed=st.integers(0, 2**16))
def test_migration_round_trips_or_refuses_before_writing(request, kind, rows, seed):
    directory = Path(tempfile.mkdtemp(prefix="vmtest-prop-"))
    try:
        rng = np.random.default_rng(seed)
        vectors = rng.normal(size=(len(rows), 4)).astype(np.float32)
        batch = RecordBatch([r[0] for r in rows], vectors, [r[1] for r in rows],
                            [r[2] for r in rows])
        source_uri = f"jsonl://{directory}/src.jsonl"
        with open_store(source_uri, create=CollectionSpec(4, "l2")) as src:
            src.upsert(batch)
        # a name every store takes (Chroma wants [a-zA-Z0-9._-], alphanumeric at both ends)
        target_uri = fresh_uri(request, kind, directory / "target", f"p{seed}x{len(rows)}"
                               f"{directory.name[-6:].replace('_', 'u')}z")
        with open_store(source_uri) as src:
            try:
                migrate(src, target_uri)
            except MigrationError as exc:
                event(f"refused: {str(exc).split(':')[0][:40]}")
                assert "nothing was written" in str(exc)
                assert _absent(target_uri), f"{kind}: refused but wrote: {exc}"
                return
            with open_store(target_uri) as tgt:
                s = read_snapshot(src, Matching())
                t = read_snapshot(tgt, Matching())
                # floats within the target's declared rounding are copied and counted (a
                # warning), never a failure; beyond it they fail
                ulps = tgt.float_rounding_ulps(tgt.uri)
        al = align(s, t)
        results = [
            check_ids(al),
            check_vectors(al.keys, s.vectors[al.source_idx], t.vectors[al.target_idx]),
            check_metadata(al.keys, [s.metadatas[i] for i in al.source_idx],
                           [t.metadatas[i] for i in al.target_idx], float_ulps=ulps),
            check_documents(al.keys, [s.documents[i] for i in al.source_idx],
                            [t.documents[i] for i in al.target_idx]),
        ]
        event("migrated")
        failed = [r.explain() for r in results if not r.passed]
        assert not failed, "\n".join(failed)
        # every source record arrived and was compared: the checks above did not pass on
        # fewer records than were migrated
        assert al.matched == len(rows) == len(t.keys)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
