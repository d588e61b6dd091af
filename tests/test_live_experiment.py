"""Shadow experiments: the control's answer always reaches the caller, the candidate runs on
the sampled share, differences are published as JSON lines and counted in Prometheus."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
from scipy.stats import binom

from tests.support import MemoryStore
from vmtest.errors import ConfigError, MissingDriverError
from vmtest.live.experiment import Comparison, Experiment, compare_hits
from vmtest.stores import RecordBatch


def sample(registry, name: str, experiment: str) -> float | None:
    return registry.get_sample_value(name, {"experiment": experiment})


def read_jsonl(path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_the_control_result_is_returned_and_the_candidate_ones_are_not():
    calls = []

    def control(q, k):
        calls.append("control")
        return [[f"c{i}" for i in range(k)]]

    def candidate(q, k):
        calls.append("candidate")
        return [[f"t{i}" for i in range(k)]]

    experiment = Experiment("search", control, candidate, seed=3)
    for _ in range(20):
        assert experiment.run(None, 3) == [["c0", "c1", "c2"]]
    assert calls.count("candidate") == 20 and calls.count("control") == 20
    summary = experiment.summary()
    assert (summary["runs"], summary["mismatches"], summary["overlap_mean"]) == (20, 20, 0.0)


def test_the_control_exception_is_raised_again_and_nothing_is_compared(tmp_path):
    ran = []

    def control():
        raise ValueError("the source store is down")

    experiment = Experiment("search", control, lambda: ran.append(1) or [1], sink=tmp_path / "s")
    with pytest.raises(ValueError, match="the source store is down"):
        experiment.run()
    summary = experiment.summary()
    assert ran == [1] and summary["control_errors"] == 1
    assert summary["compared"] == 0 and summary["mismatches"] == 0
    assert not (tmp_path / "s").exists()


def test_a_candidate_exception_is_recorded_and_never_raised(tmp_path):
    sink = tmp_path / "shadow.jsonl"

    def candidate(q, k):
        raise RuntimeError("qdrant: collection not found")

    experiment = Experiment("search", lambda q, k: [[1, 2]], candidate, sink=sink)
    assert experiment.run("q", 2) == [[1, 2]]
    assert experiment.run("q", 2) == [[1, 2]]
    assert experiment.summary()["candidate_errors"] == 2
    assert sample(experiment.registry, "vmtest_experiment_candidate_errors_total", "search") == 2
    lines = read_jsonl(sink)
    assert [line["event"] for line in lines] == ["candidate_error", "candidate_error"]
    assert lines[0]["error_type"] == "RuntimeError"
    assert "collection not found" in lines[0]["error"]


def test_a_share_of_0_3_runs_the_candidate_on_about_30_percent_of_calls():
    n = 2000
    ran = []
    experiment = Experiment("search", lambda: [1], lambda: ran.append(1) or [1], share=0.3,
                            seed=11)
    for _ in range(n):
        experiment.run()
    low, high = binom.interval(0.999, n, 0.3)
    assert low <= len(ran) <= high, (len(ran), low, high)
    registry = experiment.registry
    assert sample(registry, "vmtest_experiment_runs_total", "search") == n
    assert sample(registry, "vmtest_experiment_candidate_runs_total", "search") == len(ran)
    assert sample(registry, "vmtest_experiment_control_seconds_count", "search") == n
    assert sample(registry, "vmtest_experiment_candidate_seconds_count", "search") == len(ran)
    assert experiment.summary()["candidate_runs"] == len(ran)


def test_the_candidate_runs_before_the_control_on_about_half_the_calls():
    order: list[str] = []
    experiment = Experiment("search", lambda: order.append("control"),
                            lambda: order.append("candidate"), seed=5,
                            compare=lambda c, t: True)
    n = 400
    for _ in range(n):
        experiment.run()
    first = order[::2].count("candidate")
    low, high = binom.interval(0.999, n, 0.5)
    assert low <= first <= high, (first, low, high)


def test_share_0_never_runs_the_candidate():
    experiment = Experiment("search", lambda: 1, lambda: pytest.fail("ran"), share=0)
    assert [experiment.run() for _ in range(50)] == [1] * 50
    assert experiment.summary()["candidate_runs"] == 0


@pytest.fixture(scope="module")
def stores(dataset: RecordBatch) -> tuple[MemoryStore, MemoryStore, set]:
    """Two real stores: the whole dataset, and the dataset less 10 records."""
    dropped = set(dataset.ids[:10])
    keep = [i for i, rid in enumerate(dataset.ids) if rid not in dropped]
    return MemoryStore.holding(dataset), MemoryStore.holding(dataset.take(keep)), dropped


def test_a_store_that_answers_differently_publishes_each_differing_query(
        tmp_path, dataset, stores):
    """The source store and a target that lost 10 records, searched with 40 of the records
    (one query a call): every query whose top 10 differs is one JSON line with its own
    overlap; the others publish nothing; the counts match in the metrics and the summary."""
    source, target, dropped = stores
    sink = tmp_path / "shadow.jsonl"
    experiment = Experiment("search", source.search, target.search, sink=sink, seed=1)
    queries = dataset.vectors[:40]
    expected = {}
    for run, query in enumerate(queries, start=1):
        hits = experiment.run(query[None, :], 10)
        assert hits == source.search(query[None, :], 10)  # the control's answer
        c_ids = hits[0]
        t_ids = target.search(query[None, :], 10)[0]
        expected[run] = (len(set(c_ids) & set(t_ids)) / 10, c_ids, t_ids)
    differing = {run for run, (overlap, _, _) in expected.items() if overlap < 1}
    assert 10 <= len(differing) < 40  # each dropped record is a query's own first hit

    lines = read_jsonl(sink)
    assert {line["run"] for line in lines} == differing
    for line in lines:
        overlap, c_ids, t_ids = expected[line["run"]]
        assert line["event"] == "mismatch" and line["experiment"] == "search"
        assert line["overlap"] == pytest.approx(overlap)
        assert line["queries"] == [{"query": 0, "overlap": pytest.approx(overlap),
                                    "score_delta": None, "control": c_ids,
                                    "candidate": t_ids}]
        assert set(c_ids) - set(t_ids) <= dropped
    registry = experiment.registry
    assert sample(registry, "vmtest_experiment_mismatches_total", "search") == len(differing)
    summary = experiment.summary()
    assert summary["mismatches"] == len(differing) and summary["compared"] == 40
    mean = sum(overlap for overlap, _, _ in expected.values()) / 40
    assert summary["overlap_mean"] == pytest.approx(mean)
    low, high = summary["mismatch_rate_interval"]
    assert low < len(differing) / 40 < high


def test_a_batch_publishes_one_line_with_the_differing_queries(tmp_path, dataset, stores):
    source, target, _ = stores
    sink = tmp_path / "shadow.jsonl"
    experiment = Experiment("batch", source.search, target.search, sink=sink, metrics=False)
    queries = dataset.vectors[:40]
    experiment.run(queries, 10)
    [line] = read_jsonl(sink)
    c_all, t_all = source.search(queries, 10), target.search(queries, 10)
    overlaps = [len(set(c) & set(t)) / 10 for c, t in zip(c_all, t_all, strict=True)]
    assert line["overlap"] == pytest.approx(sum(overlaps) / 40)
    assert [q["query"] for q in line["queries"]] == [i for i, o in enumerate(overlaps) if o < 1]
    assert experiment.registry is None


def test_scores_are_compared_for_the_shared_ids_and_the_threshold_decides():
    control = [("a", 0.9), ("b", 0.8), ("c", 0.7), ("d", 0.6), ("e", 0.5)]
    moved = [("a", 0.95), ("b", 0.8), ("c", 0.6), ("d", 0.6), ("x", 0.1)]
    comparison = compare_hits(control, moved)
    assert comparison.overlap == pytest.approx(0.8)
    assert comparison.score_delta == pytest.approx((0.05 + 0 + 0.1 + 0) / 4)
    # dicts and objects with .id/.score read alike; order alone is no difference
    assert compare_hits([{"id": 1, "score": 1.0}, {"id": 2}], [2, 1]).overlap == 1.0
    assert compare_hits([[1, 2], [3]], [[2, 1], [4]]).overlap == pytest.approx(0.5)

    lenient = Experiment("s", lambda: control, lambda: moved, threshold=0.8, metrics=False)
    strict = Experiment("s", lambda: control, lambda: moved, metrics=False)
    lenient.run()
    strict.run()
    assert lenient.summary()["mismatches"] == 0 and strict.summary()["mismatches"] == 1
    assert strict.summary()["score_delta_mean"] == pytest.approx(0.0375)


def test_a_compare_function_can_return_a_bool_a_number_or_a_comparison():
    for result, mismatches in ((True, 0), (False, 1), (0.99, 1), (Comparison(1.0), 0)):
        experiment = Experiment("s", lambda: 1, lambda: 2, compare=lambda c, t, r=result: r,
                                metrics=False)
        experiment.run()
        assert experiment.summary()["mismatches"] == mismatches, result


def test_a_failing_compare_or_sink_never_reaches_the_caller():
    def compare(c, t):
        raise KeyError("bad compare")

    def sink(line):
        raise OSError("disk full")

    stream = io.StringIO()
    broken = Experiment("s", lambda: 1, lambda: 2, compare=compare, sink=stream, metrics=False)
    assert broken.run() == 1
    assert broken.summary()["compare_errors"] == 1
    assert json.loads(stream.getvalue())["event"] == "compare_error"

    lost = Experiment("s", lambda: [1], lambda: [2], sink=sink, metrics=False)
    assert lost.run() == [1]
    assert lost.summary()["publish_errors"] == 1 and lost.summary()["mismatches"] == 1


def test_each_experiment_counts_into_its_own_registry_unless_given_one():
    import prometheus_client

    first = Experiment("one", lambda: 1, lambda: 1, compare=lambda c, t: True)
    second = Experiment("one", lambda: 1, lambda: 1, compare=lambda c, t: True)
    first.run()
    assert first.registry is not second.registry
    assert sample(first.registry, "vmtest_experiment_runs_total", "one") == 1
    assert sample(second.registry, "vmtest_experiment_runs_total", "one") == 0
    assert sample(prometheus_client.REGISTRY, "vmtest_experiment_runs_total", "one") is None

    shared = prometheus_client.CollectorRegistry()
    a = Experiment("a", lambda: 1, lambda: 1, metrics=shared, compare=lambda c, t: True)
    b = Experiment("b", lambda: 1, lambda: 1, metrics=shared, compare=lambda c, t: True)
    a.run()
    b.run()
    b.run()
    assert sample(shared, "vmtest_experiment_runs_total", "a") == 1
    assert sample(shared, "vmtest_experiment_runs_total", "b") == 2


def test_latencies_are_timed_in_seconds():
    import time

    def slow():
        time.sleep(0.003)
        return [1]

    experiment = Experiment("s", lambda: [1], slow)
    for _ in range(5):
        experiment.run()
    total = sample(experiment.registry, "vmtest_experiment_candidate_seconds_sum", "s")
    assert 5 * 0.003 <= total < 5
    assert sample(experiment.registry, "vmtest_experiment_control_seconds_sum", "s") < total
    assert experiment.summary()["candidate_seconds_mean"] >= 0.003


@pytest.mark.parametrize("bad", [{"share": 1.5}, {"share": -0.1}, {"threshold": 2},
                                 {"share": float("nan")}])
def test_a_share_or_threshold_outside_0_to_1_is_refused(bad):
    with pytest.raises(ConfigError, match="from 0 to 1"):
        Experiment("s", lambda: 1, lambda: 1, **bad)


def test_without_prometheus_client_metrics_say_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(MissingDriverError, match=r"pip install 'vmtest\[live\]'"):
        Experiment("s", lambda: 1, lambda: 1)
    assert Experiment("s", lambda: 1, lambda: 1, metrics=False).run() == 1


def test_numpy_ids_and_scores_are_written_as_json_numbers(tmp_path):
    sink = tmp_path / "s.jsonl"
    ids = np.array([[3, 1]], dtype=np.int64)
    experiment = Experiment("s", lambda: ids, lambda: [[(np.int64(3), np.float32(0.5))]],
                            sink=sink, metrics=False)
    experiment.run()
    [line] = read_jsonl(sink)
    assert line["queries"][0]["control"] == [3, 1]
    assert line["queries"][0]["candidate"] == [3]
    assert line["overlap"] == 0.5
