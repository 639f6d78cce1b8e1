"""dbt clustering on fixed small vectors in a real Postgres."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from psycopg import sql

from bikematch.app.dbt import one_build_at_a_time, run_dbt
from bikematch.core.database import DatabaseError, connect
from bikematch.core.migrations import apply_migrations

from .clustering import (
    HALF_DIMS,
    MODEL,
    add_listing,
    at_cosine,
    cluster,
    cluster_sets,
    clusters_by_url,
    drop_dbt_tables,
    master_rows,
    near,
    product_vector,
    set_vector,
)
from .conftest import eventually, run_cli

#: The source tables a build reads that the test catalogue fills.
SOURCES = ("scraped_bikes", "vector_storage")

P1, P2, P3, P4 = (product_vector(seed) for seed in (1, 2, 3, 4))

# (shop, url, vector): P3 is not sold by the anchor shop; c4 is a second,
# less similar P1 listing of shop c (one listing per shop per cluster).
CATALOGUE = [
    ("anchor.nl", "a1", near(P1, 0.05, 11)),
    ("anchor.nl", "a2", near(P2, 0.05, 12)),
    ("shop-b.nl", "b1", near(P1, 0.05, 21)),
    ("shop-b.nl", "b2", near(P3, 0.05, 22)),
    ("shop-c.nl", "c1", near(P1, 0.05, 31)),
    ("shop-c.nl", "c2", near(P3, 0.05, 32)),
    ("shop-c.nl", "c3", near(P4, 0.05, 33)),
    ("shop-c.nl", "c4", near(P1, 0.35, 34)),
]
# Prices: c4, a second P1 listing of shop c, is another product at another price, so a
# later listing that fits both P1 clusters is placed by its price (rival products).
PRICES = {"c4": 4500}
EXPECTED = {
    frozenset({"a1", "b1", "c1"}),
    frozenset({"a2"}),
    frozenset({"b2", "c2"}),
    frozenset({"c3"}),
    frozenset({"c4"}),
}


@pytest.fixture
def db(conn):
    drop_dbt_tables(conn)
    yield conn
    drop_dbt_tables(conn)


def load(conn, rows=CATALOGUE):
    return {
        url: add_listing(conn, shop, url, vector, price=PRICES.get(url, 3000))
        for shop, url, vector in rows
    }


def test_catalogue_is_what_the_tests_assume(db):
    from .clustering import concatenate

    def similarity(a, b):
        return float(concatenate(a)[2] @ concatenate(b)[2])

    by_url = {url: vector for _, url, vector in CATALOGUE}
    assert similarity(by_url["a1"], by_url["c1"]) > 0.95
    assert 0.9 <= similarity(by_url["a1"], by_url["c4"]) < similarity(by_url["a1"], by_url["c1"])
    assert similarity(P1, P2) < 0.6 and similarity(P3, P4) < 0.6


def test_shop_priority_orders_the_shops_after_the_anchor(db, database_url):
    """Shops after the anchor are placed by var('shop_priority'), then by name: with
    shop-c.nl first, its listing seeds the cluster that shop-b.nl's joins."""
    ids = load(db)
    cluster(database_url, shop_priority=["shop-c.nl"])
    assert cluster_sets(db) == EXPECTED
    via = dict(db.execute("select bike_id, matched_via from master_bikes").fetchall())
    matched = dict(db.execute("select bike_id, matched_bike_id from master_bikes").fetchall())
    assert via[ids["c2"]] == "seed" and matched[ids["b2"]] == ids["c2"]
    ranks = dict(db.execute("select webshop, shop_rank from int_listings").fetchall())
    assert ranks == {"anchor.nl": 0, "shop-c.nl": 1, "shop-b.nl": 2}


def test_a_stricter_build_keeps_the_rows_of_listings_that_left(db, database_url):
    """master_bikes keeps the last row of a listing that left its shop, with the score it
    was matched at then; a later build at a stricter threshold must pass its data tests."""
    load(db)
    cluster(database_url)  # at 0.9
    db.execute(
        "update scraped_bikes set first_seen_at = now() - interval '11 days',"
        " last_seen_at = now() - interval '10 days' where url = 'b1'"
    )
    cluster(database_url, match_threshold=0.999)  # raises if a data test fails
    score = db.execute(
        "select score from master_bikes join scraped_bikes on id = bike_id where url = 'b1'"
    ).fetchone()[0]
    assert 0.9 <= score < 0.999


