"""Is the latency verdict stable? The same faithful pair, checked again and again.

    python benchmarks/latency_verdicts.py              # 20 runs of each pair
    python benchmarks/latency_verdicts.py --runs 5 --pairs demo

Pairs: ``demo`` (the quick start's pair: an embedded Chroma store and its copy in a local
Qdrant folder, 2,000 x 128) and ``qdrant-server`` (one Qdrant server binary holding the source
collection and its copy). Each run is the suite's latency check alone, in a fresh pytest
process as a user runs it; it prints the decision (pass, fail, inconclusive), the p99 ratio and
its interval, and at the end how many runs gave each verdict. A verdict that depended on timer
noise would show up here as a mix of pass and fail.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def demo_pair(work: Path) -> tuple[str, str]:
    from vmtest.demo import build_example_source
    from vmtest.migrate import copy_store
    from vmtest.stores import open_store

    source = f"chroma://{work}/chroma?collection=docs"
    target = f"qdrant://{work}/qdrant?collection=docs"
    build_example_source(source, size=2000, dimension=128)
    with open_store(source) as src:
        copy_store(src, target)
    return source, target


def server_pair(work: Path, stack: list) -> tuple[str, str]:
    from vmtest.demo import build_example_source
    from vmtest.migrate import copy_store
    from vmtest.servers import QdrantServer
    from vmtest.stores import open_store

    server = QdrantServer(data_dir=work / "qdrant-server")
    server.__enter__()
    stack.append(server)
    source, target = server.uri("source"), server.uri("copy")
    seed = f"chroma://{work}/seed?collection=docs"
    build_example_source(seed, size=2000, dimension=128)
    with open_store(seed) as raw:
        copy_store(raw, source)  # string ids become UUIDv5 point ids on the server
    with open_store(source) as src:
        copy_store(src, target)
    return source, target


def run_once(source: str, target: str, report: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", f"--source={source}", f"--target={target}",
         "-k", "latency", f"--vmtest-json={report}", "--vmtest-html=none", "-q",
         "-p", "no:randomly", "-p", "no:xdist", "-p", "no:cacheprovider"],
        capture_output=True, text=True, timeout=300, cwd=report.parent)
    if not report.exists():
        raise SystemExit(f"the run wrote no report:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    data = json.loads(report.read_text())
    return next(c for c in data["checks"] if c["name"] == "latency")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--pairs", default="demo,qdrant-server")
    args = parser.parse_args()
    stack: list = []
    try:
        with tempfile.TemporaryDirectory(prefix="vmtest-latency-") as tmp:
            work = Path(tmp)
            for name in args.pairs.split(","):
                folder = work / name
                folder.mkdir()
                source, target = (demo_pair(folder) if name == "demo"
                                  else server_pair(folder, stack))
                counts: collections.Counter[str] = collections.Counter()
                print(f"{name}: {source} -> {target}")
                for i in range(args.runs):
                    check = run_once(source, target, folder / f"run-{i}.json")
                    f = check["figures"]
                    decision = f.get("decision", check["status"])
                    counts[decision] += 1
                    print(f"  run {i + 1:>2}: {decision:<12} p99 {f.get('source_p99_ms')} ms "
                          f"vs {f.get('target_p99_ms')} ms, ratio {f.get('p99_ratio')} "
                          f"(CI {f.get('p99_ratio_ci_low')}-{f.get('p99_ratio_ci_high')}), "
                          f"gap CI high {f.get('p99_gap_ci_high_ms')} ms, "
                          f"{f.get('samples')} timed queries")
                print(f"{name}: " + ", ".join(f"{v} {k}" for k, v in counts.most_common())
                      + f" of {args.runs} runs")
    finally:
        for server in stack:
            server.__exit__(None, None, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
