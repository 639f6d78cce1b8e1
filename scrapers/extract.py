"""Read the main product of one product page, from any site.

Sources are tried in order of trust: JSON-LD, then microdata/RDFa (through
extruct), then the shop platform's own product data (`platforms`), then
OpenGraph/meta tags, then labelled values the page shows (`labels`: "Artikelnummer:
...", a spec table's "Merk" row), then visible-page heuristics (heading, price,
image, stock text, the breadcrumb's brand), and for the SKU last the number in the
page's address; each later source only fills fields the earlier ones left empty
(a labelled article number the page shows beats a markup SKU it never shows).

When the markup holds several products (related items, a carousel, variants), the
main one is the product whose URL is the page's, whose name matches the page
heading, that has an offer, and that is not nested under a "related" property.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import parse_qsl, urlsplit

import extruct
import jstyleson
from parsel import Selector
from w3lib.encoding import html_to_unicode
from w3lib.url import canonicalize_url

from bikematch.core.normalise import (
    PriceError,
    absolute_url,
    availability,
    clean_text,
    currency_code,
    looks_like_code,
    only_value,
    parse_price,
    plausible_brand,
    valid_gtin,
)
from scrapers import heuristics, labels
from scrapers.platforms import platform_fields

log = logging.getLogger(__name__)

FIELDS = ("name", "price", "currency", "image_url", "brand", "gtin", "sku", "availability")
_PRODUCT_TYPES = {"product", "productgroup", "productmodel", "individualproduct", "vehicle"}
# Properties under which a product is not the page's own product.
_NOT_MAIN = {
    "isrelatedto",
    "issimilarto",
    "isaccessoryorsparepartfor",
    "isconsumablefor",
    "itemlistelement",
    "hasvariant",
    "itemoffered",
    "mentions",
    "hasPart".lower(),
}
_LIST_PRICE_TYPES = ("listprice", "strikethroughprice", "msrp", "srp", "invoiceprice")
_GTIN_KEYS = ("gtin13", "gtin", "gtin14", "gtin12", "gtin8", "ean", "upc")


@dataclass
class ProductPage:
    """What one page says about its main product."""

    name: str | None = None
    price: Decimal | None = None
    currency: str | None = None
    image_url: str | None = None
    brand: str | None = None
    gtin: str | None = None
    sku: str | None = None
    availability: str | None = None
    #: Why a price that was there could not be read (the listing is kept, price NULL).
    price_error: str | None = None
    #: Which source gave each field, for debugging extraction on a new shop.
    sources: dict[str, str] = field(default_factory=dict)
    #: The page is about one product (a top-level product in its markup, or
    #: og:type product), as opposed to a category page or an article.
    is_product: bool = False

    def fill(self, source: str, **values) -> None:
        """Set the fields still empty to the values given; a brand or an article number
        that cannot be one (a placeholder, a title, plain words) is left for the next
        source."""
        if values.get("brand") is not None:
            values["brand"] = plausible_brand(values["brand"])
        if values.get("sku") is not None and not looks_like_code(values["sku"]):
            values["sku"] = None
        for key, value in values.items():
            if value is not None and value != "" and getattr(self, key) is None:
                setattr(self, key, value)
                self.sources[key] = source

    def as_dict(self) -> dict:
        """The public shape: exactly FIELDS, price as a decimal string."""
        values = {key: getattr(self, key) for key in FIELDS}
        values["price"] = f"{self.price:.2f}" if self.price is not None else None
        return values


def extract_product(html: str | bytes, url: str) -> dict:
    """The main product of a page as a dict with exactly FIELDS."""
    return read_product_page(html, url).as_dict()


def read_product_page(html: str | bytes, url: str) -> ProductPage:
    if isinstance(html, bytes):  # in the encoding its <meta charset> names, else UTF-8
        html = html_to_unicode(None, html)[1]
    page = Selector(text=html or "<html></html>")
    canonical = page.css("link[rel=canonical]::attr(href)").get()
    page_urls = {_url_key(url)} | ({_url_key(absolute_url(canonical, url))} if canonical else set())
    heading = heuristics.visible_title(page)
    result = ProductPage()
    documents = _json_ld_documents(page)

    # extruct parses the whole page again per syntax: only where the page uses it
    # (microdata needs an itemscope, an RDFa product a typeof)
    has_microdata = page.xpath("boolean(//*[@itemscope])").get() == "1"
    has_rdfa = page.xpath("boolean(//*[@typeof])").get() == "1"
    for source, products in (
        ("json-ld", _products(documents)),
        ("microdata", _extruct_products(html, url, "microdata") if has_microdata else []),
        ("rdfa", _extruct_products(html, url, "rdfa") if has_rdfa else []),
    ):
        main = _choose_main(products, page_urls, heading, url)
        if main is not None:
            _fill_from_schema(result, main, url, source)
        result.is_product = result.is_product or any(not nested for _, nested, _ in products)
    og_type = (_meta(page, "og:type") or "").lower()
    result.is_product = result.is_product or og_type in ("product", "og:product", "product.item")

    result.fill("platform", **platform_fields(page, html))
    _fill_from_meta(result, page, url, heading)
    labelled = labels.labelled_values(page)
    _prefer_shown_sku(result, page, labelled.get("sku"))
    result.fill(
        "label",
        sku=labelled.get("sku") or labelled.get("mpn"),
        gtin=valid_gtin(labelled.get("gtin")),
        brand=labelled.get("brand"),
    )

    if result.sku is None:  # last: the shop's number for the page, in its address
        result.fill("url", sku=_url_sku(absolute_url(canonical, url) if canonical else url))
    if result.name is None:
        result.fill("heuristic", name=heading)
    if result.price is not None and heuristics.shown_as_old_price(page, result.price):
        # the markup's price is the one the page strikes through: the price to pay is
        # the one it shows now ("EUR 219.99 -50% EUR 110.00")
        amount, currency, _ = heuristics.visible_price(page)
        if amount is not None and amount < result.price:
            result.price, result.sources["price"] = amount, "heuristic"
    if result.price is None or result.currency is None:
        amount, currency, error = heuristics.visible_price(page)
        if result.price is None:
            result.fill("heuristic", price=amount, currency=currency)
            if amount is None and error and result.price_error is None:
                result.price_error = error
        elif amount == result.price:  # the price shown is the one found: its currency
            result.fill("heuristic", currency=currency)
    if result.image_url is None:
        image = heuristics.main_image(page, result.name)
        result.fill("heuristic", image_url=absolute_url(image, url))
    if result.availability is None:
        result.fill("heuristic", availability=labels.visible_availability(page))
    if result.brand is None:
        crumbs = labels.breadcrumb_brand(page, result.name, _breadcrumbs(documents))
        result.fill("breadcrumb", brand=crumbs)
    if result.price is not None and result.price_error:
        result.price_error = None
    return result


#: Query parameters that carry a shop's product number (?pid=260591).
_ID_PARAMETERS = {"pid", "productid", "product_id", "itemid", "item_id", "sku", "articleid"}
#: A path segment that is a number ("/itm/302474151804", "/Prod/144432/"), or a
#: slug's last part ("/babybjorn-one-987929.html"): five digits up, so no model year.
_PATH_ID = re.compile(r"(?:^|[-_])([0-9]{5,20})(?:\.[a-z]{2,5})?$")


def _url_sku(url: str | None) -> str | None:
    """The product number a shop writes in a product page's address, or None."""
    if not url:
        return None
    parts = urlsplit(url)
    for name, value in parse_qsl(parts.query):
        if name.lower() in _ID_PARAMETERS and re.fullmatch(r"[\w.-]{3,40}", value):
            return value
    segments = [segment for segment in parts.path.split("/") if segment]
    match = _PATH_ID.search(segments[-1].lower()) if segments else None
    return match.group(1) if match else None


