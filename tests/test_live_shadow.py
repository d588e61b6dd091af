"""Shadow reads and warm-up on real stores: a Qdrant server holding the same 3,000 records
three times, once under the source's HNSW index, once under an identical one, and once under
a degraded one (m=4, ef_construct=8, int8 scalar quantisation) that keeps every record, vector
and payload exactly: fidelity cannot tell it apart, the replayed queries can."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.support import QUIET, MemoryStore, failed_checks, run_suite
from vmtest.checks.shadow import ShadowOutcome, check_shadow, rank_biased_overlap
from vmtest.datasets import clustered
from vmtest.embed import hashing
from vmtest.errors import ConfigError
from vmtest.live.shadow import (
    load_query_log,
    most_frequent,
    replay,
    shadow,
    warm_up,
)
from vmtest.matching import Matching
from vmtest.migrate import copy_store
from vmtest.side import Side
from vmtest.stores import RecordBatch, open_store

N, DIM = 3000, 64


def vmtest(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmtest.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def hnsw_collection(server, name: str, batch: RecordBatch, *, m: int, ef_construct: int,
                    int8: bool = False) -> str:
    """A collection on the Qdrant server with this HNSW index, holding the batch (copied by
    vmtest's runner: ids as UUIDs, the source id in ``original_id``), once it is indexed.

    ``indexing_threshold=1`` (kB) makes Qdrant build the HNSW graph at this size (0 would
    switch indexing off, and the default keeps small segments in a plain, exact index);
    ``full_scan_threshold=10`` keeps filtered searches on the graph too."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(host="127.0.0.1", port=server.port, grpc_port=server.grpc_port,
                          check_compatibility=False)
    try:
        client.create_collection(
            name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
            hnsw_config=models.HnswConfigDiff(m=m, ef_construct=ef_construct,
                                              full_scan_threshold=10),
            optimizers_config=models.OptimizersConfigDiff(indexing_threshold=1),
            quantization_config=models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
                type=models.ScalarType.INT8, always_ram=True)) if int8 else None)
        uri = server.uri(name)
        copy_store(MemoryStore.holding(batch), uri, batch_size=500)
        deadline = time.monotonic() + 120
        while True:
            info = client.get_collection(name)
            if info.status == models.CollectionStatus.GREEN and \
                    (info.indexed_vectors_count or 0) >= len(batch):
                return uri
            if time.monotonic() > deadline:
                pytest.fail(f"{name} was not indexed in 120 s: {info.status}, "
                            f"{info.indexed_vectors_count} of {len(batch)} vectors indexed")
            time.sleep(0.1)
    finally:
        client.close()


@pytest.fixture(scope="module")
def data() -> RecordBatch:
    return clustered(N, DIM, seed=11)


@pytest.fixture(scope="module")
def stores(qdrant_server, data) -> dict[str, str]:
    """The source (m=16, ef_construct=100), an identical copy, and a degraded copy."""
    run = uuid.uuid4().hex[:8]
    return {
        "source": hnsw_collection(qdrant_server, f"shadow_src_{run}", data, m=16,
                                  ef_construct=100),
        "same": hnsw_collection(qdrant_server, f"shadow_same_{run}", data, m=16,
                                ef_construct=100),
        "degraded": hnsw_collection(qdrant_server, f"shadow_bad_{run}", data, m=4,
                                    ef_construct=8, int8=True),
    }


