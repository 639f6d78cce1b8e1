"""`bikematch db status`: what the database holds, stage by stage, for the person who
wants to know whether last night's job did its work."""

from __future__ import annotations

from datetime import UTC

import psycopg

from bikematch.core import migrations
from bikematch.core.database import connect, mask_password
from embedder import MAX_ATTEMPTS


def _when(moment) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "never"


def database_status(url: str) -> list[str]:
    """Which server this is, then lines on the schema, listings per shop, vectors per
    model, clusters and rates."""
    with connect(url) as conn:
        version = conn.execute("show server_version").fetchone()[0]
        return [f"connected to {mask_password(url)} (Postgres {version})", *_contents(conn)]


def _contents(conn: psycopg.Connection) -> list[str]:
    applied, pending = migrations.pending(conn)
    if not applied:
        return ["schema: none yet; `bikematch db init` creates it"]
    lines = [
        f"migrations: {applied} applied"
        + (
            f", {len(pending)} pending ({', '.join(pending)}): run `bikematch db init`"
            if pending
            else ", none pending"
        )
    ]
    if conn.execute("select to_regclass('scraped_bikes')").fetchone()[0] is None:
        return lines
    lines += _listings(conn) + _vectors(conn) + _clusters(conn) + _rates(conn)
    return lines


def _listings(conn) -> list[str]:
    shops = conn.execute(
        "select webshop, count(*), max(last_seen_at) from scraped_bikes"
        " group by webshop order by webshop"
    ).fetchall()
    crawled = {}
    if conn.execute("select to_regclass('crawls')").fetchone()[0] is not None:
        crawled = {
            shop: (complete, last)
            for shop, complete, last in conn.execute(
                "select webshop, max(finished_at) filter (where complete), max(finished_at)"
                " from crawls group by webshop"
            )
        }
    total = sum(count for _, count, _ in shops)
    lines = [f"listings: {total} in {len(shops)} shops"]
    for shop, count, seen in shops:
        line = f"  {shop}: {count}, last seen {_when(seen)}"
        if shop in crawled:
            complete, last = crawled[shop]
            line += f", last complete crawl {_when(complete)}"
            if complete is None or last > complete:
                line += f" (the crawl of {_when(last)} stopped early)"
        lines.append(line)
    return lines


def _vectors(conn) -> list[str]:
    models = conn.execute("select name from embedding_models order by name").fetchall()
    if not models:
        return ["vectors: none yet; `bikematch embed` makes them"]
    lines = ["vectors:"]
    for (model,) in models:
        stored, newest = conn.execute(
            "select count(*), max(embedded_at) from vector_storage where model = %s", (model,)
        ).fetchone()
        pending = conn.execute(
            "select count(*) from bikematch_listings_to_embed(%s, %s)", (model, MAX_ATTEMPTS)
        ).fetchone()[0]
        given_up = conn.execute(
            "select count(*) from embedding_failures where model = %s and attempts >= %s",
            (model, MAX_ATTEMPTS),
        ).fetchone()[0]
        lines.append(
            f"  {model}: {stored}, {pending} pending, {given_up} failed {MAX_ATTEMPTS} times"
            f" (newest {_when(newest)})"
        )
    return lines


def marts_are_current(conn: psycopg.Connection) -> bool:
    """Whether the marts have this version's columns: a build by an earlier bikematch
    lacks the ones added since, until the next `bikematch cluster`."""
    return conn.execute(
        "select count(*) = 2 from information_schema.columns"
        " where table_schema = current_schema() and (table_name, column_name) in"
        " (('bike_offers', 'comparable_price'), ('bike_clusters', 'unconverted_offers'))"
    ).fetchone()[0]


def _clusters(conn) -> list[str]:
    if conn.execute("select to_regclass('bike_clusters')").fetchone()[0] is None:
        return ["clusters: none yet; `bikematch cluster` builds them"]
    if not marts_are_current(conn):
        return ["clusters: built by an earlier bikematch; `bikematch cluster` rebuilds them"]
    products, multi, unconverted = conn.execute(
        "select count(*), count(*) filter (where shops > 1), coalesce(sum(unconverted_offers), 0)"
        " from bike_clusters"
    ).fetchone()
    # Each build analyses the table it made (dbt_project.yml's post-hook).
    built = conn.execute(
        "select greatest(last_analyze, last_autoanalyze) from pg_stat_user_tables"
        " where relid = 'bike_clusters'::regclass"
    ).fetchone()
    line = f"clusters: {products} products, {multi} sold by more than one shop"
    if built and built[0]:
        line += f" (built {_when(built[0])})"
    if unconverted:
        line += f"; {unconverted} offers' prices not compared (no exchange rate)"
    return [line]


def _rates(conn) -> list[str]:
    if conn.execute("select to_regclass('exchange_rates')").fetchone()[0] is None:
        return []
    count, newest, sources = conn.execute(
        "select count(*), max(rate_date), string_agg(distinct source, ', ' order by source)"
        " from exchange_rates"
    ).fetchone()
    if not count:
        return ["exchange rates: none (`bikematch rates` stores the ECB's)"]
    return [f"exchange rates: {count} ({sources}), of {newest} at the latest"]
