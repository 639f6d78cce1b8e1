"""Serve the demo catalogue as four local webshops, one per platform, on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from bikematch.app.demo.catalogue import ANCHOR, Catalogue, Listing, photo

PAGE_SIZE = 12
PREFIX = {"jsonld": "fvs", "woocommerce": "woo", "shopify": "shopify", "css": "uk"}


def dutch_price(amount: float) -> str:
    whole, cents = f"{amount:.2f}".split(".")
    return f"{int(whole):,}".replace(",", ".") + "," + cents


_SYMBOLS = {"EUR": "€", "GBP": "£"}


class DemoShops:
    """`with DemoShops(catalogue, port) as shops:` serves until the block ends."""

    def __init__(self, catalogue: Catalogue, port: int = 0) -> None:
        self.catalogue = catalogue
        self._photos: dict[tuple[str, str], bytes] = {}
        self._photos_lock = threading.Lock()
        by_handle = {(item.shop.platform, item.handle): item for item in catalogue.listings}
        shops = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 (http.server's name)
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                page = max(1, int(query.get("page", "1") or 1))
                path = parts.path.strip("/").split("/")
                try:
                    body, kind, headers = shops.route(path, page, by_handle)
                except KeyError:
                    body, kind, headers = b"not found", "text/plain", {}
                    self.send_response(404)
                else:
                    self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> DemoShops:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------ routes

    def route(self, path: list[str], page: int, by_handle):
        html = "text/html; charset=utf-8"
        if path == ["robots.txt"]:
            return b"User-agent: *\nAllow: /\n", "text/plain", {}
        if path[0] == "img" and len(path) == 2:
            platform, handle = path[1].removesuffix(".jpg").split("~")
            return self.photo(by_handle[(platform, handle)]), "image/jpeg", {}
        listings = {p: self._of(p) for p in PREFIX}
        if path == ["fvs", "e-bikes"]:
            return self._category(listings["jsonld"], page).encode(), html, {}
        if path[:2] == ["fvs", "fiets"]:
            return self._jsonld_product(by_handle[("jsonld", path[2])]).encode(), html, {}
        if path == ["woo", "wp-json", "wc", "store", "v1", "products"]:
            chunk, pages = _page(listings["woocommerce"], page)
            body = json.dumps([self._woo(item) for item in chunk]).encode()
            return body, "application/json", {"X-WP-TotalPages": str(pages)}
        if path == ["shopify", "meta.json"]:  # as Shopify's: the shop's own currency
            return (
                json.dumps({"name": "ebike-outlet", "currency": "EUR"}).encode(),
                "application/json",
                {},
            )
        if path == ["shopify", "products.json"]:
            chunk, _ = _page(listings["shopify"], page)
            return (
                json.dumps({"products": [self._shopify(i) for i in chunk]}).encode(),
                "application/json",
                {},
            )
        if path == ["uk", "e-bikes"]:
            return self._css_listing(listings["css"], page).encode(), html, {}
        if path[:2] == ["uk", "bike"]:
            return (
                self._css_product(by_handle[("css", path[2].removesuffix(".html"))]).encode(),
                html,
                {},
            )
        raise KeyError(path)

    def photo(self, listing: Listing) -> bytes:
        key = (listing.shop.name, listing.handle)
        with self._photos_lock:
            if key not in self._photos:
                self._photos[key] = photo(listing)
            return self._photos[key]

    def _of(self, platform: str) -> list[Listing]:
        return [item for item in self.catalogue.listings if item.shop.platform == platform]

    def image_url(self, listing: Listing) -> str:
        return f"{self.base}/img/{listing.shop.platform}~{listing.handle}.jpg"

    def _category(self, listings, page: int) -> str:
        chunk, pages = _page(listings, page)
        links = "".join(
            f'<li class="product"><a href="/fvs/fiets/{item.handle}">{escape(item.title)}</a></li>'
            for item in chunk
        )
        following = (
            f'<a rel="next" href="/fvs/e-bikes?page={page + 1}">Volgende</a>'
            if page < pages
            else ""
        )
        return (
            "<html><head><title>E-bikes</title></head><body><h1>E-bikes</h1>"
            f"<ul>{links}</ul>{following}</body></html>"
        )

    def _jsonld_product(self, listing: Listing) -> str:
        data = {
            "@context": "https://schema.org",
            "@type": "Product",
            "name": listing.title,
            "url": f"/fvs/fiets/{listing.handle}",
            "brand": {"@type": "Brand", "name": listing.brand},
            "sku": listing.sku,
            "image": self.image_url(listing),
            **({"gtin13": listing.gtin} if listing.gtin else {}),
            "offers": {
                "@type": "Offer",
                "price": dutch_price(listing.price),
                "priceCurrency": "EUR",
                "availability": "https://schema.org/InStock",
            },
        }
        return (
            f"<html><head><title>{escape(listing.title)} | {ANCHOR}</title>"
            f'<script type="application/ld+json">{json.dumps(data)}</script></head>'
            f"<body><h1>{escape(listing.title)}</h1>"
            f'<p class="price">€ {dutch_price(listing.price)}</p></body></html>'
        )

    def _woo(self, listing: Listing) -> dict:
        cents = str(round(listing.price * 100))
        return {
            "id": abs(hash(listing.handle)) % 10**6,
            "name": listing.title,
            "permalink": f"{self.base}/woo/product/{listing.handle}/",
            "sku": listing.sku,
            "prices": {
                "price": cents,
                "regular_price": cents,
                "sale_price": cents,
                "currency_code": "EUR",
                "currency_minor_unit": 2,
            },
            "images": [{"src": self.image_url(listing)}],
            "is_in_stock": True,
        }

    def _shopify(self, listing: Listing) -> dict:
        return {
            "title": listing.title,
            "handle": listing.handle,
            "vendor": listing.brand,
            "images": [{"src": self.image_url(listing)}],
            "variants": [
                {
                    "price": f"{listing.price:.2f}",
                    "sku": listing.sku,
                    "available": True,
                    "barcode": listing.gtin,
                }
            ],
        }

    def _css_listing(self, listings, page: int) -> str:
        chunk, pages = _page(listings, page)
        links = "".join(
            f'<a class="product-link" href="/uk/bike/{item.handle}.html">{escape(item.title)}</a>'
            for item in chunk
        )
        following = (
            f'<a class="next" href="/uk/e-bikes?page={page + 1}">Next</a>' if page < pages else ""
        )
        return f"<html><body><h1>Electric bikes</h1>{links}{following}</body></html>"

    def _css_product(self, listing: Listing) -> str:
        return (
            f"<html><head><title>{escape(listing.title)}</title></head><body>"
            f'<h1 class="title">{escape(listing.title)}</h1>'
            f'<span class="price">{_SYMBOLS[listing.shop.currency]}{listing.price:,.2f}</span>'
            f'<img class="main" src="{self.image_url(listing)}">'
            f"</body></html>"
        )

    def shops_yaml(self) -> str:
        return f"""shops:
  - name: {ANCHOR}
    platform: jsonld
    start_urls: ["{self.base}/fvs/e-bikes"]
    allow: ["/fvs/"]
    delay: 0
  - name: fietsenwinkel.nl
    platform: woocommerce
    start_urls: ["{self.base}/woo"]
    delay: 0
  - name: ebike-outlet.nl
    platform: shopify
    start_urls: ["{self.base}/shopify"]
    currency: EUR
    delay: 0
  - name: cyclesdirect.co.uk
    platform: css
    start_urls: ["{self.base}/uk/e-bikes"]
    currency: GBP
    delay: 0
    selectors:
      product_links: "a.product-link"
      next_page: "a.next::attr(href)"
      name: "h1.title::text"
      price: "span.price::text"
      image: "img.main::attr(src)"
"""


def _page(items: list, page: int) -> tuple[list, int]:
    pages = max(1, -(-len(items) // PAGE_SIZE))
    return items[(page - 1) * PAGE_SIZE : page * PAGE_SIZE], pages
