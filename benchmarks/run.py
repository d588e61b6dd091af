"""vmtest's speed and memory, measured against baselines taken in the same run.

    python benchmarks/run.py --quick          # 100,000 x 384 (the README's figures)
    python benchmarks/run.py                  # 1,000,000 x 768 (the headline)
    python benchmarks/run.py --n 20000 --dim 128 --stores parquet,chroma

For each store kind it builds a source and a faithful copy, then measures, each phase in a
fresh subprocess so its peak memory (max RSS) is its own:

- read:     reading both stores raw, every record with its vector (the baseline); read and
            validate alternate for --rounds rounds (default 3), the median round is shown
            with every round's ratio beside it;
- validate: vmtest's comparison of the two, every record, every check but search, by the
            checksum fast path (--compare=digest, the default: a faithful copy needs no
            record-by-record work);
- full:     the same with --compare=full (every record compared one by one; spilled to
            partitions past the memory budget);
- truth:    exact top-10 ground truth for 100 queries over the source;
- write:    writing the records raw with the store's own upsert (the baseline);
- migrate:  ``vmtest migrate`` of the same records into a fresh store of that kind.

Printed as a table; written as JSON (--out, default reports/benchmarks.json).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

URIS = {
    "parquet": "parquet://{dir}/{name}",
    "jsonl": "jsonl://{dir}/{name}.jsonl",
    "chroma": "chroma://{dir}/chroma-{name}?collection={name}",
    "qdrant": "qdrant://{dir}/qdrant-{name}?collection={name}",
    "qdrant-edge": "qdrant-edge://{dir}/edge-{name}",
    "lancedb": "lancedb://{dir}/lance?table={name}",
}
BUILD_BATCH = 5000


def uri(kind: str, directory: Path, name: str) -> str:
    return URIS[kind].format(dir=directory, name=name)


def _dataset(n: int, dim: int, start: int, stop: int):
    from vmtest.stores import RecordBatch

    rng = np.random.default_rng(start)
    count = stop - start
    vectors = rng.normal(size=(count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return RecordBatch(
        # UUIDs: every store keeps them natively, so raw writes and migrations write alike
        ids=[str(uuid.uuid5(uuid.NAMESPACE_OID, f"rec-{i}")) for i in range(start, stop)],
        vectors=vectors,
        metadatas=[{"shard": i % 16, "score": round(float((i * 7919) % 1000) / 1000, 3),
                    "tag": f"t{i % 50}"} for i in range(start, stop)],
        documents=[f"document {i}" for i in range(start, stop)],
    )


def phase_write(args: argparse.Namespace) -> dict[str, Any]:
    """Raw writes: the store's own upsert, no mapping, no checkpoint."""
    from vmtest.stores import CollectionSpec, open_store

    started = time.perf_counter()
    with open_store(args.uri, create=CollectionSpec(args.dim, "cosine")) as store:
        for start in range(0, args.n, args.batch):
            store.upsert(_dataset(args.n, args.dim, start, min(start + args.batch, args.n)))
    return {"seconds": time.perf_counter() - started}


def phase_migrate(args: argparse.Namespace) -> dict[str, Any]:
    from vmtest.migrate import MigrationOptions, migrate
    from vmtest.stores import open_store

    started = time.perf_counter()
    with open_store(args.source) as source:
        report = migrate(source, args.uri, MigrationOptions(batch_size=args.batch),
                         state_path=Path(args.uri.split("://")[1].split("?")[0] + ".state"))
    return {"seconds": time.perf_counter() - started, "copied": report.copied}


def phase_read(args: argparse.Namespace) -> dict[str, Any]:
    from vmtest.stores import open_store

    started = time.perf_counter()
    total = 0
    for u in (args.source, args.uri):
        with open_store(u) as store:
            for batch in store.iter_batches(args.batch):
                total += len(batch)
    return {"seconds": time.perf_counter() - started, "records": total}


def phase_validate(args: argparse.Namespace) -> dict[str, Any]:
    """What the suite runs for the record-by-record checks: in memory when both stores fit in
    the memory budget, else spilled to partitions (vmtest.stream)."""
    from vmtest.checks.fidelity import check_inventory
    from vmtest.compare import Comparison
    from vmtest.settings import Settings
    from vmtest.stores import open_store

    started = time.perf_counter()
    with open_store(args.source) as s, open_store(args.uri) as t:
        c = Comparison(s, t, Settings(batch_size=args.batch, memory_budget=args.budget,
                                      compare=args.compare))
        results = [check_inventory(c.source_inventory, c.target_inventory),
                   *c.fidelity.values()]
        partitions = c.partitions
        verified = c.fidelity["vectors"].figures.get("verified_by_digest", 0)
        c.close()
    failed = [r.name for r in results if not r.passed]
    return {"seconds": time.perf_counter() - started, "failed": failed,
            "partitions": partitions, "verified": verified}


