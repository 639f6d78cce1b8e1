"""Four small webshops, one per platform, served over HTTP on 127.0.0.1 by the tests.

They sell overlapping bikes under differently worded titles, prices in Dutch
and English formats and different images, and include the awkward cases a
crawler meets: pagination, a redirect, a 404 product, a 500 page, broken
JSON-LD, a page robots.txt forbids, a product without a name and one with an
unreadable price.
"""

from __future__ import annotations

import gzip
import json
import threading
from dataclasses import dataclass, field
from html import escape
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from .image_server import LocalServer


@dataclass
class Bike:
    key: str
    titles: dict[str, str]  # shop -> how that shop words it
    price: float
    gtin: str | None = None
    brand: str = ""


CATALOGUE = [
    Bike(
        "ultimate",
        {
            "jsonld": "Gazelle Ultimate C380 HMB Elektrische Herenfiets 500Wh 2024",
            "shopify": "Gazelle Ultimate C380+ HMB - heren - 500 Wh (2024)",
            "woo": "GAZELLE ULTIMATE C380 HMB 500WH HEREN 2024",
            "css": "Gazelle Ultimate C380 HMB men's e-bike, 500Wh battery, 2024",
        },
        2999.0,
        gtin="8712345678906",
        brand="Gazelle",
    ),
    Bike(
        "finez",
        {
            "jsonld": "Batavus Finez E-go Power Exclusive 625Wh dames",
            "shopify": "Batavus Finez E-Go Power Excl. D53 625Wh",
            "woo": "Batavus Finez E-go® Power Exclusive (625 Wh) - dames",
        },
        3299.0,
        brand="Batavus",
    ),
    Bike(
        "kathmandu",
        {
            "jsonld": "Cube Kathmandu Hybrid One 750 trapeze 2023",
            "css": "CUBE Kathmandu Hybrid ONE 750 Trapeze (2023)",
        },
        2499.0,
        brand="Cube",
    ),
    Bike(
        "cgrid",
        {
            "shopify": "Sparta c-Grid energy M8b 500Wh",
            "woo": "Sparta C-Grid Energy M8b heren 500 Wh",
            "css": "Sparta c-Grid Energy M8b, 500 Wh",
        },
        2199.0,
        brand="Sparta",
    ),
    Bike(
        "stromer",
        {"jsonld": "Stromer ST3 Pinion Sport 983Wh", "woo": "Stromer ST3 Pinion 983 Wh sport"},
        7490.0,
        brand="Stromer",
    ),
]


def dutch(amount: float) -> str:
    """2999.0 -> "2.999,00"."""
    whole, cents = f"{amount:.2f}".split(".")
    groups = []
    while whole:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    return ".".join(groups) + "," + cents


@dataclass
class ShopState:
    """What the server serves; tests change prices between crawls."""

    price_changes: dict[tuple[str, str], float] = field(default_factory=dict)
    requested: list[str] = field(default_factory=list)

    def price(self, shop: str, bike: Bike) -> float:
        return self.price_changes.get((shop, bike.key), bike.price)


def bikes_of(shop: str) -> list[Bike]:
    return [bike for bike in CATALOGUE if shop in bike.titles]


def image(shop: str, bike: Bike, size: int) -> str:
    return f"/img/{shop}/{bike.key}-{size}.jpg"


# ---------------------------------------------------------------- jsonld shop (Dutch)


def jsonld_category(state: ShopState, page: int) -> str:
    bikes = bikes_of("jsonld")
    chunk = bikes[:2] if page == 1 else bikes[2:]
    links = "".join(
        f'<li><a href="/jsonld/fiets/{b.key}">{escape(b.titles["jsonld"])}</a></li>' for b in chunk
    )
    extra = ""
    if page == 1:
        extra = (
            '<a rel="next" href="/jsonld/fietsen?page=2">Volgende</a>'
            '<a href="/jsonld/fiets/verdwenen">Uitverkocht model</a>'
            '<a href="/jsonld/kapot">Storing</a>'
            '<a href="/jsonld/private/intern">Intern</a>'
            '<a href="/jsonld/oude-link">Oude link</a>'
        )
    else:
        extra = (
            '<a href="/jsonld/fiets/kapotte-data">Kapotte data</a>'
            '<a href="/jsonld/fiets/zonder-naam">?</a>'
            '<a href="/jsonld/fiets/op-aanvraag">Op aanvraag</a>'
        )
    # The category page lists its products as an ItemList: not a product page itself.
    item_list = {
        "@context": "https://schema.org",
        "@type": "ItemList",
        "itemListElement": [
            {
                "@type": "ListItem",
                "position": i,
                "item": {"@type": "Product", "name": b.titles["jsonld"]},
            }
            for i, b in enumerate(chunk, 1)
        ],
    }
    return (
        f"<html><head><title>E-bikes pagina {page}</title>"
        f'<script type="application/ld+json">{json.dumps(item_list)}</script></head>'
        f"<body><h1>Elektrische fietsen</h1><ul>{links}</ul>{extra}</body></html>"
    )


