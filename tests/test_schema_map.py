"""A schema mapping file (issue 16, part 3): a target whose fields were renamed, converted,
added and dropped as declared passes; each way of getting one of them wrong fails the
metadata check alone, with its faithful twin passing. On real SQLite tables, in process."""

from __future__ import annotations

import pytest

from vmtest.compare import Comparison
from vmtest.errors import ConfigError
from vmtest.schema_map import convert, parse_schema_map
from vmtest.settings import Settings
from vmtest.stores import CollectionSpec, RecordBatch, open_store

MAPPING = """
[rename]
title = "name"

[convert]
year = "str"

[add]
archived = false

[drop]
fields = ["internal_notes"]
"""
SOURCE = [{"title": "Refunds", "lang": "en", "year": 2021, "internal_notes": "check"},
          {"title": "Lieferung", "lang": "de", "year": 2022, "internal_notes": "ok"},
          {"title": "Tokens", "lang": "en", "year": 2023, "internal_notes": "todo"}]
MAPPED = [{"name": m["title"], "lang": m["lang"], "year": str(m["year"]), "archived": False}
          for m in SOURCE]


def store(uri: str, metas: list[dict]) -> str:
    with open_store(uri, create=CollectionSpec(0, "cosine")) as s:
        s.upsert(RecordBatch([f"d{i}" for i in range(len(metas))], None, metas,
                             [f"text {i}" for i in range(len(metas))]))
    return uri


def statuses(tmp_path, target_metas: list[dict], mapping: str | None = MAPPING) -> dict:
    source = store(f"sqlite://{tmp_path}/src.db?table=docs", SOURCE)
    target = store(f"sqlite://{tmp_path}/tgt.db?table=docs", target_metas)
    path = None
    if mapping is not None:
        path = tmp_path / "mapping.toml"
        path.write_text(mapping)
    with open_store(source) as s, open_store(target) as t:
        results = Comparison(s, t, Settings(mapping=path)).fidelity
    return {name: (r.status, r.summary, [o.detail for o in r.offenders])
            for name, r in results.items()}


def failed(found: dict) -> set[str]:
    return {name for name, (status, _, _) in found.items() if status == "failed"}


def with_change(i: int, **changes) -> list[dict]:
    rows = [dict(m) for m in MAPPED]
    for name, value in changes.items():
        if value is ...:
            del rows[i][name]
        else:
            rows[i][name] = value
    return rows


@pytest.mark.parametrize(("target", "fails", "says"), [
    (MAPPED, set(), None),  # the faithful twin
    # renamed, but to another name than declared
    ([{("heading" if k == "name" else k): v for k, v in m.items()} for m in MAPPED],
     {"metadata"}, "heading"),
    (with_change(1, lang=...), {"metadata"}, "lang"),  # not in the mapping, and lost
    (with_change(0, year=2021), {"metadata"}, "year"),  # the conversion not made
    (with_change(2, archived=...), {"metadata"}, "archived"),  # the added field missing
    (with_change(2, archived=True), {"metadata"}, "archived"),  # added with another value
    (with_change(0, internal_notes="check"), {"metadata"}, "internal_notes"),  # not dropped
])
def test_each_mapping_mistake_fails_the_metadata_check(tmp_path, target, fails, says):
    found = statuses(tmp_path, target)
    assert failed(found) == fails, found
    if says:
        assert says in repr(found["metadata"]), found["metadata"]


def test_without_the_mapping_the_same_target_fails(tmp_path):
    assert failed(statuses(tmp_path, MAPPED, mapping=None)) == {"metadata"}


def test_a_value_that_cannot_be_converted_fails_naming_it(tmp_path):
    mapping = MAPPING.replace('year = "str"', 'lang = "int"')
    rows = [{**m, "year": o["year"]} for m, o in zip(MAPPED, SOURCE, strict=True)]
    found = statuses(tmp_path, rows, mapping)
    assert failed(found) == {"metadata"}
    assert "cannot be converted to int" in repr(found["metadata"])


def test_conversions_follow_a_migration_script_s_rules():
    assert [convert(v, "str") for v in (42, 1.5, True, "x")] == ["42", "1.5", "true", "x"]
    assert [convert(v, "int") for v in ("42", 7.0, False)] == [42, 7, 0]
    assert convert("4.5", "float") == 4.5 and convert(3, "float") == 3.0
    assert [convert(v, "bool") for v in (1, "False", True)] == [True, False, True]
    assert convert("x", "int") != convert("x", "int")  # an unconvertible value equals nothing
    assert convert(None, "int") is None


@pytest.mark.parametrize(("text", "says"), [
    ("[renames]\na = 'b'", "unknown table [renames]"),
    ("[convert]\nyear = 'date'", "one of str, int, float, bool"),
    ("[rename]\na = 'x'\nb = 'x'", "two fields are renamed to 'x'"),
    ("[rename]\na = 'b'\n[drop]\nfields = ['a']", "'a' is both renamed and dropped"),
    ("[drop]\nfield = ['a']", "[drop] holds one key"),
    ("rename = 3", "[rename] is not a table"),
    ("[rename", "not TOML"),
])
def test_a_wrong_mapping_file_is_a_usage_error(tmp_path, text, says):
    with pytest.raises(ValueError) as caught:
        parse_schema_map(text)
    assert says in str(caught.value)
    path = tmp_path / "mapping.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="--vmtest-mapping"):
        Settings.resolve({"mapping": str(path)}, {}, {})