def test_the_matching_rules_pass_their_dbt_unit_tests(db, database_url):
    """The unit tests in dbt_project (identifier evidence on a fixed set of listings),
    which bikematch's own builds leave out."""
    result = run_dbt(["test", "--select", "test_type:unit"], database_url, capture=True)
    assert "1 of 1 PASS int_candidate_matches::" in result.stdout, result.stdout[-2000:]


def test_a_build_right_after_a_first_load_analyzes_the_sources_first(scratch_url):
    """Autovacuum gives freshly loaded tables their statistics up to a minute later;
    planned without them, a build's joins can take minutes instead of a second. A build
    analyzes the sources that have none, and leaves analyzed ones alone."""
    with connect(scratch_url) as empty:
        apply_migrations(empty)
    with connect(scratch_url, autocommit=True) as fresh:  # knows the vector types now
        for table in SOURCES:  # no autovacuum running in between: only the build
            fresh.execute(f"alter table {table} set (autovacuum_enabled = false)")
        for shop, url, vector in CATALOGUE:
            add_listing(fresh, shop, url, vector)

        def analyzed():
            return dict(
                fresh.execute(
                    "select relname, last_analyze from pg_stat_user_tables"
                    " where relname = any(%s) and last_analyze is not null",
                    (list(SOURCES),),
                ).fetchall()
            )

        assert analyzed() == {}
        cluster(scratch_url)
        first = analyzed()
        assert set(first) == set(SOURCES)
        assert {row[0] for row in fresh.execute("select tablename from pg_stats")} >= set(SOURCES)
        cluster(scratch_url)  # nothing changed since: nothing analyzed again
        assert analyzed() == first


def test_expected_clusters(db, database_url):
    ids = load(db)
    cluster(database_url)
    assert cluster_sets(db) == EXPECTED
    via = dict(db.execute("select bike_id, matched_via from master_bikes").fetchall())
    assert via[ids["a1"]] == "anchor" and via[ids["b1"]] == "embedding"
    assert via[ids["b2"]] == "seed" and via[ids["c2"]] == "embedding"
    assert via[ids["c4"]] == "seed"
    # The non-anchor cluster is seeded by the higher-priority shop (by name: b before c).
    matched = dict(db.execute("select bike_id, matched_bike_id from master_bikes").fetchall())
    assert matched[ids["c2"]] == ids["b2"]
    summary = db.execute(
        "select shops, listings from bike_clusters order by listings desc limit 1"
    ).fetchone()
    assert summary == (3, 3)


def test_rerun_without_new_data_changes_no_row(db, database_url):
    load(db)
    cluster(database_url)
    before = master_rows(db)
    cluster(database_url)
    assert master_rows(db) == before


def test_cluster_ids_are_stable_when_new_listings_arrive(db, database_url):
    load(db)
    cluster(database_url)
    before = {frozenset(urls): cid for cid, urls in clusters_by_url(db).items()}
    add_listing(db, "shop-d.nl", "d1", near(P2, 0.05, 41))
    add_listing(db, "shop-d.nl", "d2", product_vector(99))
    cluster(database_url)
    after = {frozenset(urls): cid for cid, urls in clusters_by_url(db).items()}
    assert after[frozenset({"a2", "d1"})] == before[frozenset({"a2"})]
    for urls in EXPECTED - {frozenset({"a2"})}:
        assert after[urls] == before[urls]
    assert frozenset({"d2"}) in after


def test_result_does_not_depend_on_insert_order(db, database_url):
    load(db)
    cluster(database_url)
    first = clusters_by_url(db)
    db.execute("truncate scraped_bikes cascade")
    drop_dbt_tables(db)
    shuffled = CATALOGUE[:]
    random.Random(7).shuffle(shuffled)
    load(db, shuffled)
    cluster(database_url)
    assert clusters_by_url(db) == first  # same members and the same cluster ids


