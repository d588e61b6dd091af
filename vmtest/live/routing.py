"""Sticky canary routing: which keys a cutover sends to the target (new) store.

A key's bucket is computed exactly as flagd's ``fractional`` operation computes it, so that
:func:`route` in vmtest and an application reading the flag written by
:func:`write_flagd_file` through OpenFeature always send the same keys to the same store.

How flagd buckets (flagd-core 2, the evaluator of openfeature-provider-flagd 0.6 and later,
``openfeature/contrib/tools/flagd/core/targeting/custom_ops.py``; flagd's ADRs
"high-precision fractional bucketing" and "fractional non-string randomization units"):

1. With the shorthand ``{"fractional": [[variant, weight], ...]}`` the bucketing value is
   the two-element array ``[flagKey, targetingKey]``, encoded as canonical CBOR (RFC 8949:
   ``0x82``, then each string as a text string: header and UTF-8 bytes).
2. ``h = murmur3_x86_32(bytes, seed=0)`` read as an *unsigned* 32-bit integer
   (``mmh3.hash(bytes, signed=False)``).
3. ``bucket = (h * total_weight) >> 32``, an integer in ``[0, total_weight)``; the variants
   own consecutive ranges of their integer weights, in the order listed, and the first range
   with ``bucket < range_end`` wins. A weight of 0 owns an empty range (never chosen);
   negative weights count as 0; the total must be in ``1 .. 2**31 - 1``.

vmtest always writes the total weight :data:`RESOLUTION` (10,000: percentages in basis
points, steps of 0.01%) with the target first, so ``bucket(key)`` does not depend on the
percentage and ``route(key, p)`` is ``bucket(key) < weight(p)``: a key routed at 5% is routed
at every larger percentage, and rolling back takes exactly the keys that came last.

Earlier flagd evaluators bucket differently, and do not agree with this one: flagd-core 1
(openfeature-provider-flagd 0.5) hashes the UTF-8 string ``flagKey + targetingKey`` with the
same ``>> 32`` mapping; older ones took ``abs`` of the *signed* hash over ``2**31 - 1`` times
100 (whole-percent buckets). Hence the ``live`` extra requires openfeature-provider-flagd
0.6 or later; every application that routes by the flag must use such a provider.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

from vmtest.errors import ConfigError
from vmtest.live import need

__all__ = [
    "FLAG_KEY",
    "RESOLUTION",
    "SCHEMA",
    "bucket",
    "bucketing_bytes",
    "flagd_definition",
    "route",
    "weight",
    "write_flagd_file",
]

#: The flag vmtest's cutover routes by, unless told another.
FLAG_KEY = "vmtest-cutover"
#: The total weight of the flag's split: buckets are basis points (0.01%).
RESOLUTION = 10_000
#: The JSON schema of a flagd flag definition file.
SCHEMA = "https://flagd.dev/schema/v0/flags.json"
#: The variant names of the flag (their values are chosen by flagd_definition's on/off).
SOURCE, TARGET = "source", "target"

_mmh3: Any = None


def _hash32(data: bytes) -> int:
    global _mmh3
    if _mmh3 is None:
        _mmh3 = need("mmh3", "sticky routing (vmtest.live.routing)")
    return int(_mmh3.hash(data, signed=False))


def _cbor_text(text: str) -> bytes:
    """A CBOR text string (major type 3) in its shortest, canonical head."""
    data = text.encode("utf-8")
    n = len(data)
    if n < 24:
        head = bytes([0x60 | n])
    elif n < 1 << 8:
        head = bytes([0x78, n])
    elif n < 1 << 16:
        head = b"\x79" + struct.pack(">H", n)
    elif n < 1 << 32:
        head = b"\x7a" + struct.pack(">I", n)
    else:
        head = b"\x7b" + struct.pack(">Q", n)
    return head + data


def bucketing_bytes(key: str, flag_key: str = FLAG_KEY) -> bytes:
    """The bytes flagd hashes for a targeting key: canonical CBOR of ``[flag_key, key]``."""
    return b"\x82" + _cbor_text(flag_key) + _cbor_text(key)


def bucket(key: str, flag_key: str = FLAG_KEY) -> int:
    """The key's bucket for the flag, in ``[0, RESOLUTION)``: the same number flagd's
    ``fractional`` computes for targeting key ``key`` when the flag's weights add up to
    :data:`RESOLUTION` (as those vmtest writes do)."""
    if not isinstance(key, str) or not isinstance(flag_key, str):
        raise TypeError("a routing key and a flag key are strings (flagd hashes strings)")
    return (_hash32(bucketing_bytes(key, flag_key)) * RESOLUTION) >> 32


def weight(percent: float) -> int:
    """The target's weight for ``percent``: basis points, rounded to the nearest one (so
    ``route`` and the flag file agree whatever the float; 0.004% is 0)."""
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not (
            math.isfinite(percent) and 0 <= percent <= 100):
        raise ConfigError(f"a routing percentage is a number from 0 to 100, not {percent!r}",
                          hint="give the share of keys the target store gets, e.g. 5 or 37.5")
    return round(percent * RESOLUTION / 100)


def route(key: str, percent: float, *, flag_key: str = FLAG_KEY) -> bool:
    """Whether ``key`` goes to the target store when ``percent`` of keys do (True) or stays
    on the source (False). Sticky and monotone: the keys routed at 5% are routed at 10%, 50%
    and 100%. An empty key stays on the source, as flagd resolves the flag's default variant
    when the targeting key is missing or empty."""
    share = weight(percent)
    if key == "":
        return False
    return bucket(key, flag_key) < share


def flagd_definition(percent: float, *, flag_key: str = FLAG_KEY, on: str = TARGET,
                     off: str = SOURCE) -> dict[str, Any]:
    """The split as a flagd flag definition: a string flag ``flag_key`` whose variant
    ``target`` (value ``on``) goes to ``percent`` of targeting keys, the same keys as
    :func:`route`, and ``source`` (value ``off``) to the rest and to evaluations without a
    targeting key (the default variant). Both weights are always written, 0 included (flagd
    gives a weight of 0 an empty range), so every percentage has the same total and buckets."""
    if not flag_key or not isinstance(flag_key, str):
        raise ConfigError(f"a flag key is a non-empty string, not {flag_key!r}",
                          hint=f"leave it out to use {FLAG_KEY!r}")
    target = weight(percent)
    return {
        "$schema": SCHEMA,
        "flags": {
            flag_key: {
                "state": "ENABLED",
                "variants": {SOURCE: off, TARGET: on},
                "defaultVariant": SOURCE,
                "targeting": {
                    "fractional": [[TARGET, target], [SOURCE, RESOLUTION - target]],
                },
            },
        },
    }


def write_flagd_file(path: str | os.PathLike[str], percent: float, *,
                     flag_key: str = FLAG_KEY, on: str = TARGET, off: str = SOURCE) -> Path:
    """Write :func:`flagd_definition` to ``path`` atomically: into a temporary file in the same
    folder, flushed and fsynced, then renamed over ``path`` (``os.replace``), so a flagd
    daemon or provider watching the file reads the old split or the new one, never half a
    file. An existing file's permissions are kept (else 0o644: flagd may run as another user).
    Returns the path."""
    target = Path(path)
    text = json.dumps(flagd_definition(percent, flag_key=flag_key, on=on, off=off), indent=2)
    folder = target.parent
    if not folder.is_dir():
        raise ConfigError(f"the folder {folder}, which would hold the flag file, does not exist",
                          hint=f"create it first (mkdir -p {folder})")
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_folder(folder)
    return target


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX); a platform that cannot open a folder skips it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
