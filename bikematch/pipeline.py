"""The nightly job's stages, in order: scrape, embed, cluster. Each returns a summary."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bikematch.database import connect
from bikematch.dbt import run_dbt
from bikematch.migrations import apply_migrations


class StageFailed(RuntimeError):
    """A stage of the job failed; the message names the stage and why."""


@dataclass
class ClusterSummary:
    listings: int
    clusters: int
    multi_shop: int
    #: Why the clusters or their prices may not be what was meant (anchor_note,
    #: currency_note).
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"clustered {self.listings} listings into {self.clusters} products, "
            f"{self.multi_shop} sold by more than one shop",
            *self.notes,
        ]


def prepare_database(url: str) -> None:
    with connect(url) as conn:
        apply_migrations(conn)


def scrape(url: str, shops, overrides: dict | None = None, progress=None):
    from scrapers.run import run_shops

    os.environ["DATABASE_URL"] = url  # the item pipeline connects on its own
    return run_shops(shops, overrides, progress=progress)


def embed(url: str, model, settings, progress=None):
    from embedder.job import run_embedding

    return run_embedding(url, model, settings, progress)


def cluster(
    url: str, dbt_vars: dict, work_dir: Path | None = None, on_model=None
) -> ClusterSummary:
    """`dbt build`; on_model gets a line as each model is built (a first build of a large
    catalogue takes minutes)."""
    run_dbt(["build"], url, dbt_vars=dbt_vars, capture=True, work_dir=work_dir, on_model=on_model)
    with connect(url) as conn:
        listings, clusters, multi = conn.execute(
            "select coalesce(sum(listings), 0), count(*), count(*) filter (where shops > 1)"
            " from bike_clusters"
        ).fetchone()
        notes = cluster_notes(conn, dbt_vars)
    return ClusterSummary(int(listings), clusters, multi, notes)


def cluster_notes(conn, dbt_vars: dict) -> list[str]:
    """What a reader of the clusters just built should know (anchor_note, currency_note)."""
    return [note for note in (anchor_note(conn, dbt_vars), currency_note(conn)) if note]


def anchor_note(conn, dbt_vars: dict) -> str | None:
    """A note where the anchor shop had no listing in the clustering just built: its
    clusters were seeded by the other shops, in their order, which may not be what was
    meant (the default anchor is the project's own example shop)."""
    anchor = dbt_vars.get("anchor_shop") or dbt_project_vars().get("anchor_shop")
    if conn.execute("select to_regclass('int_listings')").fetchone()[0] is None:
        return None
    anchors, listings = conn.execute(
        "select count(*) filter (where is_anchor), count(*) from int_listings"
    ).fetchone()
    if anchors or not listings:
        return None
    return (
        f"note: the anchor shop {anchor} has no listing here, so no shop's listings seeded"
        " the clusters first; name one of yours with --anchor SHOP"
    )


def currency_note(conn) -> str | None:
    """A note where some offers' prices are left out of the price comparisons because
    their currency has no exchange rate."""
    if conn.execute("select to_regclass('bike_offers')").fetchone()[0] is None:
        return None
    rows = conn.execute(
        "select currency, count(*) from bike_offers"
        " where price is not null and comparable_price is null"
        " group by currency order by currency nulls last"
    ).fetchall()
    if not rows:
        return None
    counts = ", ".join(
        f"{count} in {currency}" if currency else f"{count} without a currency"
        for currency, count in rows
    )
    return (
        f"note: prices of offers with no exchange rate are left out of the price comparisons"
        f" ({counts}); `bikematch rates` stores the ECB's"
    )


def dbt_project_vars() -> dict:
    """The vars dbt_project.yml sets (their defaults)."""
    import yaml

    from bikematch.settings import PROJECT_ROOT

    with (PROJECT_ROOT / "dbt_project.yml").open(encoding="utf-8") as handle:
        return yaml.safe_load(handle).get("vars") or {}


def biggest_spreads(url: str, limit: int = 5) -> list[tuple]:
    with connect(url) as conn:
        return conn.execute(
            "select name, shops, min_price, max_price, price_spread, cheapest_shop, currency"
            " from bike_clusters where shops > 1"
            " order by price_spread desc nulls last, name limit %s",
            (limit,),
        ).fetchall()


def listings_per_shop(url: str) -> list[tuple[str, int]]:
    with connect(url) as conn:
        return conn.execute(
            "select webshop, count(*) from scraped_bikes group by webshop order by webshop"
        ).fetchall()
