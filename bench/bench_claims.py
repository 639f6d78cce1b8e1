"""Claim cost against table size: how long the embedder takes to claim a page of work.

Fills a throwaway embedded Postgres with `--listings` listings, all but
`--pending` of them already embedded (tiny vectors; the HNSW index is dropped,
as a claim does not read it), then times the embedder's claim of a page of 32
at several positions of the id order, as a run that has got that far does.
Next to it, the same claim with its range on the listing alone, as before
bikematch_listings_to_embed took the range itself: Postgres does not carry that
range into the pending set's joins, so each claim read the listings, vectors and
failures before its position.

Usage: python bench/bench_claims.py [--listings 200000] [--pending 0.05]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bikematch.core.database import connect, start_embedded, stop_embedded  # noqa: E402
from bikematch.core.migrations import apply_migrations  # noqa: E402
from embedder import store  # noqa: E402

MODEL = "bench-claims"
#: The claim as it was: the page's range on the listing only, not passed to the function.
RANGE_ON_THE_LISTING_ONLY = store._CLAIM.replace(
    "%(max_attempts)s, %(after)s, %(before)s)", "%(max_attempts)s, null, %(before)s)"
)
assert RANGE_ON_THE_LISTING_ONLY != store._CLAIM, "the claim changed: update this bench"


def fill(conn, listings: int, pending: float) -> None:
    conn.execute("select bikematch_register_model(%s, 4, 4)", (MODEL,))
    for (index,) in conn.execute(
        "select indexname from pg_indexes where tablename = 'vector_storage'"
        " and indexdef ilike '%%using hnsw%%'"
    ).fetchall():
        conn.execute(f'drop index "{index}"')
    conn.execute(
        "insert into scraped_bikes (webshop, url, name, image_url)"
        " select 'shop' || (g %% 10), 'https://shop.example/p/' || g, 'Bike ' || g,"
        " 'https://img.example/' || g || '.jpg' from generate_series(1, %s) as g",
        (listings,),
    )
    conn.execute(
        """
        insert into vector_storage (
            bike_id, model, image_embedding, text_embedding, embedding, text_only,
            input_hash, source_hash
        )
        select
            id, %s, '[1,0,0,0]', '[0,1,0,0]', '[1,0,0,0,0,1,0,0]', false, 'x',
            bikematch_embedding_source(name, image_url)
        from scraped_bikes where random() >= %s
        """,
        (MODEL, pending),
    )
    conn.execute("analyze")


def claim_ms(conn, query: str, after, repeats: int = 5) -> float:
    values = {"model": MODEL, "after": after, "limit": 32, "max_attempts": 5, "before": None}
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        conn.execute(query, values).fetchall()
        times.append(time.perf_counter() - started)
        conn.rollback()  # the claim's locks
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listings", type=int, default=200_000)
    parser.add_argument("--pending", type=float, default=0.05, help="share not embedded yet")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bikematch-bench-claims-") as root:
        pgdata = Path(root) / "pgdata"
        url = start_embedded(pgdata)
        try:
            with connect(url, autocommit=True) as conn:
                apply_migrations(conn)
                started = time.perf_counter()
                fill(conn, args.listings, args.pending)
                print(
                    f"{args.listings} listings, {args.pending:.0%} pending, "
                    f"filled in {time.perf_counter() - started:.1f} s"
                )
            print(f"{'position':>9} {'claim ms':>9} {'range on the listing only, ms':>30}")
            with connect(url) as conn:
                for share in (0.0, 0.1, 0.5, 0.9):
                    after = conn.execute(
                        "select id from scraped_bikes order by id offset %s limit 1",
                        (int(args.listings * share),),
                    ).fetchone()[0]
                    conn.rollback()
                    print(
                        f"{share:>9.0%} {claim_ms(conn, store._CLAIM, after):>9.1f} "
                        f"{claim_ms(conn, RANGE_ON_THE_LISTING_ONLY, after):>30.1f}"
                    )
        finally:
            stop_embedded(pgdata)


if __name__ == "__main__":
    main()
