"""The page reader on labelled product pages: precision, recall and F1 per field, and
pages read per second.

Two corpora:
- tests/pages (the default): saved pages written the way shop platforms write them,
  each with a JSON file beside it holding its URL and the fields it has (null where
  the page does not give one);
- --zyte-benchmark DIR: a clone of Zyte's product-extraction benchmark
  (https://github.com/scrapinghub/product-extraction-benchmark), 140 real product
  pages of shops in many countries as they were served, labelled by hand with their
  price, SKU and availability, and on some pages brand and GTIN. Scored by that
  benchmark's rules: several labelled values can each be right, a price matches as a
  number, and a page whose reader gives no availability counts as in stock. Brand
  and GTIN are scored on the pages labelled with one only (elsewhere a value found
  cannot be judged).

Per field and page: a right value is a true positive; a wrong value is a false
positive (and a false negative where the page has one); no value where the page has
one is a false negative.

Usage: python bench/bench_extract.py [--pages DIR | --zyte-benchmark DIR] [--show-misses]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scrapers.extract import FIELDS, extract_product  # noqa: E402

#: The fields Zyte's benchmark labels, and how a value is compared.
ZYTE_FIELDS = {
    "price": Decimal,
    "sku": str,
    "availability": str,
    "brand": str.casefold,
    "gtin": lambda gtin: gtin.lstrip("0"),
}
ZYTE_PARTLY_LABELLED = {"brand", "gtin"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--pages", type=Path, default=ROOT / "tests" / "pages")
    source.add_argument(
        "--zyte-benchmark",
        type=Path,
        metavar="DIR",
        help="A clone of github.com/scrapinghub/product-extraction-benchmark.",
    )
    parser.add_argument("--show-misses", action="store_true", help="Print each wrong field.")
    args = parser.parse_args()

    if args.zyte_benchmark:
        truth_file = args.zyte_benchmark / "dataset" / "ground-truth.json"
        if not truth_file.is_file():
            parser.exit(2, f"error: {truth_file} not found: give a clone of the benchmark\n")
        corpus, fields = zyte_corpus(args.zyte_benchmark), ZYTE_FIELDS
    else:
        corpus, fields = local_corpus(args.pages), dict.fromkeys(FIELDS, lambda value: value)
    if not corpus:
        parser.exit(2, "error: no labelled pages found there\n")

    started = time.perf_counter()
    results = [extract_product(html, url) for _, url, _, html in corpus]
    elapsed = time.perf_counter() - started
    if args.zyte_benchmark:
        for found in results:  # the benchmark's rule: no stock text is in stock
            found["availability"] = found["availability"] or "InStock"

    counts = {name: [0, 0, 0] for name in fields}  # true pos., false pos., false neg.
    for (page, _, expected, _), found in zip(corpus, results, strict=True):
        for name, form in fields.items():
            accepted = {form(value) for value in expected.get(name) or ()}
            got = found[name]
            tally = counts[name]
            if args.zyte_benchmark and name in ZYTE_PARTLY_LABELLED and not accepted:
                continue
            if got is not None and form(got) in accepted:
                tally[0] += 1
                continue
            if got is None and not accepted:
                continue
            tally[1] += got is not None
            tally[2] += bool(accepted)
            if args.show_misses:
                print(f"{page}: {name}: expected {sorted(map(str, accepted))}, got {got!r}")

    print(f"{len(corpus)} labelled pages, read at {len(corpus) / elapsed:.1f} pages/s")
    print("field          pages with it  precision  recall     F1")
    for name in fields:
        true, false_pos, false_neg = counts[name]
        precision = true / (true + false_pos) if true + false_pos else 1.0
        recall = true / (true + false_neg) if true + false_neg else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        having = true + false_neg
        print(f"{name:<13}  {having:>13}  {precision:>9.3f}  {recall:>6.3f}  {f1:>5.3f}")


def local_corpus(pages: Path) -> list[tuple[str, str, dict, str]]:
    """(page, URL, {field: [value] or None}, HTML) of each saved page in `pages`."""
    corpus = []
    for expectation in sorted(pages.glob("*.json")):
        data = json.loads(expectation.read_text(encoding="utf-8"))
        html = expectation.with_suffix(".html").read_text(encoding="utf-8")
        expected = {
            name: [value] if value is not None else None for name, value in data["expected"].items()
        }
        corpus.append((expectation.stem, data["url"], expected, html))
    return corpus


def zyte_corpus(clone: Path) -> list[tuple[str, str, dict, bytes]]:
    """(page, URL, {field: [values]}, HTML) of each page of Zyte's benchmark."""
    dataset = clone / "dataset"
    truth = json.loads((dataset / "ground-truth.json").read_text(encoding="utf-8"))
    corpus = []
    for page, labelled in sorted(truth.items()):
        with gzip.open(dataset / "html" / f"{page}.html.gz") as saved:
            html = saved.read()
        corpus.append((page[:12], labelled["url"], labelled, html))
    return corpus


if __name__ == "__main__":
    main()