def test_one_listing_per_shop_per_cluster_is_configurable(db, database_url):
    load(db)
    cluster(database_url, max_listings_per_shop=2)
    assert frozenset({"a1", "b1", "c1", "c4"}) in cluster_sets(db)


def test_gtin_rules(db, database_url):
    valid_a1, valid_a2, valid_other = "5901234123457", "4006381333931", "8712345678906"
    invalid = "4006381333932"
    rows = CATALOGUE + [
        # Looks like nothing else, but shares a2's GTIN: joins a2 whatever the similarity.
        ("shop-e.nl", "e1", product_vector(77)),
        # Looks like P1 and carries a different valid GTIN than a1: another size or
        # colour of the same product, so it merges by similarity.
        ("shop-f.nl", "f1", near(P1, 0.02, 61)),
        # An invalid check digit is ignored: matches by similarity.
        ("shop-g.nl", "g1", near(P1, 0.02, 71)),
    ]
    gtins = {"a1": valid_a1, "a2": valid_a2, "e1": valid_a2, "f1": valid_other, "g1": invalid}
    for shop, url, vector in rows:
        add_listing(db, shop, url, vector, gtin=gtins.get(url), price=PRICES.get(url, 3000))
    cluster(database_url)
    sets = cluster_sets(db)
    assert frozenset({"a2", "e1"}) in sets
    p1_cluster = next(s for s in sets if "a1" in s)
    assert "g1" in p1_cluster and "f1" in p1_cluster
    via = dict(
        db.execute(
            "select url, matched_via from master_bikes"
            " join scraped_bikes on scraped_bikes.id = master_bikes.bike_id"
        ).fetchall()
    )
    assert via["e1"] == "gtin" and via["g1"] == "embedding"


def test_changed_vector_moves_the_listing(db, database_url):
    ids = load(db)
    cluster(database_url)
    set_vector(db, ids["c3"], near(P2, 0.05, 99))
    cluster(database_url)
    sets = cluster_sets(db)
    assert frozenset({"a2", "c3"}) in sets
    assert frozenset({"c3"}) not in sets


def test_removed_listing_leaves_the_marts_but_keeps_its_history(db, database_url):
    ids = load(db)
    cluster(database_url)
    db.execute(
        "update scraped_bikes set first_seen_at = now() - interval '10 days',"
        " last_seen_at = now() - interval '10 days' where id = %s",
        (ids["b1"],),
    )
    cluster(database_url)
    assert frozenset({"a1", "c1"}) in cluster_sets(db)
    row = db.execute("select matched_via from master_bikes where bike_id = %s", (ids["b1"],))
    assert row.fetchone() == ("embedding",)


def test_candidate_search_uses_the_hnsw_index(db, database_url, dbt_target):
    rows = [(f"shop-{i % 5}.nl", f"u{i}", product_vector(1000 + i)) for i in range(1500)]
    load(db, rows)
    db.execute("analyze vector_storage")
    db.commit()
    index = db.execute("select bikematch_hnsw_index_name(%s)", (MODEL,)).fetchone()[0]
    scans = "select idx_scan from pg_stat_user_indexes where indexrelname = %s"
    before = db.execute(scans, (index,)).fetchone()[0]
    cluster(database_url)
    db.execute("select pg_stat_clear_snapshot()")
    # dbt's sessions have ended, so their statistics have reached the server.
    after = db.execute(scans, (index,)).fetchone()[0]
    assert after - before >= len(rows), (before, after)

    # The search itself: an index scan of the model's HNSW index, ordered by distance.
    body = db.execute(
        "select prosrc from pg_proc where proname = 'int_vector_neighbours__search'"
    ).fetchone()[0]
    query = body.split("return query", 1)[1].rsplit(";", 1)[0]
    for number, name in enumerate(["query_embedding", "query_bike_id", "query_webshop"], 1):
        query = query.replace(name, f"${number}")
    db.execute(f"prepare search (halfvec, uuid, text) as {query}")
    try:
        bike_id, embedding = db.execute(
            "select bike_id::text, embedding::text from vector_storage limit 1"
        ).fetchone()
        explain = sql.SQL("explain execute search ({}::halfvec, {}::uuid, 'shop-0.nl')")
        plan = db.execute(explain.format(sql.Literal(embedding), sql.Literal(bike_id))).fetchall()
    finally:
        db.execute("deallocate search")
    plan = "\n".join(row[0] for row in plan)
    assert f"Index Scan using {index}" in plan, plan

    # The model calls it from parallel workers (with the settings of its pre-hook).
    compiled = next(dbt_target.glob("compiled/**/int_vector_neighbours.sql"))
    db.execute("set min_parallel_table_scan_size = 0")
    try:
        plan = db.execute("explain (verbose) " + compiled.read_text()).fetchall()
    finally:
        db.execute("reset min_parallel_table_scan_size")
    plan = "\n".join(row[0] for row in plan)
    assert "Gather" in plan and "int_vector_neighbours__search" in plan, plan


