"""Store URIs: ``scheme://[user[:password]@]host[:port][/path][?key=value&...]``.

A :class:`StoreURI` is immutable. ``str(uri)`` never shows a password, so a URI can be
printed in any error message or report. Relative paths (``chroma://./data?...``,
``jsonl://../export.jsonl``, ``qdrant://~/q?...``) resolve against the working directory
(or the home folder) when the URI is parsed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from vmtest.errors import InvalidURIError

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
REDACTED = "***"


@dataclass(frozen=True)
class StoreURI:
    """A parsed store URI. Build one with :func:`parse`."""

    scheme: str
    host: str | None = None
    port: int | None = None
    path: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    params: tuple[tuple[str, str], ...] = ()

    @property
    def is_local(self) -> bool:
        """True when the URI names a folder or file rather than a server."""
        return self.host is None

    def param(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return default

    def require_param(self, name: str, help_text: str) -> str:
        value = self.param(name)
        if not value:
            raise InvalidURIError(f"{self} has no '{name}=' parameter", hint=help_text)
        return value

    def with_params(self, **updates: str | None) -> StoreURI:
        """A copy with query parameters set (or removed, where the value is None)."""
        params = {k: v for k, v in self.params}
        for key, value in updates.items():
            if value is None:
                params.pop(key, None)
            else:
                params[key] = value
        return StoreURI(
            self.scheme, self.host, self.port, self.path, self.username, self.password,
            tuple(sorted(params.items())),
        )

    def render(self, *, reveal_password: bool = False) -> str:
        auth = ""
        if self.username or self.password:
            auth = quote(self.username or "", safe="")
            if self.password:
                auth += ":" + (quote(self.password, safe="") if reveal_password else REDACTED)
            auth += "@"
        location = ""
        if self.host is not None:
            location = self.host if ":" not in self.host else f"[{self.host}]"
            if self.port is not None:
                location += f":{self.port}"
        path = quote(self.path or "", safe="/~._-+")
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='/:._-')}" for k, v in self.params)
        return f"{self.scheme}://{auth}{location}{path}" + (f"?{query}" if query else "")

    def __str__(self) -> str:
        return self.render()


def parse(text: str, *, cwd: str | os.PathLike[str] | None = None) -> StoreURI:
    """Parse a store URI; raise :class:`InvalidURIError` naming the URI when it is malformed."""
    if not isinstance(text, str) or "://" not in text:
        raise InvalidURIError(
            f"{_shown(text)!r} is not a store URI",
            hint="write it as scheme://..., e.g. chroma:///abs/dir?collection=docs "
            "or qdrant://127.0.0.1:6333?collection=docs",
        )
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if not _SCHEME.match(scheme):
        raise InvalidURIError(f"{_shown(text)!r} has an invalid scheme {scheme!r}")
    base = Path(cwd) if cwd is not None else Path.cwd()

    # Relative and home paths: scheme://./x, scheme://../x, scheme://~/x
    if rest.startswith((".", "~")):
        raw_path, _, query = rest.partition("?")
        path = Path(unquote(raw_path)).expanduser()
        resolved = path if path.is_absolute() else (base / path)
        return StoreURI(scheme, path=str(resolved.resolve()), params=_query(query, text))

    parts = urlsplit(f"{scheme}://{rest}")
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidURIError(
            f"{_shown(text)!r} has an invalid port", hint="a port is a number from 1 to 65535"
        ) from exc
    host = parts.hostname
    if parts.fragment:
        raise InvalidURIError(f"{_shown(text)!r} has a '#' fragment, which no store understands")
    url_path = unquote(parts.path) or None
    if host is None and url_path is not None and not url_path.startswith("/"):
        raise InvalidURIError(f"{_shown(text)!r} has a relative path; write ./{url_path}")
    return StoreURI(
        scheme=scheme,
        host=host,
        port=port,
        path=url_path,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        params=_query(parts.query, text),
    )


def _query(query: str, text: str) -> tuple[tuple[str, str], ...]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise InvalidURIError(f"{_shown(text)!r} has a malformed query string") from exc
    out: dict[str, str] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidURIError(f"{_shown(text)!r} sets '{key}=' twice")
        out[key] = value
    return tuple(sorted(out.items()))


def _shown(text: object) -> str:
    """The URI as it may be printed: with any password replaced."""
    if not isinstance(text, str):
        return repr(text)
    return re.sub(r"(://[^/@:?#]*:)[^@/?#]*@", rf"\1{REDACTED}@", text)


def redact_argument(arg: str) -> str:
    """A command-line argument as it may be printed: a URI's password replaced."""
    return _shown(arg) if "://" in arg else arg
