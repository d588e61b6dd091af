"""Every vmtest option, declared once: command-line flag, ini key, environment variable,
validator, default and help text. The plugin registers them from :data:`OPTIONS` and resolves
them into one immutable :class:`Settings` (command line, then environment, then ini, then the
default).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmtest.errors import ConfigError, InvalidURIError
from vmtest.uri import StoreURI, parse

if TYPE_CHECKING:
    from vmtest.schema_map import SchemaMap

#: Payload fields that carry the source id without being named (--vmtest-id-field names another):
#: the conventions of common migration scripts and of Qdrant's migration tool.
DEFAULT_ID_FIELDS = ("original_id", "__id__")
#: The payload field of documents in stores without a document column.
DEFAULT_DOCUMENT_FIELD = "document"

#: What an option holds when it was not given (None is a value: "--vmtest-html=none").
UNSET: Any = type("Unset", (), {"__repr__": lambda self: "UNSET"})()


def _uri(text: str) -> StoreURI:
    try:
        return parse(text)
    except InvalidURIError as exc:
        raise ValueError(exc.message) from exc


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("not a number") from None


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("not a whole number") from None


def _nonneg_float(text: str) -> float:
    value = _float(text)
    if value < 0 or value != value:
        raise ValueError(f"{text!r} is not a number >= 0")
    return value


def _fraction(text: str) -> float:
    value = _float(text)
    if not 0 <= value <= 1:
        raise ValueError(f"{text!r} is not a number from 0 to 1")
    return value


def _open_fraction(text: str) -> float:
    value = _float(text)
    if not 0 < value < 1:
        raise ValueError(f"{text!r} is not a number strictly between 0 and 1")
    return value


def _positive_int(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise ValueError(f"{text!r} is not a whole number >= 1")
    return value


def _int(text: str) -> int:
    return _whole(text)


def _sample(text: str) -> int | str:
    if text == "auto":
        return "auto"
    return _positive_int(text)


def _path_or_none(text: str) -> Path | None:
    if text.lower() in {"", "none", "off"}:
        return None
    return Path(text)


def _positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise ValueError(f"{text!r} is not a number > 0")
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"{text!r} is not true or false")


def _provider(text: str) -> str:
    from vmtest.provision import PROVIDERS

    if text not in PROVIDERS:
        raise ValueError(f"{text!r} is not a provider ({' or '.join(PROVIDERS)})")
    return text


def _container_images(text: str) -> tuple[tuple[str, str], ...]:
    """KIND=IMAGE[,KIND=IMAGE...]: the image the containers provider runs for a kind."""
    from vmtest.provision import kinds

    known = kinds("containers")
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, sep, image = part.partition("=")
        kind, image = kind.strip(), image.strip()
        if not sep or not kind or not image:
            raise ValueError(f"{part!r} is not KIND=IMAGE")
        if kind not in known:
            raise ValueError(f"{kind!r} is not a kind the containers provider runs "
                             f"({', '.join(known)})")
        pairs.append((kind, image))
    return tuple(pairs)


COMPARE_MODES = ("digest", "full")


def _compare_mode(text: str) -> str:
    if text not in COMPARE_MODES:
        raise ValueError(f"{text!r} is not digest or full")
    return text


#: Where a partitioned check runs its partitions (vmtest.partitioned).
EXECUTORS = ("local", "ray")


def _executor(text: str) -> str:
    if text not in EXECUTORS:
        raise ValueError(f"{text!r} is not local or ray")
    return text


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
          "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def _bytes(text: str) -> int:
    number = text.strip().lower().rstrip("s")
    digits = number.rstrip("abgikm")
    unit = number[len(digits):]
    try:
        value = float(digits) * _UNITS[unit]
    except (ValueError, KeyError):
        raise ValueError(f"{text!r} is not a size such as 512MiB or 2GiB") from None
    if value < 1 << 16:
        raise ValueError(f"{text!r} is under 64 KiB")
    return int(value)


def human_bytes(size: int) -> str:
    """A size in the largest binary unit that keeps it whole-ish: 1GiB, 512MiB, 64KiB."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            value = size / factor
            return f"{value:g}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{size}B"


