"""Clustering listings into products: the dbt vars of a build, the build, and what a
reader of the clusters it made should know."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from bikematch.app.dbt import run_dbt
from bikematch.app.errors import UserError
from bikematch.core.database import connect
from bikematch.core.settings import PROJECT_ROOT


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


@functools.cache
def dbt_project_vars() -> dict:
    """The vars dbt_project.yml sets (their defaults)."""
    import yaml

    with (PROJECT_ROOT / "dbt_project.yml").open(encoding="utf-8") as handle:
        return yaml.safe_load(handle).get("vars") or {}


def default_threshold(model_name: str) -> float | None:
    """The registered model's match threshold (None for a model bikematch does not know,
    such as a hosted backend's: dbt_project.yml's then applies)."""
    from perception_models import MODELS

    spec = MODELS.get(model_name)
    return spec.default_threshold if spec else None


def cluster_vars(
    model_name: str | None = None,
    anchor_shop: str | None = None,
    threshold: float | None = None,
    extra: dict | None = None,
) -> dict:
    """The dbt vars of one build; every command that clusters goes through here.

    A model given without a threshold clusters at the model's registered threshold, so
    `cluster --model X`, `run --model X`, the demo and calibrate agree. Raises UserError
    for a var dbt_project.yml does not declare or a threshold outside (0, 1]."""
    known = dbt_project_vars()
    dbt_vars = dict(extra or {})
    unknown = sorted(set(dbt_vars) - set(known))
    if unknown:
        raise UserError(f"unknown dbt var {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    if model_name is not None:
        dbt_vars["embedding_model"] = model_name
    if anchor_shop is not None:
        dbt_vars["anchor_shop"] = anchor_shop
    if threshold is None and "match_threshold" not in dbt_vars and model_name is not None:
        threshold = default_threshold(model_name)
    if threshold is not None:
        dbt_vars["match_threshold"] = threshold
    chosen = dbt_vars.get("match_threshold")
    if chosen is not None and not (
        isinstance(chosen, int | float) and not isinstance(chosen, bool) and 0 < chosen <= 1
    ):
        raise UserError(f"match threshold {chosen!r}: give a cosine similarity in (0, 1]")
    return dbt_vars


def check_anchor(url: str, dbt_vars: dict) -> None:
    """A UserError where an anchor shop was named that has no listing at all (a typo:
    clusters would be seeded by the other shops without a word)."""
    anchor = dbt_vars.get("anchor_shop")
    if anchor is None:
        return
    with connect(url) as conn:
        shops = [row[0] for row in conn.execute("select distinct webshop from scraped_bikes")]
    if shops and anchor not in shops:
        raise UserError(f"anchor shop {anchor} has no listings (shops: {', '.join(sorted(shops))})")


def build_clusters(
    url: str,
    dbt_vars: dict,
    *,
    full_refresh: bool = False,
    work_dir: Path | None = None,
    on_model=None,
    show_dbt_log: bool = False,
) -> ClusterSummary:
    """`dbt build` with these vars; returns what was built. on_model gets a line as each
    model is built (a first build of a large catalogue takes minutes); show_dbt_log
    prints dbt's own log instead."""
    # The dbt unit tests pin the matching rules for development (the test suite runs
    # them); a nightly build need not run them again.
    command = ["build", "--exclude-resource-type", "unit_test"]
    command += ["--full-refresh"] if full_refresh else []
    ensure_search_index(
        url, dbt_vars.get("embedding_model") or dbt_project_vars()["embedding_model"], on_model
    )
    run_dbt(
        command,
        url,
        dbt_vars=dbt_vars,
        capture=not show_dbt_log,
        work_dir=work_dir,
        on_model=None if show_dbt_log else on_model,
    )
    with connect(url) as conn:
        listings, clusters, multi = conn.execute(
            "select coalesce(sum(listings), 0), count(*), count(*) filter (where shops > 1)"
            " from bike_clusters"
        ).fetchone()
        notes = cluster_notes(conn, dbt_vars)
    return ClusterSummary(int(listings), clusters, multi, notes)


def ensure_search_index(url: str, model_name: str, say=None) -> None:
    """The model's HNSW index, built again where an embedding run was killed while it
    loaded without it (the neighbour search would scan every vector instead); `say`
    gets a line before such a build."""
    from embedder import index

    with connect(url) as conn:
        registered = conn.execute(
            "select 1 from embedding_models where name = %s", (model_name,)
        ).fetchone()
        missing = registered and index.state(conn, model_name) != "valid"
    if missing:
        if say:
            say(f"building the search index of {model_name} (an embedding run left it out)")
        index.build(url, model_name)


def build_matches(url: str, dbt_vars: dict) -> None:
    """Only the models up to master_bikes (the matching, without the marts): what a
    sweep over thresholds rebuilds at each step."""
    command = ["build", "--select", "+master_bikes", "--exclude-resource-type", "test", "unit_test"]
    run_dbt(command, url, dbt_vars=dbt_vars, capture=True)


def cluster_notes(conn, dbt_vars: dict) -> list[str]:
    """What a reader of the clusters just built should know (empty_note, anchor_note,
    currency_note)."""
    notes = (empty_note(conn, dbt_vars), anchor_note(conn, dbt_vars), currency_note(conn))
    return [note for note in notes if note]


def empty_note(conn, dbt_vars: dict) -> str | None:
    """A note where no listing took part: none on sale has a vector for the model."""
    if conn.execute("select to_regclass('int_listings')").fetchone()[0] is None:
        return None
    if conn.execute("select exists (select from int_listings)").fetchone()[0]:
        return None
    model = dbt_vars.get("embedding_model") or dbt_project_vars().get("embedding_model")
    return (
        f"note: nothing to cluster: no listing on sale has a vector for model {model}"
        f" (`bikematch embed --model {model}` makes them)"
    )


def anchor_note(conn, dbt_vars: dict) -> str | None:
    """A note where the anchor shop had no listing in the clustering just built: its
    clusters were seeded by the other shops, in their order, which may not be what was
    meant (the default anchor is an example shop)."""
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


def biggest_spreads(url: str, limit: int = 5) -> list[tuple]:
    with connect(url) as conn:
        return conn.execute(
            "select name, shops, min_price, max_price, price_spread, cheapest_shop, currency,"
            " cluster_id from bike_clusters where shops > 1"
            " order by price_spread desc nulls last, name limit %s",
            (limit,),
        ).fetchall()


def listings_per_shop(url: str) -> list[tuple[str, int]]:
    with connect(url) as conn:
        return conn.execute(
            "select webshop, count(*) from scraped_bikes group by webshop order by webshop"
        ).fetchall()


def require_clusters(url: str, current: bool = False) -> None:
    """A UserError where `bikematch cluster` has not built the cluster tables yet (or,
    with `current`, an earlier bikematch built them, without today's columns)."""
    from bikematch.app.status import marts_are_current

    with connect(url) as conn:
        found = conn.execute(
            "select to_regclass('master_bikes') is not null and"
            " to_regclass('bike_clusters') is not null"
        ).fetchone()[0]
        outdated = found and current and not marts_are_current(conn)
    if not found:
        raise UserError("no clusters yet: run `bikematch cluster` (or `bikematch run`) first")
    if outdated:
        raise UserError(
            "the clusters were built by an earlier bikematch: run `bikematch cluster` to"
            " rebuild them"
        )


def has_images(url: str, model: str) -> bool:
    """Whether any of the model's vectors has an image half (else only the text counts)."""
    with connect(url) as conn:
        return conn.execute(
            "select exists (select from vector_storage where model = %s and not text_only)",
            (model,),
        ).fetchone()[0]
