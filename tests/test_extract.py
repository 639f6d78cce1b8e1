"""The generic product-page reader on saved pages of each markup style."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from bikematch.core.normalise import (
    PriceError,
    clean_text,
    largest_from_srcset,
    only_value,
    parse_price,
    valid_gtin,
)
from scrapers.extract import FIELDS, extract_product, read_product_page

from .conftest import run_cli

PAGES = Path(__file__).parent / "pages"


def page(name: str) -> str:
    return (PAGES / name).read_text(encoding="utf-8")


EXPECTED = {
    # Several products in the markup: the page's own (its URL), not the related
    # item, the breadcrumb or the "also viewed" product in a second block.
    "jsonld_graph_related.html": (
        "https://www.fietsvoordeelshop.nl/gazelle-ultimate-c380-hmb-heren?utm_source=x",
        {
            "name": "Gazelle Ultimate C380 HMB & 500Wh heren",
            "price": "2999.00",
            "currency": "EUR",
            "image_url": "https://cdn.fvs.nl/img/ultimate-1600.jpg",
            "brand": "Gazelle",
            "gtin": "8712345678906",
            "sku": "GZ-UC380-57",
            "availability": "InStock",
        },
    ),
    # A ProductGroup: the lowest variant price (an AggregateOffer's lowPrice); the one
    # GTIN its variants give (the other has none); no SKU (each size has its own).
    "jsonld_productgroup.html": (
        "https://shop.example/batavus-finez",
        {
            "name": "Batavus Finez E-go Power Exclusive 625Wh",
            "price": "3299.00",
            "currency": "EUR",
            "image_url": "https://shop.example/media/finez.webp",
            "brand": "Batavus",
            "gtin": "8712345678906",
            "sku": None,
            "availability": "InStock",  # one variant is
        },
    ),
    # Sale price over list price; an HTML comment and a trailing comma in the
    # JSON-LD; a GTIN with a wrong check digit is dropped; mpn stands in for sku.
    "jsonld_price_specification.html": (
        "https://shop.example/cube-kathmandu",
        {
            "name": "Cube Kathmandu Hybrid One 750 Trapeze",
            "price": "2799.00",
            "currency": "EUR",
            "image_url": None,
            "brand": "Cube",
            "gtin": None,
            "sku": "CUBE-KHO750",
            "availability": "InStock",
        },
    ),
    # Shopify's Dawn theme (before 2023): GTIN and SKU on the offer, the barcode written
    # as a JSON number with a leading zero (which no JSON parser reads); digits after
    # colons inside strings stay as they are.
    "jsonld_shopify_dawn.html": (
        "https://fietsenwinkelzuid.nl/products/gazelle-grenoble-c5-hmb-elite",
        {
            "name": "Gazelle Grenoble C5 HMB Elite",
            "price": "2499.00",
            "currency": "EUR",
            "image_url": "https://fietsenwinkelzuid.nl/cdn/shop/files/grenoble-c5.jpg?v=1699&width=1946",
            "brand": "Gazelle",
            "gtin": "087123456785",
            "sku": "GZ-GRN-C5-57",
            "availability": "InStock",
        },
    ),
    # The same theme with a frame size per offer, each with its own GTIN and SKU: the
    # page is several sizes, none of whose codes stands for the listing.
    "jsonld_shopify_sizes.html": (
        "https://fietsenwinkelzuid.nl/products/sparta-c-grid-energy-m7b?variant=2",
        {
            "name": "Sparta c-Grid Energy M7b",
            "price": "2299.00",
            "currency": "EUR",
            "image_url": "https://fietsenwinkelzuid.nl/cdn/shop/files/c-grid.jpg?v=1702",
            "brand": "Sparta",
            "gtin": None,
            "sku": None,
            "availability": "InStock",
        },
    ),
    "microdata.html": (
        "https://bikeshop.example/sparta-c-grid",
        {
            "name": "Sparta c-Grid energy M8b 500Wh",
            "price": "2199.00",
            "currency": "EUR",
            "image_url": "https://bikeshop.example/images/sparta-cgrid.jpg",
            "brand": "Sparta",
            "gtin": "5901234123457",
            "sku": "SP-CGRID-M8B",
            "availability": "OutOfStock",
        },
    ),
    "rdfa.html": (
        "https://stromer.example/st3",
        {
            "name": "Stromer ST3 Pinion Sport 983Wh",
            "price": "7490.00",
            "currency": "CHF",
            "image_url": "https://stromer.example/st3.jpg",
            "brand": "Stromer",
            "gtin": None,
            "sku": "ST3-PIN-SP",
            "availability": "InStock",
        },
    ),
    # Broken JSON-LD; OpenGraph product tags carry the page.
    "opengraph.html": (
        "https://qwic.example/premium-i",
        {
            "name": "Qwic Premium i MN7 500Wh & Nexus 7",
            "price": "2649.00",
            "currency": "EUR",
            "image_url": "https://cdn.qwic.example/premium-i.jpg",
            "brand": "Qwic",
            "gtin": None,
            "sku": "QW-PI-MN7",
            "availability": "InStock",
        },
    ),
    # OpenGraph's title without the shop's name (og:site_name) after it.
    "opengraph_site_name.html": (
        "https://fietsenwinkelzuid.nl/qwic-premium-i",
        {
            "name": "Qwic Premium i MN7 Belt",
            "price": "2649.00",
            "currency": "EUR",
            "image_url": "https://fietsenwinkelzuid.nl/media/qwic-premium-i.jpg",
            "brand": None,
            "gtin": None,
            "sku": None,
            "availability": None,
        },
    ),
    # No structured data, and the photo loaded lazily: a placeholder in src, its real
    # address in data-src, the large one in data-large_image (WooCommerce's gallery).
    # The theme's logo is an h1 too.
    "heuristics_lazy.html": (
        "https://fietsenwinkeloost.nl/sparta-m10-ltd",
        {
            "name": "Sparta M10 Ltd",
            "price": "3299.00",
            "currency": "EUR",
            "image_url": "https://fietsenwinkeloost.nl/media/sparta-m10-1200.jpg",
            "brand": None,
            "gtin": None,
            "sku": None,
            "availability": None,
        },
    ),
    # A <picture>: the largest candidate of its sources, not the <img> fallback.
    "heuristics_picture.html": (
        "https://bikes.example.co.uk/cube-kathmandu-slx",
        {
            "name": "Cube Kathmandu Hybrid SLX 750",
            "price": "2999.00",
            "currency": "GBP",
            "image_url": "https://bikes.example.co.uk/img/kathmandu-1600.avif",
            "brand": None,
            "gtin": None,
            "sku": None,
            "availability": None,
        },
    ),
    # No structured data: heading, the current (not struck-through) price,
    # the largest srcset candidate of the product area.
    "heuristics.html": (
        "https://cargobikes.co.uk/load-75",
        {
            "name": "Riese & Müller Load 75 Vario",
            "price": "7499.00",
            "currency": "GBP",
            "image_url": "https://cargobikes.co.uk/img/load75-2000.jpg",
            "brand": None,
            "gtin": None,
            "sku": None,
            "availability": None,
        },
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_saved_pages(name):
    url, expected = EXPECTED[name]
    result = extract_product(page(name), url)
    assert list(result) == list(FIELDS)
    assert result == expected


def test_category_page_is_not_a_product_page():
    assert not read_product_page(page("category_itemlist.html"), "https://x.example/").is_product
    assert read_product_page(page("microdata.html"), "https://x.example/").is_product


def test_empty_and_garbage_pages_do_not_raise():
    for html in ("", "<html>", "\x00\x01 not html", b"\xff\xfe<html>"):
        result = extract_product(html, "https://x.example/p")
        assert set(result) == set(FIELDS)


def test_cli_prints_exactly_the_fields(tmp_path):
    result = run_cli(
        "extract", str(PAGES / "microdata.html"), "--url", "https://bikeshop.example/p"
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert list(printed) == list(FIELDS)
    assert printed["price"] == "2199.00"


@pytest.mark.parametrize(
    ("text", "amount", "currency"),
    [
        ("€ 2.499,00", "2499.00", "EUR"),
        ("2,499.00", "2499.00", None),
        ("vanaf € 1.999,-", "1999.00", "EUR"),
        ("1.999", "1999.00", None),
        ("€ 1.999 - € 2.499", "1999.00", "EUR"),
        ("1.999 tot 2.499 euro", "1999.00", "EUR"),
        # a number beside the price, not a range
        ("€ 2.499 - 3 dagen levertijd", "2499.00", "EUR"),
        ("€ 2.499 tot 5 jaar garantie", "2499.00", "EUR"),
        ("£7,499.00", "7499.00", "GBP"),
        ("EUR 2499", "2499.00", "EUR"),
        ("CHF 7'490.00", "7490.00", "CHF"),
        # an old price, then the one to pay
        ("Van € 3.499 voor € 2.999", "2999.00", "EUR"),
        ("Was £3,499.00 Now £2,999.00", "2999.00", "GBP"),
        ("statt 3.499 € nur 2.999 €", "2999.00", "EUR"),
        ("€ 2.999 voor leden", "2999.00", "EUR"),
        ("€ 2.499 nu 10% korting", "2499.00", "EUR"),  # not a price after "nu"
        ("£2,499 only 3 left", "2499.00", "GBP"),
        (2499, "2499.00", None),
        (2499.5, "2499.50", None),
    ],
)
def test_prices(text, amount, currency):
    assert parse_price(text) == (Decimal(amount), currency)


@pytest.mark.parametrize("text", ["op aanvraag", "prijs volgt", "-"])
def test_unreadable_price_raises_with_reason(text):
    with pytest.raises(PriceError, match="no price"):
        parse_price(text)


@pytest.mark.parametrize("value", ["-5", "€ -100,00", "−€ 5", "0", "€ 0,00", 0, -12.5])
def test_a_price_of_zero_or_below_is_no_price(value):
    with pytest.raises(PriceError, match="negative|out of range"):
        parse_price(value)


def test_gtins_titles_and_images():
    assert valid_gtin("8712345678906") == "8712345678906"
    assert valid_gtin("8712345678907") is None  # wrong check digit
    assert valid_gtin("4006381333931") == "4006381333931"
    assert valid_gtin("96385074") == "96385074"  # GTIN-8
    assert valid_gtin("036000291452") == "036000291452"  # UPC-A
    assert valid_gtin("0000000000000") is None
    assert valid_gtin("abc") is None and valid_gtin(None) is None
    assert clean_text("  Gazelle&nbsp;Ultimate <b>C380</b>\n  HMB &amp; co ") == (
        "Gazelle Ultimate C380 HMB & co"
    )
    # a variant page's own code: the one its variants give, not one of several
    assert only_value(["8712345678906", None, "8712345678906"]) == "8712345678906"
    assert only_value(["036000291452", "0036000291452"], key=lambda g: g.zfill(14)) in (
        "036000291452",
        "0036000291452",
    )
    assert only_value(["8712345678906", "8712345678920"]) is None
    assert only_value([None, ""]) is None
    # JSON-LD's "\u0000" and other control characters: Postgres refuses NUL in text
    assert clean_text("Gazelle\x00 Ultimate\x07 C380\x85HMB\x9f") == "Gazelle Ultimate C380 HMB"
    # hostile text: bidirectional overrides and zero-width characters are invisible
    assert clean_text("\u202eGazelle\u202c Ulti\u200bmate\u2066 C380\u2069\ufeff\u00ad") == (
        "Gazelle Ultimate C380"
    )
    assert largest_from_srcset("a.jpg 300w, b.jpg 1200w, c.jpg 800w") == "b.jpg"
    assert largest_from_srcset("a.jpg 1x, b.jpg 2x") == "b.jpg"


@pytest.mark.parametrize(
    "wrapper",
    [
        '<body class="logo--center template-product"><div class="product">',  # a theme's
        '<body><div class="catalogo-prodotto">',  # "logo" inside a word
    ],
)
def test_only_the_site_logo_is_left_out_of_heading_and_photo(wrapper):
    page = (
        f"<html>{wrapper}<h1>Bici Atala B-Easy</h1>"
        '<img src="/b-easy.jpg" width="600" height="400"></div></body></html>'
    )
    found = extract_product(page, "https://shop.it/b-easy")
    assert (found["name"], found["image_url"]) == (
        "Bici Atala B-Easy",
        "https://shop.it/b-easy.jpg",
    )
