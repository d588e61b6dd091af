"""The checks of a conversation store (a chat history): per session, the same messages in the
same order, one target session per source session and back, timestamps and expiry kept, and
the last N messages an application loads unchanged.

Pure functions over :class:`Conversations` (each side's messages grouped by session, built
by :func:`conversations` from the records' metadata). A message is identified by its record
key, as every record is (so a message copied under a new session keeps its key in
``original_id``). Which field holds the session, the order (an explicit sequence) and the
timestamp is the user's to say (``--vmtest-session-field``, ``--vmtest-order-field``,
``--vmtest-timestamp-field``). Each check owns its field: the metadata check leaves these
fields to them when ``--vmtest-conversation`` is given (a remapped session is not a metadata
difference; a timestamp kept in another type is judged by its instant and precision).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from vmtest.checks.result import CheckResult, Offender, not_applicable, verdict

UTC = dt.timezone.utc


@dataclass(frozen=True)
class Message:
    key: str
    session: str
    seq: Any  # the order field's value (None: the side keeps none)
    timestamp: Any  # the timestamp field's value as stored (None: none)
    role: Any
    document: str | None

    @property
    def content(self) -> tuple[str, str]:
        """What the application shows: who said it and what."""
        return (str(self.role), str(self.document))


@dataclass
class Conversations:
    """One side's messages by session, in the order the side keeps them (its snapshot's)."""

    sessions: dict[str, list[Message]] = field(default_factory=dict)
    #: messages with no session field (listed by the sessions check).
    unsessioned: list[str] = field(default_factory=list)

    def session_of(self) -> dict[str, str]:
        return {m.key: s for s, msgs in self.sessions.items() for m in msgs}


def conversations(keys: Sequence[str], metadatas: Sequence[Mapping[str, Any]],
                  documents: Sequence[str | None], *, session_field: str, order_field: str,
                  timestamp_field: str, role_field: str = "role") -> Conversations:
    """Group one side's records into sessions."""
    out = Conversations()
    for key, meta, doc in zip(keys, metadatas, documents, strict=True):
        session = meta.get(session_field)
        if session is None:
            out.unsessioned.append(key)
            continue
        out.sessions.setdefault(str(session), []).append(Message(
            key, str(session), meta.get(order_field), meta.get(timestamp_field),
            meta.get(role_field), doc))
    return out


def both_sides(source: Any, target: Any, *, session_field: str, order_field: str,
               timestamp_field: str, schema_map: Any = None
               ) -> tuple[Conversations, Conversations]:
    """Both sides' sessions from two snapshots (``keys``, ``metadatas``, ``documents``), the
    source's fields first mapped as a schema mapping says (the target holds them mapped)."""
    source_meta = source.metadatas if schema_map is None \
        else [schema_map.apply(m) for m in source.metadatas]
    return (conversations(source.keys, source_meta, source.documents,
                          session_field=session_field, order_field=order_field,
                          timestamp_field=timestamp_field),
            conversations(target.keys, target.metadatas, target.documents,
                          session_field=session_field, order_field=order_field,
                          timestamp_field=timestamp_field))


def session_expiries(source: Any, target: Any) -> tuple[Mapping[str, float | None] | None, ...]:
    """Each store's session expiries (``session_expiry()``, a chat store's), None for a store
    that keeps none."""
    return tuple(read() if (read := getattr(store, "session_expiry", None)) else None
                 for store in (source, target))


# -- timestamps ---------------------------------------------------------------------------

_FRACTION = re.compile(r"[T ]\d{2}:\d{2}:\d{2}[.,](\d+)")


@dataclass(frozen=True)
class Instant:
    """A timestamp read: the instant in microseconds since the epoch (UTC for a naive one),
    its precision in fractional digits, and its UTC offset (None: naive, no time zone)."""

    micros: int
    digits: int
    offset: dt.timedelta | None


