"""Cross-store references: with --vmtest-documents=URI, the target's vector records and its
system's document store agree (every reference resolves, every document is indexed); with
--vmtest-source-documents=URI too, the orphans already in the source are a warning and only
those the migration made fail."""

from __future__ import annotations

import pytest

from vmtest.checks.references import References, check_references
from vmtest.matching import read_snapshot

pytestmark = [pytest.mark.vmtest_suite, pytest.mark.vmtest_needs("documents")]


def test_references(vmtest_comparison, vmtest_documents_store, vmtest_source_documents_store,
                    vmtest_check, vmtest_settings):
    s = vmtest_settings
    field = s.reference_field

    def document_keys(store):
        return read_snapshot(store, vmtest_comparison.matching, batch_size=s.batch_size,
                             with_vectors=False).keys

    before = None
    if vmtest_source_documents_store is not None:
        source = vmtest_comparison.source
        metadatas = source.metadatas if s.schema_map is None \
            else [s.schema_map.apply(m) for m in source.metadatas]
        before = References(source.keys, [m.get(field) for m in metadatas],
                            document_keys(vmtest_source_documents_store))
    target = vmtest_comparison.target
    vmtest_check(check_references(target.keys, [m.get(field) for m in target.metadatas],
                                  document_keys(vmtest_documents_store), field=field,
                                  source=before))