def phase_truth(args: argparse.Namespace) -> dict[str, Any]:
    """Exact top-10 for 100 queries, streamed in chunks from the source's spilled vectors
    (as the suite does past the memory budget): memory stays bounded."""
    import tempfile

    from vmtest.knn import exact_topk
    from vmtest.matching import Matching
    from vmtest.stores import open_store
    from vmtest.stream import spill

    with open_store(args.source) as s, tempfile.TemporaryDirectory() as folder:
        side = spill(s, Matching(), max(1, args.n // 100_000), Path(folder), "source",
                     args.batch)
        vectors = side.vectors
        queries = vectors[np.random.default_rng(0).choice(len(vectors), 100, replace=False)]
        started = time.perf_counter()
        exact_topk(vectors, queries, 10, "cosine")  # type: ignore[arg-type]
        return {"seconds": time.perf_counter() - started}


PHASES = {"write": phase_write, "migrate": phase_migrate, "read": phase_read,
          "validate": phase_validate, "truth": phase_truth}


def run_phase(name: str, **kwargs: Any) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--phase", name]
    for key, value in kwargs.items():
        argv += [f"--{key}", str(value)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"phase {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100,000 x 384")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--dim", type=int, default=None)
    parser.add_argument("--stores", default="parquet,jsonl,chroma")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="raw read and validation measured in N alternating rounds; the "
                        "median round is reported (default 3)")
    parser.add_argument("--budget", type=int, default=1 << 30,
                        help="the suite's --memory-budget in bytes (default 1 GiB)")
    parser.add_argument("--compare", default="digest", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="reports/benchmarks.json")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        result = PHASES[args.phase](args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    n = args.n or (100_000 if args.quick else 1_000_000)
    dim = args.dim or (384 if args.quick else 768)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="vmtest-bench-"))
    try:
        for kind in args.stores.split(","):
            common = {"n": n, "dim": dim, "batch": args.batch, "budget": args.budget}
            source = uri(kind, work, "source")
            write = run_phase("write", uri=source, **common)
            migrate = run_phase("migrate", uri=uri(kind, work, "target"), source=source,
                                **common)
            # the raw read and the validation in alternating rounds: the ratio of each round,
            # and the round with the median ratio reported (a store's read time moves from
            # run to run; one pair of figures can fall on either side of a target)
            rounds = []
            for _ in range(args.rounds):
                read = run_phase("read", uri=uri(kind, work, "target"), source=source,
                                 **common)
                validate = run_phase("validate", uri=uri(kind, work, "target"),
                                     source=source, **common)
                rounds.append((validate["seconds"] / read["seconds"], read, validate))
            rounds.sort(key=lambda r: r[0])
            _, read, validate = rounds[len(rounds) // 2]
            full = run_phase("validate", uri=uri(kind, work, "target"), source=source,
                             compare="full", **common)
            truth = run_phase("truth", source=source, **common)
            rows.append({
                "store": kind, "n": n, "dim": dim,
                "raw_write_s": write["seconds"], "migrate_s": migrate["seconds"],
                "migrate_ratio": migrate["seconds"] / write["seconds"],
                "migrate_records_per_s": n / migrate["seconds"],
                "raw_read_both_s": read["seconds"], "validate_s": validate["seconds"],
                "validate_ratio": validate["seconds"] / read["seconds"],
                "validate_ratio_rounds": [round(r[0], 3) for r in rounds],
                "validate_peak_rss_mb": validate["peak_rss_mb"],
                "validate_verified_by_digest": validate["verified"],
                "full_s": full["seconds"], "full_ratio": full["seconds"] / read["seconds"],
                "full_peak_rss_mb": full["peak_rss_mb"],
                "read_peak_rss_mb": read["peak_rss_mb"],
                "ground_truth_100q_s": truth["seconds"],
                "validate_failed_checks": validate["failed"] + full["failed"],
                "full_partitions": full["partitions"],
            })
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    header = ("store", "n x dim", "raw write", "migrate", "ratio", "raw read (both)",
              "validate", "ratio", "peak RSS", "full compare", "ratio", "peak RSS",
              "partitions", "truth 100q")
    print(" | ".join(header))
    for r in rows:
        print(" | ".join([
            r["store"], f"{r['n']:,} x {r['dim']}", f"{r['raw_write_s']:.1f} s",
            f"{r['migrate_s']:.1f} s ({r['migrate_records_per_s']:,.0f}/s)",
            f"{r['migrate_ratio']:.2f}x", f"{r['raw_read_both_s']:.1f} s",
            f"{r['validate_s']:.1f} s", f"{r['validate_ratio']:.2f}x "
            f"({', '.join(f'{x:.2f}' for x in r['validate_ratio_rounds'])})",
            f"{r['validate_peak_rss_mb']:,.0f} MB", f"{r['full_s']:.1f} s",
            f"{r['full_ratio']:.2f}x", f"{r['full_peak_rss_mb']:,.0f} MB",
            str(r["full_partitions"]),
            f"{r['ground_truth_100q_s']:.2f} s",
        ]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