def test_cli_cluster_and_plain_dbt_build(db, database_url, tmp_path):
    load(db)
    env = {"DATABASE_URL": database_url}
    run_cli(
        "cluster",
        "--model",
        MODEL,
        "--anchor",
        "anchor.nl",
        "--threshold",
        "0.9",
        env=env,
        check=True,
    )
    assert cluster_sets(db) == EXPECTED
    exports = run_cli("db", "env", env=env, check=True).stdout
    assert "export PGHOST=" in exports
    # plain dbt with the profile read from the environment, as the README says
    run_dbt(
        ["build", "--select", "bike_clusters"],
        database_url,
        dbt_vars={"embedding_model": MODEL, "anchor_shop": "anchor.nl"},
        capture=True,
    )
    # dbt's docs build, and every column an analyst sees in a mart is described
    target = tmp_path / "target"
    run_dbt(["docs", "generate", "--target-path", str(target)], database_url, capture=True)
    catalog = json.loads((target / "catalog.json").read_text())["nodes"]
    manifest = json.loads((target / "manifest.json").read_text())["nodes"]
    marts = [k for k, node in manifest.items() if k.startswith("model.") and "marts" in node["fqn"]]
    assert len(marts) == 4, marts
    for key in marts:
        built = set(catalog[key]["columns"])
        described = {
            name
            for name, column in manifest[key]["columns"].items()
            if column.get("description", "").strip()
        }
        assert built - described == set(), f"{key}: columns without a description"
        assert described - built == set(), f"{key}: descriptions of columns it lacks"


def test_a_second_build_on_one_database_waits_for_the_first(db, database_url):
    """Two builds at once merged into the same tables ("tuple concurrently updated"):
    a `bikematch cluster` started while another build runs waits for it, and says so."""
    load(db)
    args = ("cluster", "--model", MODEL, "--anchor", "anchor.nl", "--threshold", "0.9")
    with ThreadPoolExecutor(1) as pool:
        with one_build_at_a_time(database_url, "dbt build"):  # the build already running
            second = pool.submit(run_cli, *args, env={"DATABASE_URL": database_url})

            def waiting_or_done():
                """the second build waits for the lock (or ended)"""
                return (
                    second.done()
                    or db.execute(
                        "select count(*) from pg_locks"
                        " where locktype = 'advisory' and not granted and objid = %s::bigint::oid",
                        (0x6B1E3A7D,),
                    ).fetchone()[0]
                )

            eventually(waiting_or_done, timeout=120)
            assert not second.done(), second.result().stderr  # it waits, while the lock is held
        result = second.result(timeout=300)
    assert result.returncode == 0, result.stderr
    assert "another dbt build is running on this database: bikematch dbt build on" in (
        result.stderr
    )
    assert "the other build finished (waited" in result.stderr
    assert cluster_sets(db) == EXPECTED


