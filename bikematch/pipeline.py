"""The nightly job's stages, in order: scrape, embed, cluster. Each returns a summary."""

from __future__ import annotations

import os
from dataclasses import dataclass
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

    def lines(self) -> list[str]:
        return [
            f"clustered {self.listings} listings into {self.clusters} products, "
            f"{self.multi_shop} sold by more than one shop"
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


def cluster(url: str, dbt_vars: dict, work_dir: Path | None = None) -> ClusterSummary:
    run_dbt(["build"], url, dbt_vars=dbt_vars, capture=True, work_dir=work_dir)
    with connect(url) as conn:
        listings, clusters, multi = conn.execute(
            "select coalesce(sum(listings), 0), count(*), count(*) filter (where shops > 1)"
            " from bike_clusters"
        ).fetchone()
    return ClusterSummary(int(listings), clusters, multi)


def biggest_spreads(url: str, limit: int = 5) -> list[tuple]:
    with connect(url) as conn:
        return conn.execute(
            "select name, shops, min_price, max_price, price_spread, cheapest_shop"
            " from bike_clusters where shops > 1"
            " order by price_spread desc nulls last, name limit %s",
            (limit,),
        ).fetchall()


def listings_per_shop(url: str) -> list[tuple[str, int]]:
    with connect(url) as conn:
        return conn.execute(
            "select webshop, count(*) from scraped_bikes group by webshop order by webshop"
        ).fetchall()
