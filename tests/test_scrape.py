"""Real Scrapy crawls of four fixture shops served on 127.0.0.1."""

from __future__ import annotations

import functools
import re
import subprocess
from collections import Counter
from dataclasses import replace
from decimal import Decimal

import pytest
from psycopg.conninfo import conninfo_to_dict

from bikematch.core.database import reconnect
from bikematch.core.listings import Listing
from scrapers.pipelines import ListingPipeline

from .conftest import run_cli
from .fixture_shops import ShopServer, bikes_of
from .pooler import TransactionPooler


@pytest.fixture
def shops(tmp_path):
    with ShopServer() as server:
        config = tmp_path / "shops.yaml"
        config.write_text(server.shops_yaml())
        server.config = config
        yield server


def scrape(server, database_url, *extra):
    result = run_cli(
        "scrape", "--shops", str(server.config), *extra, env={"DATABASE_URL": database_url}
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return result


def listings(conn):
    rows = conn.execute(
        "select webshop, url, name, price, currency, image_url, brand, gtin, sku, availability"
        " from scraped_bikes order by webshop, url"
    ).fetchall()
    return {
        (
            row[0],
            row[1].rsplit("/", 2)[-2] if row[1].endswith("/") else row[1].rsplit("/", 1)[-1],
        ): row
        for row in rows
    }


def test_scrapes_every_platform(conn, database_url, shops):
    result = scrape(shops, database_url)
    rows = listings(conn)
    per_shop = {}
    for shop, _ in rows:
        per_shop[shop] = per_shop.get(shop, 0) + 1
    # jsonld: 4 bikes + the broken-JSON-LD page (read from OpenGraph) + the
    # price-on-request page; the nameless product is dropped.
    assert per_shop == {
        "jsonld-shop.nl": 6,
        "shopify-shop.nl": 3,
        "woo-shop.nl": 4,
        "css-shop.co.uk": 3,
    }
    ultimate = rows[("jsonld-shop.nl", "ultimate")]
    assert ultimate[2] == "Gazelle Ultimate C380 HMB Elektrische Herenfiets 500Wh 2024"
    assert ultimate[3] == Decimal("2999.00") and ultimate[4] == "EUR"
    assert ultimate[5].endswith("/img/jsonld/ultimate-1200.jpg")  # the largest image
    assert ultimate[6:] == ("Gazelle", "8712345678906", "NL-ULTIMATE", "InStock")
    assert rows[("jsonld-shop.nl", "kapotte-data")][2:5] == (
        "Qwic Premium i MN7 500Wh",
        Decimal("2649.00"),
        "EUR",
    )
    assert rows[("jsonld-shop.nl", "op-aanvraag")][3] is None  # unreadable price kept as NULL
    # shopify: the lowest price of the variants on sale (the cheaper size is sold out),
    # the shop's currency from its /meta.json (the config names none), first image, the
    # one barcode its variants give (the other has none), no SKU (each size has its own)
    shopify = rows[("shopify-shop.nl", "ultimate-shopify")]
    assert shopify[3:5] == (Decimal("2999.00"), "EUR")
    assert shopify[7:10] == ("8712345678906", None, "InStock")
    # woocommerce: minor units, entities decoded; a variable product at the lowest price
    # of its variations in stock (the range's lowest is the sold-out size's, 200 less),
    # asked for in one request
    woo = rows[("woo-shop.nl", "finez")]
    assert woo[2] == "Batavus Finez E-go® Power Exclusive (625 Wh) - dames"
    assert woo[3:5] == (Decimal("3299.00"), "EUR")
    assert woo[8:10] == ("W-finez", "InStock")
    asked = [path for path in shops.state.requested if "type=variation" in path]
    assert len(asked) == 1 and asked[0].endswith("include=901,902"), asked
    # css: English price format, the struck-through price ignored, title trimmed
    css = rows[("css-shop.co.uk", "cgrid.html")]
    assert css[2:5] == ("Sparta c-Grid Energy M8b, 500 Wh", Decimal("2199.00"), "GBP")
    assert css[6] == "Sparta"
    # robots.txt is obeyed; the 404, 500 and redirect were met
    assert not any(path.startswith("/jsonld/private/") for path in shops.state.requested)
    assert "/jsonld/fiets/verdwenen" in shops.state.requested
    assert "/jsonld/kapot" in shops.state.requested
    # the summary names every shop and what was dropped
    assert "missing_name 1" in result.stdout
    for shop in per_shop:
        assert shop in result.stdout


def test_rescrape_is_stable_and_price_changes_are_recorded_once(conn, database_url, shops):
    scrape(shops, database_url)
    ids = conn.execute("select id, webshop, url from scraped_bikes order by id").fetchall()
    history = conn.execute("select count(*) from price_history").fetchone()[0]
    assert (
        history
        == conn.execute("select count(*) from scraped_bikes where price is not null").fetchone()[0]
    )

    scrape(shops, database_url)
    assert conn.execute("select id, webshop, url from scraped_bikes order by id").fetchall() == ids
    assert conn.execute("select count(*) from price_history").fetchone()[0] == history

    shops.state.price_changes[("woo", "finez")] = 2999.0
    result = scrape(shops, database_url, "--shop", "woo-shop.nl")
    assert conn.execute("select count(*) from price_history").fetchone()[0] == history + 1
    latest = conn.execute(
        "select price_history.price from price_history"
        " join scraped_bikes on scraped_bikes.id = bike_id"
        " where webshop = 'woo-shop.nl' and url like '%finez%' order by seen_at desc"
    ).fetchall()
    assert [row[0] for row in latest] == [Decimal("2999.00"), Decimal("3299.00")]
    assert "woo-shop.nl" in result.stdout and "jsonld-shop.nl" not in result.stdout


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "- name: a.nl\n    platform: magento\n    start_urls: ['http://x']",
            "shop a.nl: platform",
        ),
        ("- name: b.nl\n    platform: jsonld", "shop b.nl: shop: Value error, needs start_urls"),
        (
            "- name: c.nl\n    platform: shopify\n    start_urls: ['not a url']",
            "shop c.nl: start_urls.0",
        ),
        (
            "- name: d.nl\n    platform: jsonld\n    start_urls: ['http://x']\n    allow: ['(']",
            "shop d.nl: allow",
        ),
        (
            "- name: e.nl\n    platform: css\n    start_urls: ['http://x']",
            "shop e.nl: shop: Value error, the css platform",
        ),
    ],
)
def test_bad_shop_config_names_shop_and_field(tmp_path, entry, message):
    config = tmp_path / "shops.yaml"
    config.write_text("shops:\n  " + entry + "\n")
    result = run_cli("scrape", "--shops", str(config))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr, result.stderr


