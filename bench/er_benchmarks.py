"""End-to-end matching quality on the labelled product benchmarks in ../shared/data/er-benchmarks.

For each benchmark: import both shops with `bikematch import`'s code path,
embed titles text-only with minilm-effnet-lite0, cluster with dbt (anchor =
the first shop), and score with `bikematch eval`'s code, two ways:

- labelled: only the listings the truth names (as `bikematch eval`). It cannot
  see a listing the truth never names merged with another: it overstates
  precision, badly where one shop has many look-alikes.
- complete: every listing of both shops, every pair the truth does not list a
  non-match (`bikematch eval --complete`), as the data's README defines the
  truth. Both truths miss real matches (identical titles among the
  "false merges"), so this understates precision.

Prints both at each threshold of a sweep, so the best threshold is visible.

Usage: python bench/er_benchmarks.py [--data DIR] [--thresholds 0.6:0.95:0.025]
       [--var NAME=VALUE] [--thin N]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bikematch.app.dbt import run_dbt  # noqa: E402
from bikematch.app.evaluation import evaluate_truth  # noqa: E402
from bikematch.app.importing import import_file  # noqa: E402
from bikematch.core.database import connect, start_embedded, stop_embedded  # noqa: E402
from bikematch.core.migrations import apply_migrations  # noqa: E402
from embedder.fetch import FetchSettings  # noqa: E402
from embedder.job import EmbedSettings, run_embedding  # noqa: E402
from perception_models import load_model  # noqa: E402

MODEL = "minilm-effnet-lite0"
#: Both benchmarks pair a shop with a marketplace that lists one product under several
#: listings (editions, platforms, sellers): two listings of one shop are not two
#: products there.
MARKETPLACE = {"rivals_within_a_shop": False}
BENCHMARKS = {
    "amazon-google": {
        "separator": "#",
        "shops": [("amazon.csv", "amazon"), ("google.csv", "google")],
        "mapping": {"url": "id", "name": "title", "brand": "manufacturer", "price": "price"},
        "vars": MARKETPLACE,
    },
    "walmart-amazon": {
        "separator": "|",
        "shops": [("walmart.csv", "walmart"), ("amazon.csv", "amazon")],
        "mapping": {
            "url": "id",
            "name": "title",
            "brand": "brand",
            "sku": "modelno",
            "price": "price",
        },
        # Two shops, one match each at most: 10 neighbours from the other shop reach it
        # (the same F1 as the default 30, measured; in half the search time, which here
        # walks past 22,074 Amazon listings to find Walmart's).
        "vars": {**MARKETPLACE, "candidate_k": 10},
    },
}


def truth_pairs(folder: Path, spec: dict) -> list:
    (first, shop_a), (second, shop_b) = spec["shops"]
    with (folder / "truth.csv").open(encoding="utf-8") as handle:
        rows = csv.reader(handle, delimiter=spec["separator"])
        next(rows)
        return [((shop_a, a), (shop_b, b)) for a, b in rows]


def thinned(spec: dict, source: Path, target: Path, keep: set[str], every: int) -> Path:
    """`source` with the rows whose id (the column imported as the listing's URL) is in
    `keep`, and every `every`-th of the others (in file order), written to `target`."""
    separator = spec["separator"]
    with source.open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter=separator)
        header = next(rows)
        key = header.index(spec["mapping"]["url"])
        kept = [row for number, row in enumerate(rows) if row[key] in keep or number % every == 0]
    with target.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=separator)
        writer.writerow(header)
        writer.writerows(kept)
    return target


def run(
    name: str, folder: Path, thresholds: list[float], extra_vars: dict, thin: int = 1
) -> dict[float, dict]:
    """Scores at each threshold. `thin` > 1 keeps of the second shop only the listings the
    truth names and every thin-th of the others: a smaller, easier benchmark (fewer
    look-alikes) for a quick check."""
    spec = BENCHMARKS[name]
    root = Path(tempfile.mkdtemp(prefix=f"bikematch-er-{name}-"))
    url = start_embedded(root / "pgdata")
    pairs = truth_pairs(folder, spec)
    try:
        with connect(url) as conn:
            apply_migrations(conn)
        with connect(url) as conn:
            for number, (file, shop) in enumerate(spec["shops"]):
                path = folder / file
                if number == 1 and thin > 1:
                    named = {second[1] for _, second in pairs}
                    path = thinned(spec, path, root / file, named, thin)
                summary = import_file(conn, path, shop, spec["mapping"], spec["separator"], "USD")
                print(f"{name}: {shop}: {summary.lines()[0]}", flush=True)
        model = load_model(MODEL, device="cpu")
        embedded = run_embedding(
            url, model, EmbedSettings(batch_size=64, fetch=FetchSettings(cache_dir=None))
        )
        for line in embedded.lines():
            print(f"{name}: {line}", flush=True)
        base = {
            "embedding_model": MODEL,
            "anchor_shop": spec["shops"][0][1],
            **spec["vars"],
            **extra_vars,
        }
        results = {}
        for number, threshold in enumerate(thresholds):
            # Every model once; then, for the other thresholds, the matching alone.
            select = [] if number == 0 else ["--select", "+master_bikes"]
            started = time.perf_counter()
            run_dbt(
                ["build", *select, "--exclude-resource-type", "test", "unit_test"],
                url,
                dbt_vars={**base, "match_threshold": threshold},
                capture=True,
                work_dir=root,
            )
            print(f"{name}: dbt build {time.perf_counter() - started:.1f} s", flush=True)
            with connect(url) as conn:
                results[threshold] = {
                    "labelled": evaluate_truth(conn, pairs, MODEL, worst=0).as_json(),
                    "complete": evaluate_truth(
                        conn, pairs, MODEL, worst=0, complete=True
                    ).as_json(),
                }
            print(
                f"{name}: threshold {threshold:.3f}: {json.dumps(results[threshold])}", flush=True
            )
        return results
    finally:
        stop_embedded(root / "pgdata")
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "er-benchmarks"))
    parser.add_argument(
        "--thresholds",
        default="0.60:0.95:0.025",
        metavar="START:STOP:STEP",
        help="the thresholds to score at, or one threshold (0.45)",
    )
    parser.add_argument("--only", choices=list(BENCHMARKS))
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument(
        "--thin",
        type=int,
        default=1,
        metavar="N",
        help="keep only every N-th listing of the second shop that the truth does not name",
    )
    args = parser.parse_args()
    try:
        bounds = [float(x) for x in args.thresholds.split(":")]
    except ValueError:
        parser.error(f"--thresholds: not numbers: {args.thresholds}")
    if len(bounds) == 1:
        thresholds = bounds
    elif len(bounds) == 3 and bounds[2] > 0 and bounds[1] >= bounds[0]:
        start, stop, step = bounds
        count = int(round((stop - start) / step)) + 1
        thresholds = [round(start + i * step, 4) for i in range(count)]
    else:
        parser.error("--thresholds takes START:STOP:STEP (a positive step) or one threshold")
    extra = {}
    for pair in args.var:
        key, _, value = pair.partition("=")
        extra[key] = json.loads(value) if value[:1] in "[{0123456789.-tf" else value
    scores = {}
    for name in [args.only] if args.only else BENCHMARKS:
        scores[name] = run(name, Path(args.data) / name, thresholds, extra, args.thin)
    for name, by_threshold in scores.items():
        for way in ("labelled", "complete"):
            best = max(by_threshold, key=lambda t: by_threshold[t][way]["f1"])
            print(
                f"{name}: best {way} F1 {by_threshold[best][way]['f1']:.4f} at threshold {best} "
                f"(the other way there: "
                f"{by_threshold[best]['complete' if way == 'labelled' else 'labelled']['f1']:.4f})"
            )


if __name__ == "__main__":
    main()