def _prefer_shown_sku(result: ProductPage, page: Selector, shown: str | None) -> None:
    """The article number the page shows under its label, where the markup's SKU is
    one the page never shows (a variant's or a database id): the shown one is the
    number the shop gives its buyers."""
    if shown is None or result.sku is None or shown == result.sku:
        return
    if result.sources.get("sku") not in ("json-ld", "microdata", "rdfa", "platform", "meta"):
        return
    hidden = page.xpath(
        "not(//body/descendant::text()[not(ancestor::script) and not(ancestor::style)]"
        "[contains(., $sku)])",
        sku=result.sku,
    ).get()
    if hidden == "1":
        result.sku = None
        result.fill("label", sku=shown)


# ---------------------------------------------------------------- JSON-LD


def _json_ld_documents(page: Selector) -> list:
    """The page's JSON-LD documents, with their @id references inlined."""
    documents = []
    for script in page.xpath("//script[contains(@type, 'ld+json')]/text()").getall():
        text = script.strip().removeprefix("<!--").removesuffix("-->").strip()
        if text.startswith("<![CDATA["):
            text = text[9:].removesuffix("]]>")
        try:
            documents.append(json.loads(text, strict=False))
        except ValueError:
            try:  # comments and trailing commas, as some CMSs write them
                documents.append(jstyleson.loads(_quote_zero_padded(text), strict=False))
            except ValueError:
                log.debug("skipping a JSON-LD block that is not JSON")
    return _inline_references(documents)


