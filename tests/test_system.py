"""One RAG system's three stores in one command (issue 16): ``vmtest check --system=FILE.toml``
over a LanceDB vector index whose chunks name their documents (doc_id), a SQLite document
table copied into PostgreSQL under a schema mapping, and a chat history LangChain wrote into
Redis copied into a SQLite table of messages. The faithful system passes with every part
reported; each part broken in one way fails the whole command, naming the part and the check;
a wrong system file is one line and exit 4, with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from tests.support import QUIET
from tests.test_conversation import edited, langchain_source, messages, table_of  # noqa: F401
from tests.test_schema_map import MAPPED, MAPPING, SOURCE, store
from vmtest.cli import main
from vmtest.stores import CollectionSpec, RecordBatch, open_store

#: Chunks of the three documents d0, d1, d2 (tests/test_schema_map.py's), and c6 pointing to
#: a document deleted before the migration: an orphan of the source the target keeps.
CHUNKS = {"c1": "d0", "c2": "d0", "c3": "d1", "c4": "d2", "c5": "d2", "c6": "d9"}
#: What every run leaves out: the latency gate (timing noise on five vectors) and the
#: plugins the suite does not use.
ARGS = ("-m", "not latency", *QUIET)


def lance(uri: str, chunks: dict[str, str]) -> str:
    rng = np.random.default_rng(5)
    with open_store(uri, create=CollectionSpec(4, "cosine")) as s:
        s.upsert(RecordBatch(list(chunks), rng.normal(size=(len(chunks), 4)).astype(np.float32),
                             [{"doc_id": d} for d in chunks.values()],
                             [f"chunk {c}" for c in chunks]))
    return uri


@pytest.fixture(scope="module")
def system(tmp_path_factory, postgres_server, langchain_source, messages) -> dict:  # noqa: F811
    """The faithful system's pairs (source, target) by part, and its folder."""
    folder = tmp_path_factory.mktemp("rag")
    (folder / "docs.toml").write_text(MAPPING)
    return {
        "folder": folder,
        "vectors": (lance(f"lancedb://{folder}/old?table=chunks", CHUNKS),
                    lance(f"lancedb://{folder}/new?table=chunks", CHUNKS)),
        "documents": (store(f"sqlite://{folder}/docs.db?table=documents", SOURCE),
                      store(postgres_server.uri("system_docs") + "&vector_column=none",
                            MAPPED)),
        "conversations": (langchain_source, table_of(folder, messages)),
    }


def system_file(system: dict, path: Path, vectors: str = "", **pairs: tuple[str, str]) -> Path:
    """A system file of the three parts, ``pairs`` replacing the faithful ones; ``vectors``
    more lines of [vectors]."""
    text = ""
    for part, extra in (("vectors", vectors), ("documents", 'mapping = "docs.toml"\n'),
                        ("conversations", "window = 2\n")):
        source, target = pairs.get(part, system[part])
        text += f'[{part}]\nsource = "{source}"\ntarget = "{target}"\n{extra}\n'
    path.write_text(text)
    return path