def read_timestamp(value: Any) -> Instant | None:
    """An ISO 8601 text, a datetime, or a Unix time in seconds (int or float); None for
    anything else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        exponent = exact.as_tuple().exponent
        digits = max(0, -exponent) if isinstance(exponent, int) else 0
        return Instant(int((exact * 1_000_000).to_integral_value()), min(digits, 6), UTC_ZERO)
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        found = _FRACTION.search(text)
        digits = len(found.group(1)) if found else 0
        return _instant(parsed, digits)
    if isinstance(value, dt.datetime):
        return _instant(value, 6)
    return None


UTC_ZERO = dt.timedelta(0)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def _instant(value: dt.datetime, digits: int) -> Instant:
    offset = value.utcoffset()
    aware = value if offset is not None else value.replace(tzinfo=UTC)
    delta = aware - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return Instant(micros, digits, offset)


def check_timestamps(source: Conversations, target: Conversations, *, timestamp_field: str,
                     max_listed: int = 20) -> CheckResult:
    """Every matched message's timestamp is the same instant, at the source's precision, and
    keeps its time zone: a naive timestamp where the source had an offset (or the reverse),
    or a lost timestamp, fails; the same instant at another UTC offset is a warning."""
    name = "conversation_timestamps"
    target_by_key = {m.key: m for msgs in target.sessions.values() for m in msgs}
    offenders: list[Offender] = []
    total = compared = 0
    moved_offsets = 0
    unreadable = 0
    for msgs in source.sessions.values():
        for m in msgs:
            t = target_by_key.get(m.key)
            if t is None or m.timestamp is None:
                continue
            s_at = read_timestamp(m.timestamp)
            if s_at is None:
                unreadable += 1
                continue
            compared += 1
            t_at = read_timestamp(t.timestamp)
            problem = None
            if t.timestamp is None:
                problem = "the target has no timestamp"
            elif t_at is None:
                problem = "the target's timestamp is not a time"
            elif (s_at.offset is None) != (t_at.offset is None):
                problem = ("the time zone was lost" if t_at.offset is None
                           else "the target added a time zone to a naive time")
            elif s_at.micros != t_at.micros:
                lost = t_at.digits < s_at.digits
                problem = ("precision lost: " if lost else "another instant: ") + \
                    f"{s_at.digits} fractional digits in the source, {t_at.digits} in the target"
            elif s_at.offset != t_at.offset:
                moved_offsets += 1
            if problem:
                total += 1
                if len(offenders) < max_listed:
                    offenders.append(Offender(m.key, f"session {m.session!r}: {problem}",
                                              _shown(m.timestamp), _shown(t.timestamp)))
    if not compared:
        why = (f"no source message holds a readable {timestamp_field!r}"
               if unreadable else f"no source message holds a {timestamp_field!r} field")
        return not_applicable(name, why + " (--vmtest-timestamp-field names it)")
    warnings = []
    if moved_offsets:
        warnings.append(f"{moved_offsets} timestamps are the same instant at another UTC "
                        "offset (the source's local offset is not kept)")
    if unreadable:
        warnings.append(f"{unreadable} source timestamps are not ISO 8601, a datetime or a "
                        "Unix time: not compared")
    summary = (f"{total} of {compared} message timestamps changed" if total else
               f"all {compared} message timestamps kept, to the source's precision")
    return CheckResult(name=name, status=verdict(bool(total), bool(warnings)), summary=summary,
                       figures={"compared": compared, "changed": total,
                                "other_offset": moved_offsets},
                       offenders=offenders, offending_total=total, warnings=warnings)


def _shown(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


# -- sessions -----------------------------------------------------------------------------

def read_session_map(text: str) -> dict[str, list[str]]:
    """A session map's lines: ``SOURCE,TARGET`` (or tab-separated), ``#`` comments. A source
    session listed twice keeps both targets (the sessions check fails it)."""
    out: dict[str, list[str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in re.split(r"[,\t]", line)]
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"line {number} is not SOURCE,TARGET: {line!r}")
        out.setdefault(parts[0], []).append(parts[1])
    return out


@dataclass
class SessionPairs:
    """Which source session became which target session (only the sessions that map one to
    one: the order and window checks compare these)."""

    pairs: dict[str, str] = field(default_factory=dict)


def pair_sessions(source: Conversations, target: Conversations,
                  session_map: Mapping[str, Sequence[str]] | None = None
                  ) -> tuple[SessionPairs, list[Offender]]:
    """Source session -> target session for each one that maps to exactly one and back, and
    the offenders (split, merged, remapped to two targets, landed elsewhere than declared,
    missing, or a target session no source session became)."""
    session_map = session_map or {}
    target_session = target.session_of()
    source_session = source.session_of()
    landed: dict[str, set[str]] = {}
    for s, msgs in source.sessions.items():
        landed[s] = {target_session[m.key] for m in msgs if m.key in target_session}
    came_from: dict[str, set[str]] = {}
    for t, msgs in target.sessions.items():
        came_from[t] = {source_session[m.key] for m in msgs if m.key in source_session}
    offenders: list[Offender] = []
    pairs = SessionPairs()
    for s in source.sessions:
        declared = list(dict.fromkeys(session_map.get(s, [s])))
        where = sorted(landed[s])
        if len(declared) > 1:
            offenders.append(Offender(s, f"remapped to {len(declared)} targets: "
                                      + ", ".join(declared), s, declared))
        elif len(where) > 1:
            offenders.append(Offender(s, f"split into {len(where)} target sessions: "
                                      + ", ".join(where), s, where))
        elif not where:
            offenders.append(Offender(s, "no message of it is in the target", s, None))
        elif where[0] != declared[0]:
            offenders.append(Offender(s, f"its messages are in the target session {where[0]!r}"
                                      f", the session map says {declared[0]!r}", s, where[0]))
        elif len(came_from.get(where[0], ())) > 1:
            merged = sorted(came_from[where[0]])
            offenders.append(Offender(s, f"the target session {where[0]!r} also holds "
                                      "messages of " + ", ".join(x for x in merged if x != s),
                                      merged, where[0]))
        else:
            pairs.pairs[s] = where[0]
    for t, sources in came_from.items():
        if not sources:
            offenders.append(Offender(t, "a target session that no source session became "
                                      "(its messages are not in the source)", None, t))
    return pairs, offenders


def check_sessions(source: Conversations, target: Conversations,
                   session_map: Mapping[str, Sequence[str]] | None = None, *,
                   session_field: str, max_listed: int = 20) -> CheckResult:
    """Every source session became exactly one target session (itself, or the one the
    session map names) and every target session came from exactly one source session."""
    name = "conversation_sessions"
    if not source.sessions:
        return not_applicable(name, f"no source record holds a {session_field!r} field "
                              "(--vmtest-session-field names it)")
    pairs, offenders = pair_sessions(source, target, session_map)
    for side, conv in (("source", source), ("target", target)):
        if conv.unsessioned:
            offenders.append(Offender(conv.unsessioned[0], f"{len(conv.unsessioned)} {side} "
                                      f"messages have no {session_field!r}", None, None))
    mapped = "through the session map" if session_map else "by identity"
    summary = (f"{len(offenders)} sessions do not map one to one" if offenders else
               f"all {len(pairs.pairs)} sessions map one to one ({mapped})")
    return CheckResult(name=name, status=verdict(bool(offenders)), summary=summary,
                       figures={"source_sessions": len(source.sessions),
                                "target_sessions": len(target.sessions),
                                "paired": len(pairs.pairs), "mapped": mapped},
                       offenders=offenders[:max_listed], offending_total=len(offenders))


# -- order ----------------------------------------------------------------------------------

@dataclass
class Ordered:
    """A session's messages in order, or why their order cannot be told."""

    messages: list[Message]
    by: str  # "sequence", "timestamp" or "position"
    ties: list[list[str]]  # keys sharing a timestamp
    unknown: str | None = None  # why the order cannot be told (None: it can)