def _products(documents) -> list[tuple[dict, bool, int]]:
    """(node, nested under a 'not main' property, document order) for each product."""
    products: list[tuple[dict, bool, int]] = []
    _walk(documents, False, products)
    return products


def _breadcrumbs(documents) -> list[str]:
    """The names of the first BreadcrumbList's entries, in position order."""
    lists: list[dict] = []

    def find(node) -> None:
        if isinstance(node, list):
            for item in node:
                find(item)
        elif isinstance(node, dict):
            if "breadcrumblist" in _types(node):
                lists.append(node)
            for value in node.values():
                if isinstance(value, dict | list):
                    find(value)

    find(documents)
    if not lists:
        return []
    entries = [e for e in _as_list(_prop(lists[0], "itemListElement")) if isinstance(e, dict)]

    def position(entry: dict) -> float:
        try:
            return float(_first_text(_prop(entry, "position")) or 0)
        except ValueError:
            return 0.0

    names = [
        _first_text(_prop(entry, "name")) or _name_of(_prop(entry, "item"))
        for entry in sorted(entries, key=position)
    ]
    return [clean_text(name) for name in names if name]


# A JSON string (skipped as a whole), or a number written with leading zeros.
_ZERO_PADDED = re.compile(r'"(?:\\.|[^"\\])*"|(?<![\w.+-])0\d+')


def _quote_zero_padded(text: str) -> str:
    """Quote numbers written with leading zeros, which JSON forbids: Shopify's Dawn
    theme (before 2023) and its many copies write a barcode unquoted, as in
    `"gtin12": 012345678912`, and no JSON parser then reads the product."""
    return _ZERO_PADDED.sub(lambda m: m[0] if m[0][0] == '"' else f'"{m[0]}"', text)


def _inline_references(documents):
    """Replace `{"@id": X}` references by the node X they point to.

    JSON-LD graphs (Yoast, Shopify apps) and extruct's RDFa output are flat:
    a product's offers and brand are separate nodes linked by @id.
    """
    index: dict[str, dict] = {}

    def collect(node) -> None:
        if isinstance(node, list):
            for item in node:
                collect(item)
        elif isinstance(node, dict):
            if isinstance(node.get("@id"), str) and len(node) > 1:
                index.setdefault(node["@id"], node)
            for value in node.values():
                collect(value)

    def inline(node, depth: int):
        if isinstance(node, list):
            return [inline(item, depth) for item in node]
        if not isinstance(node, dict):
            return node
        if set(node) == {"@id"} and node["@id"] in index and depth < 4:
            return inline(index[node["@id"]], depth + 1)
        return {key: inline(value, depth) for key, value in node.items()}

    collect(documents)
    return inline(documents, 0)


def _walk(node, nested: bool, found: list) -> None:
    if isinstance(node, list):
        for item in node:
            _walk(item, nested, found)
        return
    if not isinstance(node, dict):
        return
    if _types(node) & _PRODUCT_TYPES:
        found.append((node, nested, len(found)))
    for key, value in node.items():
        if isinstance(value, dict | list):
            _walk(value, nested or key.lower() in _NOT_MAIN, found)


def _types(node: dict) -> set[str]:
    kind = node.get("@type") or node.get("type") or []
    kinds = kind if isinstance(kind, list) else [kind]
    return {str(k).rsplit("/", 1)[-1].rsplit(":", 1)[-1].lower() for k in kinds}


# ---------------------------------------------------------------- microdata / RDFa


def _extruct_products(html: str, url: str, syntax: str) -> list[tuple[dict, bool, int]]:
    try:
        data = extruct.extract(html, base_url=url, syntaxes=[syntax], uniform=True)
    except Exception:  # extruct raises whatever its parsers raise on broken markup
        log.debug("extruct could not read %s on %s", syntax, url, exc_info=True)
        return []
    products: list[tuple[dict, bool, int]] = []
    _walk(_inline_references(data.get(syntax, [])), False, products)
    return products


# ---------------------------------------------------------------- choosing the main product