def write_log(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def query_log(tmp_path_factory, data) -> Path:
    """100 queries near stored records (some filtered, with their own k), the first 20 of
    them asked three times (warm-up replays the most frequent first): 140 lines."""
    rng = np.random.default_rng(5)
    rows: list[dict] = []
    for i, row in enumerate(rng.choice(N, 100, replace=False)):
        vector = data.vectors[row] + rng.normal(size=DIM).astype(np.float32) * 0.05
        query: dict = {"vector": [round(float(x), 6) for x in vector], "user": f"u-{i % 17}"}
        if i % 10 == 0:
            query.update(filter={"topic": data.metadatas[row]["topic"]}, k=5)
        rows += [query] * (3 if i < 20 else 1)
    return write_log(tmp_path_factory.mktemp("shadow") / "queries.jsonl", rows)


# -- the verdict ---------------------------------------------------------------------------

def test_an_identical_copy_passes_at_its_noise_floor(stores, query_log, tmp_path):
    """The same records under the same index settings, warmed up first."""
    started = time.perf_counter()
    report = tmp_path / "shadow.json"
    done = vmtest("shadow", f"--source={stores['source']}", f"--target={stores['same']}",
                  f"--query-log={query_log}", f"--json={report}", "--warm-up",
                  "--warm-up-rounds=4")
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(report.read_text())
    figures = document["check"]["figures"]
    print(f"identical copy: noise floor {figures['overlap_noise_floor']}, overlap "
          f"{figures['overlap']}, drop CI {figures['overlap_drop_ci_low']}-"
          f"{figures['overlap_drop_ci_high']} ({time.perf_counter() - started:.1f} s)")
    assert figures["decision"] == "pass" and figures["queries"] == 140
    assert figures["overlap_drop_ci_high"] <= 0.02
    assert figures["candidate_errors"] == figures["source_errors"] == 0
    assert figures["target_p99_ms"] > 0 and figures["source_p99_ms"] > 0
    assert "SHADOW READS: PASSED" in done.stdout.splitlines()[-1]
    warm = document["warm_up"]
    assert 1 <= warm["rounds"] <= 4 and warm["cold_p99_ms"] > 0 and warm["warm_p99_ms"] > 0
    first = done.stdout.splitlines()[0]
    assert first.startswith("warm-up: cold p99 ") and " rounds of 100 calls (100 distinct" in first


def test_a_degraded_index_fails_shadow_while_every_fidelity_check_passes(
        pytester, stores, query_log, tmp_path):
    """m=4, ef_construct=8 and int8 quantisation over exactly the same records: ids,
    vectors, metadata and documents pass; the logged queries fail, with the worst ones listed
    by record key on both sides (the target's native ids are UUIDs: the keys come from
    ``original_id``)."""
    report = tmp_path / "shadow.json"
    done = vmtest("shadow", f"--source={stores['source']}", f"--target={stores['degraded']}",
                  f"--query-log={query_log}", f"--json={report}")
    assert done.returncode == 1, done.stdout + done.stderr
    check = json.loads(report.read_text())["check"]
    figures = check["figures"]
    print(f"degraded copy: noise floor {figures['overlap_noise_floor']}, overlap "
          f"{figures['overlap']}, RBO {figures['rbo']}, hit distance "
          f"{figures['distance_delta']:+.4f}")
    assert figures["decision"] == "fail" and figures["overlap_drop_ci_low"] > 0.02
    assert figures["overlap"] < figures["overlap_noise_floor"] - 0.2
    assert figures["distance_delta"] > 0  # the candidate's hits lie further from the queries
    worst = check["offenders"][0]
    assert worst["id"].startswith("line ") and worst["source"] and worst["target"]
    assert all(key.startswith("doc-") for key in worst["source"] + worst["target"])
    assert "worst queries:" in done.stdout and "SHADOW READS: FAILED" in done.stdout

    result, data = run_suite(pytester, stores["source"], stores["degraded"],
                             f"--vmtest-query-log={query_log}", "-W", "error")
    statuses = {c["name"]: c["status"] for c in data["checks"]}
    assert {statuses[name] for name in ("ids", "vectors", "metadata", "documents")} == \
        {"passed"}, statuses
    assert failed_checks(data) == {"shadow"}, statuses
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*DATA FIDELITY*FAITHFUL*", "*SEARCH QUALITY*FAILED*"])


def test_text_queries_are_embedded_once_each(tmp_path, dataset):
    """A log of texts (and a vector for one of them) against two Qdrant folders holding the
    hashing model's embeddings of the documents (exact search: they agree)."""
    embedded = RecordBatch(dataset.ids, hashing([str(d) for d in dataset.documents]),
                           dataset.metadatas, dataset.documents)
    source, target = (f"qdrant://{tmp_path}/{name}?collection=docs" for name in "st")
    for uri in (source, target):
        copy_store(MemoryStore.holding(embedded), uri)
    rows = [{"text": str(doc).split(" (#")[0]} for doc in dataset.documents[:30]]
    rows.append({"vector": [float(x) for x in embedded.vectors[0]], "text": "the first"})
    log = write_log(tmp_path / "texts.jsonl", rows)
    done = vmtest("shadow", f"--source={source}", f"--target={target}", f"--query-log={log}",
                  "--embedder=vmtest.embed:hashing", "--k=5")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "31 logged queries, 31 compared, k=5" in done.stdout
    calls: list[int] = []
    loaded = load_query_log(log, lambda texts: calls.append(len(texts)) or hashing(texts))
    assert calls == [len({r["text"] for r in rows[:30]})]
    assert np.array_equal(loaded.vectors[30], embedded.vectors[0])


# -- usage errors --------------------------------------------------------------------------

@pytest.mark.parametrize(("line", "says"), [
    ('{"vector": [0.1, 0.2}', "line 2 is not JSON"),
    ('["a", "b"]', "line 2 is a JSON list, not an object"),
    ('{"user": "u-1"}', 'line 2 has neither "vector" nor "text"'),
    ('{"vector": [0.1, "x"]}', 'line 2: "vector" must be a non-empty list of finite numbers'),
    ('{"vector": [0.1, 0.2, 0.3]}', "line 2 has a vector of 3 numbers, line 1 one of 2"),
    ('{"text": "refund", "k": 0}', 'line 2: "k" must be a whole number >= 1'),
    ('{"text": "refund", "filter": {"tags": ["a"]}}', "line 2: \"filter\" field 'tags'"),
])
def test_a_malformed_line_is_one_line_and_exit_4(tmp_path, line, says):
    log = tmp_path / "bad.jsonl"
    log.write_text('{"vector": [0.1, 0.2]}\n' + line + "\n")
    target = tmp_path / "never"
    done = vmtest("shadow", f"--source=qdrant://{tmp_path}/src?collection=docs",
                  f"--target=qdrant://{target}?collection=docs", f"--query-log={log}")
    assert done.returncode == 4, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert says in done.stderr and f"--query-log={log}" in done.stderr
    assert not target.exists() and not (tmp_path / "src").exists()


def test_text_queries_without_an_embedder_are_a_usage_error(tmp_path):
    log = write_log(tmp_path / "texts.jsonl", [{"vector": [0.1, 0.2]}, {"text": "refund"},
                                                {"text": "late parcel"}])
    done = vmtest("shadow", f"--source=qdrant://{tmp_path}/a?collection=docs",
                  f"--target=qdrant://{tmp_path}/b?collection=docs", f"--query-log={log}")
    assert done.returncode == 4 and done.stderr.count("\n") == 1, done.stderr
    assert "line 2 and 1 more hold text queries but no embedder was given" in done.stderr
    assert "--embedder=MODULE:CALLABLE" in done.stderr
    with pytest.raises(ConfigError, match="the embedder's vectors have 256 dimensions and "
                       r"the logged vectors \(line 1\) 2"):
        load_query_log(log, "vmtest.embed:hashing")


def test_a_bad_log_given_to_pytest_stops_it_before_any_store_is_opened(
        pytester, chroma_source, tmp_path):
    log = tmp_path / "bad.jsonl"
    log.write_text('{"vector": [0.1]}\n\n{"vector": 0.1}\n')
    result = pytester.runpytest_subprocess(f"--source={chroma_source}",
                                           f"--target={chroma_source}",
                                           f"--vmtest-query-log={log}", *QUIET)
    assert result.ret == 4
    result.stderr.fnmatch_lines([f"ERROR: --vmtest-query-log (command line) = '{log}': line 3:"
                                 ' "vector" must be a non-empty list of finite numbers*'])


def test_text_queries_in_the_suite_need_the_source_embedder(pytester, chroma_source,
                                                            tmp_path):
    log = write_log(tmp_path / "texts.jsonl", [{"text": "refund"}])
    result = pytester.runpytest_subprocess(f"--source={chroma_source}",
                                           f"--target={chroma_source}",
                                           f"--vmtest-query-log={log}", "-k", "shadow", *QUIET)
    assert result.ret == 4
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1 and "line 1 holds a text query but no embedder" in errors[0]
    assert "--vmtest-source-embedder=MODULE:CALLABLE" in errors[0]


def test_the_shadow_check_is_collected_only_with_a_query_log(pytester, chroma_source,
                                                             tmp_path):
    log = write_log(tmp_path / "q.jsonl", [{"vector": [0.0] * 32}])
    args = (f"--source={chroma_source}", f"--target={chroma_source}", "--collect-only", "-q",
            *QUIET)
    without = pytester.runpytest_subprocess(*args)
    given = pytester.runpytest_subprocess(*args, f"--vmtest-query-log={log}")
    assert "test_shadow" not in without.stdout.str()
    given.stdout.fnmatch_lines(["*test_shadow.py::test_shadow*"])


# -- warm-up -------------------------------------------------------------------------------

def test_warm_up_reports_cold_and_warm_p99_within_its_bounds(stores, query_log):
    log = load_query_log(query_log)
    assert most_frequent(log, 3) == [0, 3, 6]  # the queries asked three times come first
    with open_store(stores["degraded"]) as target:
        started = time.perf_counter()
        warm = warm_up(target, log, k=10, top=50, max_rounds=6, max_seconds=10)
        took = time.perf_counter() - started
    print(warm.line())
    assert 1 <= warm.rounds <= 6 and took < 10 + 5
    assert warm.cold_p99_ms > 0 and warm.warm_p99_ms > 0 and warm.errors == 0
    assert warm.distinct == 50 and all(len(r) == 50 for r in warm.rounds_ms)
    assert warm.stable or "stopped at" in warm.reason
    assert "cold p99" in warm.line() and "warm p99" in warm.line()


class Clock:
    """A clock the store below advances: the warm-up's rule judged on exact latencies,
    whatever else the machine is doing."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Scripted(MemoryStore):
    """A real in-memory store whose searches take scripted time on the clock: 25 ms on the
    first call of each query (a cold cache), then about 1 ms (seeded jitter); with
    ``growth``, each round slower than the last by that factor."""

    def __init__(self, batch: RecordBatch, clock: Clock, *, growth: float = 1.0,
                 per_round: int = 40) -> None:
        super().__init__()
        self.upsert(batch)
        self.clock, self.growth, self.per_round = clock, growth, per_round
        self.seen: set[bytes] = set()
        self.calls = 0
        self.rng = np.random.default_rng(3)

    def search(self, queries, k, *, where=None):
        key = np.asarray(queries).tobytes()
        cold = key not in self.seen
        self.seen.add(key)
        round_ = self.calls // self.per_round
        self.calls += 1
        self.clock.now += (0.025 if cold else 0.001 * (1 + 0.2 * self.rng.random())
                           * self.growth ** round_)
        return super().search(queries, k, where=where)


def test_warm_up_stops_when_the_p99_holds_still_and_at_its_bounds(dataset, tmp_path):
    log = load_query_log(write_log(tmp_path / "q.jsonl", [
        {"vector": [float(x) for x in v]} for v in dataset.vectors[:20]]))
    clock = Clock()
    warm = warm_up(Scripted(dataset, clock), log, k=5, min_calls=40, timer=clock)
    assert warm.stable and warm.rounds >= 3, warm.line()  # round 1 is never the reference
    assert warm.cold_p99_ms == pytest.approx(25, abs=0.5) and warm.warm_p99_ms < 1.3
    assert "lies within the 95% interval of round" in warm.reason
    clock = Clock()
    growing = warm_up(Scripted(dataset, clock, growth=1.5), log, k=5, min_calls=40,
                      max_rounds=6, timer=clock)
    assert not growing.stable and growing.rounds == 6, growing.line()
    assert growing.reason == "stopped at the most rounds (6)"
    clock = Clock()
    bounded = warm_up(Scripted(dataset, clock), log, k=5, min_calls=40, max_seconds=0.55,
                      timer=clock)
    # round 1 takes 20 x 25 + 20 x ~1 ms, round 2 ~44 ms: past 0.55 s after round 2
    assert bounded.rounds == 2 and not bounded.stable
    assert bounded.reason == "stopped at the time bound (0.55 s)"


# -- errors and the pure parts -------------------------------------------------------------

class Flaky(MemoryStore):
    """Raises on every third search, as a server that drops requests does."""

    calls = 0

    def search(self, queries, k, *, where=None):
        self.calls += 1
        if self.calls % 3 == 0:
            raise TimeoutError("the server did not answer in 30 s")
        return super().search(queries, k, where=where)


def test_a_target_that_raises_counts_errors_and_never_stops_the_replay(dataset, tmp_path):
    log = load_query_log(write_log(tmp_path / "q.jsonl", [
        {"vector": [float(x) for x in v]} for v in dataset.vectors[:60]]))
    source, target = MemoryStore.holding(dataset), Flaky()
    target.upsert(dataset)
    result = shadow(source, target, log, k=10)
    assert result.status == "failed" and result.figures["candidate_errors"] == 20
    assert "the candidate raised on 20 of 60 queries" in result.summary
    assert any("TimeoutError: the server did not answer" in o.detail
               for o in result.offenders)
    # the other 40 are compared, and agree
    assert result.figures["compared"] == 40 and result.figures["overlap"] == 1.0


def test_replay_reads_keys_through_the_sides(dataset, tmp_path):
    """Keys, not native ids: a target whose ids differ but carry ``original_id`` agrees."""
    renamed = RecordBatch([f"n{i}" for i in range(len(dataset))], dataset.vectors,
                          [{**m, "original_id": i} for m, i in
                           zip(dataset.metadatas, dataset.ids, strict=True)],
                          dataset.documents)
    log = load_query_log(write_log(tmp_path / "q.jsonl", [
        {"vector": [float(x) for x in v], "k": 3} for v in dataset.vectors[:12]]))
    sides = [Side(store, Matching(), name=name, batch_size=100)
             for store, name in ((MemoryStore.holding(dataset), "source"),
                                 (MemoryStore.holding(renamed), "target"))]
    outcomes = replay(*sides, log, k=10)
    assert all(o.control == o.candidate and len(o.control or []) == 3 for o in outcomes)
    assert all(o.control_distance == o.candidate_distance for o in outcomes)
    assert check_shadow(outcomes, k=10, tolerance=0.02, max_error_rate=0.01).status == "passed"


def test_rank_biased_overlap():
    assert rank_biased_overlap(list("abcde"), list("abcde")) == pytest.approx(1.0)
    assert rank_biased_overlap(list("abc"), list("xyz")) == 0.0
    assert rank_biased_overlap([], []) == 1.0

    def by_definition(a, b, p=0.9):
        k = max(len(a), len(b))
        x = [len(set(a[:d]) & set(b[:d])) for d in range(1, k + 1)]
        return x[-1] / k * p ** k + (1 - p) / p * sum(
            x[d - 1] / d * p ** d for d in range(1, k + 1))

    rng = np.random.default_rng(0)
    for _ in range(50):
        a = list(rng.choice(30, 10, replace=False))
        b = list(rng.choice(30, int(rng.integers(5, 11)), replace=False))
        assert rank_biased_overlap(a, b) == pytest.approx(by_definition(a, b))
    # the top ranks weigh most: a swap at the top costs more than one at the bottom
    assert rank_biased_overlap(list("abcdefghij"), list("bacdefghij")) < \
        rank_biased_overlap(list("abcdefghij"), list("abcdefghji"))


GATE = {"k": 4, "tolerance": 0.02, "max_error_rate": 0.01}


def outcome(i: int, control: list[str], candidate: list[str], again: list[str] | None = None
            ) -> ShadowOutcome:
    return ShadowOutcome(f"line {i}", 4, control, control if again is None else again,
                         candidate, control_ms=1.0, control_again_ms=1.0, candidate_ms=1.0)


def test_the_gate_is_judged_against_the_noise_floor():
    # an engine that disagrees with itself by a quarter: a target that disagrees as much passes
    noisy = [outcome(i, ["a", "b", "c", "d"], ["a", "b", "c", "x"], again=["a", "b", "c", "y"])
             for i in range(40)]
    result = check_shadow(noisy, **GATE)
    assert result.status == "passed" and result.figures["overlap_noise_floor"] == 0.75
    assert result.figures["overlap"] == 0.75
    # against a deterministic source, the same target is a quarter below its floor: fails
    fixed = [outcome(i, ["a", "b", "c", "d"], ["a", "b", "c", "x"]) for i in range(40)]
    failed = check_shadow(fixed, **GATE)
    assert failed.status == "failed" and failed.figures["overlap_drop"] == 0.25
    assert failed.offenders[0].detail.startswith(
        "overlap@4 0.75 (control vs control 1.00); the candidate missed d, returned instead x")
    # one query in ten a quarter off: a drop of 0.025 around a tolerance of 0.02 is open
    mixed = [outcome(i, ["a", "b", "c", "d"], ["a", "b", "c", "x"] if i % 10 == 0
                     else ["a", "b", "c", "d"]) for i in range(60)]
    open_question = check_shadow(mixed, **GATE)
    assert open_question.status == "warning", open_question.summary
    assert open_question.summary.startswith("inconclusive: the overlap drop 0.025")
    assert "more logged queries would decide" in open_question.summary
    # too few queries to decide anything
    assert check_shadow(fixed[:5], **GATE).figures["decision"] == "inconclusive"