def _ts_key(m: Message) -> int | None:
    at = read_timestamp(m.timestamp)
    return None if at is None else at.micros


def _timestamp_ties(msgs: Sequence[Message]) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for m in msgs:
        at = _ts_key(m)
        if at is not None:
            groups.setdefault(at, []).append(m.key)
    return [keys for keys in groups.values() if len(keys) > 1]


def order_of(msgs: Sequence[Message]) -> Ordered:
    """By the explicit sequence when every message has one; else by timestamp (ties make the
    order unknown). A Redis list's messages always have one: their place in the list."""
    ties = _timestamp_ties(msgs)
    if msgs and all(m.seq is not None and not isinstance(m.seq, bool) for m in msgs):
        try:
            return Ordered(sorted(msgs, key=lambda m: m.seq), "sequence", ties)
        except TypeError:
            pass  # sequence values that do not sort together: fall through
    stamps = [_ts_key(m) for m in msgs]
    if msgs and all(s is not None for s in stamps):
        if ties:
            return Ordered(list(msgs), "timestamp", ties,
                           unknown="no sequence, and messages share a timestamp: "
                           + "; ".join(", ".join(t) for t in ties))
        return Ordered(sorted(msgs, key=_ts_key), "timestamp", ties)  # type: ignore[arg-type]
    return Ordered(list(msgs), "position", ties,
                   unknown="neither a sequence nor a timestamp on every message")


