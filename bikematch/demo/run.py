"""`bikematch demo`: the whole job on a generated catalogue, offline, with its own score."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from pathlib import Path

from bikematch import pipeline
from bikematch.database import connect
from bikematch.demo.catalogue import ANCHOR, DEMO_GBP_PER_EURO, generate
from bikematch.demo.server import DemoShops
from bikematch.evaluation import Scores, score
from bikematch.rates import Rates, store_rates

DEMO_MODEL = "minilm-effnet-lite0"
DEFAULT_PORT = 8377


def truth_key(url: str) -> str | None:
    """Every demo listing URL carries its product key (p000) in the handle."""
    match = re.search(r"/(p\d{3})-", url)
    return match.group(1) if match else None


def run_demo(url: str, work_dir: Path, port: int = DEFAULT_PORT, echo=print) -> Scores:
    """Serve, scrape, embed, cluster; echo a summary; return the scores against the truth."""
    from embedder.fetch import FetchSettings
    from embedder.job import EmbedSettings
    from perception_models import MODELS, load_model
    from scrapers.params import load_shops

    work_dir.mkdir(parents=True, exist_ok=True)
    pipeline.prepare_database(url)
    catalogue = generate()
    with DemoShops(catalogue, port) as shops:
        config = work_dir / "shops.yaml"
        config.write_text(shops.shops_yaml())
        echo(
            f"serving {len(catalogue.listings)} listings of {len(catalogue.products)} bikes "
            f"as 4 shops on {shops.base}"
        )
        crawls = pipeline.scrape(
            url, load_shops(config), {"LOG_LEVEL": "ERROR", "AUTOTHROTTLE_ENABLED": False}
        )
        for crawl in crawls:
            echo(
                f"  scraped {crawl.shop}: {crawl.stored} listings ({crawl.new} new, "
                f"{crawl.price_changes} price changes)"
            )
        model = load_model(DEMO_MODEL, device="cpu")
        settings = EmbedSettings(
            batch_size=32,
            choose_precision=True,
            fetch=FetchSettings(allow_private=True, cache_dir=work_dir / "image-cache"),
        )
        embedded = pipeline.embed(url, model, settings)
        for line in embedded.lines():
            echo(f"  {line}")
    with connect(url) as conn:  # the UK shop's pounds, at the demo's own rate
        store_rates(conn, Rates(date.today(), {"GBP": Decimal(str(DEMO_GBP_PER_EURO))}), "demo")
    clustered = pipeline.cluster(
        url,
        {
            "embedding_model": DEMO_MODEL,
            "anchor_shop": ANCHOR,
            "match_threshold": MODELS[DEMO_MODEL].default_threshold,
        },
    )
    lines = [*clustered.lines()]
    lines.append(
        "listings per shop: " + ", ".join(f"{s} {n}" for s, n in pipeline.listings_per_shop(url))
    )
    spreads = pipeline.biggest_spreads(url)
    if spreads:
        lines.append("biggest price spreads:")
        for name, shop_count, low, high, spread, cheapest, currency in spreads:
            lines.append(
                f"  {name}: {currency or ''} {low}-{high} ({spread} across {shop_count} shops; "
                f"cheapest at {cheapest})"
            )
    scores = demo_scores(url)
    lines.append(
        f"against the catalogue's truth: pairwise precision {scores.precision:.3f}, "
        f"recall {scores.recall:.3f}, F1 {scores.f1:.3f}"
    )
    for line in lines:
        echo(line)
    return scores


def demo_scores(url: str) -> Scores:
    with connect(url) as conn:
        rows = conn.execute(
            "select offers.url, offers.cluster_id from bike_offers as offers"
        ).fetchall()
    predicted = {listing_url: cluster for listing_url, cluster in rows}
    truth = {listing_url: truth_key(listing_url) for listing_url in predicted}
    return score(predicted, {k: v for k, v in truth.items() if v})
