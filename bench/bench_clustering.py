"""Clustering benchmark: dbt build on synthetic near-duplicate listings with known truth.

Generates `--listings` listings over `--shops` shops (the first is the anchor)
from products that come in families of look-alike variants (hard negatives),
with 2 x `--dims` vectors per listing. Loads them into a fresh embedded
Postgres with binary COPY, builds the HNSW index afterwards as the embedder does
after a large load, then reports (titles carry
no model numbers, so the clusters come from the vectors alone; with
`--stated-years P` a title states its variant's model year, the one thing the
three variants of a family differ in, with probability P, so that rival variants
and the near pairs that show them take part):

- wall time of a full `dbt build` and of an incremental one after 1% new listings;
- candidate recall against exact search (over other shops): of the stored k
  nearest neighbours (top-k), of the neighbours at or above the threshold
  (the ones that can match), and of those pairs in int_candidate_matches,
  where a pair found from either side counts;
- pairwise precision/recall of the clusters against the truth, next to an
  in-memory numpy greedy pass, the plain-Python way (anchor listings as seeds, each
  other listing to its most similar anchor listing at >= threshold).

Usage: python bench/bench_clustering.py --listings 100000 [--stated-years 0.6]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
from pgvector import HalfVector, Vector

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bikematch.app.dbt import run_dbt  # noqa: E402
from bikematch.core.database import connect, start_embedded, stop_embedded  # noqa: E402
from bikematch.core.migrations import apply_migrations  # noqa: E402
from bikematch.core.settings import PROJECT_ROOT  # noqa: E402
from embedder import index  # noqa: E402

MODEL = "bench-model"
#: As `bikematch cluster` builds: without the dbt unit tests.
BUILD = ["build", "--exclude-resource-type", "unit_test"]


def make_catalogue(listings: int, shops: int, dims: int, seed: int):
    """(shop index, product id, image vector, text vector) per listing, unit halves."""
    rng = np.random.default_rng(seed)
    # Each product is sold by 3-4 shops (3.5 on average, fewer after the cut
    # to `listings` below); families of 3 look-alike variants.
    products = max(1, int(listings / 3.5 * 1.1) + 1)
    families = rng.normal(size=(products // 3 + 1, 2, dims)).astype(np.float32)
    family_of = np.arange(products) // 3
    product_vectors = families[family_of] + 0.22 * rng.normal(size=(products, 2, dims))
    shop_of, product_of = [], []
    for product in range(products):
        # The anchor shop sells half the products; others are drawn at random.
        sellers = set(rng.choice(np.arange(1, shops), size=3, replace=False).tolist())
        if rng.random() < 0.5:
            sellers.add(0)
        for shop in sorted(sellers):
            shop_of.append(shop)
            product_of.append(product)
    if len(shop_of) < listings:
        raise ValueError(f"made {len(shop_of)} listings, fewer than the {listings} asked for")
    order = rng.permutation(len(shop_of))[:listings]
    shop_of = np.array(shop_of)[order]
    product_of = np.array(product_of)[order]
    # Shops photograph and word a product more or less differently.
    spread = rng.uniform(0.06, 0.2, size=(len(order), 1, 1))
    noise = spread * rng.normal(size=(len(order), 2, dims)).astype(np.float32)
    vectors = product_vectors[product_of] + noise
    vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
    return shop_of, product_of, vectors.astype(np.float32)


def shop_name(index: int) -> str:
    return "anchor.example" if index == 0 else f"shop-{index:02d}.example"


def titles(product_of, stated_years: float, seed: int) -> list[str]:
    """Titles without model numbers (the clusters must come from the vectors); the
    variant's model year (a family's three variants: 2023, 2024, 2025) stated by a
    share `stated_years` of them."""
    states = np.random.default_rng(seed + 1).random(len(product_of)) < stated_years
    return [
        f"e-bike {2023 + product % 3}" if stated else "e-bike"
        for product, stated in zip(product_of.tolist(), states.tolist(), strict=True)
    ]


def load(conn, shop_of, names, vectors, start: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(len(shop_of))]
    with conn.cursor() as cur:
        with cur.copy("copy scraped_bikes (id, webshop, url, name) from stdin") as copy:
            for i, bike_id in enumerate(ids):
                copy.write_row((bike_id, shop_name(shop_of[i]), f"/p/{start + i}", names[i]))
        columns = "bike_id, model, image_embedding, text_embedding, embedding, input_hash"
        with cur.copy(f"copy vector_storage ({columns}) from stdin with (format binary)") as copy:
            copy.set_types(["uuid", "text", "vector", "vector", "halfvec", "text"])
            for i, bike_id in enumerate(ids):
                image, text = vectors[i]
                joined = np.concatenate([image, text]) / np.sqrt(2)
                copy.write_row(
                    (bike_id, MODEL, Vector(image), Vector(text), HalfVector(joined), str(i))
                )
    conn.commit()
    return ids


def slowest_nodes(count: int = 6) -> str:
    """The dbt nodes of the last run that took longest, from target/run_results.json."""
    results = json.loads((PROJECT_ROOT / "target" / "run_results.json").read_text())["results"]
    results.sort(key=lambda result: -result["execution_time"])
    return ", ".join(
        f"{result['unique_id'].split('.')[-1]} {result['execution_time']:.1f} s"
        for result in results[:count]
    )


def pairwise(labels_true: np.ndarray, labels_pred: np.ndarray) -> tuple[float, float]:
    """Pairwise precision and recall of a clustering against the truth."""

    def pairs(counter: Counter) -> int:
        return sum(n * (n - 1) // 2 for n in counter.values())

    true_pairs = pairs(Counter(labels_true.tolist()))
    pred_pairs = pairs(Counter(labels_pred.tolist()))
    both = pairs(Counter(zip(labels_true.tolist(), labels_pred.tolist(), strict=True)))
    return both / max(pred_pairs, 1), both / max(true_pairs, 1)


def greedy_baseline(shop_of, vectors, threshold):
    """Seed 000's pass, in numpy: anchor listings seed, others join the best anchor."""
    joined = vectors.reshape(len(vectors), -1) / np.sqrt(2)
    anchors = np.flatnonzero(shop_of == 0)
    labels = np.arange(len(vectors))
    others = np.flatnonzero(shop_of != 0)
    for start in range(0, len(others), 4096):
        chunk = others[start : start + 4096]
        sims = joined[chunk] @ joined[anchors].T
        best = sims.argmax(axis=1)
        hit = sims[np.arange(len(chunk)), best] >= threshold
        labels[chunk[hit]] = anchors[best[hit]]
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listings", type=int, default=100_000)
    parser.add_argument("--shops", type=int, default=20)
    parser.add_argument("--dims", type=int, default=1024)
    parser.add_argument("--threshold", type=float, default=0.96)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ef-search", type=int, default=40)
    parser.add_argument("--recall-sample", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stated-years", type=float, default=0.0, metavar="P")
    args = parser.parse_args()

    total = args.listings + args.listings // 100
    shop_of, product_of, vectors = make_catalogue(total, args.shops, args.dims, args.seed)
    n = args.listings
    names = titles(product_of, args.stated_years, args.seed)
    sims = (vectors[:200].reshape(200, -1) @ vectors.reshape(len(vectors), -1).T) / 2
    same = product_of[:200, None] == product_of[None, :]
    sibling = (product_of[:200, None] // 3 == product_of[None, :] // 3) & ~same
    print(
        f"listings {n} (+{total - n} incremental), shops {args.shops}, dims 2x{args.dims}, "
        f"model year stated in {args.stated_years:.0%} of titles"
    )
    print(
        f"similarity: same product median {np.median(sims[same & (sims < 0.999)]):.3f}, "
        f"p1 {np.quantile(sims[same & (sims < 0.999)], 0.01):.3f}; look-alike variant "
        f"p99 {np.quantile(sims[sibling], 0.99):.3f}; "
        f"unrelated max {sims[~same & ~sibling].max():.3f}"
    )

    root = Path(tempfile.mkdtemp(prefix="bikematch-bench-"))
    url = start_embedded(root / "pgdata")
    try:
        with connect(url) as conn:
            apply_migrations(conn)
        with connect(url) as conn:  # anew, so the pgvector types are registered
            conn.execute(
                "insert into embedding_models (name, image_dims, text_dims) values (%s, %s, %s)",
                (MODEL, args.dims, args.dims),
            )
            conn.commit()
            started = time.perf_counter()
            ids = load(conn, shop_of[:n], names[:n], vectors[:n], 0)
            print(f"load (binary COPY): {time.perf_counter() - started:.1f} s")
        # As the embedder builds it after a large load (embedder/index.py).
        build_s = index.build(url, MODEL)
        with connect(url) as conn:
            conn.execute("analyze")
            conn.commit()
        print(f"HNSW index build (after the load): {build_s:.1f} s")

        dbt_vars = {
            "embedding_model": MODEL,
            "anchor_shop": shop_name(0),
            "match_threshold": args.threshold,
            "candidate_k": args.k,
            "hnsw_ef_search": args.ef_search,
        }
        started = time.perf_counter()
        run_dbt(BUILD, url, dbt_vars=dbt_vars, capture=True, work_dir=root)
        full_s = time.perf_counter() - started
        print(f"dbt build, full: {full_s:.1f} s ({slowest_nodes()})")

        with connect(url) as conn:
            ids += load(conn, shop_of[n:], names[n:], vectors[n:], n)
            conn.execute("analyze")
            conn.commit()
        started = time.perf_counter()
        run_dbt(BUILD, url, dbt_vars=dbt_vars, capture=True, work_dir=root)
        incremental_s = time.perf_counter() - started
        print(f"dbt build, incremental (+1%): {incremental_s:.1f} s ({slowest_nodes()})")

        index_of = {bike_id: i for i, bike_id in enumerate(ids)}
        joined = vectors.reshape(len(vectors), -1) / np.sqrt(2)
        with connect(url) as conn:
            query = "select bike_id, neighbour_id from int_vector_neighbours"
            rows = conn.execute(query).fetchall()
            stored: dict[int, set[int]] = {}
            for bike_id, neighbour_id in rows:
                stored.setdefault(index_of[bike_id], set()).add(index_of[neighbour_id])
            # What clustering sees: int_candidate_matches holds a pair found from either side.
            query = "select bike_id, neighbour_id from int_candidate_matches where passes"
            candidates: dict[int, set[int]] = {}
            for bike_id, neighbour_id in conn.execute(query):
                candidates.setdefault(index_of[bike_id], set()).add(index_of[neighbour_id])
            sample = np.random.default_rng(1).choice(len(ids), args.recall_sample, replace=False)
            found = found_matches = found_pairs = exact_matches = 0
            for i in sample:
                similarity = joined @ joined[i]
                similarity[shop_of == shop_of[i]] = -2  # neighbours come from other shops

                exact = np.argpartition(-similarity, args.k)[: args.k]
                found += len(set(exact.tolist()) & stored.get(int(i), set()))
                # The neighbours that matter: those at or above the threshold.
                matches = set(exact[similarity[exact] >= args.threshold].tolist())
                exact_matches += len(matches)
                found_matches += len(matches & stored.get(int(i), set()))
                found_pairs += len(matches & candidates.get(int(i), set()))
            print(
                f"candidate recall vs exact search: top-{args.k} "
                f"{found / (args.k * len(sample)):.4f}, neighbours >= threshold "
                f"{found_matches / max(exact_matches, 1):.4f}, candidate pairs >= threshold "
                f"{found_pairs / max(exact_matches, 1):.4f}"
            )

            clusters = dict(conn.execute("select bike_id, cluster_id from master_bikes").fetchall())
        labels = np.array([hash(clusters[bike_id]) for bike_id in ids])
        precision, recall_pairs = pairwise(product_of, labels)
        print(f"bikematch clusters: pairwise precision {precision:.4f}, recall {recall_pairs:.4f}")

        started = time.perf_counter()
        greedy = greedy_baseline(shop_of, vectors, args.threshold)
        greedy_s = time.perf_counter() - started
        precision, recall_pairs = pairwise(product_of, greedy)
        print(
            f"numpy greedy: pairwise precision {precision:.4f}, "
            f"recall {recall_pairs:.4f}, {greedy_s:.1f} s in memory"
        )
    finally:
        stop_embedded(root / "pgdata")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
