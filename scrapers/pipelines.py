"""Item pipeline: validate listings, write them to Postgres in batches."""

from __future__ import annotations

import logging

import psycopg
from scrapy.exceptions import DropItem

from bikematch.core.database import DatabaseError, connect, on_connection, resolve_url
from bikematch.core.listings import Listing, StoreResult, store_listings
from bikematch.core.settings import Settings

log = logging.getLogger(__name__)


class ListingPipeline:
    """Batched upserts into scraped_bikes; counts what was stored, new and dropped."""

    def __init__(self, stats, batch_size: int, url: str | None) -> None:
        self.stats = stats
        self.batch_size = batch_size
        self.batch: list[Listing] = []
        self.conn = None
        self.url = url

    @classmethod
    def from_crawler(cls, crawler):
        return cls(
            crawler.stats,
            crawler.settings.getint("BIKEMATCH_BATCH_SIZE", 200),
            crawler.settings.get("BIKEMATCH_DATABASE_URL"),
        )

    def open_spider(self) -> None:
        if self.url is None:  # a crawl started by `scrapy crawl`, not by bikematch
            self.url = resolve_url(Settings.from_environment())
        self.conn = connect(self.url)

    def close_spider(self) -> None:
        try:
            self.flush()
        finally:
            self.conn.close()

    def process_item(self, item):
        if not isinstance(item, Listing):
            return item
        for field in ("url", "name"):
            if not getattr(item, field):
                self.stats.inc_value(f"bikematch/dropped/missing_{field}")
                raise DropItem(f"listing without {field}: {item.url or item.name!r}")
        self.batch.append(item)
        if len(self.batch) >= self.batch_size:
            self.flush()
        return item

    def flush(self) -> None:
        batch, self.batch = self.batch, []
        if not batch:
            return
        try:
            self._store(batch)
        except (DatabaseError, psycopg.OperationalError) as exc:
            # The server went away and did not come back within reconnect()'s tries (or
            # refused the statement for another reason: a timeout, a lock): count the
            # batch, and try again with the next one.
            self.stats.inc_value("bikematch/dropped/database_error", len(batch))
            log.error("%d listings not stored: %s", len(batch), str(exc).strip().splitlines()[0])
        except (psycopg.DataError, psycopg.IntegrityError):
            # One listing the database refuses must not take its batch, or the rest of
            # the crawl, with it: store them one by one, and count the ones refused.
            for listing in batch:
                try:
                    self._count(store_listings(self.conn, [listing]))
                except (psycopg.DataError, psycopg.IntegrityError) as exc:
                    self.stats.inc_value("bikematch/dropped/refused_by_database")
                    reason = str(exc).splitlines()[0]
                    log.warning("listing not stored: %s: %s", listing.url, reason)

    def _store(self, batch: list[Listing]) -> None:
        """Upsert the batch, once more on a new connection if the database dropped this
        one (on_connection: the upsert can be run again)."""
        before = self.conn
        result, self.conn = on_connection(before, self.url, lambda c: store_listings(c, batch))
        if self.conn is not before:
            self.stats.inc_value("bikematch/reconnects")
        self._count(result)

    def _count(self, result: StoreResult) -> None:
        self.stats.inc_value("bikematch/stored", result.stored)
        self.stats.inc_value("bikematch/new", result.new)
        self.stats.inc_value("bikematch/price_changes", result.price_changes)
