"""Verdicts a QA lead can sign, on hand-made data: drift as a paired test, a latency gate that
decides on a confidence interval, checks that are not applicable instead of passing on
nothing, hints that name the missing option, messages that name the cause, three verdicts."""

from __future__ import annotations

import unicodedata
import warnings

import numpy as np
import pytest

from vmtest.checks.fidelity import (
    check_documents,
    check_inventory,
    check_metadata,
    check_vectors,
    document_difference,
    suggest_document_field,
    suggest_id_field,
)
from vmtest.checks.result import NOT_APPLICABLE, CheckResult
from vmtest.checks.search import check_distance_drift, check_latency, check_schema_drift
from vmtest.checks.stats import clopper_pearson_interval, decide
from vmtest.report.model import verdict_lines, verdicts
from vmtest.stores.base import Inventory


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def embeddings() -> np.ndarray:
    """Unit vectors with the structure of real sentence embeddings: a few strong directions
    (topics) plus noise, 384 dimensions, so that truncation keeps much but not all."""
    rng = np.random.default_rng(11)
    topics = rng.normal(size=(12, 384))
    weights = rng.dirichlet(np.ones(12) * 0.3, size=1500)
    return unit(weights @ topics + 0.35 * rng.normal(size=(1500, 384)))


def drift(source: np.ndarray, target: np.ndarray, metric: str = "cosine",
          target_metric: str | None = None) -> CheckResult:
    return check_distance_drift(source, target, source_metric=metric,
                                target_metric=target_metric or metric)


# -- drift is paired ------------------------------------------------------------------------

def test_drift_passes_float_noise_float16_and_a_store_that_normalised(embeddings):
    rng = np.random.default_rng(1)
    noisy = embeddings + rng.normal(scale=5e-8, size=embeddings.shape).astype(np.float32)
    assert drift(embeddings, noisy).status == "passed"
    assert drift(embeddings, embeddings.astype(np.float16).astype(np.float32)).status == "passed"
    scaled = embeddings * rng.uniform(0.5, 2.0, size=(len(embeddings), 1)).astype(np.float32)
    assert drift(scaled, unit(scaled)).status == "passed"  # cosine: only directions count


def test_drift_fails_a_matryoshka_truncation_that_kept_the_distribution(embeddings):
    """The case the two-sample test missed: distances of the truncated copy are distributed
    much like the source's, but each pair moved."""
    truncated = unit(embeddings[:, :256])
    result = drift(embeddings, truncated)
    assert result.status == "failed"
    assert result.figures["moved_share_ci_low"] > 0.05
    assert result.figures["median_change"] > 0.01
    assert "truncation" in result.summary
    assert result.offenders and " ~ " in result.offenders[0].id


def test_drift_fails_another_model_and_another_metric(embeddings):
    rng = np.random.default_rng(2)
    other_model = unit(embeddings @ rng.normal(size=(384, 384)).astype(np.float32))
    assert drift(embeddings, other_model).status == "failed"
    another_metric = drift(embeddings, embeddings, "cosine", "l2")
    assert another_metric.status == "failed"
    assert "cosine -> l2" in another_metric.summary


def test_a_flipped_sign_keeps_distances_so_drift_passes_and_vectors_says_why(embeddings):
    flipped = embeddings.copy()
    flipped[:, 17] *= -1
    assert drift(embeddings, flipped).status == "passed"
    keys = [f"k{i}" for i in range(len(embeddings))]
    vectors = check_vectors(keys, embeddings, flipped, metric="cosine")
    assert vectors.status == "failed"
    assert "sign of dimension 17 is flipped" in vectors.summary
    assert "search cannot tell" in vectors.summary