def jsonld_product(state: ShopState, bike: Bike) -> str:
    price = state.price("jsonld", bike)
    related = next(b for b in CATALOGUE if b.key != bike.key)
    data = {
        "@context": "https://schema.org",
        "@graph": [
            {
                "@type": "BreadcrumbList",
                "itemListElement": [{"@type": "ListItem", "position": 1, "name": "Fietsen"}],
            },
            {
                "@type": "Product",
                "@id": f"/jsonld/fiets/{bike.key}#product",
                "url": f"/jsonld/fiets/{bike.key}",
                "name": bike.titles["jsonld"],
                "brand": {"@type": "Brand", "name": bike.brand},
                "sku": f"NL-{bike.key.upper()}",
                "image": [
                    {"@type": "ImageObject", "url": image("jsonld", bike, 400), "width": 400},
                    {"@type": "ImageObject", "url": image("jsonld", bike, 1200), "width": 1200},
                ],
                **({"gtin13": bike.gtin} if bike.gtin else {}),
                "offers": {
                    "@type": "Offer",
                    # Dutch shops write prices their own way, even in JSON-LD.
                    "price": dutch(price),
                    "priceCurrency": "EUR",
                    "availability": "https://schema.org/InStock",
                },
                "isRelatedTo": {
                    "@type": "Product",
                    "name": related.titles.get("jsonld", related.key),
                    "offers": {"@type": "Offer", "price": "99.00", "priceCurrency": "EUR"},
                },
            },
        ],
    }
    return (
        f"<html><head><title>{escape(bike.titles['jsonld'])} | Fietsshop</title>"
        f'<script type="application/ld+json">{json.dumps(data)}</script></head>'
        f"<body><h1>{escape(bike.titles['jsonld'])}</h1>"
        f'<p class="price">Nu: € {dutch(price)}</p></body></html>'
    )


def jsonld_special(path: str) -> str | None:
    if path == "/jsonld/fiets/kapotte-data":
        # Broken JSON-LD; OpenGraph still tells the story.
        return (
            "<html><head><title>Qwic Premium i MN7 | Fietsshop</title>"
            '<script type="application/ld+json">{"@type": "Product", "name": "Qwic", </script>'
            '<meta property="og:type" content="product">'
            '<meta property="og:title" content="Qwic Premium i MN7 500Wh">'
            '<meta property="og:image" content="/img/jsonld/qwic.jpg">'
            '<meta property="product:price:amount" content="2.649,00">'
            '<meta property="product:price:currency" content="EUR">'
            "</head><body><p>Qwic Premium i MN7</p></body></html>"
        )
    if path == "/jsonld/fiets/zonder-naam":
        return (
            '<html><head><script type="application/ld+json">'
            '{"@context": "https://schema.org", "@type": "Product",'
            ' "offers": {"@type": "Offer", "price": "1999", "priceCurrency": "EUR"}}'
            "</script></head><body></body></html>"
        )
    if path == "/jsonld/fiets/op-aanvraag":
        return (
            '<html><head><script type="application/ld+json">'
            '{"@context": "https://schema.org", "@type": "Product",'
            ' "name": "Riese & Müller Load 75",'
            ' "offers": {"@type": "Offer", "price": "op aanvraag", "priceCurrency": "EUR"}}'
            "</script></head><body><h1>Riese &amp; Müller Load 75</h1></body></html>"
        )
    return None


# ---------------------------------------------------------------- shopify shop