def _shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise ValueError(f"{text!r} is not I/N (e.g. 1/4)") from None
    if not sep or n < 1 or not 1 <= i <= n:
        raise ValueError(f"{text!r} is not I/N with 1 <= I <= N")
    return (i, n)


def _query_log(text: str) -> Path:
    """A query log, read and checked line by line now: a bad line is a usage error before
    any store is opened (text queries are embedded later, by the shadow check)."""
    from vmtest.errors import VmtestError
    from vmtest.live.shadow import parse_query_log

    path = Path(text)
    try:
        parse_query_log(path, flag=None)
    except VmtestError as exc:
        raise ValueError(exc.message) from None
    return path


def _session_map(text: str) -> Path:
    """A session map, read and checked now: a bad line is a usage error before any store is
    opened."""
    from vmtest.checks.conversation import read_session_map

    path = Path(text)
    try:
        read_session_map(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return path


def _schema_map(text: str) -> Path:
    """A schema mapping file, read and checked now: a mistake in it is a usage error before
    any store is opened."""
    from vmtest.schema_map import read_schema_map

    path = Path(text)
    try:
        read_schema_map(path)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return path


def _embedder(text: str) -> str:
    module, sep, attr = text.partition(":")
    if not (module and sep and attr):
        raise ValueError(f"{text!r} is not MODULE:CALLABLE")
    return text


def _name(text: str) -> str:
    if not text.strip():
        raise ValueError("an empty name")
    return text


#: The options that keep a bare flag: the two stores, and --migrate-to.
BARE = ("source", "target", "migrate_to")


@dataclass(frozen=True)
class Option:
    name: str
    convert: Callable[[str], Any]
    default: Any
    help: str
    metavar: str | None = None
    #: Its value is a file or folder (a relative one is read from where the text came from:
    #: the working folder, or a system file's folder).
    is_path: bool = False

    @property
    def flag(self) -> str:
        """--source, --target and --migrate-to stay bare; every other option is prefixed,
        as pytest-benchmark's and Hypothesis's are, so it cannot collide with another
        plugin's (argparse refuses two plugins' --seed) or read like pytest's -k."""
        if self.name in BARE:
            return "--" + self.name.replace("_", "-")
        return "--vmtest-" + self.name.removeprefix("vmtest_").replace("_", "-")

    @property
    def ini(self) -> str:
        return "vmtest_" + self.name.removeprefix("vmtest_")

    @property
    def env(self) -> str:
        return self.ini.upper()

    @property
    def is_flag(self) -> bool:
        return self.convert is _bool

    @property
    def shown_default(self) -> str:
        """The default as a person writes it (sizes in binary units: 1GiB)."""
        if self.default is None:
            return "not set"
        if self.convert is _bytes:
            return human_bytes(self.default)
        return str(self.default)

    @property
    def form(self) -> str:
        """The form the value takes, for a message: its metavar and its default."""
        shown = "true or false" if self.is_flag else (self.metavar or "a value")
        return shown if self.default is None else f"{shown} (default {self.shown_default})"


def option(default: Any, convert: Callable[[str], Any], help: str,
           metavar: str | None = None) -> Any:
    """A Settings field that is an option: its default, how a text becomes its value, its
    help line and metavar."""
    return field(default=default,
                 metadata={"convert": convert, "help": help, "metavar": metavar})


@dataclass(frozen=True)
class Settings:
    """Every vmtest option, declared once: its type and default here, its converter, help and
    metavar in the field's metadata (:func:`option`); the flag, the ini key and the
    environment variable derive from the name (:class:`Option`)."""

    source: StoreURI | None = option(None, _uri, "the store migrated from, as a URI", "URI")
    target: StoreURI | None = option(None, _uri, "the store migrated to, as a URI", "URI")
    migrate_to: str | None = option(None, _name,
        "instead of --target: provision a fresh store of this kind (chroma, qdrant, jsonl, "
        "parquet, chroma-server, ...), migrate the source into it, then check it", "KIND")
    provision: str = option("process", _provider,
        "how --migrate-to provides its store: process (embedded stores, local servers as child "
        "processes) or containers (testcontainers; needs a Docker engine)", "process|containers")
    container_image: tuple[tuple[str, str], ...] | None = option(None, _container_images,
        "with --vmtest-provision=containers: run this image for a kind instead of the pinned one "
        "(a private registry's or a locally built image), e.g. "
        "qdrant-server=registry.local/qdrant:v1.16.3; comma-separated for several kinds",
        "KIND=IMAGE[,...]")
    id_field: str | None = option(None, _name,
        "payload field that holds the source id in the target (original_id and __id__ are "
        "recognised without it)", "NAME")
    document_field: str = option("document", _name,
        "payload field that holds the document in stores without a document column", "NAME")
    tolerance: float = option(1e-6, _nonneg_float, "absolute tolerance per vector element", "ATOL")
    rtol: float = option(0.0, _nonneg_float,
        "relative tolerance per vector element (|s-t| <= atol + rtol*|s|)", "RTOL")
    sample: int | str | None = option(None, _sample,
        "compare the vectors of a seeded random sample of N records instead of all; 'auto' picks N"
        " to prove --vmtest-max-mismatch-rate", "N|auto")
    max_mismatch_rate: float = option(0.001, _open_fraction,
        "with --vmtest-sample=auto: the mismatch rate the sample must rule out", "RATE")
    confidence: float = option(0.95, _open_fraction,
        "confidence of the bounds a sample reports", "P")
    seed: int = option(0, _int, "seed of every random choice (samples, queries)", "N")
    lenient_numbers: bool = option(False, _bool, "let 1 and 1.0 count as equal metadata values")
    strict_floats: bool = option(False, _bool,
        "fail float metadata the target rounded within the rounding its store declares "
        "(Chroma, a Qdrant server: a few ulps); by default such values are counted and warned")
    batch_size: int = option(1000, _positive_int, "records read per request", "N")
    queries: int = option(100, _positive_int,
        "query vectors sampled from the source for the search checks", "N")
    query_file: Path | None = option(None, Path,
        "query vectors from a file (.jsonl, .parquet or .npy) instead of a sample", "PATH")
    k: int = option(10, _positive_int, "top-k of the search checks", "K")
    min_recall: float = option(0.95, _fraction,
        "the target's mean recall@k against exact ground truth must reach this", "R")
    min_query_recall: float = option(0.5, _fraction,
        "no single query's target recall@k may fall below this", "R")
    filter_field: str | None = option(None, _name,
        "also compare top-k restricted by equality on this metadata field", "NAME")
    memory_budget: int = option(1 << 30, _bytes,
        "memory the full comparison may hold; beyond it, records are spilled to disk in partitions"
        " (e.g. 512MiB, 2GiB)", "SIZE")
    compare: str = option("digest", _compare_mode,
        "digest: records whose digests match are verified without pairwise work, only the others "
        "compared one by one; full: every record compared one by one (error figures over all "
        "records)", "digest|full")
    truth_cache: Path | None = option(None, _path_or_none,
        "a folder where exact ground truth is kept and reused by later runs on the same data and "
        "queries (keyed by a digest of both)", "DIR")
    shard: tuple[int, int] | None = option(None, _shard,
        "check only share I of N of the records: every Nth partition of the stores, read alone "
        "(the records whose key hashes to share I where a store cannot be looked up by id); merge "
        "the N JSON reports with 'vmtest report merge'; search checks run in share 1", "I/N")
    partitions: int | None = option(None, _positive_int,
        "check ids, vectors, metadata and documents partition by partition, each record read "
        "once: about N partitions of each store (with --vmtest-shard or "
        "--vmtest-executor=ray, chosen from the memory budget when not given)", "N")
    executor: str = option("local", _executor,
        "where the partitions run: local (in this process) or ray (as Ray tasks; the record-by-"
        "record checks then run partition by partition)", "local|ray")
    ray_address: str | None = option(None, _name,
        "the Ray cluster of --vmtest-executor=ray (default: a Ray already initialised, else a "
        "local one started for the run)", "ADDR")
    partition_state: Path | None = option(None, _path_or_none,
        "a folder keeping each finished partition's result, keyed by the partition plan: a "
        "rerun redoes only the partitions that did not finish", "DIR")
    source_model: str | None = option(None, _name,
        "the model the source's vectors come from (recorded; vectors of different models are not "
        "compared)", "NAME")
    target_model: str | None = option(None, _name,
        "the model the target's vectors come from", "NAME")
    source_embedder: str | None = option(None, _embedder,
        "MODULE:CALLABLE embedding query texts as the source's model does", "SPEC")
    target_embedder: str | None = option(None, _embedder,
        "MODULE:CALLABLE embedding texts as the target's model does (a re-embedded target's "
        "vectors are checked against it)", "SPEC")
    max_quality_drop: float = option(0.05, _fraction,
        "after a model change: how much lower the target's known-item hit rate may be than the "
        "source's", "D")
    reembed_tolerance: float = option(1e-3, _positive_float,
        "after a model change: how far (cosine distance) a target vector may be from its "
        "document's embedding", "D")
    max_latency_ratio: float = option(2.0, _positive_float,
        "the target's p99 latency may be at most this times the source's", "X")
    max_p99_ms: float | None = option(None, _positive_float,
        "an absolute ceiling on the target's p99 latency, in milliseconds", "MS")
    min_latency_gap_ms: float = option(5.0, _nonneg_float,
        "the latency ratio fails only when the target's p99 is also this many milliseconds slower "
        "(timer noise on sub-millisecond stores; a network's round trip when an embedded "
        "store moves to a server)", "MS")
    orphans_since: Path | None = option(None, _path_or_none,
        "a cutover mark of the source (vmtest cutover mark): the orphans check lists every "
        "record created, changed or deleted in it since", "MARK")
    query_log: Path | None = option(None, _query_log,
        "a query log (JSON Lines: vector or text, filter, k, user per line): the shadow check "
        "replays it on both stores, the source twice for its noise floor (texts embedded by "
        "--vmtest-source-embedder)", "PATH")
    shadow_tolerance: float = option(0.02, _fraction,
        "how much lower the target's mean overlap@k with the source may be than the source's "
        "overlap with itself (decided on a confidence interval)", "D")
    shadow_max_error_rate: float = option(0.01, _fraction,
        "the share of logged queries the target may fail on where the source answered", "RATE")
    mapping: Path | None = option(None, _schema_map,
        "a TOML schema mapping (tables rename, convert, add, drop): each target record is "
        "compared with its source record mapped; what it does not mention must be kept",
        "PATH")
    documents: StoreURI | None = option(None, _uri,
        "the document store of the target's system: every target vector record's "
        "--vmtest-reference-field must name one of its documents, and every document must be "
        "indexed", "URI")
    source_documents: StoreURI | None = option(None, _uri,
        "with --vmtest-documents: the document store of the source's system; the references "
        "check then fails only on the orphans the migration made, and lists those already in "
        "the source as a warning", "URI")
    reference_field: str = option("doc_id", _name,
        "with --vmtest-documents: the vector records' field naming their document", "NAME")
    conversation: bool = option(False, _bool,
        "the stores hold chat histories: also check, per session, the messages' order, one "
        "target session per source session, timestamps, expiry (Redis) and with "
        "--vmtest-window the last N messages")
    session_field: str = option("session_id", _name,
        "with --vmtest-conversation: the field naming a message's session", "NAME")
    order_field: str = option("seq", _name,
        "with --vmtest-conversation: the field holding a message's place in its session", "NAME")
    timestamp_field: str = option("timestamp", _name,
        "with --vmtest-conversation: the field holding a message's time (ISO 8601, a datetime "
        "or a Unix time)", "NAME")
    session_map: Path | None = option(None, _session_map,
        "with --vmtest-conversation: a file of SOURCE,TARGET lines naming the target session "
        "of each renamed source session (others keep their id)", "PATH")
    window: int | None = option(None, _positive_int,
        "with --vmtest-conversation: the last N messages of every session, the window an "
        "application loads, must be identical", "N")
    ttl_tolerance: float = option(5.0, _nonneg_float,
        "with --vmtest-conversation: how many seconds a session's expiry may move", "S")
    vmtest_json: Path | None = option(Path("reports/vmtest.json"), _path_or_none,
        "where to write the JSON report ('none' to skip)", "PATH")
    vmtest_html: Path | None = option(Path("reports/vmtest.html"), _path_or_none,
        "where to write the HTML report ('none' to skip)", "PATH")

    @cached_property
    def schema_map(self) -> SchemaMap | None:
        """The --vmtest-mapping file, read (None: the fields are kept as they are)."""
        if self.mapping is None:
            return None
        from vmtest.schema_map import read_schema_map

        return read_schema_map(self.mapping)

    @property
    def conversation_fields(self) -> tuple[str, ...]:
        """The fields the conversation checks own (session, order, timestamp): the metadata
        check leaves them to them. None without --vmtest-conversation."""
        if not self.conversation:
            return ()
        return (self.session_field, self.order_field, self.timestamp_field)

    @property
    def validating(self) -> bool:
        """Whether a source and a target were given: the validation suite runs."""
        return self.source is not None or self.target is not None

    def public(self) -> dict[str, Any]:
        """The settings as a report prints them (URIs redacted)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "shard" and value is not None:
                value = "{}/{}".format(*value)
            if f.name == "container_image" and value is not None:
                value = ",".join(f"{kind}={image}" for kind, image in value)
            out[f.name] = value if value is None or isinstance(value, (int, float, bool)) \
                else str(value)
        return out

    @classmethod
    def resolve(
        cls,
        cli: Mapping[str, Any],
        ini: Mapping[str, str],
        env: Mapping[str, str] = os.environ,
    ) -> Settings:
        """Command line, then environment, then ini, then default. Values from the environment
        and ini are validated as the command line's are; a bad one raises ConfigError."""
        values: dict[str, Any] = {}
        for opt in OPTIONS:
            given = cli.get(opt.name, UNSET)
            sources = [(f"{opt.flag} (command line)", given)] if given is not UNSET else [
                (f"{opt.env} (environment)", env.get(opt.env)),
                (f"{opt.ini} (ini file)", ini.get(opt.ini))]
            value = UNSET
            for origin, raw in sources:
                if raw is None or raw == "":
                    continue
                if not isinstance(raw, str):  # a flag given on the command line: True
                    value = raw
                    break
                try:
                    value = opt.convert(raw)
                except ValueError as exc:
                    raise ConfigError(
                        f"{origin} = {raw!r}: {exc}; it takes {opt.form}") from None
                break
            values[opt.name] = opt.default if value is UNSET else value
        settings = cls(**values)
        if settings.migrate_to is not None:
            if settings.target is not None:
                raise ConfigError("--migrate-to and --target exclude each other",
                                  hint="--migrate-to provisions the target itself")
            if settings.source is None:
                raise ConfigError("--migrate-to needs --source: the store to migrate from")
            return settings
        if settings.validating and (settings.source is None or settings.target is None):
            missing = "--target" if settings.target is None else "--source"
            raise ConfigError(
                f"{missing} is missing: the validation suite compares two stores",
                hint="give both --source=URI and --target=URI "
                "(or VMTEST_SOURCE and VMTEST_TARGET), or --migrate-to=KIND",
            )
        return settings


#: Every option, in declaration order, derived from the fields of :class:`Settings`.
OPTIONS: tuple[Option, ...] = tuple(
    Option(f.name, f.metadata["convert"], f.default, f.metadata["help"], f.metadata["metavar"],
           is_path=str(f.type).startswith("Path"))
    for f in fields(Settings))
