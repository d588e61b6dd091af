"""The migration's fast paths give the answers of the slow ones they replace: the float
rounding rule, UUID text, UUIDv5 ids, metadata verdicts remembered per field and type, the
gRPC encoding of vectors, and writes over gRPC and REST alike. Speed itself is measured by
benchmarks/peers.py, never asserted here."""

from __future__ import annotations

import math
import uuid
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmtest.errors import MigrationError
from vmtest.migrate.mapping import NAMESPACE, MetadataPolicy, uuid5_text
from vmtest.migrate.runner import Written, write_in_order
from vmtest.stores import CollectionSpec, RecordBatch, open_store
from vmtest.stores.base import float_at_risk, is_uuid
from vmtest.stores.chroma import ChromaStore
from vmtest.stores.qdrant import QdrantStore, _vectors_messages
from vmtest.uri import parse


def float_at_risk_by_decimal(value: float) -> bool:
    """The rule as first written (Decimal(repr(x)) per float), the reference."""
    if not math.isfinite(value) or value == 0.0:
        return False
    _, digits, exponent = Decimal(repr(value)).as_tuple()
    significant = len(str(int("".join(map(str, digits)))).rstrip("0"))
    exponent = int(exponent) + len(digits) - significant
    return significant > 15 or not -22 <= exponent <= 22 or abs(value) >= 1e15


@given(st.floats(allow_nan=True, allow_infinity=True))
@settings(max_examples=3000, deadline=None)
def test_float_at_risk_answers_as_the_decimal_rule(value):
    assert float_at_risk(value) == float_at_risk_by_decimal(value)


@pytest.mark.parametrize("value", [
    5e-324, -5e-324, 1e-22, 1e22, 1e23, 1e-23, 123e20, 123e-25, 0.1, -0.1, 1e15, -1e15,
    999999999999999.9, 1.7976931348623157e308, 100.0, 0.001, 1.5e-07, 12345678901234.5,
    0.42451918914251396, 0.4245191891425139, 2.0**53, 1 / 3])
def test_float_at_risk_at_the_edges(value):
    assert float_at_risk(value) == float_at_risk_by_decimal(value)


@given(st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()),
                 st.uuids().map(lambda u: u.hex), st.uuids().map(lambda u: f"{{{u}}}"),
                 st.uuids().map(lambda u: f"urn:uuid:{u}"), st.text(max_size=40),
                 st.uuids().map(lambda u: str(u)[:-1] + "_"),
                 st.uuids().map(lambda u: f"{u}\n")))
@settings(max_examples=1000, deadline=None)
def test_is_uuid_answers_as_parsing_does(text):
    try:
        parsed = str(uuid.UUID(text)) == text.lower()
    except ValueError:
        parsed = False
    assert is_uuid(text) == parsed


@given(st.text(max_size=60))
@settings(max_examples=500, deadline=None)
def test_uuid5_text_is_uuid5(name):
    assert uuid5_text(name) == str(uuid.uuid5(NAMESPACE, name))


flat = st.one_of(st.none(), st.booleans(), st.integers(-(2**60), 2**60),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
values = st.recursive(flat, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(min_size=1, max_size=3), inner,
                                                 max_size=2)), max_leaves=4)
metadatas = st.lists(st.dictionaries(st.sampled_from(["a", "b", "c", "document", "$x"]), values,
                                     max_size=4), max_size=30)


class AskEveryValue:
    """A target that declares nothing: the policy asks it about every value."""

    def __init__(self, cls: type, uri: str) -> None:
        self.uri = parse(uri)
        self.metadata_problem = cls.metadata_problem
        self.metadata_key_problem = cls.metadata_key_problem
        self.rounds_float = cls.rounds_float


@pytest.mark.parametrize("cls, uri", [
    (QdrantStore, "qdrant://127.0.0.1:6333?collection=c"),
    (QdrantStore, "qdrant:///tmp/q?collection=c"),
    (ChromaStore, "chroma:///tmp/c?collection=c"),
])
@given(metas=metadatas)
@settings(max_examples=80, deadline=None)
def test_remembered_verdicts_are_the_verdicts_of_every_value(cls, uri, metas):
    class Declared(AskEveryValue):
        METADATA_VALUE_TYPES = cls.METADATA_VALUE_TYPES

    every, remembered = (MetadataPolicy(AskEveryValue(cls, uri), "json"),  # type: ignore[arg-type]
                         MetadataPolicy(Declared(cls, uri), "json"))  # type: ignore[arg-type]
    for policy in (every, remembered):
        policy.scan(metas)
        policy.scan(metas)  # the second pass answers from what the first remembered
    assert (every.affected, every.reasons, every.rounded, every.bad_keys) == (
        remembered.affected, remembered.reasons, remembered.rounded, remembered.bad_keys)
    assert [outcome(every.apply, m) for m in metas] == [outcome(remembered.apply, m)
                                                        for m in metas]


