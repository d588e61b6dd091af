"""The three sign-off reports from one run of the README's quick start: JUnit parsed, JSON
checked against its schema, HTML rendered in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib.resources import files
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def demo_reports(tmp_path_factory) -> Path:
    """The quick start's main job, run as the README runs it (a smaller dataset)."""
    out = tmp_path_factory.mktemp("quickstart")
    done = subprocess.run(
        [sys.executable, "-m", "vmtest.cli", "demo", "--dir", str(out), "--size", "600",
         "--dimension", "48", "-p", "no:xdist"],
        capture_output=True, text=True, timeout=300, cwd=out,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAITHFUL" in done.stdout
    return out


def test_junit_carries_each_checks_figures(demo_reports):
    root = ET.parse(demo_reports / "junit.xml").getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert {"test_inventory", "test_ids", "test_vectors", "test_metadata", "test_documents",
            "test_schema", "test_recall", "test_filtered_recall", "test_latency"} <= set(cases)
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["vmtest.ids.matched"] == "600"
    assert float(props["vmtest.recall.target_recall"]) >= 0.95
    assert float(props["vmtest.recall.threshold.min_recall"]) == 0.95
    assert float(props["vmtest.latency.target_p99_ms"]) > 0
    assert float(props["vmtest.latency.threshold.max_latency_ratio"]) == 2.0


def test_json_follows_its_schema(demo_reports):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(files("vmtest.report").joinpath("schema.json").read_text())
    document = json.loads((demo_reports / "vmtest.json").read_text())
    jsonschema.validate(document, schema)
    assert document["faithful"] is True
    assert document["source"]["kind"] == "chroma" and document["target"]["kind"] == "qdrant"
    assert document["tool"]["vmtest"]
    assert [c["name"] for c in document["checks"]][:5] == [
        "inventory", "ids", "vectors", "metadata", "documents"]


def test_json_schema_rejects_a_broken_document(demo_reports):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(files("vmtest.report").joinpath("schema.json").read_text())
    document = json.loads((demo_reports / "vmtest.json").read_text())
    document["checks"][0]["status"] = "fine"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, schema)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("Chromium is not installed (make system-deps installs Debian's chromium)")
    return found


def test_html_renders_the_verdict_and_tables_in_chromium(demo_reports, tmp_path):
    page = demo_reports / "vmtest.html"
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert "<script" not in text
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*args, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "DATA FIDELITY: FAITHFUL (6 checks passed)" in dom
    assert "SEARCH QUALITY: PASSED (3 checks passed)" in dom
    assert "PERFORMANCE: PASSED (1 check passed)" in dom or "PERFORMANCE: PASSED (1 check " \
        "passed, 1 with a WARNING: latency)" in dom
    assert "id=\"checks-fidelity\"" in dom and "id=\"inventories\"" in dom
    assert "matched through the payload field 'original_id'" in dom
    assert "vmtest demo" in dom or "--source=chroma" in dom  # the command that reproduces it
    assert dom.count("<svg") >= 3
    shot = tmp_path / "report.png"
    subprocess.run([*args, "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True, cwd=tmp_path)
    assert shot.stat().st_size > 10_000


def test_a_failed_run_puts_the_failure_first(tmp_path):
    from vmtest.report.html import render_html

    document = {
        "faithful": False, "failed_checks": ["ids"], "created": "now", "seed": 0,
        "tool": {"vmtest": "x", "pytest": "y", "python": "z"}, "source": None, "target": None,
        "checks": [{"name": "ids", "status": "failed", "summary": "1 missing in the target",
                    "figures": {"missing": 1}, "thresholds": {"missing": 0},
                    "offending_total": 1, "warnings": [], "evidence": {},
                    "offenders": [{"id": "doc-<1>", "detail": "missing in the target"}]}],
    }
    page = render_html(document)
    assert page.index("NOT FAITHFUL") < page.index("id='checks-fidelity'")
    assert "doc-&lt;1&gt;" in page  # escaped, never injected
