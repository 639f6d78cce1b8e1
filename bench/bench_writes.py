"""Write-path benchmark: rows/s of the embedder's vector writes, in each index mode.

Writes `--rows` random unit vectors of PE-Core's shapes (image and text `--dims`
each, the 2 x dims concatenation as halfvec) through the embedder's own write
(`embedder.store.write`: binary COPY into a temporary table, one upsert, commit),
in batches of `--batch-size`, on 1 and on `--writers` connections at once, into a
fresh embedded Postgres whose table already holds `--stored` vectors of the model:

- keep: the model's HNSW index (m 16, ef_construction 200) is there, and every
  write inserts into its graph;
- rebuild: the index is dropped first and built after the load, on
  parallel maintenance workers (`embed --index rebuild`, and `auto` for a large
  backlog); its figure includes the build.

Each mode's database is fresh. The rows/s is listings written per second of wall
time, build included; "build" is the build's share of it.

Usage: python bench/bench_writes.py [--rows 5000] [--stored 0] [--writers 4]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bikematch.core.database import connect, start_embedded, stop_embedded  # noqa: E402
from bikematch.core.migrations import apply_migrations  # noqa: E402
from embedder import index, store  # noqa: E402

MODEL = "bench-writes"


def listings(conn, count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    with conn.cursor().copy("copy scraped_bikes (id, webshop, url, name) from stdin") as copy:
        for i, bike_id in enumerate(ids):
            copy.write_row((bike_id, "shop.example", f"/p/{bike_id}", f"e-bike {i}"))
    conn.commit()
    return ids


def vectors(ids: list[uuid.UUID], dims: int, seed: int) -> list[store.Embedded]:
    rng = np.random.default_rng(seed)
    halves = rng.normal(size=(len(ids), 2, dims)).astype(np.float32)
    halves /= np.linalg.norm(halves, axis=2, keepdims=True)
    return [
        store.Embedded(
            bike_id=bike_id,
            image=halves[i, 0],
            text=halves[i, 1],
            joined=halves[i].reshape(-1) / np.sqrt(2),
            input_hash=str(i),
            source_hash=str(i),
        )
        for i, bike_id in enumerate(ids)
    ]


def write_all(url: str, rows: list[store.Embedded], writers: int, batch_size: int) -> None:
    batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    connections = [connect(url) for _ in range(writers)]

    def write(slot: int) -> None:
        conn = connections[slot]
        for batch in batches[slot::writers]:
            store.write(conn, MODEL, batch, [])
            conn.commit()

    try:
        with ThreadPoolExecutor(writers) as pool:
            list(pool.map(write, range(writers)))
    finally:
        for conn in connections:
            conn.close()


def run_mode(args, rebuild: bool, writers: int) -> tuple[float, float]:
    """(rows/s of the load with the build, seconds of the build) on a fresh database."""
    pgdata = Path(tempfile.mkdtemp(prefix="bench-writes-")) / "pgdata"
    url = start_embedded(pgdata)
    try:
        with connect(url) as conn:
            apply_migrations(conn)
            conn.execute(
                "select bikematch_register_model(%s, %s, %s)", (MODEL, args.dims, args.dims)
            )
            conn.commit()
            stored_ids = listings(conn, args.stored)
            new_ids = listings(conn, args.rows)
        if stored_ids:
            write_all(url, vectors(stored_ids, args.dims, 1), writers, args.batch_size)
        rows = vectors(new_ids, args.dims, 2)
        started = time.perf_counter()
        if rebuild:
            index.drop(url, MODEL)
        write_all(url, rows, writers, args.batch_size)
        build = index.build(url, MODEL, args.index_workers) if rebuild else 0.0
        seconds = time.perf_counter() - started
        with connect(url) as conn:
            assert index.state(conn, MODEL) == "valid"
        return args.rows / seconds, build / seconds
    finally:
        stop_embedded(pgdata)
        shutil.rmtree(pgdata.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--stored", type=int, default=0)
    parser.add_argument("--dims", type=int, default=1024, help="each half's dimensions")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--index-workers", type=int, help="default: every core but one, up to 7")
    parser.add_argument("--modes", nargs="+", default=["keep", "rebuild"])
    args = parser.parse_args()
    workers = index.maintenance_workers() if args.index_workers is None else args.index_workers
    print(
        f"{args.rows} rows of 2 x {args.dims} dims onto {args.stored} stored,"
        f" batches of {args.batch_size}; build on {workers} parallel workers"
    )
    print(f"{'mode':<8} {'writers':>7} {'rows/s':>8} {'build':>6}")
    for mode in args.modes:
        for writers in sorted({1, args.writers}):
            rate, build = run_mode(args, mode == "rebuild", writers)
            print(f"{mode:<8} {writers:>7} {rate:>8.1f} {build:>6.0%}", flush=True)


if __name__ == "__main__":
    main()