def shopify_products(state: ShopState, page: int) -> dict:
    bikes = bikes_of("shopify")
    chunk = bikes[:2] if page == 1 else bikes[2:] if page == 2 else []
    products = []
    for bike in chunk:
        price = state.price("shopify", bike)
        products.append(
            {
                "id": hash(bike.key) % 10**8,
                "title": bike.titles["shopify"],
                "handle": bike.key + "-shopify",
                "vendor": bike.brand,
                "images": [{"src": f"https://cdn.shopify.example{image('shopify', bike, 1024)}"}],
                "variants": [
                    {  # the cheaper size is sold out: the listing's price is the other's
                        "price": f"{price - 100:.2f}",
                        "sku": f"{bike.key}-57",
                        "available": False,
                        "barcode": None,
                    },
                    {
                        "price": f"{price:.2f}",
                        "sku": f"{bike.key}-53",
                        "available": True,
                        "barcode": bike.gtin,
                    },
                ],
            }
        )
    return {"products": products}


# ---------------------------------------------------------------- woocommerce shop


#: The variable product (two frame sizes): the smaller, 200 cheaper, is sold out.
WOO_VARIABLE = "finez"


def _woo_prices(price: float) -> dict:
    cents = str(round(price * 100))
    return {
        "price": cents,
        "regular_price": str(round(price * 100) + 20000),
        "sale_price": cents,
        "currency_code": "EUR",
        "currency_minor_unit": 2,
    }


def woo_variations(state: ShopState) -> dict[int, dict]:
    """The variable product's variations by id, as the Store API gives them."""
    bike = next(b for b in bikes_of("woo") if b.key == WOO_VARIABLE)
    price = state.price("woo", bike)
    return {
        901: {
            "id": 901,
            "sku": "W-finez-49",
            "prices": _woo_prices(price - 200),
            "is_in_stock": False,
        },
        902: {"id": 902, "sku": "W-finez-53", "prices": _woo_prices(price), "is_in_stock": True},
    }


def woo_products(state: ShopState, page: int, query: dict) -> list:
    if query.get("type") == "variation":
        variations = woo_variations(state)
        return [
            variations[int(i)] for i in query.get("include", "").split(",") if int(i) in variations
        ]
    bikes = bikes_of("woo")
    chunk = bikes[:2] if page == 1 else bikes[2:]
    result = []
    for bike in chunk:
        product = {
            "id": abs(hash(bike.key)) % 10**6,
            "name": bike.titles["woo"].replace("®", "&reg;"),
            "permalink": f"/woo/product/{bike.key}/",
            "sku": f"W-{bike.key}",
            "type": "simple",
            "prices": _woo_prices(state.price("woo", bike)),
            "images": [{"src": image("woo", bike, 800)}],
            "is_in_stock": True,
        }
        if bike.key == WOO_VARIABLE:  # the price is the range's lowest: the sold-out size's
            variations = woo_variations(state)
            product |= {
                "type": "variable",
                "prices": variations[901]["prices"],
                "variations": [{"id": i, "attributes": []} for i in variations],
            }
        result.append(product)
    return result


# ---------------------------------------------------------------- css shop (English, no markup)


def css_listing(page: int) -> str:
    bikes = bikes_of("css")
    chunk = bikes[:2] if page == 1 else bikes[2:]
    links = "".join(
        f'<a class="product-link" href="/css/bike/{b.key}.html">{escape(b.titles["css"])}</a>'
        for b in chunk
    )
    next_link = '<a class="next" href="/css/bikes?page=2">Next</a>' if page == 1 else ""
    return f"<html><body><h1>E-bikes</h1>{links}{next_link}</body></html>"


def css_product(state: ShopState, bike: Bike) -> str:
    price = state.price("css", bike)
    return (
        f"<html><head><title>{escape(bike.titles['css'])}</title></head><body>"
        f'<h1 class="title">  {escape(bike.titles["css"])} </h1>'
        f'<span class="old-price"><del>£{price + 300:,.2f}</del></span>'
        f'<span class="price">£{price:,.2f}</span>'
        f'<img class="main" src="{image("css", bike, 600)}">'
        f'<span class="brand">{bike.brand}</span></body></html>'
    )


# ---------------------------------------------------------------- the server


def sitemap_index(base: str) -> str:
    sitemaps = "".join(
        f"<sitemap><loc>{base}/sitemaps/{name}</loc></sitemap>"
        for name in ("bikes.xml.gz", "pages.xml", "broken.xml")
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{sitemaps}</sitemapindex>'
    )


