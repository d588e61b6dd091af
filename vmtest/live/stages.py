"""Stages with gates: ``vmtest cutover start|status|advance|rollback``.

A cutover walks the stages of LaunchDarkly's migration flags, the live one in steps of read
traffic routed to the target by the flagd flag file
(:func:`~vmtest.live.routing.write_flagd_file`)::

    off -> dual-write -> shadow -> live 5% -> live 10% -> live 50% -> live 100%
        -> ramp-down -> complete                          (or, from any of them: rolled-back)

Which store has read and write authority in each (:func:`authority`): the source alone
(off); the source, the target written too (dual-write); the source, the target read and
written beside it for comparison (shadow); the target for the keys the flag routes to it
and the source for the rest, both read and written (live); the target, the source still
written so that a rollback loses nothing (ramp-down); the target alone (complete).

``advance`` runs the gate of the current stage (:mod:`vmtest.live.gates`) and moves to the
next stage when it is successful; a failed gate rolls back at once (flag to 0%), an
inconclusive or erroring one pauses. Everything lives in one JSON state file, replaced
atomically (a temporary file in the same folder, fsynced, renamed over the old one), with a
timeline of every transition and measurement.

**The order of the two writes.** The state's ``percent`` is always an upper bound of the
traffic the flag file sends to the target, whatever moment a crash (``kill -9``) strikes:

- *raising* the percentage (entering the next step): the state first, then the flag file. A
  crash between leaves the flag below the state; the next ``advance`` rewrites the flag from
  the state (that raise was decided by a gate that passed).
- *lowering* it (a rollback): first the intent, ``rolling-back``, in the state (its percent
  unchanged), then the flag file to 0%, then the state at 0%, ``rolled-back``. A crash after
  the intent leaves the flag at the old percent or at 0, both within the state's bound, and
  the next command finishes the rollback instead of restoring the flag.

Both writes happen under one lock (``STATE.lock``, flock, held for milliseconds), after
checking that nobody else changed the state since it was read: a ``rollback`` run while an
``advance`` measures is never undone by it. A gate's progress is saved after every
measurement; an ``advance`` killed mid-gate leaves ``gating`` with its runner gone, and the
next one starts that stage's gate over (attempt 2), so no stage is skipped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import math
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmtest.errors import EXIT_FAILED, EXIT_OK, ConfigError
from vmtest.live import gates as g
from vmtest.live.routing import FLAG_KEY, RESOLUTION, TARGET, write_flagd_file

__all__ = [
    "DEFAULT_STATE",
    "DEFAULT_STEPS",
    "STAGES",
    "Cutover",
    "CutoverConfig",
    "authority",
    "flag_percent",
    "parse_steps",
    "positions",
]

#: The stages, in order (live is repeated at each step); rolled-back ends a cutover early.
STAGES = ("off", "dual-write", "shadow", "live", "ramp-down", "complete")
ROLLED_BACK = "rolled-back"
#: Where the live steps' gates read metrics: the target serves reads there.
METRIC_STAGES = ("live", "ramp-down")
DEFAULT_STEPS = (5.0, 10.0, 50.0, 100.0)
DEFAULT_STATE = Path("reports/cutover.json")
SCHEMA, SCHEMA_VERSION = "vmtest-cutover", 1

#: The state's status: in a stage, its gate not begun (ready), measuring (gating), waiting
#: for an operator (paused), rolling back (the intent is saved, the flag may not be at 0 yet),
#: and the two ends.
READY, GATING, PAUSED, ROLLING_BACK, COMPLETE = (
    "ready", "gating", "paused", "rolling-back", "complete")
TERMINAL = (ROLLED_BACK, COMPLETE)

Say = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- the plan ----------------------------------------------------------------------------------


def parse_steps(text: str | Sequence[float]) -> tuple[float, ...]:
    """The live steps, "5,10,50,100": percentages increasing strictly, each in (0, 100],
    the last 100 (ramp-down then reads from the target alone)."""
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",")]
        try:
            steps = tuple(float(p.rstrip("%")) for p in parts)
        except ValueError:
            raise ConfigError(f"--steps is a list of percentages such as 5,10,50,100, not "
                              f"{text!r}") from None
    else:
        steps = tuple(float(s) for s in text)
    if not steps or not all(math.isfinite(s) and 0 < s <= 100 for s in steps):
        raise ConfigError(f"each --steps percentage is above 0 and at most 100, not "
                          f"{_steps_words(steps)}", hint="e.g. --steps 5,10,50,100")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise ConfigError(f"--steps increase strictly, not {_steps_words(steps)}",
                          hint="e.g. --steps 5,10,50,100")
    if steps[-1] != 100:
        raise ConfigError(f"the last of --steps is 100 (ramp-down reads from the target "
                          f"alone), not {_steps_words(steps)}", hint="e.g. --steps 5,10,50,100")
    for s in steps:
        if round(s * RESOLUTION / 100) != s * RESOLUTION / 100:
            raise ConfigError(f"a step of {s:g}% is finer than the flag's 0.01% resolution")
    return steps


def _steps_words(steps: Sequence[float]) -> str:
    return ",".join(f"{s:g}" for s in steps)


def _pct(percent: float) -> str:
    return f"{percent:g}%"


@dataclass(frozen=True)
class Position:
    """One place in the walk: a stage, its live step (index) and the flag's percentage."""

    stage: str
    step: int | None
    percent: float

    def words(self, steps: int | None = None) -> str:
        if self.stage == "live":
            of = f", step {self.step + 1} of {steps}" if steps and self.step is not None else ""
            return f"live at {_pct(self.percent)}{of}"
        return self.stage