def test_marts_compare_prices_and_track_changes(db, database_url):
    ids = load(db)
    prices = {"a1": 2499, "b1": 2299, "c1": 2599, "a2": 1799, "b2": 999, "c2": 1099}
    for url, price in prices.items():
        db.execute("update scraped_bikes set price = %s where id = %s", (price, ids[url]))
    # b1's price history: 2399 -> 2299 (a drop), with an unchanged listing beside it.
    db.execute(
        "insert into price_history (bike_id, price, currency, seen_at) values"
        " (%s, 2399, 'EUR', now() - interval '2 days'), (%s, 2299, 'EUR', now()),"
        " (%s, 2499, 'EUR', now() - interval '2 days')",
        (ids["b1"], ids["b1"], ids["a1"]),
    )
    cluster(database_url)
    row = db.execute(
        "select shops, min_price, median_price, max_price, price_spread, cheapest_shop, name"
        " from bike_clusters where listings = 3"
    ).fetchone()
    assert row == (3, 2299, 2499, 2599, 300, "shop-b.nl", "anchor.nl a1")
    ranks = dict(
        db.execute(
            "select url, price_rank from bike_offers where url in ('a1', 'b1', 'c1')"
        ).fetchall()
    )
    assert ranks == {"b1": 1, "a1": 2, "c1": 3}
    changes = db.execute(
        "select url, previous_price, price, price_change, cluster_id is not null from price_changes"
    ).fetchall()
    assert changes == [("b1", 2399, 2299, -100, True)]


def _price(db, ids, url, price, currency):
    db.execute(
        "update scraped_bikes set price = %s, currency = %s where id = %s",
        (price, currency, ids[url]),
    )


def _cluster_prices(db):
    return db.execute(
        "select currency, min_price, max_price, price_spread, cheapest_shop, unconverted_offers"
        " from bike_clusters where listings = 3"
    ).fetchone()


def test_prices_in_other_currencies_compare_through_exchange_rates(db, database_url):
    ids = load(db)
    # a UK shop's 2,100 GBP is the lowest number but, at 0.80 GBP a euro, the highest price
    for url, price, currency in (("a1", 2500, "EUR"), ("b1", 2100, "GBP"), ("c1", 2400, "EUR")):
        _price(db, ids, url, price, currency)
    db.execute(
        "insert into exchange_rates (currency, per_euro, rate_date) values ('GBP', 0.8, %s)",
        ("2026-11-20",),
    )
    cluster(database_url)
    assert _cluster_prices(db) == ("EUR", 2400, 2625, 225, "shop-c.nl", 0)
    offers = dict(
        db.execute(
            "select url, (comparable_price, comparable_currency, price_rank, rate_date::text)"
            " from bike_offers where url in ('a1', 'b1', 'c1')"
        ).fetchall()
    )
    assert offers["b1"] == ("2625.00", "EUR", "3", "2026-11-20")
    assert offers["c1"] == ("2400.00", "EUR", "1", None)

    # in the analyst's currency of choice
    cluster(database_url, report_currency="GBP")
    assert _cluster_prices(db) == ("GBP", 1920, 2100, 180, "shop-c.nl", 0)

    # without a rate the GBP price takes no part, and is counted
    db.execute("truncate exchange_rates")
    cluster(database_url)
    assert _cluster_prices(db) == ("EUR", 2400, 2500, 100, "shop-c.nl", 1)
    rank = db.execute("select price_rank from bike_offers where url = 'b1'").fetchone()[0]
    assert rank is None
    result = run_cli(
        *("cluster", "--model", MODEL, "--anchor", "anchor.nl", "--threshold", "0.9"),
        env={"DATABASE_URL": database_url},
        check=True,
    )
    assert (
        "note: prices of offers with no exchange rate are left out of the price comparisons"
        " (1 in GBP); `bikematch rates` stores the ECB's"
    ) in result.stderr

    # a feed that gives no currency at all: its prices compare as they are
    db.execute("update scraped_bikes set currency = null")
    cluster(database_url)
    assert _cluster_prices(db) == (None, 2100, 2500, 400, "shop-b.nl", 0)


def test_the_cheapest_available_offer_skips_those_out_of_stock(db, database_url):
    ids = load(db)
    for url, price, stock in (
        ("a1", 2500, "InStock"),
        ("b1", 2100, "OutOfStock"),
        ("c1", 2400, None),  # unknown: counts as available
    ):
        _price(db, ids, url, price, "EUR")
        db.execute("update scraped_bikes set availability = %s where id = %s", (stock, ids[url]))
    cluster(database_url)
    row = db.execute(
        "select cheapest_shop, min_price, cheapest_available_shop, min_available_price,"
        " out_of_stock_offers from bike_clusters where listings = 3"
    ).fetchone()
    assert row == ("shop-b.nl", 2100, "shop-c.nl", 2400, 1)


