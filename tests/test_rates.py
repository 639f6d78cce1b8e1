"""Exchange rates: the ECB's reference rates fetched into exchange_rates (`bikematch
rates`, and the nightly job when listings are priced in more than one currency)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bikematch.app.rates import RatesError, parse_ecb, refresh_if_needed

from .conftest import run_cli
from .ecb import ecb_xml
from .image_server import ImageServer

DAILY = ecb_xml("2026-11-20", {"USD": "1.0547", "GBP": "0.8321", "DKK": "7.4590"})
OLDER = ecb_xml("2026-11-19", {"USD": "1.0500", "GBP": "0.8300", "SEK": "11.4200"})
# An external entity, which a careless parser would read from this machine's files.
ENTITY = (
    b'<?xml version="1.0"?><!DOCTYPE Cube [<!ENTITY secret SYSTEM "file:///etc/hostname">]>'
    b"<Cube><Cube time='2026-11-20'><Cube currency='GBP' rate='&secret;'/></Cube></Cube>"
)


@pytest.fixture
def ecb():
    files = {
        "daily.xml": (200, DAILY),
        "older.xml": (200, OLDER),
        "page.html": (200, b"<html><body>Maintenance</body></html>"),
        "broken.xml": (200, DAILY[:-40]),
        "failing.xml": (503, b"busy"),
        "entity.xml": (200, ENTITY),
    }
    with ImageServer() as server:
        for name, (status, body) in files.items():
            server.add(name, body, "text/xml", status)
        yield server


def at(server: ImageServer, name: str) -> str:
    return f"{server.base}/img/{name}"


def stored(conn) -> dict[str, tuple]:
    rows = conn.execute(
        "select currency, per_euro, rate_date::text, source from exchange_rates"
    ).fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


def test_rates_stores_the_ecbs_daily_rates(conn, database_url, ecb):
    env = {"DATABASE_URL": database_url}
    result = run_cli("rates", "--url", at(ecb, "daily.xml"), env=env, check=True)
    assert result.stdout.strip() == "stored 3 exchange rates of 2026-11-20"
    assert stored(conn) == {
        "USD": (Decimal("1.0547"), "2026-11-20", "ecb"),
        "GBP": (Decimal("0.8321"), "2026-11-20", "ecb"),
        "DKK": (Decimal("7.4590"), "2026-11-20", "ecb"),
    }
    # an older day's file adds what is new to it and downgrades nothing
    result = run_cli("rates", "--url", at(ecb, "older.xml"), env=env, check=True)
    assert "stored 1 exchange rates of 2026-11-19; kept 2 stored ones" in result.stdout
    assert stored(conn)["GBP"] == (Decimal("0.8321"), "2026-11-20", "ecb")
    assert stored(conn)["SEK"] == (Decimal("11.42"), "2026-11-19", "ecb")


def test_a_rate_written_by_hand_is_kept(conn, database_url, ecb):
    conn.execute(
        "insert into exchange_rates (currency, per_euro, rate_date) values ('GBP', 0.85, %s)",
        ("2026-01-01",),
    )
    env = {"DATABASE_URL": database_url, "BIKEMATCH_RATES_URL": at(ecb, "daily.xml")}
    run_cli("rates", env=env, check=True)  # the URL from the environment
    assert stored(conn)["GBP"] == (Decimal("0.85"), "2026-01-01", "manual")
    assert stored(conn)["USD"][2] == "ecb"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("page.html", "holds no <Cube time=...> of rates: not the ECB's format"),
        ("broken.xml", "is not XML"),
        ("failing.xml", "answered HTTP 503"),
        ("missing.xml", "answered HTTP 404"),
    ],
)
def test_rates_that_cannot_be_read_fail_in_one_line_and_keep_the_stored_ones(
    conn, database_url, ecb, path, message
):
    env = {"DATABASE_URL": database_url}
    run_cli("rates", "--url", at(ecb, "daily.xml"), env=env, check=True)
    before = stored(conn)
    result = run_cli("rates", "--url", at(ecb, path), env=env)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert stored(conn) == before


def test_an_external_entity_is_not_read(ecb):
    with pytest.raises(RatesError) as caught:
        parse_ecb(ENTITY)
    hostname = open("/etc/hostname").read().strip()
    assert hostname not in str(caught.value)


def test_unreachable_rates_fail_after_retries():
    with pytest.raises(RatesError, match="could not fetch http://127.0.0.1:9/"):
        from bikematch.app.rates import fetch_rates

        fetch_rates("http://127.0.0.1:9/daily.xml", attempts=2)


def test_the_nightly_job_fetches_rates_only_for_more_than_one_currency(conn, database_url, ecb):
    daily = at(ecb, "daily.xml")
    conn.execute(
        "insert into scraped_bikes (webshop, url, name, price, currency) values"
        " ('a.nl', 'a1', 'Bike', 2500, 'EUR'), ('a.nl', 'a2', 'Bike 2', null, 'GBP')"
    )
    assert refresh_if_needed(database_url, daily) == [] and not ecb.requests
    conn.execute(
        "insert into scraped_bikes (webshop, url, name, price, currency)"
        " values ('b.co.uk', 'b1', 'Bike', 2100, 'GBP')"
    )
    assert refresh_if_needed(database_url, daily) == [
        "exchange rates: 3 of 2026-11-20 stored (ECB)"
    ]
    # the ECB away: said, not raised, and the stored rates stay in use
    [line] = refresh_if_needed(database_url, at(ecb, "page.html"))
    assert line.startswith("exchange rates: not refreshed (")
    assert line.endswith("; using the stored ones, of 2026-11-20 at the latest")
    assert len(stored(conn)) == 3
