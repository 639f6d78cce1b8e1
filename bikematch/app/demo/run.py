"""`bikematch demo`: the whole job on a generated catalogue, offline, with its own score."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from pathlib import Path

from bikematch.app.clusters import biggest_spreads, listings_per_shop
from bikematch.app.demo.catalogue import (
    ANCHOR,
    DEFAULT_PRODUCTS,
    DEFAULT_SEED,
    DEMO_GBP_PER_EURO,
    SHOPS,
    Catalogue,
    generate,
)
from bikematch.app.demo.server import DemoShops
from bikematch.app.evaluation import Scores, score
from bikematch.app.pipeline import JobOptions, JobReport, fetch_settings, run_job
from bikematch.app.rates import Rates, store_rates
from bikematch.core.database import connect
from bikematch.core.settings import Settings

DEMO_MODEL = "minilm-effnet-lite0"
DEFAULT_PORT = 8377
#: How many of the biggest price spreads the demo checks against its truth.
TOP_SPREADS = 20


def truth_key(url: str) -> str | None:
    """Every demo listing URL carries its product key (p000) in the handle."""
    handle = _handle(url)
    return handle.split("-")[0] if handle else None


class _DemoReport(JobReport):
    def __init__(self, echo) -> None:
        self.echo = echo

    def scraped(self, crawls) -> None:
        for crawl in crawls:
            self.echo(
                f"  scraped {crawl.shop}: {crawl.stored} listings ({crawl.new} new, "
                f"{crawl.price_changes} price changes)"
            )

    def embedded(self, summary) -> None:
        for line in summary.lines():
            self.echo(f"  {line}")


def _demo_rate(settings: Settings, url: str) -> list[str]:
    """The UK shop's pounds, at the demo's own rate (the demo reaches no ECB)."""
    with connect(url) as conn:
        store_rates(conn, Rates(date.today(), {"GBP": Decimal(str(DEMO_GBP_PER_EURO))}), "demo")
    return []


def _forget_other_catalogues(url: str, catalogue: Catalogue) -> int:
    """Remove the demo shops' listings that this catalogue does not hold (those of an
    earlier demo with another --products): they would count as still on sale for a
    day and a half, and be scored against a truth they are not in."""
    handles = {f"{listing.handle}" for listing in catalogue.listings}
    with connect(url) as conn:
        rows = conn.execute(
            "select id, url from scraped_bikes where webshop = any(%s)",
            ([shop.name for shop in SHOPS],),
        ).fetchall()
        gone = [bike_id for bike_id, listing_url in rows if _handle(listing_url) not in handles]
        conn.execute("delete from scraped_bikes where id = any(%s)", (gone,))
    return len(gone)


def _handle(url: str) -> str | None:
    """The listing's handle in a demo URL: its product key and platform (p000-shopify)."""
    match = re.search(r"/(p\d{3,}-[a-z]+)", url)
    return match.group(1) if match else None


def run_demo(
    settings: Settings,
    url: str,
    work_dir: Path,
    port: int = DEFAULT_PORT,
    echo=print,
    products: int = DEFAULT_PRODUCTS,
    seed: int = DEFAULT_SEED,
) -> Scores:
    """Serve, then run the job on the served shops; echo a summary; return the scores
    against the truth. Images are cached where the settings say, as `embed` caches them,
    so `bikematch report` finds them too."""
    from scrapers.params import load_shops

    work_dir.mkdir(parents=True, exist_ok=True)
    catalogue = generate(products, seed)
    removed = _forget_other_catalogues(url, catalogue)
    if removed:
        echo(f"removed {removed} listings of an earlier demo catalogue")
    options = JobOptions(
        model_name=DEMO_MODEL,
        anchor_shop=ANCHOR,
        device="cpu",
        scrape_overrides={"LOG_LEVEL": "ERROR", "AUTOTHROTTLE_ENABLED": False},
        fetch=fetch_settings(settings, allow_private_hosts=True),
        rates=_demo_rate,
    )
    with DemoShops(catalogue, port) as shops:
        config = work_dir / "shops.yaml"
        config.write_text(shops.shops_yaml())
        echo(
            f"serving {len(catalogue.listings)} listings of {len(catalogue.products)} bikes "
            f"as 4 shops on {shops.base}"
        )
        result = run_job(settings, url, load_shops(config), options, _DemoReport(echo))
    lines = [*result.clustered.lines()]
    lines.append("listings per shop: " + ", ".join(f"{s} {n}" for s, n in listings_per_shop(url)))
    spreads = biggest_spreads(url, limit=TOP_SPREADS)
    if spreads:
        lines.append("biggest price spreads:")
        for name, shop_count, low, high, spread, cheapest, currency, _ in spreads[:5]:
            lines.append(
                f"  {name}: {currency or ''} {low}-{high} ({spread} across {shop_count} shops; "
                f"cheapest at {cheapest})"
            )
    scores = demo_scores(url)
    lines.append(
        f"against the catalogue's truth: pairwise precision {scores.precision:.3f}, "
        f"recall {scores.recall:.3f}, F1 {scores.f1:.3f}"
    )
    true_spreads = true_spread_count(url, [row[-1] for row in spreads])
    lines.append(
        f"of the {len(spreads)} biggest price spreads, {true_spreads} compare one product"
        " (the others mix products)"
    )
    for line in lines:
        echo(line)
    return scores


def true_spread_count(url: str, cluster_ids: list) -> int:
    """How many of these clusters hold listings of one product of the truth alone."""
    with connect(url) as conn:
        rows = conn.execute(
            "select cluster_id, url from bike_offers where cluster_id = any(%s)", (cluster_ids,)
        ).fetchall()
    products: dict = {}
    for cluster_id, listing_url in rows:
        products.setdefault(cluster_id, set()).add(truth_key(listing_url))
    return sum(1 for keys in products.values() if len(keys) == 1)


def demo_scores(url: str) -> Scores:
    with connect(url) as conn:
        rows = conn.execute(
            "select offers.url, offers.cluster_id from bike_offers as offers"
        ).fetchall()
    predicted = {listing_url: cluster for listing_url, cluster in rows}
    truth = {listing_url: truth_key(listing_url) for listing_url in predicted}
    return score(predicted, {k: v for k, v in truth.items() if v})