def test_the_faithful_system_passes_in_one_command_with_every_part_reported(system):
    """As a user runs it, in a process of its own and under ``-W error``: exit 0, a line per
    part, one JSON and one HTML over the three, each part's own JSON, HTML and JUnit beside
    them."""
    folder = system["folder"]
    system_file(system, folder / "rag.toml")
    done = subprocess.run([sys.executable, "-m", "vmtest", "check", "--system=rag.toml",
                           *ARGS, "-W", "error"], capture_output=True, text=True, cwd=folder,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    # the second and third sessions do not warn that the suite was imported by the first
    assert "Warning" not in done.stdout + done.stderr, done.stdout[-3000:] + done.stderr
    lines = done.stdout.splitlines()
    for part in ("vectors", "documents", "conversations"):
        assert any(line.split()[:2] == ["PASSED", part] for line in lines), done.stdout[-2000:]
    assert "SYSTEM GATE: PASSED (exit 0): every part passed (vectors, documents, "\
        "conversations)" in lines
    reports = folder / "reports" / "rag"
    document = json.loads((reports / "system.json").read_text())
    assert document["verdict"] == "passed" and document["failed_parts"] == []
    parts = {p["name"]: p for p in document["parts"]}
    assert list(parts) == ["vectors", "documents", "conversations"]
    for name, part in parts.items():
        assert (part["verdict"], part["exit_code"]) == ("passed", 0)
        assert part["reports"] == {"json": f"{name}.json", "html": f"{name}.html",
                                   "junit": f"{name}.xml"}
        assert json.loads((reports / f"{name}.json").read_text())["checks"] == \
            part["report"]["checks"]
        assert ET.parse(reports / f"{name}.xml").getroot().find("testsuite").get(
            "name") == name
    checks = {name: {c["name"]: c["status"] for c in p["report"]["checks"]}
              for name, p in parts.items()}
    # each part ran what makes it that part: the vectors' references into the new document
    # store, judged against the old one (neither named in the file: [documents]' target and
    # source), so c6's dangling reference, the source's already, is a warning and no failure;
    # the documents under their mapping, the conversation checks with the window
    assert checks["vectors"]["references"] == "warning"
    settings = parts["vectors"]["report"]["settings"]
    assert (settings["documents"], settings["source_documents"]) == (
        parts["documents"]["target"], parts["documents"]["source"])
    assert "WARNING: 1 orphan already in the source before migration (kept, not failed): "\
        "c6 -> 'd9' (dangling)" in done.stdout, done.stdout[-3000:]
    assert checks["documents"]["metadata"] == "passed"
    assert parts["documents"]["report"]["settings"]["mapping"] == str(folder / "docs.toml")
    assert checks["conversations"]["conversation_window"] == "passed"
    assert checks["conversations"]["conversation_order"] == "warning"  # alice's tie
    html = (reports / "system.html").read_text()
    assert "SYSTEM GATE: PASSED" in html and "<script" not in html
    for name in parts:
        assert f"id='part-{name}'" in html and f"href='{name}.html'" in html


@pytest.mark.parametrize(("broken", "check"), [
    ("vectors", "references"),
    ("documents", "metadata"),
    ("conversations", "conversation_order"),
])
def test_each_part_broken_fails_the_whole_system_naming_it(
        system, postgres_server, messages, tmp_path, monkeypatch, capsys,  # noqa: F811
        broken, check):
    """Vectors pointing to a document deleted during the migration (the chunks copied
    faithfully, d2 gone from the document store [vectors] names); a field renamed but mapped
    wrongly; a session whose first two messages traded places."""
    pairs, vectors = {}, ""
    if broken == "vectors":
        lost = store(f"sqlite://{tmp_path}/lost.db?table=documents", MAPPED[:2])
        vectors = f'documents = "{lost}"\n'
    elif broken == "documents":
        wrong = [{("heading" if k == "name" else k): v for k, v in m.items()} for m in MAPPED]
        pairs["documents"] = (system["documents"][0], store(
            postgres_server.uri("system_docs_wrong") + "&vector_column=none", wrong))
    else:
        pairs["conversations"] = (system["conversations"][0], table_of(
            tmp_path, edited(edited(messages, "alice#0", seq=1), "alice#1", seq=0)))
    path = system_file(system, tmp_path / "rag.toml", vectors, **pairs)
    (tmp_path / "docs.toml").write_text(MAPPING)
    monkeypatch.chdir(tmp_path)
    # in this process: the search checks have nothing to say here (the faithful run shows
    # them)
    assert main(["check", f"--system={path}", "-q", "-k", "not drift and not recall",
                 *ARGS]) == 1
    out = capsys.readouterr().out
    assert f"SYSTEM GATE: FAILED (exit 1): {broken} ({check}) failed" in out.splitlines()
    document = json.loads((tmp_path / "reports" / "rag" / "system.json").read_text())
    assert document["verdict"] == "failed" and document["failed_parts"] == [broken]
    assert {p["name"]: (p["verdict"], p["failed_checks"]) for p in document["parts"]} == {
        part: ("failed", [check]) if part == broken else ("passed", [])
        for part in ("vectors", "documents", "conversations")}
    if broken == "vectors":  # the orphans the migration made, not c6, the source's already
        references, = (c for p in document["parts"] if p["name"] == "vectors"
                       for c in p["report"]["checks"] if c["name"] == "references")
        assert [o["id"] for o in references["offenders"]] == ["c4", "c5"], references


SQLITE_SYSTEM = """
[vectors]
source = "sqlite://{d}/docs.db?table=documents"
target = "sqlite://{d}/docs.db?table=documents"

[documents]
source = "sqlite://{d}/docs.db?table=documents"
target = "sqlite://{d}/docs.db?table=documents"

[conversations]
source = "sqlite://{d}/docs.db?table=documents"
target = "sqlite://{d}/docs.db?table=documents"
window = 2
"""


@pytest.mark.parametrize(("edit", "extra", "says"), [
    ("missing", (), "cannot read the system file {path}: No such file"),
    ("[rag\n", (), "the system file {path} is not TOML"),
    ("[vector]\n", (), "{path}: unknown table [vector] (did you mean 'vectors'?)"),
    ("window = 2", (), "{path} [conversations]: unknown key 'windw' (did you mean 'window'?)"),
    ("window = 0", (), "{path} [conversations] window = 0: '0' is not a whole number >= 1"),
    ("window = [2]", (), "{path} [conversations] window = [2]: it takes N"),
    ("conversation = false", (), "always runs with conversation = true"),
    ("target = ", (), "{path} [conversations] has no target: a part compares two stores"),
    ("vmtest_json", (), "{path} [conversations] vmtest_json: a system run writes"),
    ("mapping", (), "{path} [documents] mapping = 'nope.toml': cannot read {dir}/nope.toml"),
    # told under [documents], not under the [vectors] key that defaults to it
    ("docs.db?table=documents\"\n\n[conv", (), "[documents] target = sqlite://{dir}/gone.db"),
    ("", ("--vmtest-json=x.json",), "--vmtest-json: a system run writes each part's reports"),
    ("", ("--source=sqlite:///x.db?table=t",), "--source goes with one pair of stores"),
])
def test_a_wrong_system_file_is_one_line_and_exit_4_with_nothing_written(
        tmp_path, monkeypatch, capsys, edit, extra, says):
    store(f"sqlite://{tmp_path}/docs.db?table=documents", SOURCE)
    text = SQLITE_SYSTEM.format(d=tmp_path)
    if edit == "window = 2":
        text = text.replace(edit, "windw = 2")
    elif edit.startswith("window =") or edit == "conversation = false":
        text = text.replace("window = 2", edit)
    elif edit == "target = ":
        text = text.rsplit("target = ", 1)[0]
    elif edit == "vmtest_json":
        text += 'vmtest_json = "x.json"\n'
    elif edit == "mapping":
        text = text.replace("[conversations]", 'mapping = "nope.toml"\n\n[conversations]')
    elif edit.startswith("docs.db"):
        text = text.replace(edit, 'gone.db?table=documents"\n\n[conv', 1)
    elif edit != "missing":
        text = edit + text
    path = tmp_path / "rag.toml"
    if edit != "missing":
        path.write_text(text)
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert main(["check", f"--system={path}", *extra]) == 4
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmtest: error: "), captured.err
    assert says.format(path=path, dir=tmp_path) in lines[0], lines[0]
    assert sorted(tmp_path.rglob("*")) == before  # no reports folder, no store
