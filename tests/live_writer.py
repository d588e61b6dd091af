"""An application that keeps writing while a copy is made: upserts of new records, updates and
deletes of existing ones, at a bounded rate for a bounded time, logging each operation the
store acknowledged (one JSON line, flushed) so a test can tell what the target must hold.

    python -m tests.live_writer --store URI --log FILE [--rate 200] [--seconds 60] [--seed 1]
    python -m tests.live_writer --store PRIMARY --secondary URI --journal FILE --log FILE

With --secondary, it writes through vmtest.live.DualWriteStore (journal and all). Existing
ids come from the store itself at the start. SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time

import numpy as np

from vmtest.stores import RecordBatch, open_store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="live_writer")
    parser.add_argument("--store", required=True)
    parser.add_argument("--secondary")
    parser.add_argument("--journal")
    parser.add_argument("--log", required=True)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    rng = random.Random(args.seed)
    nrng = np.random.default_rng(args.seed)
    primary = open_store(args.store)
    alive = [rid for batch in primary.iter_batches(1000, with_vectors=False)
             for rid in batch.ids]
    dimension = primary.describe().dimension or 32
    store = primary
    if args.secondary:
        from vmtest.live.dualwrite import DualWriteStore

        store = DualWriteStore(primary, open_store(args.secondary), args.journal)
    as_text = primary.accepts_id("w-1")
    done = 0
    started = time.monotonic()
    with open(args.log, "w", encoding="utf-8") as log:
        while not stop and time.monotonic() - started < args.seconds:
            due = started + done / args.rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            done += 1
            roll = rng.random()
            if roll < 0.2 and len(alive) > 10:
                rid = alive.pop(rng.randrange(len(alive)))
                store.delete([rid])
                entry = {"seq": done, "op": "delete", "id": rid}
            else:
                if roll < 0.55 or not alive:
                    rid = f"w-{args.seed}-{done}" if as_text else 1_000_000 * args.seed + done
                    alive.append(rid)
                else:
                    rid = alive[rng.randrange(len(alive))]
                vector = nrng.normal(size=dimension).astype(np.float32)
                vector /= np.linalg.norm(vector)
                meta = {"writer_seq": done, "topic": rng.choice(["a", "b", "c"])}
                store.upsert(RecordBatch([rid], vector[None, :], [meta], [f"written #{done}"]))
                entry = {"seq": done, "op": "upsert", "id": rid, "vector": vector.tolist(),
                         "metadata": meta, "document": f"written #{done}"}
            log.write(json.dumps(entry) + "\n")
            log.flush()
    elapsed = time.monotonic() - started
    summary = {"operations": done, "seconds": round(elapsed, 2),
               "rate": round(done / max(elapsed, 1e-9), 1)}
    if args.secondary:
        summary.update(store.metrics())  # type: ignore[attr-defined]
    print(json.dumps(summary), flush=True)
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