def test_a_price_gap_between_currencies_is_judged_in_euros(db, database_url):
    """22,000 DKK and 2,500 EUR are about the same price: no '-price' penalty. A gap of
    that size within one currency still is one."""
    ids = load(db)

    def penalised() -> set[str]:
        rows = db.execute(
            "select url from master_bikes join scraped_bikes on id = bike_id"
            " where matched_via like '%%-price%%'"
        ).fetchall()
        return {url for (url,) in rows}

    _price(db, ids, "a1", 2500, "EUR")
    _price(db, ids, "b1", 22000, "DKK")
    _price(db, ids, "c1", 19000, "EUR")
    _price(db, ids, "c4", 19000, "EUR")  # c1's rival for its shop's place, as far off
    db.execute(
        "insert into exchange_rates (currency, per_euro, rate_date, source)"
        " values ('DKK', 7.46, current_date, 'ecb')"
    )
    cluster(database_url)
    assert penalised() == {"c1"}
    db.execute("truncate exchange_rates")  # no rate: not judged, rather than judged wrongly
    cluster(database_url)
    # c1 now fits best through b1, whose price it cannot judge: no penalty either way
    via = db.execute(
        "select matched.url from master_bikes join scraped_bikes as listing on listing.id ="
        " master_bikes.bike_id join scraped_bikes as matched on matched.id = matched_bike_id"
        " where listing.url = 'c1'"
    ).fetchone()
    assert via == ("b1",) and penalised() == set()


def test_a_report_currency_that_is_not_a_currency_code_fails_in_one_line(db, database_url):
    load(db)
    bad = {"embedding_model": MODEL, "report_currency": "eur'; drop table scraped_bikes; --"}
    with pytest.raises(DatabaseError, match="report_currency: expected an ISO 4217 code"):
        run_dbt(["build"], database_url, dbt_vars=bad, capture=True)


def test_text_only_listings_match_on_their_text_cosine(db, database_url):
    anchor = product_vector(500)
    add_listing(db, "anchor.nl", "a", anchor)
    # The same text, no image: its combined cosine with "a" is only about 0.7,
    # but it is matched on the text cosine, undiluted by the empty image half.
    text_twin = near(anchor, 0.02, 501)
    add_listing(db, "shop-b.nl", "b", text_twin, text_only=True)
    cluster(database_url)
    assert frozenset({"a", "b"}) in cluster_sets(db)
    similarity = db.execute(
        "select similarity from master_bikes join scraped_bikes on id = bike_id where url = 'b'"
    ).fetchone()[0]
    from .clustering import HALF_DIMS, concatenate

    expected = float(concatenate(anchor)[1] @ concatenate(text_twin)[1])
    assert abs(similarity - expected) < 1e-4 and similarity > 0.95
    assert HALF_DIMS == 16


def test_a_listing_that_loses_its_place_tries_its_next_choice(db, database_url):
    import numpy as np

    from .clustering import concatenate

    def unit(v):
        return v / np.linalg.norm(v)

    p1, p2 = unit(product_vector(81)), unit(product_vector(82))
    between = 0.75 * p1 + 0.66 * p2  # nearer P1, but also like P2
    rows = [
        ("anchor.nl", "a1", p1),
        ("anchor.nl", "a2", p2),
        ("shop-b.nl", "b1", near(p1, 0.02, 83)),  # the better P1 match: takes a1's place
        ("shop-b.nl", "bx", between),
    ]
    load(db, rows)
    joined = {url: concatenate(vector)[2] for _, url, vector in rows}
    assert joined["bx"] @ joined["a1"] > joined["bx"] @ joined["a2"] > 0.5
    cluster(database_url, match_threshold=0.5)
    assert cluster_sets(db) == {frozenset({"a1", "b1"}), frozenset({"a2", "bx"})}
    cluster(database_url, match_threshold=0.5, assignment_rounds=1)
    assert frozenset({"bx"}) in cluster_sets(db)  # one round: it seeds a cluster instead