def positions(steps: Sequence[float]) -> list[Position]:
    """Every position of a cutover with these live steps, in order."""
    return ([Position("off", None, 0.0), Position("dual-write", None, 0.0),
             Position("shadow", None, 0.0)]
            + [Position("live", i, float(s)) for i, s in enumerate(steps)]
            + [Position("ramp-down", None, 100.0), Position("complete", None, 100.0)])


def authority(stage: str, percent: float) -> dict[str, Any]:
    """Which stores each stage reads from and writes to, and which one is the authority (its
    answer is returned, its error is the caller's), as shares of keys in percent."""
    source, target, both = ["source"], ["target"], ["source", "target"]
    one = {"source": {"source": 100.0}, "target": {"target": 100.0}}
    split = {"target": float(percent), "source": 100.0 - float(percent)}
    table: dict[str, tuple[list[str], dict[str, float], list[str], dict[str, float]]] = {
        "off": (source, one["source"], source, one["source"]),
        "dual-write": (source, one["source"], both, one["source"]),
        "shadow": (both, one["source"], both, one["source"]),
        "live": (both, split, both, split),
        "ramp-down": (target, one["target"], both, one["target"]),
        "complete": (target, one["target"], target, one["target"]),
        # back to the source; the target may go on taking writes for a next attempt
        ROLLED_BACK: (source, one["source"], both, one["source"]),
    }
    reads, read_auth, writes, write_auth = table[stage]
    return {"reads": {"from": reads, "authority": read_auth},
            "writes": {"to": writes, "authority": write_auth}}


def authority_words(auth: dict[str, Any]) -> str:
    def side(part: dict[str, Any], stores: list[str], verb: str) -> str:
        shares = {k: v for k, v in part["authority"].items() if v > 0}
        if len(shares) == 1:
            (main,) = shares
            rest = [s for s in stores if s != main]
            also = f", {' and '.join(rest)} {verb} too (not authoritative)" if rest else ""
            return f"{main} (authoritative){also}"
        return (f"target for {_pct(shares['target'])} of keys, source for the rest (each "
                f"authoritative for its keys, the other {verb} too)")
    return (f"reads: {side(auth['reads'], auth['reads']['from'], 'read')}; "
            f"writes: {side(auth['writes'], auth['writes']['to'], 'written')}")


@dataclass(frozen=True)
class CutoverConfig:
    """What ``start`` records: the flag file and key, the live steps, the gates' settings,
    and (for the record) the two stores' URIs."""

    flag_file: str
    steps: tuple[float, ...] = DEFAULT_STEPS
    gate: g.GateConfig = field(default_factory=g.GateConfig)
    flag_key: str = FLAG_KEY
    source: str | None = None
    target: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"flag_file": self.flag_file, "flag_key": self.flag_key,
                "steps": list(self.steps), "gate": self.gate.to_dict(),
                "source": self.source, "target": self.target}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CutoverConfig:
        return cls(flag_file=data["flag_file"], flag_key=data.get("flag_key", FLAG_KEY),
                   steps=tuple(data["steps"]), gate=g.GateConfig.from_dict(data["gate"]),
                   source=data.get("source"), target=data.get("target"))


# -- files -------------------------------------------------------------------------------------


