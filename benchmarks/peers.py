"""`vmtest migrate` against what people use instead, into the same Qdrant server.

    python benchmarks/peers.py                                # 20,000 x 384, 3 rounds
    python benchmarks/peers.py --n 50000 --dim 768 --rounds 3 # the size issue 19 measured
    python benchmarks/peers.py --pairs qdrant-qdrant --contenders vmtest,hand

The same records in every pair (vmtest.datasets.clustered vectors and documents, metadata
{k: int, s: str, f: float}), two pairs:

- chroma-qdrant:  an embedded Chroma store -> a Qdrant server;
- qdrant-qdrant:  a Qdrant server -> another Qdrant server (both started by this script with
                  vmtest.servers.QdrantServer; the binary comes from servers/node_modules:
                  `npm ci --prefix servers` when it is missing).

Contenders, each writing into a fresh collection of the target server, each in a fresh
process (imports are done before the clock starts; the clock stops when the last write was
acknowledged):

- vmtest:         vmtest.migrate.migrate with its defaults, as `vmtest migrate` runs it (the
                  plan, id mapping, checkpoints; from a Qdrant server into a new collection
                  on another, a collection snapshot: the method is recorded);
- vmtest-records: the same with --transfer=records (qdrant-qdrant only: there the defaults
                  copy a collection snapshot; this is the copy record by record);
- hand:           the loop a competent user writes: read batches of 1,000 from the source
                  with its own client (Chroma's get, Qdrant's scroll), upsert them with
                  qdrant-client (its default REST), vectors with .tolist(), ids mapped to
                  UUIDv5 with the source id in the payload where Qdrant needs it;
- qdrant-migrate: qdrant_client.migrate() with its defaults (qdrant-qdrant only);
- raw-rest, raw-grpc: the records already in memory, upserted in batches of 1,000 (REST, and
                  gRPC): the target's own write rate; "raw" is the faster of the two;
- source-read:    no copy: the source read once, with vectors, by vmtest's own store (what
                  `vmtest migrate` reads, besides its plan's pass without vectors, which
                  from Chroma is kept and spares the copy reading metadata again): a floor
                  under any copy through this client.

Rounds alternate the contenders (their order rotates each round); the median of the rounds is
reported, with each round's ratio vmtest/hand beside it. The target server's CPU seconds and
the contender's own are recorded, to say what bounds a figure. Every copy is counted before
its collection is dropped. Written as JSON (--out, default reports/peers.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PAIRS = ("chroma-qdrant", "qdrant-qdrant")
CONTENDERS = ("vmtest", "vmtest-records", "hand", "qdrant-migrate", "raw-rest", "raw-grpc",
              "source-read")
SOURCE = "source"
#: Batch size of the hand loop and the raw writes (what Qdrant's and Chroma's docs use).
HAND_BATCH = 1000
NAMESPACE = uuid.NAMESPACE_URL


# -- the data ---------------------------------------------------------------------------------

def dataset(n: int, dim: int) -> Any:
    """The issue's shape: clustered unit vectors, metadata {k, s, f} and a document."""
    from vmtest.datasets import clustered
    from vmtest.stores import RecordBatch

    base = clustered(n, dim, seed=19)
    metadatas = [{"k": i, "s": f"group-{i % 97}", "f": round((i * 7919 % 100_000) / 997, 6)}
                 for i in range(n)]
    return RecordBatch(base.ids, base.vectors, metadatas, base.documents)


def qdrant_id(record_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, record_id))


def build_sources(args: argparse.Namespace, work: Path, source_server: Any) -> dict[str, str]:
    """The Chroma store and the source Qdrant collection, both holding the dataset."""
    import chromadb
    from qdrant_client import QdrantClient, models

    data = dataset(args.n, args.dim)
    uris: dict[str, str] = {}
    if "chroma-qdrant" in args.pairs:
        client = chromadb.PersistentClient(path=str(work / "chroma"))
        col = client.create_collection(SOURCE, embedding_function=None,
                                       configuration={"hnsw": {"space": "cosine"}})
        step = min(5000, int(client.get_max_batch_size()))
        for s in range(0, args.n, step):
            col.add(ids=data.ids[s:s + step], embeddings=data.vectors[s:s + step],
                    metadatas=data.metadatas[s:s + step], documents=data.documents[s:s + step])
        uris["chroma"] = f"chroma://{work / 'chroma'}?collection={SOURCE}"
    if "qdrant-qdrant" in args.pairs:
        q = QdrantClient(host="127.0.0.1", port=source_server.port,
                         grpc_port=source_server.grpc_port, prefer_grpc=True, timeout=120,
                         check_compatibility=False)
        q.create_collection(SOURCE, vectors_config=models.VectorParams(
            size=args.dim, distance=models.Distance.COSINE))
        for s in range(0, args.n, HAND_BATCH):
            e = min(s + HAND_BATCH, args.n)
            q.upsert(SOURCE, wait=True, points=models.Batch(
                ids=[qdrant_id(i) for i in data.ids[s:e]], vectors=data.vectors[s:e].tolist(),
                payloads=[{**m, "document": d} for m, d in zip(
                    data.metadatas[s:e], data.documents[s:e], strict=True)]))
        _wait_green(q, SOURCE)
        q.close()
        uris["qdrant"] = source_server.uri(SOURCE)
    return uris


