"""Run the configured shops in one Scrapy process and summarise each crawl."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from scrapy import signals
from scrapy.crawler import Crawler, CrawlerProcess
from scrapy.settings import Settings
from twisted.internet import task

from bikematch.core.database import DatabaseError, connect
from bikematch.core.settings import DEFAULT_CONTACT
from scrapers.errors import CrawlError
from scrapers.params import Shop
from scrapers.spiders.shops import CssSpider, JsonLdSpider, ShopifySpider, WooCommerceSpider

SPIDERS = {cls.name: cls for cls in (JsonLdSpider, ShopifySpider, WooCommerceSpider, CssSpider)}

log = logging.getLogger("bikematch.scrape")


@dataclass
class CrawlSummary:
    shop: str
    pages: int = 0
    stored: int = 0
    new: int = 0
    price_changes: int = 0
    price_unparsed: int = 0
    http_errors: int = 0
    bad_sitemaps: int = 0
    #: Connections to the database that were dropped and replaced during the crawl.
    reconnects: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    #: Why the crawl stopped before it had seen the whole shop, one phrase each
    #: (a limit of the shop's config, with what it left out); empty when it did not.
    stopped_early: list[str] = field(default_factory=list)

    @classmethod
    def from_stats(cls, shop: str, stats: dict, config: Shop | None = None) -> CrawlSummary:
        dropped = {
            key.rsplit("/", 1)[-1]: value
            for key, value in stats.items()
            if key.startswith("bikematch/dropped/")
        }
        http_errors = sum(
            value
            for key, value in stats.items()
            if key.startswith("downloader/response_status_count/")
            and key.rsplit("/", 1)[-1][0] in "45"
        ) + stats.get("downloader/exception_count", 0)
        return cls(
            shop=shop,
            pages=stats.get("response_received_count", 0),
            stored=stats.get("bikematch/stored", 0),
            new=stats.get("bikematch/new", 0),
            price_changes=stats.get("bikematch/price_changes", 0),
            price_unparsed=stats.get("bikematch/price_unparsed", 0),
            http_errors=http_errors,
            bad_sitemaps=stats.get("bikematch/bad_sitemap", 0),
            reconnects=stats.get("bikematch/reconnects", 0),
            dropped=dropped,
            stopped_early=_stopped_early(stats, config),
        )


def _stopped_early(stats: dict, config: Shop | None) -> list[str]:
    """The limits that stopped a crawl before it saw the whole shop."""
    reasons = []
    finish = stats.get("finish_reason", "")
    scheduled = stats.get("scheduler/enqueued", 0) - stats.get("scheduler/dequeued", 0)
    left = f", {scheduled} pages left unvisited" if scheduled > 0 else ""
    if finish == "closespider_pagecount":
        limit = f" ({config.max_pages})" if config else ""
        reasons.append(f"reached max_pages{limit}{left}")
    elif finish == "closespider_timeout":
        reasons.append(f"reached the scrape time budget{left}")
    elif finish.startswith("closespider_"):
        reasons.append(f"closed by {finish}{left}")
    forbidden = stats.get("robotstxt/forbidden", 0)
    if forbidden:
        reasons.append(f"robots.txt disallowed {forbidden} pages")
    given_up = stats.get("retry/max_reached", 0)
    if given_up:
        reasons.append(f"{given_up} pages failed after every retry (429/5xx or no answer)")
    ignored = stats.get("depth/request_ignored_count", 0)
    if ignored:
        limit = f" ({config.max_depth})" if config else ""
        reasons.append(f"max_depth{limit} left {ignored} links unfollowed")
    return reasons


def shop_spider(shop: Shop) -> type:
    """The platform's spider with the shop's own politeness settings."""
    base = SPIDERS[shop.platform]
    custom = {
        **(base.custom_settings or {}),
        "CONCURRENT_REQUESTS_PER_DOMAIN": shop.concurrency,
        "DOWNLOAD_DELAY": shop.delay,
        "DEPTH_LIMIT": shop.max_depth,
        "CLOSESPIDER_PAGECOUNT": shop.max_pages,
    }
    return type(base.__name__, (base,), {"custom_settings": custom})


def run_shops(
    shops: list[Shop],
    database_url: str,
    *,
    contact: str = DEFAULT_CONTACT,
    overrides: dict | None = None,
    progress=None,
    dry_run: int | None = None,
    on_item=None,
) -> list[CrawlSummary]:
    """Crawl the shops concurrently into the database at `database_url`; return one
    summary per shop, in the given order. `contact` goes into the User-Agent.

    `progress(shop, pages, items)` is called every few seconds while crawling. With
    `dry_run` (a number of listings) nothing is stored: each shop stops after that many
    listings and `on_item(shop, listing)` gets each one.
    Raises CrawlError if any shop's crawl failed to run.
    """
    # Our settings module itself, not scrapy.cfg's: bikematch runs from any directory.
    settings = Settings()
    settings.setmodule("scrapers.settings", priority="project")
    settings.set("BIKEMATCH_DATABASE_URL", database_url, priority="cmdline")
    settings.set("USER_AGENT", f"bikematch/0.1 (+{contact})", priority="cmdline")
    for key, value in (overrides or {}).items():
        settings.set(key, value, priority="cmdline")
    if dry_run:  # nothing stored: the items go to on_item, and the crawl stops after them
        settings.set("ITEM_PIPELINES", {}, priority="cmdline")
        settings.set("CLOSESPIDER_ITEMCOUNT", dry_run, priority="cmdline")
    process = CrawlerProcess(settings)
    crawlers: list[tuple[Shop, Crawler]] = []
    failures: list[str] = []
    for shop in shops:
        crawler = process.create_crawler(shop_spider(shop))
        crawlers.append((shop, crawler))
        if on_item is not None:

            def scraped(item, name=shop.name, **_) -> None:
                on_item(name, item)

            # (Scrapy holds receivers weakly by default: this one lives only here)
            crawler.signals.connect(scraped, signal=signals.item_scraped, weak=False)
        deferred = process.crawl(crawler, shop=shop)
        deferred.addErrback(
            lambda failure, name=shop.name: failures.append(f"{name}: {failure.getErrorMessage()}")
        )

    if progress is not None:

        def report() -> None:
            for shop, crawler in crawlers:
                if crawler.stats is not None:
                    progress(
                        shop.name,
                        crawler.stats.get_value("response_received_count", 0),
                        crawler.stats.get_value("item_scraped_count", 0),
                    )

        def start_reporting() -> None:
            # The reactor exists once an engine has started.
            if not getattr(start_reporting, "started", False):
                start_reporting.started = True
                task.LoopingCall(report).start(5.0, now=False)

        for _, crawler in crawlers:
            crawler.signals.connect(start_reporting, signal=signals.engine_started)
    started = datetime.now(UTC)
    process.start()
    if failures:
        raise CrawlError("; ".join(failures))
    summaries = [
        CrawlSummary.from_stats(shop.name, crawler.stats.get_stats() if crawler.stats else {}, shop)
        for shop, crawler in crawlers
    ]
    if not dry_run:
        record_crawls(database_url, summaries, started)
    return summaries


def record_crawls(database_url: str, summaries: list[CrawlSummary], started: datetime) -> None:
    """A `crawls` row per shop: what `db status` says of each shop's last complete crawl.
    A database gone by now costs the record only (the listings are stored)."""
    finished = datetime.now(UTC)
    try:
        with connect(database_url) as conn:
            with conn.cursor() as cursor:
                cursor.executemany(
                    "insert into crawls (webshop, started_at, finished_at, pages, stored,"
                    " complete, stopped_early) values (%s, %s, %s, %s, %s, %s, %s)",
                    [
                        (c.shop, started, finished, c.pages, c.stored, not c.stopped_early,
                         c.stopped_early)
                        for c in summaries
                    ],
                )  # fmt: skip
    except (DatabaseError, psycopg.Error) as exc:
        log.warning("could not record the crawls: %s", exc)
