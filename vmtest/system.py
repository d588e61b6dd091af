"""One RAG system's stores validated in one run: the system file of ``vmtest check
--system=FILE.toml``.

A RAG system keeps three stores: its vector index, its document store and its chat history.
A system file names the pair (source, target) of each, with the options of its run, spelt as
the settings are (:mod:`vmtest.settings`: ``window``, ``session_field``, ``mapping``, ...)::

    [vectors]                # each vector's doc_id must resolve in the new document store
    source = "qdrant://old:6333?collection=chunks"
    target = "qdrant://new:6333?collection=chunks"

    [documents]
    source = "sqlite:///srv/rag/docs.db?table=documents"
    target = "postgresql://app@new:5432/rag?table=documents"
    mapping = "docs.toml"    # a path: relative to the system file

    [conversations]          # the conversation checks: implied
    source = "redis://old:6379/0?layout=langchain"
    target = "postgresql://app@new:5432/rag?table=messages"
    window = 20

Each table is optional (at least one is given). ``[vectors]`` checks its references in
``[documents]``'s target unless it names another document store (``documents = URI``), and
tells the orphans the migration made from those already in ``[documents]``'s source
(``source_documents = URI`` names another);
``[conversations]`` runs the conversation checks. The file is read and checked whole before
any store is opened: an unknown table or key, a value an option refuses, a part without
source or target, a local store that does not exist are each a usage error naming the file.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmtest.errors import ConfigError, VmtestError
from vmtest.settings import OPTIONS, Option

#: The parts of a system, in the order they run.
PARTS = ("vectors", "documents", "conversations")
#: What a part's run always does, whatever the file says.
IMPLIED: dict[str, dict[str, bool]] = {"conversations": {"conversation": True}}
#: Options a system file may not set, and why.
OWNED = {
    "vmtest_json": "a system run writes each part's reports under --reports=DIR",
    "vmtest_html": "a system run writes each part's reports under --reports=DIR",
    "migrate_to": "a part compares two stores that exist: give target = URI",
}
_BY_NAME = {o.name: o for o in OPTIONS}


@dataclass(frozen=True)
class Part:
    """One pair of the system and the options of its run, as ``(option, text)``: the text a
    command line would give it (a path made absolute, a flag that is on as ``""``)."""

    name: str
    options: tuple[tuple[Option, str], ...]

    def text(self, name: str) -> str | None:
        return next((text for o, text in self.options if o.name == name), None)

    def argv(self) -> list[str]:
        """The part's options as the suite's command line takes them."""
        return [o.flag if o.is_flag else f"{o.flag}={text}" for o, text in self.options]


@dataclass(frozen=True)
class System:
    path: Path
    parts: tuple[Part, ...]


def read_system(path: Path) -> System:
    """The system file, read and checked whole: a mistake is a :class:`ConfigError` naming
    the file, the table and the key. Nothing is opened or written."""
    from vmtest.schema_map import load_toml

    try:
        data = load_toml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the system file {path}: {exc.strerror}",
                          hint="vmtest check --system=FILE.toml names a file of [vectors], "
                          "[documents] and [conversations] tables") from None
    except ValueError as exc:
        raise ConfigError(f"the system file {path} is {exc}") from None
    for key, value in data.items():
        if key not in PARTS:
            raise ConfigError(f"{path}: unknown table [{key}]{_did_you_mean(key, PARTS)}",
                              hint="a system file holds [vectors], [documents] and "
                              "[conversations]")
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {key} is not a table ([{key}] with source and target)")
    if not data:
        raise ConfigError(f"the system file {path} names no store",
                          hint="give one or more of [vectors], [documents], [conversations], "
                          "each with source = URI and target = URI")
    parts: dict[str, Part] = {}
    # [documents] first: a mistake in its stores is told under its own name, not under the
    # [vectors] keys that default to them
    for name in sorted(data, key=lambda p: p != "documents"):
        given = dict(data[name])
        if name == "vectors" and "documents" in parts:
            # the references go to the new documents, judged against the old ones
            for key, side in (("documents", "target"), ("source_documents", "source")):
                text = parts["documents"].text(side)
                if text is not None:
                    given.setdefault(key, text)
        parts[name] = _part(path, name, given)
    return System(path, tuple(parts[name] for name in PARTS if name in parts))


def _part(path: Path, name: str, given: dict[str, Any]) -> Part:
    where = f"{path} [{name}]"
    for key, value in IMPLIED.get(name, {}).items():
        if given.get(key, value) is not value:
            raise ConfigError(f"{where} {key} = {given[key]!r}: the [{name}] part always runs "
                              f"with {key} = {str(value).lower()}", hint=f"leave {key} out")
        given[key] = value
    missing = [key for key in ("source", "target") if key not in given]
    if missing:
        raise ConfigError(f"{where} has no {' and no '.join(missing)}: a part compares two "
                          "stores", hint="give source = URI and target = URI")
    options = []
    for key, value in given.items():
        option = _BY_NAME.get(key)
        if option is None:
            raise ConfigError(f"{where}: unknown key {key!r}"
                              f"{_did_you_mean(key, [*_BY_NAME])}",
                              hint="the keys are vmtest's option names (window for "
                              "--vmtest-window): docs/checks.md#one-rag-system-in-one-command")
        if key in OWNED:
            raise ConfigError(f"{where} {key}: {OWNED[key]}", hint=f"leave {key} out")
        if isinstance(value, bool) != option.is_flag or not isinstance(
                value, (str, int, float, bool)):
            raise ConfigError(f"{where} {key} = {value!r}: it takes {option.form}")
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if option.is_path and not Path(text).is_absolute():
            text = str(path.parent.resolve() / text)  # relative to the system file
        try:
            option.convert(text)  # the option's own rule, as on the command line
        except ValueError as exc:
            raise ConfigError(f"{where} {key} = {value!r}: {exc}; it takes {option.form}") \
                from None
        if option.is_flag:
            if value:
                options.append((option, ""))
        else:
            options.append((option, text))
    part = Part(name, tuple(options))
    for key in ("source", "target", "documents", "source_documents"):
        _check_local(where, key, part.text(key))
    return part


def _check_local(where: str, key: str, text: str | None) -> None:
    """A local path that holds no store, refused before any part runs (as the plugin refuses
    --source and --target at its session's start)."""
    if text is None:
        return
    from vmtest.stores import store_class
    from vmtest.uri import parse

    uri = parse(text)
    try:
        store_class(uri.scheme).check_local_path(uri, None)
    except VmtestError as exc:
        raise ConfigError(f"{where} {key} = {uri}: {exc.message}", hint=exc.hint) from None


def _did_you_mean(word: str, known: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word.replace("-", "_"), known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