def _wait_green(client: Any, name: str, timeout_s: float = 600) -> None:
    """Until the server's optimizers are done with the collection (indexing in the background
    would take CPU from whatever is measured next)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if str(client.get_collection(name).status.value) == "green":
            return
        time.sleep(0.5)


# -- contenders (each runs in its own process) ------------------------------------------------

class Clock:
    """Wall and CPU seconds of this process from its start."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def result(self, copied: int) -> dict[str, Any]:
        return {"seconds": time.perf_counter() - self.wall,
                "cpu_s": time.process_time() - self.cpu, "copied": copied}


def _imports() -> None:
    """Everything any contender imports, before its clock starts."""
    import chromadb  # noqa: F401
    import grpc  # noqa: F401
    import qdrant_client
    import qdrant_client.migrate  # noqa: F401
    from qdrant_client import models  # noqa: F401
    from qdrant_client.conversions import conversion  # noqa: F401

    import vmtest.migrate
    import vmtest.stores.chroma
    import vmtest.stores.qdrant  # noqa: F401


def run_vmtest(p: dict[str, Any]) -> dict[str, Any]:
    from vmtest.migrate import MigrationOptions, migrate
    from vmtest.stores import open_store

    options = MigrationOptions(**p.get("options", {}))  # the defaults, but for a sweep
    clock = Clock()
    with open_store(p["source_uri"]) as source:
        report = migrate(source, p["target_uri"], options, state_path=Path(p["state"]))
    return {**clock.result(report.copied), "method": report.method}


def run_vmtest_records(p: dict[str, Any]) -> dict[str, Any]:
    return run_vmtest({**p, "options": {**p.get("options", {}), "transfer": "records"}})


def run_hand(p: dict[str, Any]) -> dict[str, Any]:
    from qdrant_client import QdrantClient, models

    clock = Clock()
    dest = QdrantClient(url=f"http://127.0.0.1:{p['target_port']}", timeout=120)
    dest.create_collection(p["collection"], vectors_config=models.VectorParams(
        size=p["dim"], distance=models.Distance.COSINE))
    copied = 0
    if p["pair"] == "chroma-qdrant":
        import chromadb

        col = chromadb.PersistentClient(path=p["chroma_path"]).get_collection(SOURCE)
        offset = 0
        while True:
            got = col.get(limit=HAND_BATCH, offset=offset,
                          include=["embeddings", "metadatas", "documents"])
            if not got["ids"]:
                break
            points = [
                models.PointStruct(id=qdrant_id(rid), vector=vector,
                                   payload={**(meta or {}), "document": doc, "original_id": rid})
                for rid, vector, meta, doc in zip(got["ids"], got["embeddings"].tolist(),
                                                  got["metadatas"], got["documents"], strict=True)
            ]
            dest.upsert(p["collection"], points=points, wait=True)
            offset += len(points)
            copied += len(points)
    else:
        source = QdrantClient(url=f"http://127.0.0.1:{p['source_port']}", timeout=120)
        offset = None
        while True:
            records, offset = source.scroll(SOURCE, limit=HAND_BATCH, offset=offset,
                                            with_payload=True, with_vectors=True)
            dest.upsert(p["collection"], wait=True, points=[
                models.PointStruct(id=r.id, vector=r.vector, payload=r.payload)
                for r in records])
            copied += len(records)
            if offset is None:
                break
    return clock.result(copied)


def run_qdrant_migrate(p: dict[str, Any]) -> dict[str, Any]:
    from qdrant_client import QdrantClient
    from qdrant_client.migrate import migrate

    clock = Clock()
    source = QdrantClient(url=f"http://127.0.0.1:{p['source_port']}", timeout=120)
    dest = QdrantClient(url=f"http://127.0.0.1:{p['target_port']}", timeout=120)
    migrate(source, dest, collection_names=[SOURCE], recreate_on_collision=True)
    return clock.result(p["n"])  # counted by the driver