def test_scrapy_crawl_works_from_the_repository_root(conn, database_url, shops):
    import os
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    scrapy = Path(sys.executable).parent / "scrapy"
    env = {**os.environ, "DATABASE_URL": database_url, "BIKEMATCH_SHOPS": str(shops.config)}
    result = subprocess.run(
        [str(scrapy), "crawl", "shopify", "-a", "shop=shopify-shop.nl", "-s", "LOG_LEVEL=WARNING"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        conn.execute(
            "select count(*) from scraped_bikes where webshop = 'shopify-shop.nl'"
        ).fetchone()[0]
        == 3
    )


@pytest.mark.parametrize("where", ["sitemap_index.xml", "robots.txt"])
def test_a_shop_is_read_from_its_sitemaps(conn, database_url, shops, tmp_path, where):
    """A sitemap index (given, or named by robots.txt) naming a gzipped sitemap (a .xml.gz
    file, not an encoded response), a plain one whose pages `allow` leaves out, and a
    broken one."""
    config = tmp_path / "sitemap-shop.yaml"
    config.write_text(
        f"""
shops:
  - name: sitemap-shop.nl
    platform: jsonld
    sitemap_url: "{shops.base}/{where}"
    allow: ["/jsonld/fiets/"]
    delay: 0
"""
    )
    result = run_cli("scrape", "--shops", str(config), env={"DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr[-3000:]
    assert {key for _, key in listings(conn)} == {bike.key for bike in bikes_of("jsonld")}
    asked = shops.state.requested
    assert "/sitemaps/bikes.xml.gz" in asked and "/sitemaps/broken.xml" in asked
    assert "/jsonld/over-ons" not in asked and "/jsonld/kapot" not in asked
    assert "sitemap-shop.nl: 1 sitemap(s) could not be read" in result.stdout


class Stats(Counter):
    """The part of Scrapy's stats collector the pipeline uses."""

    def inc_value(self, key: str, count: int = 1) -> None:
        self[key] += count


def test_a_listing_the_database_refuses_costs_only_itself(conn, database_url):
    bikes = [
        Listing("shop.nl", f"https://shop.nl/bike-{i}", f"Bike {i}", price=Decimal(2499))
        for i in range(5)
    ]
    bikes[1] = replace(bikes[1], price=Decimal("123456789012.50"))  # over numeric(12, 2)
    bikes[3] = replace(bikes[3], name="Gazelle\x00 C380", brand="Gaz\x00elle")  # "\u0000"
    stats = Stats()
    pipeline = ListingPipeline(stats, batch_size=3, url=database_url)
    pipeline.open_spider()
    for bike in bikes:
        pipeline.process_item(bike)
    pipeline.close_spider()
    rows = conn.execute("select url, name, brand from scraped_bikes order by url").fetchall()
    assert [url[-1] for url, _, _ in rows] == ["0", "2", "3", "4"]
    assert rows[2][1:] == ("Gazelle C380", "Gazelle")
    assert stats["bikematch/stored"] == 4 and stats["bikematch/dropped/refused_by_database"] == 1


def _six_listings_with_a_break(url: str, between) -> Stats:
    """Six listings through the pipeline in batches of three, `between(pipeline)` run
    after the first batch is stored; the pipeline's stats."""
    stats = Stats()
    pipeline = ListingPipeline(stats, batch_size=3, url=url)
    pipeline.open_spider()
    for i in range(6):
        if i == 3:
            between(pipeline)
        bike = Listing("shop.nl", f"https://shop.nl/bike-{i}", f"Bike {i}", price=Decimal(2499))
        pipeline.process_item(bike)
    pipeline.close_spider()
    return stats


def test_the_pipeline_reconnects_when_the_database_drops_its_connection(conn, database_url):
    def drop(pipeline):
        conn.execute("select pg_terminate_backend(%s)", (pipeline.conn.info.backend_pid,))

    stats = _six_listings_with_a_break(database_url, drop)
    assert conn.execute("select count(*) from scraped_bikes").fetchone()[0] == 6
    assert stats["bikematch/stored"] == 6 and stats["bikematch/reconnects"] == 1
    assert not any(key.startswith("bikematch/dropped/") for key in stats)


def test_listings_the_database_is_gone_for_are_counted_and_the_crawl_goes_on(
    conn, database_url, monkeypatch
):
    socket_dir = conninfo_to_dict(database_url)["host"]
    quick = functools.partial(reconnect, attempts=2, first_wait=0.01)
    monkeypatch.setattr("bikematch.core.database.reconnect", quick)
    with TransactionPooler(socket_dir) as pooler:
        # the second batch's flush fails and is counted, not raised
        stats = _six_listings_with_a_break(pooler.url, lambda pipeline: pooler.shut_down())
    assert conn.execute("select count(*) from scraped_bikes").fetchone()[0] == 3
    assert stats["bikematch/stored"] == 3
    assert stats["bikematch/dropped/database_error"] == 3


def test_a_shop_paginated_over_forty_pages_is_stored_whole(conn, database_url, tmp_path):
    """One listing per page: each shop paginates over about 40 pages, far past max_depth
    (4). Following pagination costs no depth, so every listing is stored; a shop that
    hits max_pages says so in its summary line."""
    from bikematch.app.demo import server
    from bikematch.app.demo.catalogue import generate

    catalogue = generate(48)
    old_page_size, server.PAGE_SIZE = server.PAGE_SIZE, 1
    try:
        with server.DemoShops(catalogue, port=0) as shops:
            config = tmp_path / "shops.yaml"
            config.write_text(shops.shops_yaml())
            result = run_cli("scrape", "--shops", str(config), env={"DATABASE_URL": database_url})
            assert result.returncode == 0, result.stdout + result.stderr[-3000:]
            assert "stopped early" not in result.stdout + result.stderr
            stored = dict(
                conn.execute("select webshop, count(*) from scraped_bikes group by webshop")
            )
            expected = Counter(listing.shop.name for listing in catalogue.listings)
            assert stored == dict(expected)
            assert min(expected.values()) >= 24  # pages, with one listing each

            limited = config.read_text().replace(
                "    delay: 0\n", "    delay: 0\n    max_pages: 10\n", 1
            )
            config.write_text(limited)
            result = run_cli("scrape", "--shops", str(config), env={"DATABASE_URL": database_url})
    finally:
        server.PAGE_SIZE = old_page_size
    out = result.stdout + result.stderr
    assert "fietsvoordeelshop.nl: stopped early: reached max_pages (10)" in out, out
    # each crawl is recorded: complete the first time, stopped early the second
    recorded = conn.execute(
        "select complete, stopped_early from crawls where webshop = 'fietsvoordeelshop.nl'"
        " order by finished_at"
    ).fetchall()
    assert [complete for complete, _ in recorded] == [True, False]
    assert recorded[1][1][0].startswith("reached max_pages (10)")


def test_each_limit_that_stops_a_crawl_is_named():
    from scrapers.params import Shop
    from scrapers.run import CrawlSummary

    shop = Shop(name="a.nl", platform="jsonld", start_urls=["https://a.nl/"], max_depth=3)
    stats = {
        "finish_reason": "closespider_pagecount",
        "scheduler/enqueued": 120,
        "scheduler/dequeued": 100,
        "depth/request_ignored_count": 7,
    }
    summary = CrawlSummary.from_stats("a.nl", stats, shop)
    assert summary.stopped_early == [
        "reached max_pages (5000), 20 pages left unvisited",
        "max_depth (3) left 7 links unfollowed",
    ]
    assert CrawlSummary.from_stats("a.nl", {"finish_reason": "finished"}, shop).stopped_early == []
    budget = {
        "finish_reason": "closespider_timeout",
        "scheduler/enqueued": 9,
        "scheduler/dequeued": 4,
        "robotstxt/forbidden": 3,
        "retry/max_reached": 2,
    }
    assert CrawlSummary.from_stats("a.nl", budget, shop).stopped_early == [
        "reached the scrape time budget, 5 pages left unvisited",
        "robots.txt disallowed 3 pages",
        "2 pages failed after every retry (429/5xx or no answer)",
    ]


def test_a_scrape_budget_stops_the_crawls_and_says_so(database_url, tmp_path):
    """run --scrape-minutes: a shop whose pages never answer is stopped at the budget,
    its summary line says so, and the job fails only because nothing was stored."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Stalling(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            # Answers after the budget (1.2 s from the spider's start, which is before
            # this request) has closed the crawl; Scrapy lets a request in flight end.
            time.sleep(5)
            self.send_response(404)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = tmp_path / "shops.yaml"
        config.write_text(
            "shops:\n  - name: slow.nl\n    platform: jsonld\n"
            f"    start_urls: ['http://127.0.0.1:{server.server_port}/fietsen']\n"
            "    delay: 0\n"
        )
        result = run_cli(
            "run", "--shops", str(config), "--scrape-minutes", "0.02",
            env={"DATABASE_URL": database_url},
        )  # fmt: skip
    finally:
        server.shutdown()
    out = result.stdout + result.stderr
    assert "slow.nl: stopped early: reached the scrape time budget" in out, out
    assert "no listing was stored" in out and result.returncode != 0, out


def test_shops_add_detects_each_platform_and_check_reads_without_storing(
    conn, database_url, tmp_path
):
    """`shops add` on a shop of each platform writes a validated entry (a shop that is
    none of them gets a css entry and what to fill in); `shops check` reads a few
    listings and stores nothing."""
    import yaml

    from bikematch.app.demo import server
    from bikematch.app.demo.catalogue import generate

    config = tmp_path / "shops.yaml"
    config.write_text("# my shops\nshops:\n")
    env = {"DATABASE_URL": database_url}
    with server.DemoShops(generate(12), port=0) as shops:
        for name, path, platform in (
            ("shopify.nl", "/shopify", "shopify"),
            ("woo.nl", "/woo", "woocommerce"),
            ("jsonld.nl", "/fvs/e-bikes", "jsonld"),
            ("plain.co.uk", "/uk/e-bikes", "css"),
        ):
            added = run_cli(
                "shops", "add", shops.base + path, "--name", name, "--shops", str(config),
                env=env, cwd=tmp_path,
            )  # fmt: skip
            assert added.returncode == 0, added.stderr
            assert f"added {name} ({platform}) to {config}" in added.stdout
        assert "fill in its selectors" in added.stdout  # the css shop
        entries = {e["name"]: e for e in yaml.safe_load(config.read_text())["shops"]}
        assert config.read_text().startswith("# my shops\n")  # the file's comments stay
        assert entries["shopify.nl"]["start_urls"] == [shops.base + "/shopify"]
        assert entries["jsonld.nl"]["allow"] == [f"^{re.escape(shops.base)}/fvs/"]

        again = run_cli("shops", "add", shops.base + "/woo", "--name", "woo.nl",
                        "--shops", str(config), env=env)  # fmt: skip
        assert again.returncode == 2 and "woo.nl is already configured" in again.stderr
        gone = run_cli("shops", "add", "http://127.0.0.1:9/", "--shops", str(config), env=env)
        assert gone.returncode == 2 and gone.stderr.startswith("error: http://127.0.0.1:9/")

        for name in ("shopify.nl", "jsonld.nl"):
            checked = run_cli("shops", "check", name, "--pages", "3", "--shops", str(config),
                              env=env)  # fmt: skip
            assert checked.returncode == 0, checked.stderr
            assert f"{name}: 3 listings read (nothing stored)" in checked.stdout, checked.stdout
            assert "fields found: price 3/3, currency 3/3, image_url 3/3" in checked.stdout
        # the shop without product markup, tried as a jsonld shop: said what is missing
        bare = {
            "name": "bare.co.uk",
            "platform": "jsonld",
            "start_urls": [shops.base + "/uk/e-bikes"],
            "allow": [f"^{re.escape(shops.base)}/uk/"],
        }
        config.write_text(yaml.safe_dump({"shops": [*entries.values(), bare]}))
        checked = run_cli("shops", "check", "bare.co.uk", "--pages", "3", "--shops", str(config),
                          env=env)  # fmt: skip
        assert checked.returncode == 0, checked.stderr
        assert "bare.co.uk: 0 listings read" in checked.stdout, checked.stdout
        assert "pages read: none declares a product" in checked.stdout, checked.stdout
    assert conn.execute("select count(*) from scraped_bikes").fetchone()[0] == 0
    assert conn.execute("select count(*) from crawls").fetchone()[0] == 0


def test_one_listing_per_product_page_whatever_the_link_added():
    """Tracking parameters, a chosen variant and the fragment do not make another
    listing; the query that names the product stays."""
    from scrapers.spiders.shops import listing_url

    assert listing_url("https://a.nl/p/ultimate?utm_source=nb&gclid=x#specs") == (
        "https://a.nl/p/ultimate"
    )
    assert listing_url("https://a.nl/products/s5?variant=4233") == "https://a.nl/products/s5"
    assert listing_url("https://a.nl/product.php?id=12&ref=menu&maat=57") == (
        "https://a.nl/product.php?id=12"
    )