def outcome(apply: Any, meta: dict[str, Any]) -> Any:
    """What apply gives, or the refusal it raises (a field name the target reserves)."""
    try:
        return apply(meta)
    except MigrationError as exc:
        return str(exc)


@pytest.mark.parametrize("dim", [1, 15, 16, 17, 384, 768, 40000])
@pytest.mark.parametrize("name", [None, "v", "a-long-vector-name" * 10])
def test_vectors_as_bytes_are_what_qdrant_client_encodes(dim, name):
    from qdrant_client import grpc
    from qdrant_client.conversions.conversion import RestToGrpc

    rows = np.random.default_rng(dim).normal(size=(3, dim)).astype(np.float32)
    got = [grpc.Vectors.FromString(m) for m in _vectors_messages(rows, name)]
    want = [RestToGrpc.convert_vector_struct({name: row} if name else row)
            for row in rows.tolist()]
    assert [m.SerializeToString() for m in got] == [m.SerializeToString() for m in want]


@pytest.mark.parametrize("grpc_port", [True, False])
def test_a_qdrant_server_holds_what_was_written_over_grpc_or_rest(qdrant_server, dataset,
                                                                 grpc_port, request):
    name = f"fast_{grpc_port}_{request.node.name[-8:].replace(']', '')}"
    uri = qdrant_server.uri(name)
    if not grpc_port:
        uri = f"qdrant://127.0.0.1:{qdrant_server.port}?collection={name}"
    ids = [str(uuid.uuid5(NAMESPACE, str(i))) for i in dataset.ids[:100]] + list(range(100))
    batch = RecordBatch(ids, dataset.vectors[:200], [dict(m, deep={"x": [1, 2.5, None]})
                                                     for m in dataset.metadatas[:200]],
                        [None] * 200)
    with open_store(uri, create=CollectionSpec(dataset.vectors.shape[1], "ip")) as store:
        assert isinstance(store, QdrantStore) and store.grpc_writes == grpc_port
        store.upsert(batch)
        # an integer gRPC cannot carry: that batch goes over REST (the server keeps a float)
        store.upsert(RecordBatch([0], batch.vectors[100:101], [{"big": 2**70}], [None]))
        got = store.fetch(ids)
    by_id: dict[Any, int] = {rid: i for i, rid in enumerate(got.ids)}
    assert len(by_id) == 200
    for i, rid in enumerate(ids):
        j = by_id[rid]
        assert np.array_equal(got.vectors[j], batch.vectors[i])
        if rid == 0:  # the server parses floats the fast, inexact way (docs/stores.md)
            assert got.metadatas[j]["big"] == pytest.approx(2**70, rel=1e-15)
        else:
            assert got.metadatas[j] == batch.metadatas[i]


def batches(count: int):
    return (RecordBatch([str(i)], np.zeros((1, 2), np.float32), [{}], [None])
            for i in range(count))


def test_no_batch_behind_a_failed_one_is_written():
    written: list[str] = []

    def write(batch: RecordBatch) -> Written:
        if batch.ids[0] == "2":
            raise RuntimeError("refused")
        written.append(str(batch.ids[0]))
        return Written(1, str(batch.ids[0]), 0)

    with pytest.raises(RuntimeError, match="refused"):
        write_in_order(batches(8), write, lambda w: None, workers=1)
    assert written == ["0", "1"]  # "3", read ahead, was not written


def test_the_first_failure_in_source_order_is_the_one_raised():
    def write(batch: RecordBatch) -> Written:
        if batch.ids[0] == "1":
            raise ValueError("the first failure")
        return Written(1, str(batch.ids[0]), 0)

    acknowledged: list[Written] = []
    with pytest.raises(ValueError, match="the first failure"):
        write_in_order(batches(10), write, acknowledged.append, workers=2)
    assert [w.last_id for w in acknowledged] == ["0"]