def run_raw(p: dict[str, Any]) -> dict[str, Any]:
    from qdrant_client import QdrantClient, models

    data = dataset(p["n"], p["dim"])
    ids = [qdrant_id(i) for i in data.ids]
    payloads = [{**m, "document": d} for m, d in zip(data.metadatas, data.documents,
                                                     strict=True)]
    clock = Clock()
    grpc = p["protocol"] == "grpc"
    dest = QdrantClient(host="127.0.0.1", port=p["target_port"], grpc_port=p["target_grpc"],
                        prefer_grpc=grpc, timeout=120, check_compatibility=False)
    dest.create_collection(p["collection"], vectors_config=models.VectorParams(
        size=p["dim"], distance=models.Distance.COSINE))
    for s in range(0, p["n"], HAND_BATCH):
        e = min(s + HAND_BATCH, p["n"])
        dest.upsert(p["collection"], wait=True, points=models.Batch(
            ids=ids[s:e], vectors=data.vectors[s:e].tolist(), payloads=payloads[s:e]))
    return clock.result(p["n"])


def run_source_read(p: dict[str, Any]) -> dict[str, Any]:
    from vmtest.stores import open_store

    clock = Clock()
    with open_store(p["source_uri"]) as source:
        read = sum(len(batch) for batch in source.iter_batches(HAND_BATCH))
    return clock.result(read)


PHASES = {"vmtest": run_vmtest, "vmtest-records": run_vmtest_records, "hand": run_hand,
          "qdrant-migrate": run_qdrant_migrate, "raw-rest": run_raw, "raw-grpc": run_raw,
          "source-read": run_source_read}


def phase_main(name: str, params: dict[str, Any]) -> None:
    _imports()
    print(json.dumps(PHASES[name](params)))


# -- the driver -------------------------------------------------------------------------------

def _server_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_contender(name: str, params: dict[str, Any], server: Any, source_server: Any
                  ) -> dict[str, Any]:
    """One contender in a fresh process; the CPU seconds of both servers meanwhile (the
    source server's only count for the Qdrant pair)."""
    from qdrant_client import QdrantClient

    server_cpu = _server_cpu(server.process.pid)
    source_cpu = _server_cpu(source_server.process.pid)
    argv = [sys.executable, __file__, "--phase", name, "--params", json.dumps(params)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["server_cpu_s"] = _server_cpu(server.process.pid) - server_cpu
    result["source_server_cpu_s"] = _server_cpu(source_server.process.pid) - source_cpu
    client = QdrantClient(host="127.0.0.1", port=server.port, timeout=120,
                          check_compatibility=False)
    if name == "source-read":  # writes nothing
        if result["copied"] != params["n"]:
            raise SystemExit(f"{name} read {result['copied']} records, not {params['n']}")
        client.close()
        return result
    collection = SOURCE if name == "qdrant-migrate" else params["collection"]
    count = client.count(collection, exact=True).count
    if count != params["n"]:
        raise SystemExit(f"{name} left {count} records in the target, not {params['n']}")
    client.delete_collection(collection)
    client.close()
    return result


def contenders_of(pair: str, wanted: list[str]) -> list[str]:
    return [c for c in wanted
            if c not in ("qdrant-migrate", "vmtest-records") or pair == "qdrant-qdrant"]


#: A contender as measured: (its label, the phase that runs it, parameters of its own).
Entry = tuple[str, str, dict[str, Any]]


def run_rounds(args: argparse.Namespace, entries_of: Callable[[str], list[Entry]]
               ) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Start the two servers, build the sources, and measure each pair's entries in
    ``args.rounds`` alternating rounds (their order rotating); every run of each label."""
    sys.path.insert(0, str(ROOT))
    from vmtest.servers import QdrantServer

    work = Path(tempfile.mkdtemp(prefix="vmtest-peers-"))
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        with QdrantServer(work / "source-server") as source_server, \
                QdrantServer(work / "target-server") as target:
            uris = build_sources(args, work, source_server)
            for pair in args.pairs:
                entries = entries_of(pair)
                results[pair] = {label: [] for label, _, _ in entries}
                for r in range(args.rounds):
                    shift = r % len(entries)
                    for label, phase, own in entries[shift:] + entries[:shift]:
                        collection = f"{re.sub('[^a-z0-9]', '_', label)}_{r}"
                        params = {
                            "pair": pair, "n": args.n, "dim": args.dim,
                            "collection": collection, "target_port": target.port,
                            "target_grpc": target.grpc_port, "source_port": source_server.port,
                            "chroma_path": str(work / "chroma"),
                            "source_uri": uris["chroma" if pair == "chroma-qdrant" else "qdrant"],
                            "target_uri": target.uri(collection),
                            "state": str(work / f"{pair}-{collection}.state.json"),
                            "protocol": "grpc" if phase == "raw-grpc" else "rest", **own,
                        }
                        got = run_contender(phase, params, target, source_server)
                        results[pair][label].append(got)
                        how = f" as {got['method']}" if got.get("method") else ""
                        print(f"  {pair} round {r + 1} {label}{how}: {got['seconds']:.2f} s "
                              f"(CPU: client {got['cpu_s']:.1f} s, target server "
                              f"{got['server_cpu_s']:.1f} s, source server "
                              f"{got['source_server_cpu_s']:.1f} s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """The options every script built on this one shares."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="records (default 20,000)")
    parser.add_argument("--dim", type=int, default=384, help="dimension (default 384)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--pairs", default=",".join(PAIRS), help="default: " + ",".join(PAIRS))
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    return parser


def write_json(path: str, args: argparse.Namespace, rows: list[dict[str, Any]],
               runs: dict[str, Any]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"n": args.n, "dim": args.dim, "rounds": args.rounds,
                               "date": time.strftime("%Y-%m-%d"), "rows": rows,
                               "runs": runs}, indent=1))
    print(f"written: {out}")


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help="default: " + ",".join(CONTENDERS))
    parser.add_argument("--out", default="reports/peers.json")
    args = parser.parse_args()
    if args.phase:
        phase_main(args.phase, json.loads(args.params))
        return
    args.pairs = [p for p in args.pairs.split(",") if p]
    wanted = [c for c in args.contenders.split(",") if c]
    results = run_rounds(args, lambda pair: [(c, c, {}) for c in contenders_of(pair, wanted)])
    rows = summarise(results, args.n)
    print_table(rows, args)
    write_json(args.out, args, rows, results)