def test_vectors_names_float16_a_normalisation_and_swapped_ids(embeddings):
    keys = [f"k{i}" for i in range(200)]
    source = embeddings[:200] * 3.0
    half = check_vectors(keys, source, source.astype(np.float16).astype(np.float32))
    assert half.status == "failed" and "float16" in half.summary
    normalised = check_vectors(keys, source, unit(source), metric="l2")
    assert normalised.status == "failed" and "normalised to unit length" in normalised.summary
    swapped = source.copy()
    swapped[[3, 4]] = swapped[[4, 3]]
    result = check_vectors(keys, source, swapped)
    assert "another record's vector" in result.summary and "k3 holds k4's" in result.summary
    assert "(both normalised: cosine metric)" in check_vectors(
        keys, source, swapped, metric="cosine").offenders[0].detail


def test_drift_holds_under_warnings_as_errors():
    """Identical distances are all ties: scipy's exact KS method warns on them; the check
    chooses its method and must give a verdict under -W error, not an ERROR."""
    vectors = unit(np.random.default_rng(3).normal(size=(50, 8)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert drift(vectors, vectors.copy()).status == "passed"
        assert drift(vectors[:2], vectors[:2]).status == NOT_APPLICABLE


# -- the latency gate decides on an interval ------------------------------------------------

def test_latency_fails_only_when_the_interval_lies_above_the_gate():
    rng = np.random.default_rng(5)
    source = rng.lognormal(mean=1.0, sigma=0.2, size=400)
    slow = check_latency(source, source * 3.5, max_ratio=2.0, min_gap_ms=1.0)
    assert slow.status == "failed"
    assert slow.figures["p99_ratio_ci_low"] > 2.0
    alike = check_latency(source, rng.permutation(source), max_ratio=2.0, min_gap_ms=1.0)
    assert alike.status == "passed"


def test_latency_straddling_the_gate_is_inconclusive_and_says_how_many_more_queries():
    rng = np.random.default_rng(6)
    source = rng.lognormal(mean=1.0, sigma=0.5, size=60)
    target = source * rng.uniform(1.7, 2.3, size=60)
    result = check_latency(source, target, max_ratio=2.0, min_gap_ms=0.0)
    assert result.status == "warning"
    assert result.figures["decision"] == "inconclusive"
    assert result.figures["p99_ratio_ci_low"] <= 2.0 < result.figures["p99_ratio_ci_high"]
    assert "more timed queries would decide" in result.summary


def test_latency_on_microsecond_stores_is_noise_below_the_gap():
    rng = np.random.default_rng(7)
    micro = rng.uniform(0.02, 0.05, size=300)
    hiccups = micro * 3 + rng.uniform(0, 0.2, size=300)
    result = check_latency(micro, hiccups, max_ratio=2.0, min_gap_ms=1.0)
    assert result.status == "passed" and "within noise" in result.summary


def test_latency_verdict_is_the_same_for_the_same_samples():
    rng = np.random.default_rng(8)
    source = rng.lognormal(mean=0.5, sigma=0.4, size=300)
    target = source * rng.lognormal(mean=0.3, sigma=0.4, size=300)
    answers = {check_latency(source, target, max_ratio=2.0, min_gap_ms=0.5).status
               for _ in range(5)}
    assert len(answers) == 1


def test_too_few_samples_is_inconclusive_not_a_pass():
    result = check_latency([1.0] * 5, [9.0] * 5, max_ratio=2.0)
    assert result.status == "warning" and "too few" in result.summary


def test_decide_and_the_exact_interval():
    assert decide(0.1, 0.2, 0.05) == "fail"
    assert decide(0.01, 0.04, 0.05) == "pass"
    assert decide(0.01, 0.09, 0.05) == "inconclusive"
    low, high = clopper_pearson_interval(0, 2000)
    assert low == 0.0 and 0.001 < high < 0.002
    low, high = clopper_pearson_interval(1600, 2000)
    assert 0.77 < low < 0.8 < high < 0.82


# -- nothing compared is never a pass -------------------------------------------------------

def test_fidelity_checks_with_nothing_matched_are_not_applicable():
    nothing = check_vectors([], np.zeros((0, 4)), np.zeros((0, 4)))
    assert nothing.status == NOT_APPLICABLE and "no record matched" in nothing.summary
    assert check_metadata([], [], []).status == NOT_APPLICABLE
    assert check_documents([], [], []).status == NOT_APPLICABLE
    no_docs = check_documents(["a", "b"], [None, None], [None, None])
    assert no_docs.status == NOT_APPLICABLE and "neither store" in no_docs.summary
    assert check_documents(["a"], ["text"], [None]).status == "failed"


def test_an_empty_source_fails_the_inventory():
    empty = Inventory(kind="chroma", uri="chroma:///x", count=0, dimension=None, metric=None,
                      dtype=None)
    result = check_inventory(empty, empty)
    assert result.status == "failed" and "no records" in result.summary


def test_hint_names_the_payload_field_that_holds_the_source_ids():
    missing = [f"doc-{i}" for i in range(50)]
    unmatched = [{"chroma_id": f"doc-{i}", "topic": "t"} for i in range(50)]
    assert suggest_id_field(missing, unmatched) == [
        "the target's payload field 'chroma_id' holds the source ids (50 of 50 unmatched "
        "target records): add --vmtest-id-field=chroma_id"]
    unrelated = [{"chroma_id": f"other-{i}"} for i in range(50)]
    assert suggest_id_field(missing, unrelated) == []


def test_hint_names_the_payload_field_that_holds_the_documents():
    pairs = [(f"text {i}", None, {"page_content": f"text {i}", "n": i}) for i in range(30)]
    hints = suggest_document_field(pairs)
    assert hints and "--vmtest-document-field=page_content" in hints[0]
    assert suggest_document_field([(f"text {i}", None, {"n": i}) for i in range(30)]) == []
    result = check_documents([f"k{i}" for i in range(30)], [p[0] for p in pairs],
                             [None] * 30, hints=hints)
    assert result.status == "failed" and "--vmtest-document-field=page_content" in result.summary


# -- messages name the cause ----------------------------------------------------------------

@pytest.mark.parametrize(("source", "target", "cause"), [
    ("café résumé", unicodedata.normalize("NFD", "café résumé"), "Unicode normalisation"),
    ("a  b\tc", "a b c", "whitespace only"),
    ("Hello World", "hello world", "letter case only"),
    ("a long document", "a long", "truncated"),
    ("one", "two", "text changed"),
    ("x", None, "missing in the target"),
])
def test_document_differences_name_their_cause(source, target, cause):
    assert document_difference(source, target).startswith(cause)
    result = check_documents(["k"], [source], [target])
    assert cause in result.summary and result.offenders[0].detail.startswith(cause)


def test_unicode_difference_shows_code_points_a_person_can_see():
    nfc = "café"
    detail = check_documents(["k"], [nfc], [unicodedata.normalize("NFD", nfc)]).offenders[0]
    assert "\\u0301" in detail.detail and "NFD" in detail.detail


def test_schema_prints_enum_values_not_reprs():
    import enum

    class ScalarType(enum.Enum):
        INT8 = "int8"

    source = Inventory(kind="a", uri="a", count=1, dimension=4, metric="cosine",
                       dtype="float32")
    target = Inventory(kind="b", uri="b", count=1, dimension=4, metric="cosine", dtype="float32",
                       index={"quantization": {"scalar": {"type": ScalarType.INT8}}})
    result = check_schema_drift(source, target)
    assert result.status == "warning"
    assert '"int8"' in result.warnings[0] and "ScalarType" not in result.warnings[0]


# -- three verdicts -------------------------------------------------------------------------

def result(name: str, status: str) -> dict:
    return CheckResult(name=name, status=status, summary=f"{name} {status}").to_dict()


def test_three_verdicts_and_their_banner():
    checks = [result("ids", "passed"), result("vectors", "passed"),
              result("documents", NOT_APPLICABLE), result("recall", "failed"),
              result("latency", "warning"), result("my_own_check", "passed")]
    by = verdicts(checks)
    assert by["fidelity"]["verdict"] == "passed"
    assert by["fidelity"]["passed"] == ["ids", "vectors", "my_own_check"]
    assert by["search"]["verdict"] == "failed"
    assert by["performance"]["verdict"] == "warning"
    lines = [text for text, _ in verdict_lines({"checks": checks})]
    assert lines[0] == "DATA FIDELITY: FAITHFUL (3 checks passed); not applicable: documents"
    assert lines[1] == "SEARCH QUALITY: FAILED (recall failed)"
    assert lines[2] == "PERFORMANCE: PASSED (1 check passed, 1 with a WARNING: latency)"
    only_latency = verdicts([result("latency", "passed")])
    assert only_latency["fidelity"]["verdict"] == "not_checked"


# -- float rounding a store declares --------------------------------------------------------

def test_float_rounding_within_the_declared_ulps_warns_and_counts():
    import struct

    def nudge(x: float, ulps: int) -> float:
        bits = struct.unpack("<q", struct.pack("<d", x))[0] + ulps
        return struct.unpack("<d", struct.pack("<q", bits))[0]

    source = [{"score": 0.42451918914251396, "n": 1}, {"score": 0.1, "n": 2}]
    rounded = [{"score": nudge(0.42451918914251396, -1), "n": 1}, {"score": 0.1, "n": 2}]
    result = check_metadata(["a", "b"], source, rounded, float_ulps=4, engine="Chroma")
    assert result.status == "warning"
    assert result.figures["floats_rounded"] == 1 and result.figures["float_rounding_ulps"] == 1
    assert "1 records hold float values that Chroma rounded by at most 1 ulp" in result.summary
    strict = check_metadata(["a", "b"], source, rounded, float_ulps=4, strict_floats=True)
    assert strict.status == "failed" and strict.offenders[0].id == "a"
    undeclared = check_metadata(["a", "b"], source, rounded)  # a store that keeps doubles
    assert undeclared.status == "failed"
    as_float32 = [{"score": float(np.float32(0.42451918914251396)), "n": 1}, source[1]]
    beyond = check_metadata(["a", "b"], source, as_float32, float_ulps=4)
    assert beyond.status == "failed"  # a float32 round trip is ~1e8 ulps, not rounding
    assert "'score'" in beyond.offenders[0].detail


# -- recall is judged as a migration gate ----------------------------------------------------

def outcomes(target: list[float], source: list[float]):
    from vmtest.checks.search import QueryOutcome

    return [QueryOutcome(f"q{i}", s, t, 1.0, []) for i, (t, s) in
            enumerate(zip(target, source, strict=True))]


def test_recall_below_the_gate_fails_only_when_the_target_is_worse_than_the_source():
    from vmtest.checks.search import check_recall

    worse = check_recall(outcomes([0.8] * 100, [0.99] * 100), k=10, min_recall=0.95,
                         min_query_recall=0.5)
    assert worse.status == "failed"
    both = check_recall(outcomes([0.8] * 100, [0.8] * 100), k=10, min_recall=0.95,
                        min_query_recall=0.5)
    assert both.status == "warning" and "no worse than the source" in both.summary
    straddles = check_recall(outcomes([0.95] * 30 + [0.9] * 3, [1.0] * 33), k=10,
                             min_recall=0.95, min_query_recall=0.5)
    assert straddles.status == "warning" and straddles.figures["decision"] == "inconclusive"


def test_a_query_fails_the_floor_only_when_the_source_answered_it():
    from vmtest.checks.search import check_recall

    regressed = check_recall(outcomes([1.0] * 99 + [0.2], [1.0] * 100), k=10,
                             min_recall=0.95, min_query_recall=0.5)
    assert regressed.status == "failed" and regressed.figures["queries_regressed"] == 1
    shared = check_recall(outcomes([1.0] * 99 + [0.2], [1.0] * 99 + [0.3]), k=10,
                          min_recall=0.95, min_query_recall=0.5)
    assert shared.status == "warning" and "in both stores" in shared.summary