def test_model_numbers_agree_when_one_extends_the_other_with_letters(db, database_url):
    """A shared rare model number lifts a pair over the threshold. MC359LL and MC359LLA are
    one number (a suffix letter), DSC-TX10 and DSC-TX100V two: the number goes on."""
    names = {
        "a1": "Apple MacBook MC359LL",
        "b1": "MacBook 13 inch MC359LLA",
        "a2": "Sony Cyber-shot DSC-TX10",
        "b2": "Sony camera DSC-TX100V",
    }
    p1, p2 = product_vector(91), product_vector(92)
    rows = [
        ("anchor.nl", "a1", p1),
        ("anchor.nl", "a2", p2),
        ("shop-b.nl", "b1", at_cosine(p1, 0.8, 93)),  # under 0.9 on its own
        ("shop-b.nl", "b2", at_cosine(p2, 0.8, 94)),
    ]
    for shop, url, vector in rows:
        add_listing(db, shop, url, vector, name=names[url])
    cluster(database_url)  # threshold 0.9, code bonus 0.15
    assert cluster_sets(db) == {
        frozenset({"a1", "b1"}),
        frozenset({"a2"}),
        frozenset({"b2"}),
    }
    via = dict(
        db.execute(
            "select url, matched_via from master_bikes join scraped_bikes"
            " on id = bike_id where url = 'b1'"
        ).fetchall()
    )
    assert via == {"b1": "embedding+codes"}