def _urlset(urls: list[str]) -> str:
    entries = "".join(f"<url><loc>{url}</loc><lastmod>2024-05-01</lastmod></url>" for url in urls)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{entries}</urlset>'
    )


def bikes_sitemap(base: str) -> str:
    return _urlset([f"{base}/jsonld/fiets/{bike.key}" for bike in bikes_of("jsonld")])


def pages_sitemap(base: str) -> str:
    """Pages the shop's `allow` leaves out, and one of its products again."""
    return _urlset(
        [f"{base}/jsonld/over-ons", f"{base}/jsonld/kapot", f"{base}/jsonld/fiets/finez"]
    )


class ShopServer:
    def __init__(self) -> None:
        self.state = ShopState()
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                state.requested.append(self.path)
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                page = int(query.get("page", 1))
                path = parts.path
                if path == "/robots.txt":
                    robots = "User-agent: *\nDisallow: /jsonld/private/\n"
                    robots += f"Sitemap: {self.base()}/sitemap_index.xml\n"
                    return self.send(200, robots, "text/plain")
                if path in ("/jsonld/", "/jsonld/fietsen"):
                    return self.send(200, jsonld_category(state, page))
                if path == "/jsonld/oude-link":
                    return self.redirect("/jsonld/fiets/ultimate")
                if path == "/jsonld/kapot":
                    return self.send(500, "<html><body>Internal error</body></html>")
                special = jsonld_special(path)
                if special:
                    return self.send(200, special)
                if path.startswith("/jsonld/fiets/"):
                    bike = next((b for b in bikes_of("jsonld") if path.endswith("/" + b.key)), None)
                    if bike:
                        return self.send(200, jsonld_product(state, bike))
                if path == "/sitemap_index.xml":
                    return self.send(200, sitemap_index(self.base()), "application/xml")
                if path == "/sitemaps/bikes.xml.gz":  # a file, as served: no Content-Encoding
                    body = gzip.compress(bikes_sitemap(self.base()).encode())
                    return self.send(200, body, "application/x-gzip")
                if path == "/sitemaps/pages.xml":
                    return self.send(200, pages_sitemap(self.base()), "application/xml")
                if path == "/sitemaps/broken.xml":  # moved, and the shop answers with a page
                    return self.send(200, "<html><body>Oeps! Niet gevonden</body></html>")
                if path == "/shopify/meta.json":  # the shop's own currency
                    body = json.dumps({"name": "Shopify shop", "currency": "EUR"})
                    return self.send(200, body, "application/json")
                if path == "/shopify/products.json":
                    return self.send(
                        200, json.dumps(shopify_products(state, page)), "application/json"
                    )
                if path == "/woo/wp-json/wc/store/v1/products":
                    body = json.dumps(woo_products(state, page, query))
                    return self.send(200, body, "application/json", {"X-WP-TotalPages": "2"})
                if path == "/css/bikes":
                    return self.send(200, css_listing(page))
                if path.startswith("/css/bike/"):
                    bike = next(
                        (b for b in bikes_of("css") if path.endswith(f"/{b.key}.html")), None
                    )
                    if bike:
                        return self.send(200, css_product(state, bike))
                return self.send(404, "<html><body>Not found</body></html>")

            def base(self) -> str:
                return f"http://{self.headers['Host']}"

            def send(self, status, body, content_type="text/html; charset=utf-8", headers=None):
                data = body if isinstance(body, bytes) else body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def redirect(self, location):
                self.send_response(301)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = LocalServer(Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ShopServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def shops_yaml(self) -> str:
        return f"""
shops:
  - name: jsonld-shop.nl
    platform: jsonld
    start_urls: ["{self.base}/jsonld/fietsen"]
    deny: ["/img/"]
    delay: 0
    concurrency: 4
  - name: shopify-shop.nl
    platform: shopify
    start_urls: ["{self.base}/shopify"]
    delay: 0
  - name: woo-shop.nl
    platform: woocommerce
    start_urls: ["{self.base}/woo"]
    delay: 0
  - name: css-shop.co.uk
    platform: css
    start_urls: ["{self.base}/css/bikes"]
    currency: GBP
    delay: 0
    selectors:
      product_links: "a.product-link"
      next_page: "a.next::attr(href)"
      name: "h1.title::text"
      price: "span.price::text"
      image: "img.main::attr(src)"
      brand: "span.brand::text"
"""