def summarise(results: dict[str, dict[str, list[dict[str, Any]]]], n: int
              ) -> list[dict[str, Any]]:
    rows = []
    for pair, by_name in results.items():
        med = {name: statistics.median(r["seconds"] for r in runs)
               for name, runs in by_name.items()}
        raws = [name for name in ("raw-rest", "raw-grpc") if name in med]
        raw = min(raws, key=lambda name: med[name]) if raws else None
        for name, runs in by_name.items():
            row: dict[str, Any] = {
                "pair": pair, "contender": name, "seconds": med[name],
                "records_per_s": n / med[name],
                "client_cpu_s": statistics.median(r["cpu_s"] for r in runs),
                "server_cpu_s": statistics.median(r["server_cpu_s"] for r in runs),
                "source_server_cpu_s": statistics.median(r["source_server_cpu_s"]
                                                         for r in runs),
                "rounds": [round(r["seconds"], 2) for r in runs],
            }
            if "hand" in med:
                # > 1: faster than the hand loop; each round's own ratio beside the median's
                row["speed_vs_hand"] = med["hand"] / med[name]
                row["speed_vs_hand_rounds"] = [round(h["seconds"] / r["seconds"], 2) for h, r
                                               in zip(by_name["hand"], runs, strict=True)]
            if raw is not None:
                row["raw"] = raw
                row["rate_vs_raw"] = med[raw] / med[name]
            rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\n{args.n:,} x {args.dim}, {args.rounds} rounds, medians")
    print("pair | contender | seconds | records/s | vs hand loop (each round) | vs raw write "
          "| CPU: client | target server | source server")
    for r in rows:
        hand = (f"{r['speed_vs_hand']:.2f}x ({', '.join(map(str, r['speed_vs_hand_rounds']))})"
                if "speed_vs_hand" in r else "-")
        raw = f"{r['rate_vs_raw']:.2f}x ({r['raw']})" if "rate_vs_raw" in r else "-"
        print(f"{r['pair']} | {r['contender']} | {r['seconds']:.2f} s | "
              f"{r['records_per_s']:,.0f} | {hand} | {raw} | {r['client_cpu_s']:.1f} s | "
              f"{r['server_cpu_s']:.1f} s | {r['source_server_cpu_s']:.1f} s")


if __name__ == "__main__":
    main()