def test_clustering_without_a_listing_of_the_anchor_shop_says_so(db, database_url):
    load(db)
    env = {"DATABASE_URL": database_url}
    args = ("cluster", "--model", MODEL, "--threshold", "0.9")
    # the default anchor (dbt_project.yml's example shop) is none of these: a note
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "note: the anchor shop fietsvoordeelshop.nl has no listing here, so no shop's listings"
        " seeded the clusters first; name one of yours with --anchor SHOP"
    )
    # a shop named on the command line that has no listing is a mistake: refused
    result = run_cli(*args, "--anchor", "not-one-of-yours.nl", env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: anchor shop not-one-of-yours.nl has no listings (shops: ")
    result = run_cli(*args, "--anchor", "anchor.nl", env=env)
    assert result.returncode == 0 and "note:" not in result.stderr, result.stderr


def test_a_photo_a_shop_shows_for_many_listings_says_nothing(db, database_url):
    """A shop's "no photo yet" image, shown for several of its listings, makes their image
    halves alike across shops: pairs with such a listing are judged by title alone."""
    rng = np.random.default_rng(5)
    placeholder = rng.normal(size=HALF_DIMS)  # both shops' placeholders look alike

    def listing(shop, url, text, image_url, image=placeholder):
        return add_listing(db, shop, url, np.concatenate([image, text]), image_url=image_url)

    titles = [rng.normal(size=HALF_DIMS) for _ in range(4)]
    similar = near(titles[0], 0.8, 7)  # another bike, with a similar title
    text_cosine = titles[0] @ similar / np.linalg.norm(titles[0]) / np.linalg.norm(similar)
    assert 0.75 < text_cosine < 0.9 < (1 + text_cosine) / 2  # below the threshold alone
    for shop, first in (("anchor.nl", titles[0]), ("shop-b.nl", similar)):
        shared = f"https://{shop}/img/no-photo-yet.png"
        listing(shop, f"{shop}/a", first, shared)
        for i in (1, 2):
            listing(shop, f"{shop}/{i}", rng.normal(size=HALF_DIMS), shared)
        # the same pair of titles and alike photos, each its own photo: they do count
        listing(shop, f"{shop}/own", first, f"https://{shop}/img/own.jpg")
    cluster(database_url)
    together = {frozenset(urls) for urls in cluster_sets(db) if len(urls) > 1}
    assert together == {frozenset({"anchor.nl/own", "shop-b.nl/own"})}


class _LookAlikes:
    """anchor.nl/it and shop-b.nl/it, one product by title, the anchor's listing showing
    its shop's no-photo URL; and twelve listings in each shop that a search by the whole
    vector finds before that pair's other half, from either side (shop-b's with its
    placeholder, the anchor's with `anchor_photo(i)`)."""

    NO_PHOTO = "https://{}/img/no-photo-yet.png"
    PAIR = frozenset({"anchor.nl/it", "shop-b.nl/it"})

    def __init__(self, db, anchor_photo):
        self.db = db
        self.rng = np.random.default_rng(11)
        self.placeholder = self.rng.normal(size=HALF_DIMS)
        self.words = iter(f"bike {a}{b}" for a in "abcdefghij" for b in "klmnopqrst")
        title = self.rng.normal(size=HALF_DIMS)
        self.it = self.add("anchor.nl", "it", self.placeholder, title, self.no_photo("anchor.nl"))
        self.add("shop-b.nl", "it", -self.placeholder, title, "https://shop-b.nl/img/it.jpg")
        for i in range(12):
            self.add("shop-b.nl", i, self.placeholder, None, self.no_photo("shop-b.nl"))
            self.add("anchor.nl", i, -self.placeholder, None, anchor_photo(i))

    def no_photo(self, shop: str) -> str:
        return self.NO_PHOTO.format(shop)

    def add(self, shop, key, image, text, image_url):
        """A listing `shop/key`; text None: a title of its own."""
        text = self.rng.normal(size=HALF_DIMS) if text is None else text
        vector = np.concatenate([image, text])
        url = f"{shop}/{key}"
        return add_listing(self.db, shop, url, vector, name=next(self.words), image_url=image_url)


def test_a_listing_with_its_shops_placeholder_photo_is_looked_up_by_its_title(db, database_url):
    """Its [image, text] vector would find the other shops' placeholders first; its true
    match, with a real photo, is found by title. Twelve look-alikes in each shop fill the
    ten places of a search by the whole vector, from either side."""
    no_photo = _LookAlikes.NO_PHOTO.format("anchor.nl")
    _LookAlikes(db, lambda i: no_photo if i < 2 else f"https://anchor.nl/img/{i}.jpg")
    cluster(database_url)
    assert _LookAlikes.PAIR in cluster_sets(db)


def test_a_listing_whose_photo_became_its_shops_placeholder_is_looked_up_again(db, database_url):
    """Whether a photo is shared is a property of the shop's catalogue, not of the
    listing's vector: when two more listings take its photo, the listing is looked up
    again by its title (and by its whole vector again when they let go of it)."""
    scene = _LookAlikes(db, lambda i: f"https://anchor.nl/img/{i}.jpg")

    def searched_by_title() -> set:
        rows = db.execute(
            "select distinct searched_by_title from int_vector_neighbours where bike_id = %s",
            (scene.it,),
        )
        return {row[0] for row in rows}

    cluster(database_url)  # its photo is its own yet: looked up by the whole vector
    assert scene.PAIR not in cluster_sets(db) and searched_by_title() == {False}
    for i in (12, 13):  # the photo becomes the shop's placeholder
        scene.add("anchor.nl", i, -scene.placeholder, None, scene.no_photo("anchor.nl"))
    cluster(database_url)
    assert scene.PAIR in cluster_sets(db) and searched_by_title() == {True}
    db.execute("delete from scraped_bikes where url in ('anchor.nl/12', 'anchor.nl/13')")
    cluster(database_url)  # its own again
    assert searched_by_title() == {False}
    # A table from before the column: the next build appends it, keeping the rows
    # (all of them searched by the whole vector then).
    db.execute("alter table int_vector_neighbours drop column searched_by_title")
    cluster(database_url)
    assert searched_by_title() == {None}


def test_each_model_runs_under_the_statement_timeout_var(db, database_url):
    """Each model's transaction sets statement_timeout (var, 1h by default) over the
    server's (Supabase stops statements after 2 minutes): a tiny one stops the build."""
    load(db)
    env = {"DATABASE_URL": database_url}
    args = ("cluster", "--model", MODEL, "--anchor", "anchor.nl", "--threshold", "0.9")
    result = run_cli(*args, "--var", "statement_timeout=1ms", env=env)
    assert result.returncode == 2
    assert "canceling statement due to statement timeout" in result.stderr
    cluster(database_url)  # at the default, the same build goes through
    assert cluster_sets(db) == EXPECTED
