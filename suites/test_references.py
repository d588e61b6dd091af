"""Cross-store references: with --vmtest-documents=URI, the target's vector records and its
system's document store agree (every reference resolves, every document is indexed)."""

from __future__ import annotations

import pytest

from vmtest.checks.references import check_references
from vmtest.matching import read_snapshot

pytestmark = [pytest.mark.vmtest_suite, pytest.mark.vmtest_needs("documents")]


def test_references(vmtest_comparison, vmtest_documents_store, vmtest_check, vmtest_settings):
    target = vmtest_comparison.target
    field = vmtest_settings.reference_field
    documents = read_snapshot(vmtest_documents_store, vmtest_comparison.matching,
                              batch_size=vmtest_settings.batch_size, with_vectors=False)
    vmtest_check(check_references(target.keys, [m.get(field) for m in target.metadatas],
                                  documents.keys, field=field))
