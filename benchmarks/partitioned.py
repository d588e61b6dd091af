"""A partitioned check against the run in one process: LanceDB -> LanceDB, a faithful copy.

    python benchmarks/partitioned.py --n 200000 --dim 128 --partitions 8

Builds a LanceDB source of N x DIM (one fragment per 10,000 records) and a faithful copy,
then measures, each in a fresh subprocess so its peak memory is its own:

- single:  the record-by-record checks in one process, as `pytest --source --target` runs
           them (the checksum fast path);
- local:   the same checks partition by partition in one process (--vmtest-partitions);
- ray:     partition by partition as Ray tasks on a local Ray of --workers CPUs
           (--vmtest-executor=ray).

For each: wall time, records read per side (with vectors; ids read alone), the peak memory
(max RSS) of the coordinator and, for Ray, of each worker process, and the per-partition throughput
(records of both sides per second per worker). Printed as a table; written as JSON (--out,
default reports/partitioned-bench.json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FRAGMENT = 10_000


def build(n: int, dim: int, folder: Path) -> tuple[str, str]:
    from vmtest.stores import CollectionSpec, RecordBatch, open_store

    uris = (f"lancedb://{folder}/src?table=docs", f"lancedb://{folder}/copy?table=docs")
    stores = [open_store(u, create=CollectionSpec(dim, "cosine")) for u in uris]
    rng = np.random.default_rng(0)
    for start in range(0, n, FRAGMENT):
        count = min(FRAGMENT, n - start)
        batch = RecordBatch(
            ids=[f"doc-{i:09d}" for i in range(start, start + count)],
            vectors=rng.standard_normal((count, dim), dtype=np.float32),
            metadatas=[{"year": 2000 + i % 25, "lang": "en" if i % 3 else "fr"}
                       for i in range(start, start + count)],
            documents=[f"document {i}" for i in range(start, start + count)])
        for store in stores:
            store.upsert(batch)
    for store in stores:
        store.close()
    return uris


class Counted:
    """Counts the records a store returns with their vectors and the ids it returns alone."""

    def __init__(self, store: Any) -> None:
        self.records = self.ids = 0
        for name in ("iter_batches", "fetch"):
            original = getattr(store, name)
            setattr(store, name, self._wrap(original))

    def _wrap(self, original: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            if hasattr(result, "ids"):
                self._count(result)
                return result
            return (self._count(b) or b for b in result)

        return counted

    def _count(self, batch: Any) -> None:
        if batch.vectors is None:
            self.ids += len(batch)
        else:
            self.records += len(batch)


def phase(name: str, params: dict[str, Any]) -> dict[str, Any]:
    import dataclasses

    from vmtest.compare import Comparison
    from vmtest.partitioned import check_partitioned
    from vmtest.settings import Settings
    from vmtest.stores import open_store

    settings = dataclasses.replace(Settings(), batch_size=params["batch"])
    with open_store(params["source"]) as src, open_store(params["target"]) as tgt:
        counts = (src.count(), tgt.count())
        started = time.perf_counter()
        workers: list[int] = []
        if name == "single":
            seen = [Counted(src), Counted(tgt)]
            results = Comparison(src, tgt, settings).fidelity
            reads = {side: {"records": c.records, "ids": c.ids}
                     for side, c in zip(("source", "target"), seen, strict=True)}
        else:
            settings = dataclasses.replace(settings, partitions=params["partitions"],
                                           executor="ray" if name == "ray" else "local")
            if name == "ray":
                import ray

                ray.init(num_cpus=params["workers"], include_dashboard=False,
                         log_to_driver=False)
                ray.get([ray.remote(lambda: 0).remote() for _ in range(params["workers"])])
                started = time.perf_counter()  # the cluster's start is not the check's
            outcome = check_partitioned(src, tgt, settings, "cosine", counts=counts,
                                        dimension=params["dim"])
            results = outcome.results
            reads = {side: {"records": r.records, "ids": r.ids}
                     for side, r in outcome.reads.items()}
            peaks: dict[int, int] = {}
            for task in outcome.tasks:  # a worker's peak is its last task's figure
                peaks[task.worker] = max(peaks.get(task.worker, 0), task.peak_rss)
            workers = sorted(peaks.values())
        seconds = time.perf_counter() - started
    return {
        "phase": name, "seconds": seconds, "reads": reads,
        "verdict": {n: r.status for n, r in results.items()},
        "coordinator_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "worker_peak_rss": workers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--phases", default="single,local,ray")
    parser.add_argument("--out", default="reports/partitioned-bench.json")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, json.loads(args.params))))
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with tempfile.TemporaryDirectory(prefix="vmtest-partbench-") as folder:
        started = time.perf_counter()
        source, target = build(args.n, args.dim, Path(folder))
        print(f"built {args.n:,} x {args.dim} twice in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)
        params = {"source": source, "target": target, "dim": args.dim, "batch": args.batch,
                  "partitions": args.partitions, "workers": args.workers}
        rows = []
        for name in args.phases.split(","):
            done = subprocess.run([sys.executable, __file__, "--phase", name, "--params",
                                   json.dumps(params)], capture_output=True, text=True,
                                  check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    mib = 1 << 20
    print(f"{'phase':8} {'seconds':>8} {'src records':>12} {'tgt records':>12} "
          f"{'ids':>9} {'records/s/worker':>17} {'coord MiB':>10} {'worker MiB':>12}")
    for row in rows:
        reads = row["reads"]
        both = reads["source"]["records"] + reads["target"]["records"]
        workers = args.workers if row["phase"] == "ray" else 1
        ids = reads["source"]["ids"] + reads["target"]["ids"]
        peak = ",".join(str(r // mib) for r in row["worker_peak_rss"]) \
            if row["phase"] == "ray" else "-"
        row["records_per_s_per_worker"] = both / row["seconds"] / workers
        print(f"{row['phase']:8} {row['seconds']:8.1f} {reads['source']['records']:12,} "
              f"{reads['target']['records']:12,} {ids:9,} "
              f"{row['records_per_s_per_worker']:17,.0f} "
              f"{row['coordinator_peak_rss'] // mib:10,} {peak:>12}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"n": args.n, "dim": args.dim, "partitions": args.partitions,
                               "workers": args.workers, "phases": rows}, indent=2))
    print(f"written {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
