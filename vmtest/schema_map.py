"""A schema mapping: how a target's fields were meant to differ from the source's.

A TOML file (``--vmtest-mapping=FILE``) declares, in four tables, every difference a
migration made on purpose::

    [rename]            # source field = "target field"
    title = "name"

    [convert]           # target field = "str" | "int" | "float" | "bool"
    year = "str"

    [add]               # target field = its default, the value every target record holds
    archived = false

    [drop]              # fields left behind on purpose
    fields = ["internal_notes"]

The checks compare each target record with its source record *mapped* (:meth:`SchemaMap.apply`):
renamed, converted, with the added defaults and without the dropped fields. Whatever the
mapping does not mention must be kept as it was: a field the target lost, a value of another
type, a rename to another name than declared, all fail the metadata check as any difference
does. A conversion that cannot be made (``"abc"`` to int) expects a value no target holds,
so the record fails, naming the value.

The file is read and checked when the run starts: an unknown table or conversion, a field
both renamed and dropped, two fields renamed to one name are usage errors (exit 4).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONVERSIONS = ("str", "int", "float", "bool")
TABLES = ("rename", "convert", "add", "drop")


class Unconvertible:
    """The expected value of a conversion that cannot be made: equal to nothing."""

    def __init__(self, value: Any, to: str) -> None:
        self.value, self.to = value, to

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{self.value!r} cannot be converted to {self.to}>"


def convert(value: Any, to: str) -> Any:
    """``value`` as the declared type, by the rules a migration script would use: numbers
    to text as Python writes them (``True`` as ``"true"``), text to numbers when it parses,
    0 and 1 and ``"true"``/``"false"`` to booleans."""
    if value is None:
        return None
    try:
        if to == "str":
            if isinstance(value, bool):
                return "true" if value else "false"
            if isinstance(value, (int, float, str)):
                return str(value)
        elif to == "int":
            if isinstance(value, bool):
                return int(value)
            if isinstance(value, int):
                return value
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                return int(value.strip())
        elif to == "float":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                return float(value.strip())
        elif to == "bool":
            if isinstance(value, bool):
                return value
            if value in (0, 1) and isinstance(value, int):
                return bool(value)
            if isinstance(value, str) and value.strip().lower() in ("true", "false"):
                return value.strip().lower() == "true"
    except ValueError:
        pass
    return Unconvertible(value, to)


@dataclass(frozen=True)
class SchemaMap:
    rename: Mapping[str, str] = field(default_factory=dict)
    convert: Mapping[str, str] = field(default_factory=dict)
    add: Mapping[str, Any] = field(default_factory=dict)
    drop: frozenset[str] = frozenset()

    def apply(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """The target record this source record should have become."""
        out: dict[str, Any] = {}
        for name, value in metadata.items():
            if name in self.drop:
                continue
            out[self.rename.get(name, name)] = value
        for name, to in self.convert.items():
            if name in out:
                out[name] = convert(out[name], to)
        for name, default in self.add.items():
            out.setdefault(name, default)
        return out

    def describe(self) -> str:
        parts = [f"{len(self.rename)} renamed", f"{len(self.convert)} converted",
                 f"{len(self.add)} added", f"{len(self.drop)} dropped"]
        return ", ".join(parts)


def load_toml(text: str) -> dict[str, Any]:
    """A TOML text's tables; ValueError("not TOML (...)") when it is not TOML."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not TOML ({exc})") from None


def parse_schema_map(text: str) -> SchemaMap:
    """A mapping file's text; ValueError naming what is wrong."""
    data = load_toml(text)
    unknown = sorted(set(data) - set(TABLES))
    if unknown:
        raise ValueError(f"unknown table [{unknown[0]}]; a mapping has " +
                         ", ".join(f"[{t}]" for t in TABLES))
    for table in TABLES:
        if not isinstance(data.get(table, {}), dict):
            raise ValueError(f"[{table}] is not a table")
    rename = data.get("rename", {})
    if not all(isinstance(v, str) and v for v in rename.values()):
        raise ValueError("[rename] maps each source field to a target field's name (text)")
    targets = list(rename.values())
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        raise ValueError(f"two fields are renamed to {twice[0]!r}")
    conversions = data.get("convert", {})
    for name, to in conversions.items():
        if to not in CONVERSIONS:
            raise ValueError(f"[convert] {name} = {to!r}: one of " + ", ".join(CONVERSIONS))
    drop_table = data.get("drop", {})
    if set(drop_table) - {"fields"}:
        raise ValueError("[drop] holds one key, fields = [...]")
    drop = drop_table.get("fields", [])
    if not isinstance(drop, list) or not all(isinstance(f, str) for f in drop):
        raise ValueError("[drop] fields is a list of field names")
    both = sorted(set(drop) & set(rename))
    if both:
        raise ValueError(f"{both[0]!r} is both renamed and dropped")
    return SchemaMap(rename=dict(rename), convert=dict(conversions),
                     add=dict(data.get("add", {})), drop=frozenset(drop))


def read_schema_map(path: Path) -> SchemaMap:
    return parse_schema_map(path.read_text(encoding="utf-8"))
