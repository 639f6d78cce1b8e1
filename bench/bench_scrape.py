"""Scraping benchmark: crawl speed against the fixture shop server, and extractor speed.

- crawl: a fixture `jsonld` shop with `--products` product pages, served on
  127.0.0.1 and crawled by the real spider and pipeline into a throwaway
  embedded Postgres (AutoThrottle and delays off: this measures our side);
- extract: `extract_product` on the saved pages in tests/pages, in a loop.

Usage: python bench/bench_scrape.py --products 2000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bikematch.core.database import connect, start_embedded, stop_embedded  # noqa: E402
from bikematch.core.migrations import apply_migrations  # noqa: E402
from scrapers.extract import extract_product  # noqa: E402
from scrapers.params import Shop  # noqa: E402
from tests import fixture_shops  # noqa: E402


def bench_extract(seconds: float) -> None:
    pages = [
        (path.read_text(encoding="utf-8"), f"https://shop.example/{path.stem}")
        for path in sorted((ROOT / "tests" / "pages").glob("*.html"))
    ]
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for html, url in pages:
            extract_product(html, url)
        done += len(pages)
    elapsed = time.perf_counter() - started
    print(f"extract_product: {done / elapsed:.0f} pages/s ({len(pages)} saved pages, 1 core)")


def bench_crawl(products: int) -> None:
    fixture_shops.CATALOGUE[:] = [
        fixture_shops.Bike(f"bike{i}", {"jsonld": f"Bike model {i} 500Wh"}, 1000.0 + i, brand="B")
        for i in range(products)
    ]
    root = Path(tempfile.mkdtemp(prefix="bikematch-bench-scrape-"))
    url = start_embedded(root / "pgdata")
    try:
        with connect(url) as conn:
            apply_migrations(conn)
        from scrapers.run import run_shops

        with fixture_shops.ShopServer() as server:
            shop = Shop(
                name="bench.example",
                platform="jsonld",
                start_urls=[f"{server.base}/jsonld/fietsen"],
                delay=0,
                concurrency=16,
            )
            started = time.perf_counter()
            (summary,) = run_shops(
                [shop], url, overrides={"AUTOTHROTTLE_ENABLED": False, "LOG_LEVEL": "WARNING"}
            )
            elapsed = time.perf_counter() - started
        print(
            f"crawl: {summary.pages} pages in {elapsed:.1f} s = {summary.pages / elapsed:.0f} "
            f"pages/s, {summary.stored} listings stored"
        )
    finally:
        stop_embedded(root / "pgdata")
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--extract-seconds", type=float, default=10)
    args = parser.parse_args()
    bench_extract(args.extract_seconds)
    bench_crawl(args.products)


if __name__ == "__main__":
    main()