def _now_iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="milliseconds")


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: a temporary file in the same folder, fsynced, renamed
    over it, the folder fsynced; a reader sees the old file or the new, never half of one."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_folder(path.parent)


def load_state(path: Path) -> dict[str, Any]:
    """The state file, or ConfigError when there is none or it is not a cutover's."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no cutover state at {path}",
                          hint="begin with `vmtest cutover start --flag-file PATH ...` (or "
                          "give --state PATH)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the cutover state at {path} cannot be read: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ConfigError(f"{path} is not a vmtest cutover state",
                          hint="give the --state PATH that `vmtest cutover start` wrote")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ConfigError(f"{path} is a cutover state of version {data.get('schema_version')}"
                          f", this vmtest reads version {SCHEMA_VERSION}")
    return data


def flag_percent(path: str | os.PathLike[str], flag_key: str = FLAG_KEY) -> float | None:
    """The percentage of keys the flag file routes to the target, or None when the file is
    missing or holds no split vmtest wrote."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        split = data["flags"][flag_key]["targeting"]["fractional"]
        weights = {variant: w for variant, w in split}
        return float(weights[TARGET]) * 100 / RESOLUTION
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock on ``STATE.lock`` (released by the kernel if the holder dies)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: one process at a time is the operator's promise
        yield
        return
    try:
        handle = open(path.with_name(path.name + ".lock"), "a+")  # noqa: SIM115
    except OSError as exc:
        raise ConfigError(f"cannot open the cutover's lock file beside {path}: {exc}",
                          hint="check the folder's permissions") from None
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _process(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, from /proc; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def _me() -> dict[str, Any]:
    pid = os.getpid()
    info = _process(pid)
    return {"pid": pid, "host": socket.gethostname(), "ticks": info[1] if info else None,
            "since": time.time()}


def _alive(runner: dict[str, Any] | None) -> bool:
    """Whether the process an ``advance`` recorded as running the cutover still runs."""
    if not runner:
        return False
    if runner.get("host") != socket.gethostname():
        return True  # cannot tell: --take-over if it is gone
    if Path("/proc/self/stat").exists():
        info = _process(int(runner["pid"]))
        if info is None or info[0] in ("Z", "X"):
            return False
        return runner.get("ticks") is None or info[1] == runner["ticks"]
    try:
        os.kill(int(runner["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Superseded(Exception):
    """Another command changed the state since this one read it (a rollback, a new start)."""


# -- the cutover -------------------------------------------------------------------------------


class Cutover:
    """A cutover's state file and the commands over it. ``say`` receives each event's line
    as it happens (default: stderr)."""

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_STATE, *,
                 say: Say = _stderr) -> None:
        self.path = Path(path)
        self.say = say
        self.state: dict[str, Any] = {}
        self._flag_written_at: float | None = None

    # -- reading -------------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        self.state = load_state(self.path)
        return self.state

    @property
    def config(self) -> CutoverConfig:
        return CutoverConfig.from_dict(self.state["config"])

    def position(self) -> Position:
        return positions(self.config.steps)[self.state["position"]]

    # -- writing -------------------------------------------------------------------------------

    def _event(self, state: dict[str, Any], event: str, **fields: Any) -> dict[str, Any]:
        now = time.time()
        entry = {"time": now, "at": _now_iso(now), "event": event, "stage": state["stage"],
                 "step": state["step"], "percent": state["percent"],
                 "status": state["status"], **fields}
        state["timeline"].append(entry)
        return entry

    def _save(self, state: dict[str, Any]) -> None:
        state["revision"] += 1
        state["updated"] = _now_iso(time.time())
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(self.path, json.dumps(state, indent=1, allow_nan=False) + "\n")
        except OSError as exc:
            raise ConfigError(f"cannot write the cutover state {self.path}: {exc}",
                              hint="check the folder's permissions and free space") from None
        self.state = state

    def _write_flag(self, state: dict[str, Any], percent: float) -> None:
        config = CutoverConfig.from_dict(state["config"])
        try:
            write_flagd_file(config.flag_file, percent, flag_key=config.flag_key)
        except OSError as exc:
            raise ConfigError(f"cannot write the flag file {config.flag_file}: {exc}",
                              hint="check the folder's permissions; the state still bounds "
                              "the traffic, and the next command rewrites the flag") from None
        self._flag_written_at = time.time()

    def _commit(self, mutate: Callable[[dict[str, Any]], object], *,
                flag: float | None = None, check: bool = True,
                guard: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        """Read the state under the lock, refuse (Superseded) if another command changed it
        since this one read it (``check``) or ``guard`` rejects it, apply ``mutate``, save it,
        and write the flag file at ``flag`` percent: *before* saving when that lowers the
        state's percent, *after* when it raises it (or keeps it), so the state's percent
        bounds the flag at every moment."""
        with _locked(self.path):
            disk = load_state(self.path)
            if (check and self.state and disk["revision"] != self.state["revision"]) or (
                    guard is not None and not guard(disk)):
                self.state = disk
                raise Superseded
            lowering = flag is not None and flag < disk["percent"]
            if lowering:
                assert flag is not None
                self._write_flag(disk, flag)
            mutate(disk)
            self._save(disk)
            if flag is not None and not lowering:
                self._write_flag(disk, flag)
            return disk

    # -- start ---------------------------------------------------------------------------------

    def start(self, config: CutoverConfig, *, force: bool = False, check: bool = True
              ) -> dict[str, Any]:
        """Record ``config`` and begin at "off" with the flag at 0%. Refuses an existing
        state unless ``force``, and even then one whose traffic is still on the target (roll
        it back first) or that an ``advance`` is running. ``check`` probes what the gates
        will read (Prometheus, its queries, the suite's report) first: a usage error writes
        nothing."""
        flag_path = Path(config.flag_file)
        if not flag_path.parent.is_dir():
            raise ConfigError(f"the folder {flag_path.parent}, which would hold the flag file, "
                              "does not exist", hint=f"create it first (mkdir -p "
                              f"{flag_path.parent})")
        if not config.gate.evidence(metrics=True):
            raise ConfigError("the gates have no evidence to decide on",
                              hint="give --prometheus URL (the metrics of the live steps), "
                              "--suite-report PATH, or --shadow-report PATH")
        if check:
            g.probe(config.gate)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot make the folder of the cutover state {self.path}: "
                              f"{exc}") from None
        with _locked(self.path):
            if self.path.exists():
                try:
                    old = load_state(self.path)
                except ConfigError:
                    old = None
                if not force:
                    raise ConfigError(f"a cutover state already exists at {self.path}",
                                      hint="`vmtest cutover status` shows it; start --force "
                                      "discards it (or give another --state)")
                if old is not None:
                    if _alive(old.get("runner")):
                        raise ConfigError("a `vmtest cutover advance` (pid "
                                          f"{old['runner']['pid']}) is running that cutover",
                                          hint="stop it first")
                    if old["status"] not in TERMINAL and old["percent"] > 0:
                        raise ConfigError(
                            f"the cutover at {self.path} still routes {_pct(old['percent'])} "
                            "of keys to the target", hint="`vmtest cutover rollback` first")
            now = time.time()
            state: dict[str, Any] = {
                "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "revision": 0,
                "created": _now_iso(now), "updated": _now_iso(now),
                "config": config.to_dict(), "position": 0, "stage": "off", "step": None,
                "percent": 0.0, "status": READY, "authority": authority("off", 0),
                "gate": None, "runner": None, "paused": None, "rollback": None,
                "timeline": [],
            }
            self._event(state, "start", flag=0.0, reason=self._config_words(config))
            # the flag first (0%: a lowering, or a first file), then the state
            self._write_flag(state, 0)
            self._save(state)
        self.say(f"cutover started: off, the flag at 0% ({config.flag_file}); "
                 f"{authority_words(state['authority'])}")
        return state

    @staticmethod
    def _config_words(config: CutoverConfig) -> str:
        gate = config.gate
        evidence = ", ".join(gate.evidence(metrics=True))
        conditions = "; ".join(c.words() for c in gate.conditions)
        return (f"steps {_steps_words(config.steps)}; gates: every {gate.interval_s:g} s x "
                f"{gate.count}, failure-limit {gate.failure_limit}, inconclusive-limit "
                f"{gate.inconclusive_limit}, consecutive-error-limit "
                f"{gate.consecutive_error_limit}, initial delay {gate.initial_delay_s:g} s; "
                f"evidence: {evidence}" + (f" ({conditions})" if conditions else ""))

    # -- advance -------------------------------------------------------------------------------

    def advance(self, *, until_complete: bool = False, take_over: bool = False) -> int:
        """Run the current stage's gate; on success enter the next stage (all of them with
        ``until_complete``). Returns the exit code: 0 moved on (or complete), 1 rolled back or
        paused."""
        self.load()
        me = _me()

        def claim(state: dict[str, Any]) -> None:
            runner = state.get("runner")
            if runner and runner.get("pid") != me["pid"] and _alive(runner) and not take_over:
                raise ConfigError(
                    f"another `vmtest cutover advance` (pid {runner['pid']} on "
                    f"{runner.get('host')}) is running this cutover",
                    hint="wait for it or stop it; --take-over if that process is gone")
            state["runner"] = me
            if state["status"] in TERMINAL or state["status"] == ROLLING_BACK:
                return
            found = flag_percent(state["config"]["flag_file"], state["config"]["flag_key"])
            if found != state["percent"]:
                self._event(state, "flag-reconciled", flag=state["percent"],
                            reason=f"the flag file held {_found(found)}, the state "
                            f"{_pct(state['percent'])}: rewritten from the state")

        state = self._commit(claim, check=False)
        try:
            if state["status"] not in TERMINAL and state["status"] != ROLLING_BACK and (
                    flag_percent(self.config.flag_file, self.config.flag_key)
                    != state["percent"]):
                self._commit(lambda s: None, flag=state["percent"])
            while True:
                status = self.state["status"]
                if status == ROLLING_BACK:
                    self.say("a rollback was under way: finishing it")
                    self._finish_rollback()
                    return EXIT_FAILED
                if status == ROLLED_BACK:
                    rb = self.state.get("rollback") or {}
                    self.say(f"the cutover was rolled back at {rb.get('at', '?')}: "
                             f"{rb.get('reason', '')} (`vmtest cutover start --force` begins "
                             "again)")
                    return EXIT_FAILED
                if status == COMPLETE:
                    self.say("the cutover is complete: the target has read and write "
                             "authority, the flag at 100%")
                    return EXIT_OK
                outcome, measurement, gate = self._gate()
                if outcome == g.SUCCESSFUL:
                    self._enter_next()
                    if self.state["status"] == COMPLETE or not until_complete:
                        return EXIT_OK
                    continue
                if outcome == g.FAILED:
                    self._auto_rollback(measurement, gate)
                    return EXIT_FAILED
                self._pause(outcome, measurement, gate)
                return EXIT_FAILED
        except Superseded:
            now = self.state
            self.say(f"another command changed the cutover meanwhile: it is now "
                     f"{now['status']} at {_pct(now['percent'])}; this advance stops")
            return EXIT_FAILED
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):
                self._commit(lambda s: self._event(
                    s, "interrupted", reason="the advance was interrupted; the next advance "
                    "starts this stage's gate over"))
            raise
        finally:
            with contextlib.suppress(Exception):
                self._release(me)

    def _release(self, me: dict[str, Any]) -> None:
        """Clear this process from the state's runner (whatever else changed meanwhile)."""
        with _locked(self.path):
            disk = load_state(self.path)
            if (disk.get("runner") or {}).get("pid") == me["pid"]:
                disk["runner"] = None
                self._save(disk)

    def _gate(self) -> tuple[str, g.Measurement | None, dict[str, Any]]:
        """Run the current stage's gate to its outcome, saving each measurement."""
        config = self.config
        gate_config = config.gate
        position = self.position()
        metrics = position.stage in METRIC_STAGES
        evidence = gate_config.evidence(metrics=metrics)

        def begin(state: dict[str, Any]) -> None:
            prior = state.get("gate")
            attempt = (prior["attempt"] if prior and prior["position"] == state["position"]
                       else 0) + 1
            if state["status"] == GATING and prior:
                self._event(state, "gate-restart", attempt=prior["attempt"],
                            tally=prior["tally"],
                            reason=f"attempt {prior['attempt']} of this gate was cut short "
                            f"after {prior['tally']['measurements']} measurement(s) (its "
                            "advance stopped): the gate starts over")
            if state["status"] == PAUSED:
                self._event(state, "resume", reason=(state.get("paused") or {}).get(
                    "reason", ""))
            state["status"] = GATING
            state["paused"] = None
            state["gate"] = {"attempt": attempt, "position": state["position"],
                             "began": time.time(), "evidence": evidence,
                             "tally": g.Tally(gate_config).to_dict(), "first_failed": None,
                             "last_good": None}
            self._event(state, "gate-begin", attempt=attempt, evidence=evidence)

        state = self._commit(begin)
        gate = state["gate"]
        where = position.words(len(config.steps))
        if not evidence:
            reason = ("no evidence for this stage: the metrics are read once the target "
                      "serves reads (live, ramp-down)" if gate_config.prometheus else
                      "no evidence configured for this stage")

            def passed(state: dict[str, Any]) -> None:
                self._event(state, "gate", attempt=gate["attempt"], outcome=g.SUCCESSFUL,
                            reason=reason)
            self._commit(passed)
            self.say(f"[{where}] gate successful: {reason}")
            return g.SUCCESSFUL, None, gate
        self.say(f"[{where}] gate, attempt {gate['attempt']}: {', '.join(evidence)}, "
                 f"{gate_config.count} measurement(s) every {gate_config.interval_s:g} s"
                 + (f" after {gate_config.initial_delay_s:g} s" if metrics and
                    gate_config.initial_delay_s else ""))
        tally = g.Tally(gate_config)
        delay = gate_config.initial_delay_s if "metrics" in evidence else 0.0
        origin = time.monotonic() + delay
        if "metrics" in evidence:
            g.connect(gate_config)
        tick = 0
        while True:
            wait = origin + tick * gate_config.interval_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            tick += 1
            measurement = g.measure(gate_config, metrics=metrics, now=time.time())
            tally.add(measurement.outcome)
            decision = tally.decision()

            def record(state: dict[str, Any], m: g.Measurement = measurement,
                       decision: str | None = decision, n: int = tick) -> None:
                gate = state["gate"]
                gate["tally"] = tally.to_dict()
                if m.outcome == g.FAILED and gate["first_failed"] is None:
                    gate["first_failed"] = m.time
                if m.outcome == g.SUCCESSFUL and gate["first_failed"] is None:
                    gate["last_good"] = m.time
                self._event(state, "measurement", attempt=gate["attempt"], n=n,
                            measured=m.time, outcome=m.outcome, figures=m.figures,
                            reason=m.reason())
                if decision is not None:
                    self._event(state, "gate", attempt=gate["attempt"], outcome=decision,
                                tally=tally.to_dict(), figures=m.figures,
                                reason=f"{tally.words()}" + (
                                    f"; last: {m.reason()}" if m.reasons else ""))
            state = self._commit(record)
            self.say(f"[{where}] measurement {tick}: {measurement.outcome}: "
                     f"{_figures_words(measurement.figures)}"
                     + (f" ({measurement.reason()})" if measurement.reasons else ""))
            if decision is not None:
                self.say(f"[{where}] gate {decision}: {tally.words()}")
                return decision, measurement, state["gate"]

    def _enter_next(self) -> None:
        config = self.config
        plan = positions(config.steps)

        def enter(state: dict[str, Any]) -> None:
            index = state["position"] + 1
            nxt = plan[index]
            changed = nxt.percent != state["percent"]
            state.update(position=index, stage=nxt.stage, step=nxt.step,
                         percent=nxt.percent, gate=None,
                         status=COMPLETE if nxt.stage == "complete" else READY,
                         authority=authority(nxt.stage, nxt.percent))
            self._event(state, "enter", flag=nxt.percent if changed else None,
                        reason=authority_words(state["authority"]))
        old = self.state["percent"]
        nxt = plan[self.state["position"] + 1]
        state = self._commit(enter, flag=nxt.percent if nxt.percent != old else None)
        flag = (f"; the flag {_pct(old)} -> {_pct(nxt.percent)}" if nxt.percent != old
                else "")
        self.say(f"entered {nxt.words(len(config.steps))}{flag}: "
                 f"{authority_words(state['authority'])}")

    def _pause(self, outcome: str, measurement: g.Measurement | None,
               gate: dict[str, Any]) -> None:
        tally = gate["tally"]
        if outcome == g.ERROR:
            why = (f"{tally['consecutive_errors']} measurements in a row could not read their "
                   f"evidence (limit {self.config.gate.consecutive_error_limit})")
        else:
            why = (f"{tally['inconclusive']} inconclusive measurements (limit "
                   f"{self.config.gate.inconclusive_limit})")
        last = measurement.reason() if measurement and measurement.reasons else ""
        reason = why + (f": {last}" if last else "")

        def pause(state: dict[str, Any]) -> None:
            state["status"] = PAUSED
            state["paused"] = {"reason": reason, "outcome": outcome, "time": time.time(),
                               "at": _now_iso(time.time())}
            self._event(state, "pause", outcome=outcome, reason=reason)
        state = self._commit(pause)
        self.say(f"paused at {self.position().words(len(self.config.steps))} "
                 f"(the flag stays at {_pct(state['percent'])}): {reason}; `vmtest cutover "
                 "advance` measures again, `vmtest cutover rollback` rolls back")

    # -- rollback ------------------------------------------------------------------------------

    def _auto_rollback(self, measurement: g.Measurement | None, gate: dict[str, Any]) -> None:
        decided = time.time()
        cfg = self.config.gate
        reason = (f"gate failed at {self.position().words()}: {gate['tally']['failed']} "
                  f"failed measurements (limit {cfg.failure_limit})"
                  + (f": {measurement.reason()}" if measurement else ""))

        def intent(state: dict[str, Any]) -> None:
            state["status"] = ROLLING_BACK
            state["rollback"] = {
                "kind": "automatic", "reason": reason,
                "figures": measurement.figures if measurement else {},
                "from": {"stage": state["stage"], "step": state["step"],
                         "percent": state["percent"]},
                "decided": decided,
                "first_failed": gate.get("first_failed"),
                "last_good": gate.get("last_good") or gate.get("began"),
                "budget_after_first_failure_s": cfg.interval_s * cfg.failure_limit,
                "budget_after_onset_s": cfg.interval_s * (cfg.failure_limit + 1),
            }
            self._event(state, "rollback-begin", reason=reason,
                        figures=state["rollback"]["figures"])
        self._commit(intent)
        self._finish_rollback()

    def rollback(self, reason: str) -> int:
        """Roll back now, by hand: the flag to 0% and the state ``rolled-back``. Also finishes
        a rollback a crash cut short. Returns the exit code (0)."""
        self.load()
        requested = time.time()
        status = self.state["status"]
        if status == COMPLETE:
            raise ConfigError("the cutover is complete: the source no longer takes writes, "
                              "so routing reads back to it would serve stale data",
                              hint="start a migration the other way instead")
        if status == ROLLED_BACK:
            if flag_percent(self.config.flag_file, self.config.flag_key) != 0:
                self._commit(lambda s: self._event(s, "flag-reconciled", flag=0.0,
                                                   reason="the flag file was not at 0%"),
                             flag=0.0)
            self.say(f"already rolled back: {(self.state.get('rollback') or {}).get('reason')}")
            return EXIT_OK
        if status != ROLLING_BACK:
            def intent(state: dict[str, Any]) -> None:
                if state["status"] in TERMINAL:
                    return
                state["status"] = ROLLING_BACK
                state["rollback"] = {
                    "kind": "manual", "reason": reason or "rolled back by hand",
                    "figures": {}, "from": {"stage": state["stage"], "step": state["step"],
                                            "percent": state["percent"]},
                    "requested": requested}
                self._event(state, "rollback-begin", reason=state["rollback"]["reason"])
            self._commit(intent, check=False)
        try:
            self._finish_rollback()
        except Superseded:
            raise ConfigError(f"the cutover became {self.state['status']} meanwhile: not "
                              "rolled back") from None
        return EXIT_OK

    def _finish_rollback(self) -> None:
        def done(state: dict[str, Any]) -> None:
            if state["status"] == ROLLED_BACK:
                return
            rb = state["rollback"] or {}
            at0 = self._flag_written_at or time.time()
            rb["flag_at_0"] = at0
            rb["at"] = _now_iso(at0)
            for key, since in (("seconds_after_request", "requested"),
                               ("seconds_after_decision", "decided"),
                               ("seconds_after_first_failure", "first_failed"),
                               ("seconds_after_last_good", "last_good")):
                if rb.get(since) is not None:
                    rb[key] = round(at0 - rb[since], 3)
            state["rollback"] = rb
            state.update(stage=ROLLED_BACK, step=None, percent=0.0, status=ROLLED_BACK,
                         gate=None, authority=authority(ROLLED_BACK, 0))
            self._event(state, "rolled-back", flag=0.0, reason=rb.get("reason"),
                        figures=rb.get("figures") or {},
                        timing={k: rb[k] for k in ("seconds_after_request",
                                                   "seconds_after_decision",
                                                   "seconds_after_first_failure",
                                                   "seconds_after_last_good") if k in rb})
        self._flag_written_at = None
        state = self._commit(done, flag=0.0, check=False,
                             guard=lambda s: s["status"] in (ROLLING_BACK, ROLLED_BACK))
        self.say(rollback_words(state))

    # -- status --------------------------------------------------------------------------------

    def status_lines(self) -> list[str]:
        state = self.state or self.load()
        return status_lines(state, self.path)


def _found(percent: float | None) -> str:
    return "no split vmtest wrote" if percent is None else _pct(percent)


def _figures_words(figures: dict[str, Any]) -> str:
    parts = []
    for key, value in figures.items():
        if isinstance(value, float):
            parts.append(f"{key}={value:.4g}")
        elif value is not None:
            parts.append(f"{key}={value}")
        else:
            parts.append(f"{key}=no data")
    return ", ".join(parts) or "no figures"


def rollback_words(state: dict[str, Any]) -> str:
    """The rollback in one line: why, and how long it took."""
    rb = state.get("rollback") or {}
    origin = rb.get("from") or {}
    where = (f"live at {_pct(origin['percent'])}" if origin.get("stage") == "live"
             else origin.get("stage", "?"))
    timing = []
    if "seconds_after_first_failure" in rb:
        timing.append(f"{rb['seconds_after_first_failure']:.2f} s after the first failed "
                      f"measurement (budget interval x failure-limit = "
                      f"{rb['budget_after_first_failure_s']:g} s)")
    if "seconds_after_last_good" in rb:
        timing.append(f"at most {rb['seconds_after_last_good']:.2f} s after the fault showed "
                      f"in the metrics (it began after the last good measurement; budget "
                      f"interval x (failure-limit + 1) = {rb['budget_after_onset_s']:g} s, "
                      "plus the metrics' lag)")
    if "seconds_after_request" in rb:
        timing.append(f"{rb['seconds_after_request']:.3f} s after it was asked for")
    took = ("; the flag reached 0% " + ", ".join(timing)) if timing else ""
    return (f"ROLLED BACK from {where}: the flag is at 0% ({rb.get('kind', '?')}: "
            f"{rb.get('reason', '')}){took}")


def headline(state: dict[str, Any]) -> str:
    config = CutoverConfig.from_dict(state["config"])
    status = state["status"]
    if status == ROLLED_BACK:
        return rollback_words(state)
    where = positions(config.steps)[state["position"]].words(len(config.steps))
    text = f"cutover: {where}, {status}, the flag at {_pct(state['percent'])}"
    if status == GATING and state.get("gate"):
        gate = state["gate"]
        t = gate["tally"]
        runner = state.get("runner") or {}
        who = (f"advance pid {runner.get('pid')} measuring" if _alive(runner)
               else "its advance stopped: the next advance starts it over")
        text += (f" (gate attempt {gate['attempt']}: {t['measurements']} of "
                 f"{config.gate.count} measurements, {t['failed']} failed, "
                 f"{t['inconclusive']} inconclusive, {t['errors']} errors; {who})")
    if status == PAUSED and state.get("paused"):
        text += f": {state['paused']['reason']}"
    return text


def status_lines(state: dict[str, Any], path: Path) -> list[str]:
    """What ``vmtest cutover status`` prints: where the cutover is, who has authority, the
    flag file against the state, then the timeline."""
    config = CutoverConfig.from_dict(state["config"])
    found = flag_percent(config.flag_file, config.flag_key)
    agree = ("matches the state" if found == state["percent"] else
             f"the state says {_pct(state['percent'])}: `vmtest cutover advance` rewrites it")
    lines = [headline(state),
             f"  {authority_words(state['authority'])}",
             f"  flag file {config.flag_file} (key {config.flag_key}): {_found(found)} "
             f"({agree})",
             f"  state {path} (revision {state['revision']})",
             "timeline:"]
    t0 = state["timeline"][0]["time"] if state["timeline"] else 0.0
    for e in state["timeline"]:
        where = (f"live {_pct(e['percent'])}" if e["stage"] == "live" else e["stage"])
        bits = [f"  +{e['time'] - t0:8.2f}s  {e['event']:<15} {where:<12}"]
        if e.get("attempt"):
            bits.append(f"attempt {e['attempt']}" + (f" #{e['n']}" if e.get("n") else ""))
        if e.get("outcome"):
            bits.append(e["outcome"])
        if e.get("flag") is not None:
            bits.append(f"flag -> {_pct(e['flag'])}")
        if e.get("figures"):
            bits.append(_figures_words(e["figures"]))
        if e.get("reason") and e["event"] != "enter":
            bits.append(f"- {e['reason']}")
        lines.append(" ".join(bits))
    return lines