def check_order(source: Conversations, target: Conversations, pairs: SessionPairs, *,
                max_listed: int = 20) -> CheckResult:
    """Per session that maps one to one: the messages in the same order. The source's order
    is its sequence; messages whose timestamps tie are ordered by the sequence alone (a
    warning: ambiguous order). The target's order is its sequence, else its timestamps: a
    target that lost the sequence while timestamps tie fails (the order cannot be told).
    Messages are compared by key; a store whose keys are positions (a Redis list) reordered
    shows as the same messages (who said what) in another order."""
    name = "conversation_order"
    if not pairs.pairs:
        return not_applicable(name, "no session maps one to one (the sessions check says why)")
    offenders: list[Offender] = []
    ambiguous: list[str] = []
    compared = 0
    for s, t in sorted(pairs.pairs.items()):
        src = order_of(source.sessions[s])
        tgt = order_of(target.sessions[t])
        if src.ties:
            ambiguous += [f"{s}: {', '.join(tie)}" for tie in src.ties]
        if src.unknown:
            ambiguous.append(f"{s}: the source's own order cannot be told ({src.unknown})")
            continue
        compared += 1
        if tgt.unknown:
            offenders.append(Offender(s, f"the order cannot be told in the target session "
                                      f"{t!r}: {tgt.unknown}", "sequence", tgt.by))
            continue
        keys = {m.key for m in tgt.messages}
        src_keys = [m.key for m in src.messages if m.key in keys]
        common = set(src_keys)
        tgt_keys = [m.key for m in tgt.messages if m.key in common]
        position = _first_difference(src_keys, tgt_keys)
        if position is None:
            src_content = [m.content for m in src.messages]
            tgt_content = [m.content for m in tgt.messages]
            if src_content != tgt_content and Counter(src_content) == Counter(tgt_content):
                position = _first_difference(src_content, tgt_content) or 0
                offenders.append(Offender(s, f"the same messages in another order: at "
                                          f"position {position} the source has "
                                          f"{_brief(src_content[position])}, the target "
                                          f"{_brief(tgt_content[position])}",
                                          [k for k in src_keys], [k for k in tgt_keys]))
            continue
        offenders.append(Offender(s, f"reordered (by the target's {tgt.by}): at position "
                                  f"{position} the source has {src_keys[position]!r}, the "
                                  f"target {tgt_keys[position]!r}", src_keys, tgt_keys))
    warnings = []
    if ambiguous:
        warnings.append(f"ambiguous order in the source: {len(ambiguous)} groups of messages "
                        "share a timestamp and are ordered by the sequence alone ("
                        + "; ".join(ambiguous[:5]) + ")")
    summary = (f"{len(offenders)} of {compared} sessions are not in the source's order"
               if offenders else f"all {compared} sessions keep their order")
    return CheckResult(name=name, status=verdict(bool(offenders), bool(warnings)),
                       summary=summary, figures={"sessions": compared,
                                                 "ambiguous": len(ambiguous)},
                       offenders=offenders[:max_listed], offending_total=len(offenders),
                       warnings=warnings)


