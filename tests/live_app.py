"""An application in the middle of a cutover: it serves searches for users, each routed to the
source or the target store by the flagd flag file, read through the real OpenFeature flagd
provider in-process (FILE mode, polled every 100 ms), and exports Prometheus metrics.

    python -m tests.live_app --flag-file FLAGS --source URI --target URI --metrics-port PORT
                             [--fault-file PATH] [--workers 4] [--rate 80] [--users 1000]

Metrics (prometheus_client, on 127.0.0.1:PORT/metrics):

- ``app_requests_total{store, status}``: searches served, status "ok" or "error";
- ``app_request_seconds{store}``: a histogram of their durations.

A fault on the target side, while ``--fault-file`` exists, by its content: ``latency`` adds
200 ms to each target search, ``errors`` fails 5% of them. The time (epoch seconds) of the
first request the fault touched is written to ``FAULT_FILE.began`` (at 10% of 80 searches a
second, 5% errors are one every 2.5 s: the fault shows only from then on). Prints ``ready``
once the flag is read and the metrics are served; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from vmtest.stores import open_store

#: Buckets around the gates' thresholds (a healthy search takes a few ms here, a faulty one
#: over 0.5 s): a bound at 0.5 s keeps a healthy outlier below it from being interpolated
#: above it by histogram_quantile.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.5)
FAULT_LATENCY_S = 0.5
FAULT_ERROR_SHARE = 0.05


class InjectedError(Exception):
    """The fault: a target search that fails."""


def fault(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip() or "latency"
    except FileNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="live_app")
    parser.add_argument("--flag-file", required=True)
    parser.add_argument("--flag-key", default="vmtest-cutover")
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--fault-file", type=Path)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=80.0, help="searches per second, in all")
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args(argv)

    import prometheus_client as prom
    from openfeature import api
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType
    from openfeature.evaluation_context import EvaluationContext

    api.set_provider_and_wait(FlagdProvider(
        resolver_type=ResolverType.FILE, offline_flag_source_path=args.flag_file,
        deadline_ms=100))
    flags = api.get_client()
    requests = prom.Counter("app_requests", "Searches served.", ["store", "status"])
    seconds = prom.Histogram("app_request_seconds", "Search duration, seconds.", ["store"],
                             buckets=BUCKETS)
    for store in ("source", "target"):  # every series exists from the start, at 0
        seconds.labels(store)
        for status in ("ok", "error"):
            requests.labels(store, status)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    noted = threading.Lock()
    touched: list[float] = []  # when the current fault first touched a request

    def note(kind: str | None) -> None:
        with noted:
            if kind is None:
                touched.clear()
            elif not touched and args.fault_file is not None:
                touched.append(time.time())
                Path(f"{args.fault_file}.began").write_text(f"{touched[0]!r}\n")

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        stores = {"source": open_store(args.source), "target": open_store(args.target)}
        dimension = stores["source"].describe().dimension or 32
        queries = np.random.default_rng(seed).normal(size=(64, dimension)).astype(np.float32)
        period = args.workers / args.rate
        due = time.monotonic()
        while not stop.is_set():
            due += period
            user = f"user-{rng.randrange(args.users)}"
            side = flags.get_string_value(args.flag_key, "source",
                                          EvaluationContext(targeting_key=user))
            side = "target" if side == "target" else "source"
            started = time.perf_counter()
            status = "ok"
            try:
                kind = fault(args.fault_file)
                if kind is None:
                    note(None)
                if side != "target":
                    kind = None
                if kind == "latency":
                    note(kind)
                    time.sleep(FAULT_LATENCY_S)
                if kind == "errors" and rng.random() < FAULT_ERROR_SHARE:
                    note(kind)
                    raise InjectedError("injected")
                stores[side].search(queries[rng.randrange(len(queries))][None, :], 5)
            except Exception:
                status = "error"
            seconds.labels(side).observe(time.perf_counter() - started)
            requests.labels(side, status).inc()
            pause = due - time.monotonic()
            if pause > 0:
                stop.wait(pause)
            else:
                due = time.monotonic()
        for store in stores.values():
            store.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(args.workers)]
    for thread in threads:
        thread.start()
    prom.start_http_server(args.metrics_port, addr="127.0.0.1")
    print("ready", flush=True)
    while not stop.is_set():
        stop.wait(0.5)
    for thread in threads:
        thread.join(timeout=5)
    api.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
