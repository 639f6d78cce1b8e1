"""Storing listings: the one upsert path for scrapers and file imports.

A batch is written in one statement: rows are upserted on (webshop, url),
`last_seen_at` moves forward, and a row goes to `price_history` only when a
listing's price, or a currency both rows state, differs from its latest history row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal

import psycopg

COLUMNS = (
    "webshop",
    "url",
    "name",
    "image_url",
    "price",
    "currency",
    "brand",
    "gtin",
    "sku",
    "availability",
)

_UPSERT = """
with incoming as (
    select *
    from unnest(
        %(webshop)s::text[], %(url)s::text[], %(name)s::text[], %(image_url)s::text[],
        %(price)s::numeric[], %(currency)s::text[], %(brand)s::text[], %(gtin)s::text[],
        %(sku)s::text[], %(availability)s::text[]
    ) as incoming (
        webshop, url, name, image_url, price, currency, brand, gtin, sku, availability
    )
),

upserted as (
    insert into scraped_bikes as listing (
        webshop, url, name, image_url, price, currency, brand, gtin, sku, availability,
        first_seen_at, last_seen_at
    )
    select
        webshop, url, name, image_url, price, currency, brand, gtin, sku, availability,
        %(seen_at)s, %(seen_at)s
    from incoming
    on conflict (webshop, url) do update set
        name = excluded.name,
        image_url = excluded.image_url,
        price = excluded.price,
        currency = excluded.currency,
        brand = excluded.brand,
        gtin = excluded.gtin,
        sku = excluded.sku,
        availability = excluded.availability,
        last_seen_at = greatest(listing.last_seen_at, excluded.last_seen_at)
    returning listing.id, listing.price, listing.currency, (xmax = 0) as inserted
),

history as (
    insert into price_history (bike_id, price, currency, seen_at)
    select upserted.id, upserted.price, upserted.currency, %(seen_at)s
    from upserted
    left join lateral (
        select latest.price, latest.currency
        from price_history as latest
        where latest.bike_id = upserted.id
        order by latest.seen_at desc
        limit 1
    ) as previous on true
    where
        upserted.price is not null
        and (
            previous.price is distinct from upserted.price
            -- a currency filled in (or dropped) at the same price is no change
            or previous.currency <> upserted.currency
        )
    on conflict do nothing
    returning bike_id
)

select
    (select count(*) from upserted) as stored,
    (select count(*) from upserted where inserted) as new,
    (
        select count(*) from history
        inner join upserted on history.bike_id = upserted.id
        where not upserted.inserted
    ) as price_changes
"""


@dataclass
class Listing:
    """One listing as a shop shows it (values already normalised)."""

    webshop: str
    url: str
    name: str
    image_url: str | None = None
    price: Decimal | None = None
    currency: str | None = None
    brand: str | None = None
    gtin: str | None = None
    sku: str | None = None
    availability: str | None = None


@dataclass
class StoreResult:
    stored: int = 0
    new: int = 0
    price_changes: int = 0

    def add(self, other: StoreResult) -> None:
        self.stored += other.stored
        self.new += other.new
        self.price_changes += other.price_changes


def store_listings(
    conn: psycopg.Connection, listings: Sequence[Listing], seen_at: datetime | None = None
) -> StoreResult:
    """Upsert a batch in one statement (and one transaction); later duplicates win."""
    unique: dict[tuple[str, str], Listing] = {}
    for listing in map(_without_nul, listings):
        unique[(listing.webshop, listing.url)] = listing
    if not unique:
        return StoreResult()
    params: dict = {c: [getattr(item, c) for item in unique.values()] for c in COLUMNS}
    params["seen_at"] = seen_at or datetime.now(UTC)
    with conn.transaction():
        stored, new, changes = conn.execute(_UPSERT, params).fetchone()
    return StoreResult(stored=stored, new=new, price_changes=changes)


def _without_nul(listing: Listing) -> Listing:
    """Postgres refuses NUL in text (a scraped "\\u0000" in JSON-LD, a CSV's stray byte)."""
    texts = {
        name: value.replace("\x00", "")
        for name, value in vars(listing).items()
        if isinstance(value, str) and "\x00" in value
    }
    return replace(listing, **texts) if texts else listing


def store_in_batches(
    conn: psycopg.Connection, listings: Iterable[Listing], batch_size: int = 500
) -> StoreResult:
    total = StoreResult()
    batch: list[Listing] = []
    seen_at = datetime.now(UTC)
    for listing in listings:
        batch.append(listing)
        if len(batch) >= batch_size:
            total.add(store_listings(conn, batch, seen_at))
            batch = []
    total.add(store_listings(conn, batch, seen_at))
    return total
