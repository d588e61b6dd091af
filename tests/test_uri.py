from __future__ import annotations

import pytest

from vmtest.errors import InvalidURIError
from vmtest.uri import parse


def test_local_path_forms(tmp_path):
    uri = parse("chroma:///abs/dir?collection=docs")
    assert (uri.scheme, uri.host, uri.path, uri.param("collection")) == (
        "chroma", None, "/abs/dir", "docs")
    assert uri.is_local
    assert str(uri) == "chroma:///abs/dir?collection=docs"


def test_relative_paths_resolve_against_the_working_directory(tmp_path):
    uri = parse("chroma://./data?collection=x", cwd=tmp_path)
    assert uri.path == str(tmp_path / "data")
    assert uri.param("collection") == "x"
    up = parse("jsonl://../out.jsonl", cwd=tmp_path / "a")
    assert up.path == str(tmp_path / "out.jsonl")


def test_server_form_with_port_and_password_is_redacted():
    uri = parse("qdrant://:s3cret@db.example:6334?collection=docs&vector=dense")
    assert (uri.host, uri.port, uri.password) == ("db.example", 6334, "s3cret")
    assert "s3cret" not in str(uri)
    assert "s3cret" not in repr(uri)
    assert "***" in str(uri)
    assert "s3cret" in uri.render(reveal_password=True)
    assert uri.param("vector") == "dense"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("just-a-path", "not a store URI"),
        ("chroma://host:notaport?collection=x", "invalid port"),
        ("1bad://x", "invalid scheme"),
        ("qdrant://h:1?collection=a&collection=b", "twice"),
        ("qdrant://:pw@h:99999?collection=a", "invalid port"),
    ],
)
def test_malformed_uris_are_named_and_explained(text, says):
    with pytest.raises(InvalidURIError, match=says) as info:
        parse(text)
    assert "pw" not in str(info.value) or "***" in str(info.value)


def test_with_params_is_a_copy():
    uri = parse("jsonl:///x.jsonl")
    other = uri.with_params(metric="cosine")
    assert uri.param("metric") is None
    assert other.param("metric") == "cosine"
