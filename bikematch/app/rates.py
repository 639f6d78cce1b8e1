"""Exchange rates, so that prices in different currencies compare: the European Central
Bank's euro reference rates (about 30 currencies, published each working day around
16:00 CET), stored in `exchange_rates` for the dbt models to convert through.

Rows written by hand (any source but 'ecb') are never overwritten, so a rate the ECB
does not publish, or a fixed one, stays as set.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

import psycopg
from lxml import etree

from bikematch.core.database import connect
from bikematch.core.settings import ECB_DAILY_URL

#: The daily file is about 2 KB; anything much larger is not it.
_MAX_BYTES = 1 << 20
_CURRENCY = re.compile(r"[A-Z]{3}")


class RatesError(Exception):
    """The rates could not be fetched or read; one line."""


@dataclass(frozen=True)
class Rates:
    day: date
    #: Units of each currency one euro buys.
    per_euro: dict[str, Decimal]


def fetch_rates(url: str = ECB_DAILY_URL, *, timeout: float = 30, attempts: int = 3) -> Rates:
    """The reference rates at `url` (the ECB's eurofxref XML format; the setting
    BIKEMATCH_RATES_URL); retries a failed connection with a growing wait."""
    request = urllib.request.Request(url, headers={"User-Agent": "bikematch (exchange rates)"})
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                data = response.read(_MAX_BYTES + 1)
            break
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == attempts:
                raise RatesError(f"{url} answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            if attempt == attempts:
                reason = getattr(exc, "reason", exc)
                raise RatesError(f"could not fetch {url}: {reason}") from exc
        time.sleep(2 ** (attempt - 1))
    if len(data) > _MAX_BYTES:
        raise RatesError(f"{url} sent more than {_MAX_BYTES} bytes: not the ECB's rates")
    return parse_ecb(data, url)


def parse_ecb(data: bytes, where: str = "the document") -> Rates:
    """The ECB's eurofxref XML: `<Cube time="YYYY-MM-DD">` holding one
    `<Cube currency="USD" rate="1.0547"/>` per currency. Other documents, or rates
    that are not positive numbers, are refused."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise RatesError(f"{where} is not XML: {exc}") from exc
    days = [node for node in root.iter() if _local(node) == "Cube" and node.get("time")]
    if not days:
        raise RatesError(f"{where} holds no <Cube time=...> of rates: not the ECB's format")
    newest = max(days, key=lambda node: node.get("time"))
    try:
        day = date.fromisoformat(newest.get("time"))
    except ValueError as exc:
        raise RatesError(f"{where}: {newest.get('time')!r} is not a date") from exc
    per_euro = {}
    for node in newest:
        currency, rate = node.get("currency"), node.get("rate")
        if currency is None or rate is None:
            continue
        try:
            value = Decimal(rate)
        except InvalidOperation as exc:
            raise RatesError(f"{where}: the rate of {currency} is {rate!r}") from exc
        if not _CURRENCY.fullmatch(currency) or not value.is_finite() or value <= 0:
            raise RatesError(f"{where}: {currency} at {rate!r} is not a currency's rate")
        if currency != "EUR":
            per_euro[currency] = value
    if not per_euro:
        raise RatesError(f"{where} holds no rate for {day}")
    return Rates(day, per_euro)


def _local(node) -> str:
    return etree.QName(node).localname if isinstance(node.tag, str) else ""


def store_rates(conn: psycopg.Connection, rates: Rates, source: str = "ecb") -> int:
    """Upsert the rates; a stored rate of a later day, or one written by hand, stays.
    Returns how many rows were written."""
    with conn.transaction(), conn.cursor() as cursor:
        cursor.executemany(
            """
            insert into exchange_rates (currency, per_euro, rate_date, source)
            values (%s, %s, %s, %s)
            on conflict (currency) do update set
                per_euro = excluded.per_euro,
                rate_date = excluded.rate_date,
                source = excluded.source,
                updated_at = now()
            where exchange_rates.source = excluded.source
                and exchange_rates.rate_date <= excluded.rate_date
            returning currency
            """,
            [(code, value, rates.day, source) for code, value in sorted(rates.per_euro.items())],
            returning=True,
        )
        written = 0
        while True:
            written += len(cursor.fetchall())
            if not cursor.nextset():
                break
    return written


def refresh_if_needed(url: str, source_url: str = ECB_DAILY_URL) -> list[str]:
    """For the nightly job: where the listings are priced in more than one currency,
    fetch and store the day's rates; a failure leaves the stored ones in use and is
    said, not raised. Lines to print (none where one currency needs no rate)."""
    # No connection is held open (in a transaction) while the ECB is asked, which may
    # take a minute and a half of retries.
    with connect(url) as conn:
        currencies = conn.execute(
            "select count(distinct currency) from scraped_bikes"
            " where price is not null and currency is not null"
        ).fetchone()[0]
    if currencies < 2:
        return []
    try:
        rates = fetch_rates(source_url)
    except RatesError as exc:
        with connect(url) as conn:
            stored = conn.execute("select max(rate_date) from exchange_rates").fetchone()[0]
        line = f"exchange rates: not refreshed ({exc})"
        if stored:
            line += f"; using the stored ones, of {stored} at the latest"
        return [line]
    with connect(url) as conn:
        written = store_rates(conn, rates)
    return [f"exchange rates: {written} of {rates.day} stored (ECB)"]
