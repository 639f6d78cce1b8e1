"""The page reader on the labelled corpus in tests/pages: precision, recall and F1 per
field, and pages read per second.

Each saved page has a JSON file beside it with its URL and the fields it holds (null
where the page does not give one). Per field and page: a correct value is a true
positive; a wrong value is a false positive (and a false negative where the page has
one); a missing value where the page has one is a false negative.

Usage: python bench/bench_extract.py [--pages DIR] [--show-misses]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scrapers.extract import FIELDS, extract_product  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=Path, default=ROOT / "tests" / "pages")
    parser.add_argument("--show-misses", action="store_true", help="Print each wrong field.")
    args = parser.parse_args()

    corpus = []
    for expectation in sorted(args.pages.glob("*.json")):
        data = json.loads(expectation.read_text(encoding="utf-8"))
        html = expectation.with_suffix(".html").read_text(encoding="utf-8")
        corpus.append((expectation.stem, data["url"], data["expected"], html))

    counts = {name: [0, 0, 0] for name in FIELDS}  # true pos., false pos., false neg.
    started = time.perf_counter()
    results = [extract_product(html, url) for _, url, _, html in corpus]
    elapsed = time.perf_counter() - started
    for (page, _, expected, _), found in zip(corpus, results, strict=True):
        for name in FIELDS:
            want, got = expected[name], found[name]
            tally = counts[name]
            if got == want:
                tally[0] += got is not None
                continue
            if got is not None:
                tally[1] += 1
            if want is not None:
                tally[2] += 1
            if args.show_misses:
                print(f"{page}: {name}: expected {want!r}, got {got!r}")

    print(f"{len(corpus)} labelled pages, read at {len(corpus) / elapsed:.0f} pages/s")
    print("field          pages with it  precision  recall     F1")
    for name in FIELDS:
        true, false_pos, false_neg = counts[name]
        precision = true / (true + false_pos) if true + false_pos else 1.0
        recall = true / (true + false_neg) if true + false_neg else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        having = true + false_neg
        print(f"{name:<13}  {having:>13}  {precision:>9.3f}  {recall:>6.3f}  {f1:>5.3f}")


if __name__ == "__main__":
    main()
