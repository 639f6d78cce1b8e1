"""Which platform a shop runs on, asked of the shop itself: the entry `shops add` writes.

In order: Shopify (`/products.json` answers a product list), WooCommerce (the Store
API answers one), sitemaps (robots.txt names them, or `/sitemap.xml` is one) whose
pages are product pages, product pages linked from the start page; otherwise a
`css` entry whose selectors the user fills in. A shop under a path (`host/shop/`)
is looked for there first, and its entry only follows URLs under that path.
"""

from __future__ import annotations

import gzip
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from parsel import Selector

from scrapers.extract import read_product_page
from scrapers.platforms import parse_json

#: How much of one answer is read (a sitemap can be large; a page is not).
MAX_BYTES = 5 * 1024 * 1024


@dataclass
class Detected:
    """A shops.yaml entry and what was found out on the way (one line each)."""

    entry: dict
    notes: list[str] = field(default_factory=list)


class DiscoveryError(RuntimeError):
    """The shop could not be reached at all; the message says why."""


def detect_shop(url: str, name: str | None = None, user_agent: str = "bikematch") -> Detected:
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DiscoveryError(f"{url!r} is not a shop's http(s) URL")
    base = f"{parts.scheme}://{parts.netloc}"
    start = f"{base}{parts.path or '/'}"
    name = name or parts.hostname.removeprefix("www.")
    client = _Client(user_agent)
    # A platform's API at the URL given (a shop under a path) or at the host's root.
    for root in dict.fromkeys([start.rstrip("/"), base]):
        products = parse_json(client.get(f"{root}/products.json?limit=1"))
        if isinstance(products, dict) and isinstance(products.get("products"), list):
            entry = {"name": name, "platform": "shopify", "start_urls": [root]}
            notes = ["Shopify: /products.json lists the catalogue"]
            meta = parse_json(client.get(f"{root}/meta.json"))
            code = meta.get("currency") if isinstance(meta, dict) else None
            if isinstance(code, str) and re.fullmatch(r"[A-Z]{3}", code):
                entry["currency"] = code
            else:
                notes.append("the shop does not say its currency: add `currency:` (EUR, GBP...)")
            return Detected(entry, notes)
        woo = parse_json(client.get(f"{root}/wp-json/wc/store/v1/products?per_page=1"))
        if isinstance(woo, list):
            entry = {"name": name, "platform": "woocommerce", "start_urls": [root]}
            return Detected(entry, ["WooCommerce: the Store API lists the catalogue"])

    home = client.get(start)
    if home is None:
        raise DiscoveryError(f"{start} does not answer ({client.last_error})")
    # Under a path, only that part of the host is the shop's.
    path = parts.path or "/"
    prefix = path if path.endswith("/") else path.rsplit("/", 1)[0] + "/"
    sitemap = _sitemap_with_products(client, base, prefix)
    if sitemap:
        entry = {"name": name, "platform": "jsonld", "sitemap_url": sitemap}
        if prefix != "/":
            entry["allow"] = [f"^{re.escape(base + prefix)}"]
        return Detected(entry, [f"sitemaps ({sitemap}) lead to product pages"])
    if _links_to_products(client, home, start):
        entry = {"name": name, "platform": "jsonld", "start_urls": [start]}
        if prefix != "/":
            entry["allow"] = [f"^{re.escape(base + prefix)}"]
        return Detected(entry, ["product pages with structured data, linked from the start"])
    entry = {
        "name": name,
        "platform": "css",
        "start_urls": [start],
        "selectors": {
            "product_links": "a.product-link",
            "name": "h1::text",
            "price": ".price::text",
            "image": "img.main::attr(src)",
        },
    }
    return Detected(
        entry,
        [
            "no platform API, sitemap or structured product data found: a css entry;"
            " fill in its selectors (product_links, name, price, image) from the"
            f" shop's pages, then run `bikematch shops check {name}`"
        ],
    )


def _sitemap_with_products(client: _Client, base: str, prefix: str) -> str | None:
    """robots.txt (naming sitemaps) or /sitemap.xml, where a few of the pages its
    sitemaps list under `prefix` are product pages."""
    robots = client.get(f"{base}/robots.txt") or b""
    named = [u.decode() for u in re.findall(rb"(?im)^\s*sitemap:\s*(\S+)", robots)]
    source = f"{base}/robots.txt" if named else f"{base}/sitemap.xml"
    pages: list[str] = []
    queue = named or [f"{base}/sitemap.xml"]
    for _ in range(6):  # a few sitemaps (an index and its first children)
        if not queue or len(pages) >= 5:
            break
        body = _gunzip(client.get(queue.pop(0)) or b"")
        locations = [m.decode() for m in re.findall(rb"<loc>\s*([^<\s]+)\s*</loc>", body)]
        if re.search(rb"<sitemapindex\b", body[:4096]):
            queue.extend(locations[:3])
        else:
            pages += [loc for loc in locations if urlsplit(loc).path.startswith(prefix)][:5]
    for page in pages[:5]:
        body = client.get(page)
        if body and read_product_page(body, page).is_product:
            return source
    return None


def _links_to_products(client: _Client, home: bytes, start: str) -> bool:
    if read_product_page(home, start).is_product:
        return True
    page = Selector(text=home.decode("utf-8", errors="replace"))
    host = urlsplit(start).hostname
    links = [urljoin(start, href) for href in page.css("a::attr(href)").getall()]
    links = [link for link in dict.fromkeys(links) if urlsplit(link).hostname == host]
    for link in links[:12]:
        body = client.get(link)
        if body and read_product_page(body, link).is_product:
            return True
    return False


class _Client:
    def __init__(self, user_agent: str) -> None:
        self.user_agent = user_agent
        self.last_error = ""

    def get(self, url: str) -> bytes | None:
        request = urllib.request.Request(url, headers={"User-Agent": self.user_agent})
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.read(MAX_BYTES)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.last_error = str(getattr(exc, "reason", exc))
            return None


def _gunzip(body: bytes) -> bytes:
    if body[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(body)
        except OSError:
            return b""
    return body