def _choose_main(products, page_urls: set[str], heading: str | None, url: str):
    if not products:
        return None
    heading_words = _words(heading)

    def score(entry) -> tuple:
        node, nested, order = entry
        own_url = node.get("url") or node.get("@id")
        own_url = own_url if isinstance(own_url, str) else None
        points = 0
        if own_url and _url_key(absolute_url(own_url, url)) in page_urls:
            points += 4
        if node.get("offers"):
            points += 2
        name_words = _words(_first_text(node.get("name")))
        if heading_words and name_words:
            overlap = len(heading_words & name_words) / len(name_words)
            points += 3 * overlap
        if nested:
            points -= 6
        return (points, -order)

    return max(products, key=score)[0]


def _words(text: str | None) -> set[str]:
    return set(re.findall(r"\w+", text.lower())) if text else set()


def _url_key(url: str | None) -> str:
    if not url:
        return ""
    return canonicalize_url(url.split("#", 1)[0]).rstrip("/")


# ---------------------------------------------------------------- schema.org fields


def _fill_from_schema(result: ProductPage, node: dict, url: str, source: str) -> None:
    offers = _offers(node)
    amount, currency, error = _lowest_offer_price(offers)
    if amount is None and error and result.price_error is None:
        result.price_error = error
    gtin, sku = _identifiers(node, offers)
    # In stock when any offer (variant, seller) is.
    stocks = {availability(_first_text(_prop(offer, "availability"))) for offer in offers}
    stock = "InStock" if "InStock" in stocks else "OutOfStock" if "OutOfStock" in stocks else None
    result.fill(
        source,
        name=clean_text(_first_text(_prop(node, "name"))),
        price=amount,
        currency=currency,
        image_url=absolute_url(_best_image(_prop(node, "image")), url),
        brand=clean_text(_name_of(_prop(node, "brand")) or _name_of(_prop(node, "manufacturer"))),
        gtin=gtin,
        sku=sku,
        availability=stock,
    )


def _identifiers(node: dict, offers: list[dict]) -> tuple[str | None, str | None]:
    """(GTIN, SKU): the product's own; else the one its variants (a ProductGroup's) or
    offers give, where they give one (Shopify's themes write them per offer), not one
    of several (`only_value`)."""
    variants = [v for v in _as_list(_prop(node, "hasVariant")) if isinstance(v, dict)]
    units = [[v, *_offers(v)] for v in variants] if variants else [[o] for o in offers]

    def gtin_of(nodes: list[dict]) -> str | None:
        found = (valid_gtin(_first_text(_prop(n, key))) for n in nodes for key in _GTIN_KEYS)
        return next(filter(None, found), None)

    def sku_of(nodes: list[dict]) -> str | None:
        found = (clean_text(_first_text(_prop(n, key))) for n in nodes for key in ("sku", "mpn"))
        return next(filter(None, found), None)

    gtin = gtin_of([node]) or only_value(map(gtin_of, units), key=lambda g: g.zfill(14))
    return gtin, sku_of([node]) or only_value(map(sku_of, units))


def _prop(node: dict, key: str):
    """A property, whatever prefix the syntax gave it (schema:name, name)."""
    if not isinstance(node, dict):
        return None
    for name, value in node.items():
        if name.rsplit(":", 1)[-1].rsplit("/", 1)[-1].lower() == key.lower():
            return value
    return None


def _offers(node: dict) -> list[dict]:
    # offerDetails: data-vocabulary.org's name for them, which older themes still write
    offers = _prop(node, "offers") or _prop(node, "offerDetails")
    offers = offers if isinstance(offers, list) else [offers] if offers else []
    found = []
    for offer in offers:
        if not isinstance(offer, dict):
            continue
        found.append(offer)
        nested = _prop(offer, "offers")  # AggregateOffer listing its offers
        if nested:
            found.extend(o for o in (nested if isinstance(nested, list) else [nested]) if o)
    for variant in _as_list(_prop(node, "hasVariant")):  # ProductGroup
        if isinstance(variant, dict):
            found.extend(_offers(variant))
    return found


