"""`vmtest migrate` at several batch sizes and numbers of writers, into a Qdrant server.

    python benchmarks/batch_sweep.py                          # 20,000 x 384, 3 rounds
    python benchmarks/batch_sweep.py --batches 500,1000,2000 --workers 1,2,3
    python benchmarks/batch_sweep.py --pairs chroma-qdrant --n 50000 --dim 768

The same data, servers and pairs as benchmarks/peers.py (Chroma embedded -> Qdrant server,
Qdrant server -> Qdrant server); each setting is one contender, in a fresh process and a
fresh collection, in alternating rounds; the median round is printed with its records/s
and its ratio to the best setting of the pair. What it found is declared on the store
classes (``DEFAULT_WRITERS``, the runner's ``DEFAULT_BATCH_SIZE``) with the figures.
"""

from __future__ import annotations

import json
import statistics

import peers  # beside this script: python puts its folder first on sys.path


def main() -> None:
    parser = peers.arguments(__doc__)
    parser.add_argument("--batches", default="250,500,1000,2000",
                        help="batch sizes (default 250,500,1000,2000)")
    parser.add_argument("--workers", default="1,2", help="numbers of writers (default 1,2)")
    parser.add_argument("--out", default="reports/batch_sweep.json")
    args = parser.parse_args()
    if args.phase:  # contenders run as peers.py phases; this one answers too
        peers.phase_main(args.phase, json.loads(args.params))
        return
    args.pairs = [p for p in args.pairs.split(",") if p]
    settings = [(int(b), int(w)) for b in args.batches.split(",") for w in
                args.workers.split(",")]
    entries = [(f"batch {b} workers {w}", "vmtest",
                {"options": {"batch_size": b, "workers": w}}) for b, w in settings]
    results = peers.run_rounds(args, lambda pair: entries)
    rows = []
    print(f"\n{args.n:,} x {args.dim}, {args.rounds} rounds, medians")
    print("pair | batch | writers | seconds | records/s | vs the best | every round")
    for pair, by_label in results.items():
        medians = {label: statistics.median(r["seconds"] for r in runs)
                   for label, runs in by_label.items()}
        best = min(medians.values())
        for (b, w), (label, _, _) in zip(settings, entries, strict=True):
            row = {"pair": pair, "batch_size": b, "workers": w, "seconds": medians[label],
                   "records_per_s": args.n / medians[label],
                   "vs_best": medians[label] / best,
                   "rounds": [round(r["seconds"], 2) for r in by_label[label]]}
            rows.append(row)
            print(f"{pair} | {b} | {w} | {row['seconds']:.2f} s | "
                  f"{row['records_per_s']:,.0f} | {row['vs_best']:.2f}x | "
                  f"{', '.join(map(str, row['rounds']))}")
    peers.write_json(args.out, args, rows, results)


if __name__ == "__main__":
    main()
