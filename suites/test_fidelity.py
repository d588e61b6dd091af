"""Data fidelity: does the target hold exactly what the source holds?

Each test is one check; its result carries the figures, the thresholds and the first
offending records, and fails with all of them in the message.
"""

from __future__ import annotations

import pytest

from vmtest.checks.fidelity import (
    check_inventory,
    check_vectors,
)
from vmtest.checks.reembed import check_reembedded_vectors
from vmtest.checks.result import not_applicable
from vmtest.embed import load_embedder

pytestmark = pytest.mark.vmtest_suite


def test_inventory(vmtest_comparison, vmtest_check):
    vmtest_check(check_inventory(vmtest_comparison.source_inventory,
                                 vmtest_comparison.target_inventory,
                                 same_model=not vmtest_comparison.models_differ))


def test_ids(vmtest_comparison, vmtest_check):
    result = vmtest_comparison.fidelity["ids"]
    result.figures["matched_through"] = vmtest_comparison.id_mapping()
    vmtest_check(result)


def test_vectors(vmtest_comparison, vmtest_check, vmtest_settings):
    if vmtest_comparison.without_vectors:
        vmtest_check(not_applicable("vectors", vmtest_comparison.without_vectors))
    if vmtest_comparison.models_differ:
        # Vectors of two models are not comparable: each target vector is checked against
        # its document's embedding by the target's model instead.
        spec = vmtest_settings.target_embedder
        if spec is None:
            pytest.skip(f"vectors come from different models ({vmtest_settings.source_model} "
                        f"-> {vmtest_settings.target_model}) and are not compared; give "
                        "--vmtest-target-embedder to check each against its document")
        keys, expected, stored, population = vmtest_comparison.model_change.reembedded_vectors(
            load_embedder(spec))
        vmtest_check(check_reembedded_vectors(
            keys, expected, stored, tolerance=vmtest_settings.reembed_tolerance,
            model=vmtest_settings.target_model, population=population,
            confidence=vmtest_settings.confidence))
        return
    if not vmtest_comparison.sampling:
        vmtest_check(vmtest_comparison.fidelity["vectors"])
        return
    pairs = vmtest_comparison.vector_pairs
    vmtest_check(check_vectors(
        pairs.keys, pairs.source, pairs.target,
        atol=vmtest_settings.tolerance, rtol=vmtest_settings.rtol,
        metric=vmtest_comparison.metric, population=pairs.population,
        confidence=vmtest_settings.confidence,
    ))


def test_metadata(vmtest_comparison, vmtest_check):
    vmtest_check(vmtest_comparison.fidelity["metadata"])


def test_documents(vmtest_comparison, vmtest_check):
    vmtest_check(vmtest_comparison.fidelity["documents"])