def _lowest_offer_price(offers: list[dict]):
    """The lowest current price of the offers (sale price over list price)."""
    prices = []
    error = None
    for offer in offers:
        # priceCurrency, or data-vocabulary.org's currency
        offer_currency = _prop(offer, "priceCurrency") or _prop(offer, "currency")
        candidates = [
            (_prop(offer, "price"), offer_currency),
            (_prop(offer, "lowPrice"), offer_currency),
        ]
        for spec in _as_list(_prop(offer, "priceSpecification")):
            if not isinstance(spec, dict):
                continue
            kind = str(_prop(spec, "priceType") or "").rsplit("/", 1)[-1].lower()
            if kind in _LIST_PRICE_TYPES:
                continue
            spec_currency = _prop(spec, "priceCurrency") or offer_currency
            candidates.append((_prop(spec, "price"), spec_currency))
        for value, currency in candidates:
            value = _first_text(value) if isinstance(value, list | dict) else value
            if value is None or value == "":
                continue
            try:
                amount, code = parse_price(value, _first_text(currency))
            except PriceError as exc:
                error = str(exc)
                continue
            if amount is not None and amount > 0:
                prices.append((amount, code))
    if not prices:
        return None, None, error
    amount, code = min(prices, key=lambda p: p[0])
    return amount, code, None


def _best_image(value) -> str | None:
    """The largest declared image, else the first."""
    best, best_width = None, -1
    for image in _as_list(value):
        if isinstance(image, str):
            src, width = image, 0
        elif isinstance(image, dict):
            src = _first_text(_prop(image, "contentUrl") or _prop(image, "url") or image.get("@id"))
            try:
                width = int(str(_first_text(_prop(image, "width")) or 0).rstrip("px") or 0)
            except ValueError:
                width = 0
        else:
            continue
        if src and width > best_width:
            best, best_width = src, width
    return best


def _name_of(value) -> str | None:
    for item in _as_list(value):
        if isinstance(item, dict):
            name = _first_text(_prop(item, "name"))
            if name:
                return name
        elif isinstance(item, str) and item.strip():
            return item
    return None


def _first_text(value) -> str | None:
    for item in _as_list(value):
        if isinstance(item, dict):
            item = item.get("@value") or item.get("@id")
        if isinstance(item, str | int | float | Decimal) and not isinstance(item, bool):
            text = str(item).strip()
            if text:
                return text
    return None


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


# ---------------------------------------------------------------- OpenGraph and meta tags


def _meta(page: Selector, *names: str) -> str | None:
    for name in names:
        value = page.xpath(
            f"//meta[@property='{name}' or @name='{name}' or @itemprop='{name}']/@content"
        ).get()
        if value and value.strip():
            return value.strip()
    return None


# What shops put between a page's title and their own name: "Stromer ST3 | Fietsshop".
_TITLE_SEPARATORS = (" | ", "｜", " – ", " — ", " - ", " :: ", " » ")


def _without_site_name(title: str | None, site: str | None, heading: str | None) -> str | None:
    """An og:title without the shop's name after it, where the page says that is what
    follows (its og:site_name), or the page's heading is what precedes it; or without
    the shop's name before it ("Fietsshop | Gazelle Ultimate C380")."""
    if not title:
        return title
    for separator in _TITLE_SEPARATORS:
        head, found, tail = title.partition(separator)
        if found and tail.strip() and site and head.strip().lower() == site.lower():
            return tail.strip()
        head, found, tail = title.rpartition(separator)
        if not found or not head.strip():
            continue
        if (site and tail.strip().lower() == site.lower()) or (
            heading and head.strip().lower() == heading.lower()
        ):
            return head.strip()
    return title


def _fill_from_meta(result: ProductPage, page: Selector, url: str, heading: str | None) -> None:
    amount = currency = None
    text = _meta(page, "product:price:amount", "og:price:amount", "product:sale_price:amount")
    if text is not None and result.price is None:
        hint = _meta(page, "product:price:currency", "og:price:currency")
        try:
            amount, currency = parse_price(text, hint)
        except PriceError as exc:
            result.price_error = result.price_error or str(exc)
    result.fill(
        "meta",
        name=_without_site_name(
            clean_text(_meta(page, "og:title", "twitter:title")),
            clean_text(_meta(page, "og:site_name")),
            heading,
        ),
        price=amount,
        currency=currency or currency_code(_meta(page, "product:price:currency")),
        image_url=absolute_url(
            _meta(page, "og:image:secure_url", "og:image", "twitter:image"), url
        ),
        brand=clean_text(_meta(page, "product:brand", "og:brand")),
        gtin=valid_gtin(_meta(page, "product:ean", "product:gtin", "product:upc")),
        sku=clean_text(_meta(page, "product:retailer_item_id", "product:sku")),
        availability=availability(_meta(page, "product:availability", "og:availability")),
    )