def _first_difference(a: Sequence[Any], b: Sequence[Any]) -> int | None:
    """The first position where two sequences of one length differ (None: nowhere)."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)


def _brief(content: tuple[str, str]) -> str:
    role, text = content
    return f"{role}: {text[:40]!r}"


# -- window ---------------------------------------------------------------------------------

def check_window(source: Conversations, target: Conversations, pairs: SessionPairs, n: int, *,
                 max_listed: int = 20) -> CheckResult:
    """Per session that maps one to one: the last ``n`` messages, the window an application
    loads into its prompt, are the same messages (who said what) in the same order."""
    name = "conversation_window"
    if not pairs.pairs:
        return not_applicable(name, "no session maps one to one (the sessions check says why)")
    offenders: list[Offender] = []
    unknown = 0
    for s, t in sorted(pairs.pairs.items()):
        src = order_of(source.sessions[s])
        tgt = order_of(target.sessions[t])
        if src.unknown or tgt.unknown:
            unknown += 1
            continue
        a = [m.content for m in src.messages[-n:]]
        b = [m.content for m in tgt.messages[-n:]]
        if a != b:
            i = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                     min(len(a), len(b)))
            detail = (f"the last {n} messages differ at {i} of the window: source "
                      + (_brief(a[i]) if i < len(a) else "none") + ", target "
                      + (_brief(b[i]) if i < len(b) else "none"))
            offenders.append(Offender(s, detail, [list(x) for x in a], [list(x) for x in b]))
    warnings = [f"{unknown} sessions whose order cannot be told were not compared (the order "
                "check fails them)"] if unknown else []
    compared = len(pairs.pairs) - unknown
    summary = (f"{len(offenders)} of {compared} sessions load another last-{n} window"
               if offenders else f"all {compared} sessions load the same last {n} messages")
    return CheckResult(name=name, status=verdict(bool(offenders), bool(warnings)),
                       summary=summary, figures={"window": n, "sessions": compared},
                       thresholds={"window": n}, offenders=offenders[:max_listed],
                       offending_total=len(offenders), warnings=warnings)


# -- time to live ---------------------------------------------------------------------------

def check_ttls(source: Mapping[str, float | None] | None,
               target: Mapping[str, float | None] | None, pairs: SessionPairs, *,
               tolerance_s: float, target_engine: str = "target", max_listed: int = 20
               ) -> CheckResult:
    """Each session's expiry (a Unix time; None: it never expires) is kept within
    ``tolerance_s``. Not applicable when the source keeps no expiry; a target store that has
    none (a SQL table) is a warning when source sessions expire, never a silent pass."""
    name = "conversation_ttl"
    if source is None:
        return not_applicable(name, "the source store keeps no expiry (only Redis does)")
    expiring = sum(1 for e in source.values() if e is not None)
    if target is None:
        status = verdict(False, bool(expiring))
        summary = (f"the {target_engine} store keeps no expiry: {expiring} source sessions "
                   "that expire will not" if expiring else
                   "no source session expires, and the target keeps no expiry")
        return CheckResult(name=name, status=status, summary=summary,
                           figures={"expiring": expiring},
                           warnings=[summary] if expiring else [])
    offenders = []
    for s, t in sorted(pairs.pairs.items()):
        se, te = source.get(s), target.get(t)
        if se is None and te is None:
            continue
        if te is None:
            detail = "the TTL was dropped: the target session never expires"
        elif se is None:
            detail = "the target session expires; the source's never does"
        elif abs(te - se) > tolerance_s:
            detail = f"expires {te - se:+.0f} s from the source's expiry"
        else:
            continue
        offenders.append(Offender(s, detail, _when(se), _when(te)))
    summary = (f"{len(offenders)} of {len(pairs.pairs)} sessions lost or changed their expiry"
               if offenders else f"every session's expiry kept ({expiring} expire), within "
               f"{tolerance_s:g} s")
    return CheckResult(name=name, status=verdict(bool(offenders)), summary=summary,
                       figures={"sessions": len(pairs.pairs), "expiring": expiring},
                       thresholds={"tolerance_s": tolerance_s},
                       offenders=offenders[:max_listed], offending_total=len(offenders))


def _when(at: float | None) -> str | None:
    return None if at is None else dt.datetime.fromtimestamp(at, UTC).isoformat(
        timespec="seconds")
