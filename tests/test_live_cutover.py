"""Stages with gates: ``vmtest cutover start|status|advance|rollback`` over its crash-safe state.

End to end: a real application (tests/live_app.py) routes each user's searches to one of two
collections of a real Qdrant server by the flagd flag file, read through the real OpenFeature
flagd provider; it exports Prometheus metrics that a real Prometheus (Debian's package)
scrapes every second, and the gates query it. Without /usr/bin/prometheus those tests skip
(scripts/install-system-deps.sh installs it). The rules of the state (the order of the writes,
a gate cut short, the gate's arithmetic) are tested in process, without servers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import MemoryStore
from vmtest.cli import main
from vmtest.errors import ConfigError
from vmtest.live import gates as g
from vmtest.live import stages
from vmtest.live.routing import write_flagd_file
from vmtest.live.stages import Cutover, CutoverConfig, flag_percent, parse_steps
from vmtest.migrate import copy_store
from vmtest.servers import PrometheusServer, StoreUnreachableError, free_port, prometheus_binary

REPO = Path(__file__).resolve().parent.parent

#: The test app's metrics over a 5 s window (Prometheus scrapes every 1 s).
ERROR_RATE = ('sum(rate(app_requests_total{store="target",status="error"}[5s])) / '
              'sum(rate(app_requests_total{store="target"}[5s]))')
P99 = 'histogram_quantile(0.99, sum(rate(app_request_seconds_bucket{store="target"}[5s])) by (le))'
#: A healthy search here takes a few ms (a healthy p99 of 0.31 s was seen on a machine loaded
#: by other work); the fault adds 500 ms, and the app's histogram has a bound at 0.5 s: a
#: faulty p99 is above it, a healthy one below it.
MAX_P99 = "0.5"
INTERVAL, FAILURE_LIMIT = 1.0, 1
#: How late the metrics can show a fault, on top of the gate's own budget (interval x
#: (failure-limit + 1) from the first faulty request): up to 1 s until a scrape holds it
#: (+0.5 s for a slowed search to finish; one failed search among the ~40 target searches
#: of a 5 s window is already a 2.5% error rate), up to 1 s more for rate() to have the two
#: samples that show the change, and 1 s for the queries, the flag write and the clocks of
#: two processes.
SLACK_S = 3.3


def _prometheus_missing() -> str | None:
    try:
        prometheus_binary()
    except StoreUnreachableError as exc:
        return str(exc)
    return None


needs_prometheus = pytest.mark.skipif(
    _prometheus_missing() is not None,
    reason=f"{_prometheus_missing()}: apt-get install prometheus "
    "(scripts/install-system-deps.sh)")


def vmtest(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The command as a user runs it: a process of its own."""
    return subprocess.run([sys.executable, "-m", "vmtest.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def cli(*args: str) -> subprocess.CompletedProcess:
    """The same command in this process (a new Python costs seconds on a loaded machine)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def read_state(path: Path) -> dict:
    return json.loads(path.read_text())


def events(state: dict, kind: str) -> list[dict]:
    return [e for e in state["timeline"] if e["event"] == kind]


def entered(state: dict) -> list[str]:
    """The positions entered, in order: "off", "dual-write", ..., "live 5", ..."""
    return [e["stage"] + (f" {e['percent']:g}" if e["stage"] == "live" else "")
            for e in state["timeline"] if e["event"] in ("start", "enter")]


def wait_for(predicate, timeout: float, what: str, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def state_when(path: Path, test) -> dict | None:
    try:
        state = read_state(path)
    except (FileNotFoundError, ValueError):
        return None
    return state if test(state) else None


# -- the world: two Qdrant collections, the application, Prometheus ---------------------------


@dataclass
class World:
    flag_file: Path
    fault_file: Path
    prometheus: str
    source: str
    target: str
    app: subprocess.Popen


def prometheus_query(url: str, query: str) -> list:
    with urllib.request.urlopen(f"{url}/api/v1/query?" + urllib.parse.urlencode(
            {"query": query}), timeout=5) as response:
        return json.loads(response.read())["data"]["result"]


@pytest.fixture(scope="module")
def world(qdrant_server, dataset, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cutover-world")
    source, target = qdrant_server.uri("cutover_source"), qdrant_server.uri("cutover_target")
    for uri in (source, target):
        copy_store(MemoryStore.holding(dataset), uri)
    flag_file = write_flagd_file(folder / "flags.json", 0)
    fault_file = folder / "fault"
    port = free_port()
    log = (folder / "app.log").open("w")
    app = subprocess.Popen(
        [sys.executable, "-m", "tests.live_app", "--flag-file", str(flag_file), "--source",
         source, "--target", target, "--metrics-port", str(port), "--fault-file",
         str(fault_file)], cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert app.stdout is not None
        line = app.stdout.readline()
        assert line.strip() == "ready", (folder / "app.log").read_text()[-2000:]
        with PrometheusServer([f"127.0.0.1:{port}"], data_dir=folder / "prometheus") as prom:
            wait_for(lambda: [r for r in prometheus_query(prom.url, 'up{job="app"}')
                              if r["value"][1] == "1"], 30, "Prometheus to scrape the app")
            yield World(flag_file, fault_file, prom.url, source, target, app)
    finally:
        app.send_signal(signal.SIGTERM)
        try:
            app.wait(timeout=15)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()
        app.stdout.close()
        log.close()


@pytest.fixture
def world_at_0(world):
    """The world with no fault and the flag at 0%; after a fault, a clean 5 s rate window."""
    if world.fault_file.exists():
        world.fault_file.unlink()
        time.sleep(6)
    Path(f"{world.fault_file}.began").unlink(missing_ok=True)
    write_flagd_file(world.flag_file, 0)
    return world


def start_args(world: World, state: Path, *more: str) -> list[str]:
    return ["cutover", "start", "--state", str(state), "--flag-file", str(world.flag_file),
            "--prometheus", world.prometheus, "--error-rate-query", ERROR_RATE,
            "--p99-query", P99, "--max-p99", MAX_P99, "--interval", str(INTERVAL),
            "--failure-limit", str(FAILURE_LIMIT), "--initial-delay", "2",
            "--source", world.source, "--target", world.target, *more]


def ok(done: subprocess.CompletedProcess, code: int = 0) -> subprocess.CompletedProcess:
    assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


# -- end to end --------------------------------------------------------------------------------


@needs_prometheus
def test_a_healthy_target_is_promoted_through_every_step_to_complete(world_at_0, tmp_path):
    world = world_at_0
    state_path = tmp_path / "cutover.json"
    ok(cli(*start_args(world, state_path, "--count", "3", "--inconclusive-limit", "1",
                          "--steps", "5,10,50,100")))
    assert flag_percent(world.flag_file) == 0
    started = time.monotonic()
    done = ok(vmtest("cutover", "advance", "--state", str(state_path), "--until-complete"))
    took = time.monotonic() - started
    state = read_state(state_path)
    assert state["status"] == "complete", done.stderr
    assert flag_percent(world.flag_file) == 100
    assert entered(state) == ["off", "dual-write", "shadow", "live 5", "live 10", "live 50",
                              "live 100", "ramp-down", "complete"]
    verdicts = events(state, "gate")
    assert [e["outcome"] for e in verdicts] == ["successful"] * 8
    # before live the target serves no reads: those gates have no metrics to read
    assert all("no evidence for this stage" in e["reason"] for e in verdicts[:3])
    # every live step and ramp-down read the metrics: 3 measurements, figures below the bar
    measured = events(state, "measurement")
    assert {(e["stage"], e["percent"]) for e in measured} == {
        ("live", 5), ("live", 10), ("live", 50), ("live", 100), ("ramp-down", 100)}
    assert len(measured) >= 5 * 3
    for e in measured:
        if e["outcome"] == "successful":
            assert e["figures"]["error_rate"] == 0
            assert e["figures"]["p99_latency"] < float(MAX_P99)
    assert state["authority"] == {"reads": {"from": ["target"],
                                            "authority": {"target": 100.0}},
                                  "writes": {"to": ["target"],
                                             "authority": {"target": 100.0}}}
    print(f"\npromoted through 8 gates (5 reading Prometheus) in {took:.1f} s")

    status = ok(vmtest("cutover", "status", "--state", str(state_path), "--html",
                       str(tmp_path / "cutover.html")))
    assert status.stdout.splitlines()[0].startswith("cutover: complete, complete")
    assert "matches the state" in status.stdout
    page = (tmp_path / "cutover.html").read_text()
    assert "<svg" in page and "live at 50%" in page and "p99_latency" in page
    as_json = json.loads(ok(cli("cutover", "status", "--state", str(state_path),
                                   "--json")).stdout)
    assert as_json["status"] == "complete"
    # advancing a complete cutover does nothing, and says so
    again = ok(cli("cutover", "advance", "--state", str(state_path)))
    assert "complete" in again.stderr


@needs_prometheus
def test_kill_9_mid_gate_then_rerun_measures_the_same_stage_again(world_at_0, tmp_path):
    world = world_at_0
    state_path = tmp_path / "cutover.json"
    ok(cli(*start_args(world, state_path, "--count", "3", "--steps", "5,10,50,100")))
    advance = subprocess.Popen(
        [sys.executable, "-m", "vmtest.cli", "cutover", "advance", "--state", str(state_path),
         "--until-complete"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: state_when(state_path, lambda s: s["percent"] == 5 and s["gate"]
                                    and s["gate"]["tally"]["measurements"] >= 1),
                 60, "the 5% gate's first measurement")
    finally:
        os.kill(advance.pid, signal.SIGKILL)
        advance.wait()
    killed = read_state(state_path)
    assert killed["status"] == "gating" and killed["stage"] == "live"
    assert killed["percent"] == 5 and flag_percent(world.flag_file) == 5
    assert killed["runner"]["pid"] == advance.pid  # left behind, and dead
    status = ok(cli("cutover", "status", "--state", str(state_path)))
    assert "its advance stopped: the next advance starts it over" in status.stdout

    ok(vmtest("cutover", "advance", "--state", str(state_path)))
    state = read_state(state_path)
    assert state["stage"] == "live" and state["percent"] == 10 and state["runner"] is None
    assert flag_percent(world.flag_file) == 10
    # no step skipped, none entered twice
    assert entered(state) == ["off", "dual-write", "shadow", "live 5", "live 10"]
    restart = events(state, "gate-restart")
    assert len(restart) == 1 and restart[0]["percent"] == 5 and restart[0]["attempt"] == 1
    at5 = [e for e in events(state, "measurement") if e["percent"] == 5]
    assert {e["attempt"] for e in at5} == {1, 2}
    assert [e["outcome"] for e in at5 if e["attempt"] == 2] == ["successful"] * 3
    gate5 = [e for e in events(state, "gate") if e["percent"] == 5]
    assert [(e["attempt"], e["outcome"]) for e in gate5] == [(2, "successful")]


@needs_prometheus
def test_a_query_with_no_data_is_inconclusive_and_pauses_then_advance_resumes(world_at_0,
                                                                               tmp_path):
    world = world_at_0
    path = tmp_path / "cutover.json"
    lines: list[str] = []
    config = CutoverConfig(flag_file=str(world.flag_file), gate=g.GateConfig(
        interval_s=0.2, count=3, inconclusive_limit=0, prometheus=world.prometheus,
        conditions=(g.Condition("error_rate", "sum(rate(no_such_metric_total[5s]))", "<",
                                0.01),)))
    cutover = Cutover(path, say=lines.append)
    cutover.start(config)
    assert cutover.advance(until_complete=True) == 1
    state = read_state(path)
    assert state["status"] == "paused" and state["percent"] == 5
    assert flag_percent(world.flag_file) == 5  # a pause keeps the traffic where it is
    assert "the query returned no data" in state["paused"]["reason"]
    assert any(line.startswith("paused at live at 5%") for line in lines)
    assert Cutover(path, say=lines.append).advance() == 1
    state = read_state(path)
    assert len(events(state, "resume")) == 1 and state["gate"]["attempt"] == 2
    assert state["status"] == "paused"


@needs_prometheus
def test_prometheus_gone_mid_cutover_pauses_and_a_hand_rollback_goes_to_0(world_at_0,
                                                                           tmp_path):
    """A Prometheus that answers at start but not during a gate: the measurements error, and
    past --consecutive-error-limit the gate pauses (no evidence against the target is not
    evidence for a rollback); `rollback` then routes every key back by hand."""
    world = world_at_0
    state_path = tmp_path / "cutover.json"
    lines: list[str] = []
    with PrometheusServer(data_dir=tmp_path / "prometheus") as gone:
        config = CutoverConfig(flag_file=str(world.flag_file), gate=g.GateConfig(
            interval_s=0.2, consecutive_error_limit=2, prometheus=gone.url,
            conditions=(g.Condition("error_rate", ERROR_RATE, "<", 0.01),)))
        Cutover(state_path, say=lines.append).start(config)  # it answers: no usage error
    assert Cutover(state_path, say=lines.append).advance(until_complete=True) == 1
    state = read_state(state_path)
    assert state["status"] == "paused" and state["paused"]["outcome"] == "error"
    assert "3 measurements in a row could not read their evidence" in state["paused"]["reason"]
    assert "did not answer" in state["paused"]["reason"]
    assert flag_percent(world.flag_file) == 5
    assert [line for line in lines if line.startswith("paused at live at 5%")]

    back = ok(vmtest("cutover", "rollback", "--state", str(state_path), "--reason",
                     "monitoring is down"))
    state = read_state(state_path)
    assert state["status"] == "rolled-back" and flag_percent(world.flag_file) == 0
    assert state["rollback"]["reason"] == "monitoring is down"
    assert state["rollback"]["seconds_after_request"] < 1
    assert "ROLLED BACK from live at 5%" in back.stdout
    # a rolled-back cutover does not advance, and says why
    refused = ok(cli("cutover", "advance", "--state", str(state_path)), 1)
    assert "monitoring is down" in refused.stderr


@needs_prometheus
@pytest.mark.parametrize("fault", ["latency", "errors"])
def test_a_faulty_target_is_rolled_back_at_10_percent_within_the_budget(world_at_0, tmp_path,
                                                                         fault):
    world = world_at_0
    state_path = tmp_path / "cutover.json"
    # 10% first; a long gate (up to 20 measurements) so that it is still measuring when a
    # rare fault shows: 5% errors at 8 target searches a second is one every 2.5 s on average
    # with 5% errors, the rollback must come from the error rate: the p99 ceiling is raised
    # out of the way (a loaded machine's healthy p99 can graze the ceiling)
    p99 = ("--max-p99", "5") if fault == "errors" else ()
    ok(cli(*start_args(world, state_path, "--count", "20", "--steps", "10,100", *p99)))
    advance = subprocess.Popen(
        [sys.executable, "-m", "vmtest.cli", "cutover", "advance", "--state", str(state_path),
         "--until-complete"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        # the fault begins once the 10% gate has taken its first (good) measurement
        wait_for(lambda: state_when(state_path, lambda s: s["percent"] == 10 and s["gate"]
                                    and s["gate"]["tally"]["measurements"] >= 1),
                 60, "the 10% gate's first measurement")
        assert flag_percent(world.flag_file) == 10
        began = time.time()
        world.fault_file.write_text(fault)
        out, err = advance.communicate(timeout=60)
    finally:
        if advance.poll() is None:
            advance.kill()
            advance.wait()
    assert advance.returncode == 1, out + err
    state = read_state(state_path)
    rb = state["rollback"]
    assert state["status"] == "rolled-back" and state["percent"] == 0
    assert flag_percent(world.flag_file) == 0
    assert rb["kind"] == "automatic" and rb["from"]["percent"] == 10
    assert ("p99_latency" if fault == "latency" else "error_rate") in rb["reason"]
    assert rb["figures"]
    assert entered(state) == ["off", "dual-write", "shadow", "live 10"]
    assert "ROLLED BACK from live at 10%" in out
    # the fault's onset: the first request it touched (5% errors at 8 target searches a
    # second touch one every 2.5 s on average: switching the fault on is not its onset)
    onset = float(Path(f"{world.fault_file}.began").read_text())
    assert onset >= began
    took = rb["flag_at_0"] - onset
    budget = INTERVAL * (FAILURE_LIMIT + 1)
    print(f"\n{fault}: rolled back {took:.2f} s after the first faulty request "
          f"({rb['flag_at_0'] - began:.2f} s after the fault was switched on; budget "
          f"{budget:g} s + {SLACK_S:g} s slack); the tool says: "
          f"{rb['seconds_after_first_failure']:.2f} s after the first failed measurement, "
          f"{rb['seconds_after_last_good']:.2f} s after the last good one")
    assert 0 < took <= budget + SLACK_S
    # from the first failed measurement: failure-limit more intervals, then the last
    # measurement's own queries and the writes
    assert rb["seconds_after_first_failure"] <= INTERVAL * FAILURE_LIMIT + 1.0
    # the state and the status say why
    status = ok(cli("cutover", "status", "--state", str(state_path)))
    assert status.stdout.startswith("ROLLED BACK from live at 10%")


# -- bad input: one line, exit 4, nothing written ----------------------------------------------


def one_line_exit_4(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 4, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(("args", "words"), [
    (["cutover", "jump"], ["invalid choice: 'jump'"]),
    (["cutover", "start", "--flag-file", "f.json", "--steps", "5,ten,100"], ["--steps"]),
    (["cutover", "start", "--flag-file", "f.json", "--steps", "50,10,100"],
     ["increase strictly"]),
    (["cutover", "start", "--flag-file", "f.json", "--steps", "5,50"], ["the last of --steps"]),
    (["cutover", "start", "--flag-file", "f.json", "--count", "0"], ["--count"]),
    (["cutover", "start", "--flag-file", "f.json", "--interval", "soon"], ["--interval"]),
])
def test_bad_input_is_one_line_and_exit_4(args, words):
    one_line_exit_4(cli(*args), *words)


def test_a_prometheus_that_does_not_answer_at_start_is_exit_4_and_writes_nothing(tmp_path):
    flag, state = tmp_path / "flags.json", tmp_path / "cutover.json"
    done = vmtest("cutover", "start", "--state", str(state), "--flag-file", str(flag),
                  "--prometheus", f"http://127.0.0.1:{free_port()}")
    one_line_exit_4(done, "did not answer")
    assert not flag.exists() and not state.exists()


def test_commands_without_a_state_or_evidence_are_exit_4(tmp_path):
    for command in ("status", "advance", "rollback"):
        one_line_exit_4(cli("cutover", command, "--state", str(tmp_path / "none.json")),
                        "no cutover state at")
    one_line_exit_4(cli("cutover", "start", "--state", str(tmp_path / "s.json"),
                           "--flag-file", str(tmp_path / "f.json")), "no evidence")
    one_line_exit_4(cli("cutover", "start", "--state", str(tmp_path / "s.json"),
                           "--flag-file", str(tmp_path / "nowhere" / "f.json"),
                           "--suite-report", str(tmp_path / "r.json")), "does not exist")
    one_line_exit_4(cli("cutover", "start", "--state", str(tmp_path / "s.json"),
                           "--flag-file", str(tmp_path / "f.json"),
                           "--suite-report", str(tmp_path / "r.json")), "no suite report")


# -- the rules, in process ---------------------------------------------------------------------


def file_config(tmp_path: Path, *, verdict: str = "passed", count: int = 2,
                steps: str = "5,10,100", **gate) -> CutoverConfig:
    """A cutover whose gates read only the suite's report (no servers)."""
    report = tmp_path / "vmtest.json"
    report.write_text(json.dumps({"verdict": verdict, "failed_checks": ["recall"]}))
    return CutoverConfig(flag_file=str(tmp_path / "flags.json"), steps=parse_steps(steps),
                         gate=g.GateConfig(interval_s=0.01, count=count,
                                           suite_report=str(report), **gate))


class Crash(BaseException):
    """kill -9 between two writes (nothing after it runs but finally blocks)."""


def crash_at_flag(monkeypatch, percent: float) -> None:
    real = stages.write_flagd_file

    def write(path, p, **kw):
        if p == percent:
            raise Crash
        return real(path, p, **kw)
    monkeypatch.setattr(stages, "write_flagd_file", write)


def test_raising_writes_the_state_first_so_a_crash_leaves_less_traffic_than_it_says(
        tmp_path, monkeypatch):
    config = file_config(tmp_path)
    path = tmp_path / "cutover.json"
    Cutover(path, say=lambda _: None).start(config)
    crash_at_flag(monkeypatch, 10.0)
    with pytest.raises(Crash):
        Cutover(path, say=lambda _: None).advance(until_complete=True)
    state = read_state(path)
    assert state["percent"] == 10 and flag_percent(config.flag_file) == 5  # flag <= state
    monkeypatch.undo()
    # the next advance rewrites the flag from the state (that raise was decided), then goes on
    assert Cutover(path, say=lambda _: None).advance() == 0
    state = read_state(path)
    assert len(events(state, "flag-reconciled")) == 1
    assert state["percent"] == 100 and flag_percent(config.flag_file) == 100
    assert entered(state) == ["off", "dual-write", "shadow", "live 5", "live 10", "live 100"]


def test_a_rollback_cut_short_is_finished_by_the_next_command_never_undone(
        tmp_path, monkeypatch):
    config = file_config(tmp_path)
    path = tmp_path / "cutover.json"
    cutover = Cutover(path, say=lambda _: None)
    cutover.start(config)
    for _ in range(4):
        cutover.advance()
    assert read_state(path)["percent"] == 10 and flag_percent(config.flag_file) == 10
    # crash after the intent, before the flag moved
    crash_at_flag(monkeypatch, 0.0)
    with pytest.raises(Crash):
        Cutover(path, say=lambda _: None).rollback("by hand")
    state = read_state(path)
    assert state["status"] == "rolling-back" and state["percent"] == 10
    assert flag_percent(config.flag_file) == 10
    monkeypatch.undo()
    # crash after the flag moved, before the state says so: the flag is below the state
    real_save = Cutover._save

    def save(self, state):
        if state["status"] == "rolled-back":
            raise Crash
        return real_save(self, state)
    monkeypatch.setattr(Cutover, "_save", save)
    with pytest.raises(Crash):
        Cutover(path, say=lambda _: None).advance()
    assert read_state(path)["status"] == "rolling-back"
    assert flag_percent(config.flag_file) == 0  # 0 <= the state's 10
    monkeypatch.undo()
    # the next advance finishes the rollback instead of restoring the flag to 10%
    assert Cutover(path, say=lambda _: None).advance() == 1
    state = read_state(path)
    assert state["status"] == "rolled-back" and flag_percent(config.flag_file) == 0
    assert state["rollback"]["reason"] == "by hand"


def test_a_failed_suite_verdict_rolls_back_and_a_warning_shadow_pauses(tmp_path):
    lines: list[str] = []
    config = file_config(tmp_path, verdict="failed", failure_limit=0)
    path = tmp_path / "cutover.json"
    cutover = Cutover(path, say=lines.append)
    cutover.start(config)
    assert cutover.advance(until_complete=True) == 1
    state = read_state(path)
    assert state["status"] == "rolled-back"
    assert "the suite's verdict is failed (recall)" in state["rollback"]["reason"]
    assert any(line.startswith("ROLLED BACK from off") for line in lines)

    shadow = tmp_path / "shadow.json"
    shadow.write_text(json.dumps({"status": "warning", "summary": "3 mismatches in 40"}))
    config = CutoverConfig(flag_file=str(tmp_path / "flags.json"),
                           gate=g.GateConfig(interval_s=0.01, count=3,
                                             shadow_report=str(shadow)))
    cutover = Cutover(path, say=lines.append)
    cutover.start(config, force=True)
    assert cutover.advance() == 1
    state = read_state(path)
    assert state["status"] == "paused" and state["stage"] == "off"
    assert "the shadow experiment warned (3 mismatches in 40)" in state["paused"]["reason"]


def test_the_shadow_report_of_vmtest_shadow_json_is_read_too(tmp_path):
    """`vmtest shadow --json` writes a "verdict" and the check's figures under "check"."""
    shadow = tmp_path / "shadow.json"
    gate = g.GateConfig(shadow_report=str(shadow))
    shadow.write_text(json.dumps({"kind": "vmtest-shadow", "verdict": "failed", "check": {
        "status": "failed", "summary": "recall@10 0.81 < 0.95",
        "figures": {"recall": 0.81, "queries": 200}}}))
    m = g.measure(gate, metrics=False, now=0.0)
    assert m.outcome == g.FAILED and m.figures["shadow_recall"] == 0.81
    assert "recall@10 0.81 < 0.95" in m.reason()
    shadow.write_text(json.dumps({"status": "passed"}))
    assert g.measure(gate, metrics=False, now=0.0).outcome == g.SUCCESSFUL
    shadow.write_text(json.dumps({"verdict": "error", "check": {"summary": "target down"}}))
    assert g.measure(gate, metrics=False, now=0.0).outcome == g.ERROR
    shadow.write_text("{torn")
    assert g.measure(gate, metrics=False, now=0.0).outcome == g.ERROR


def test_start_refuses_to_discard_a_cutover_that_still_routes_traffic(tmp_path):
    config = file_config(tmp_path)
    path = tmp_path / "cutover.json"
    cutover = Cutover(path, say=lambda _: None)
    cutover.start(config)
    with pytest.raises(ConfigError, match="already exists"):
        Cutover(path).start(config)
    for _ in range(4):
        cutover.advance()
    with pytest.raises(ConfigError, match="still routes 10% of keys"):
        Cutover(path).start(config, force=True)


def test_a_second_advance_is_refused_while_the_first_runs(tmp_path):
    config = file_config(tmp_path)
    path = tmp_path / "cutover.json"
    Cutover(path, say=lambda _: None).start(config)
    other = subprocess.Popen(["sleep", "30"])  # stands for an advance that runs
    try:
        state = read_state(path)
        state["runner"] = {**stages._me(), "pid": other.pid,
                           "ticks": stages._process(other.pid)[1]}
        path.write_text(json.dumps(state))
        with pytest.raises(ConfigError, match=f"another `vmtest cutover advance` .pid "
                           f"{other.pid}"):
            Cutover(path, say=lambda _: None).advance()
        assert Cutover(path, say=lambda _: None).advance(take_over=True) == 0
    finally:
        other.kill()
        other.wait()


def test_a_rollback_while_an_advance_measures_stops_that_advance(tmp_path):
    """The rollback wins: the advance finds the state changed at its next write, under the
    lock, and stops without touching the flag again."""
    import threading

    config = file_config(tmp_path, count=1000)
    path = tmp_path / "cutover.json"
    Cutover(path, say=lambda _: None).start(config)
    lines: list[str] = []
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(
        Cutover(path, say=lines.append).advance()))
    runner.start()
    wait_for(lambda: state_when(path, lambda s: s["status"] == "gating"
                                and s["gate"]["tally"]["measurements"] >= 3), 10,
             "the gate's measurements")
    assert Cutover(path, say=lines.append).rollback("pager went off") == 0
    runner.join(timeout=10)
    assert codes == [1]
    state = read_state(path)
    assert state["status"] == "rolled-back" and state["runner"] is None
    assert flag_percent(config.flag_file) == 0
    assert any("another command changed the cutover meanwhile" in line for line in lines)


def test_the_gate_decides_as_argo_rollouts_does():
    config = g.GateConfig(count=4, failure_limit=1, inconclusive_limit=1,
                          consecutive_error_limit=2)

    def run(outcomes: str) -> tuple[str | None, int]:
        tally = g.Tally(config)
        names = {"s": g.SUCCESSFUL, "f": g.FAILED, "i": g.INCONCLUSIVE, "e": g.ERROR}
        for n, o in enumerate(outcomes, 1):
            tally.add(names[o])
            if tally.decision():
                return tally.decision(), n
        return None, len(outcomes)

    assert run("ssss") == (g.SUCCESSFUL, 4)
    assert run("sfss") == (g.SUCCESSFUL, 4)            # one failure is within the limit
    assert run("sfsf") == (g.FAILED, 4)                # the second is not: at once
    assert run("ffss") == (g.FAILED, 2)
    assert run("isis") == (g.INCONCLUSIVE, 3)
    assert run("seeess") == (g.ERROR, 4)               # 3 errors in a row > 2
    assert run("seeseess") == (g.SUCCESSFUL, 8)        # errors are not measurements


def test_a_condition_judges_every_series_and_no_data_is_inconclusive():
    below = g.Condition("error_rate", "q", "<", 0.01)
    above = g.Condition("cache_hit_rate", "q", ">", 0.3)
    assert g.judge_values(below, [0.0, 0.004]) == (g.SUCCESSFUL, 0.004, "")
    outcome, figure, why = g.judge_values(below, [0.0, 0.05])
    assert outcome == g.FAILED and figure == 0.05 and "not < 0.01" in why
    assert g.judge_values(below, [])[0] == g.INCONCLUSIVE
    assert g.judge_values(below, [float("nan")])[0] == g.INCONCLUSIVE
    assert g.judge_values(above, [0.5, 0.2])[:2] == (g.FAILED, 0.2)


def test_each_stage_records_who_has_read_and_write_authority():
    assert stages.authority("dual-write", 0) == {
        "reads": {"from": ["source"], "authority": {"source": 100.0}},
        "writes": {"to": ["source", "target"], "authority": {"source": 100.0}}}
    live = stages.authority("live", 10)
    assert live["reads"]["authority"] == {"target": 10.0, "source": 90.0}
    assert live["writes"]["to"] == ["source", "target"]
    assert stages.authority("ramp-down", 100)["writes"] == {
        "to": ["source", "target"], "authority": {"target": 100.0}}
    words = stages.authority_words(live)
    assert "target for 10% of keys, source for the rest" in words
    assert [p.stage for p in stages.positions((5.0, 100.0))] == [
        "off", "dual-write", "shadow", "live", "live", "ramp-down", "complete"]


def test_the_html_page_of_a_cutover_renders_its_timeline(tmp_path):
    from vmtest.report import write_document
    from vmtest.report.cutover import render_cutover_html

    config = file_config(tmp_path)
    path = tmp_path / "cutover.json"
    cutover = Cutover(path, say=lambda _: None)
    cutover.start(config)
    cutover.advance(until_complete=True)
    written = write_document(read_state(path), json_path=None,
                             html_path=tmp_path / "c.html", rootdir=tmp_path,
                             render=render_cutover_html)
    page = Path(written[0]).read_text()
    assert "class='verdict passed'" in page and "<svg" in page
    assert page.count("<tr>") > 10 and "ramp-down" in page


def test_an_error_rate_on_counts_decides_on_its_interval_not_its_point_value():
    """0 errors in 50 requests is not proof of < 1% (inconclusive); 0 in 600 is; 6 in 100 is
    proof of > 1% (failed); 2 in 100, a point value above 1%, is not (inconclusive)."""
    rate = g.Condition("error_rate", "errors", "<", 0.01, trials_query="requests")
    assert g.judge_counts(rate, [0.0], [50.0])[0] == g.INCONCLUSIVE
    assert g.judge_counts(rate, [0.0], [600.0])[0] == g.SUCCESSFUL
    outcome, figure, why = g.judge_counts(rate, [6.0], [100.0])
    assert outcome == g.FAILED and figure == 0.06 and "6 of 100" in why
    outcome, _, why = g.judge_counts(rate, [2.0], [100.0])
    assert outcome == g.INCONCLUSIVE and "more requests would decide" in why
    assert g.judge_counts(rate, [], [])[0] == g.INCONCLUSIVE
    hits = g.Condition("cache_hit_rate", "hits", ">", 0.3, trials_query="lookups")
    assert g.judge_counts(hits, [80.0], [100.0])[0] == g.SUCCESSFUL
    assert g.judge_counts(hits, [5.0], [100.0])[0] == g.FAILED
