"""Spiders for each shop platform. Each crawls one shop from shops.yaml.

`scrapy crawl jsonld -a shop=NAME` (or shopify, woocommerce, css) from the
repository root; `bikematch scrape` runs every configured shop at once.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import scrapy
from scrapy.http import TextResponse
from scrapy.linkextractors import LinkExtractor
from scrapy.utils.gz import gunzip, gzip_magic_number
from scrapy.utils.sitemap import Sitemap, sitemap_urls_from_robots

from bikematch.core.listings import Listing
from bikematch.core.normalise import (
    PriceError,
    absolute_url,
    availability,
    clean_text,
    currency_code,
    parse_price,
    valid_gtin,
)
from bikematch.core.settings import Settings
from scrapers.extract import ProductPage, read_product_page
from scrapers.params import Shop, ShopConfigError, load_shops
from scrapers.platforms import variant_fields

#: The most a gzipped sitemap may unpack to (the protocol's limit is 50 MB).
SITEMAP_MAX_BYTES = 64 * 2**20


class ShopSpider(scrapy.Spider):
    """Common ground: the shop's configuration and turning a page into a Listing."""

    def __init__(self, shop: Shop | str | None = None, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.shop_arg = shop

    @classmethod
    def from_crawler(cls, crawler, *args, **kwargs):
        spider = super().from_crawler(crawler, *args, **kwargs)
        shop = spider.shop_arg
        if not isinstance(shop, Shop):
            if not shop:
                raise ShopConfigError(f"spider {cls.name} needs -a shop=NAME")
            path = crawler.settings.get("BIKEMATCH_SHOPS")
            if path is None:  # `scrapy crawl`, not bikematch: the settings say where
                path = Settings.from_environment().shops_file
            by_name = {s.name: s for s in load_shops(path)}
            if shop not in by_name:
                raise ShopConfigError(f"{path}: no shop named {shop!r}")
            shop = by_name[shop]
        if shop.platform != cls.name:
            raise ShopConfigError(f"shop {shop.name}: platform is {shop.platform}, not {cls.name}")
        spider.shop = shop
        hosts = {urlsplit(str(u)).hostname for u in shop.start_urls}
        if shop.sitemap_url:
            hosts.add(urlsplit(str(shop.sitemap_url)).hostname)
        spider.allowed_domains = sorted(h for h in hosts if h)
        return spider

    def listing(self, url: str | None, page: ProductPage) -> Listing:
        if page.price_error:
            self.crawler.stats.inc_value("bikematch/price_unparsed")
            self.logger.warning("price not read on %s: %s (stored as NULL)", url, page.price_error)
        return Listing(
            webshop=self.shop.name,
            url=url,
            name=page.name,
            image_url=page.image_url,
            price=page.price,
            currency=page.currency or (self.shop.currency if page.price is not None else None),
            brand=page.brand,
            gtin=page.gtin,
            sku=page.sku,
            availability=page.availability,
        )

    def load_json(self, response):
        try:
            return json.loads(response.text)
        except (ValueError, AttributeError):
            self.crawler.stats.inc_value("bikematch/bad_json")
            self.logger.error("not JSON: %s", response.url)
            return None


#: Query parameters that say how a visitor came or which variant a link chose, not
#: which product the page is: a product reached through several of them is one listing.
_NOT_THE_PRODUCT = re.compile(
    r"^(?:utm_\w+|gclid|gbraid|wbraid|fbclid|msclkid|dclid|yclid|mc_cid|mc_eid|_ga|_gl|"
    r"srsltid|ref|referrer|source|campaign|affiliate|aff|variant|variation_id|sku|size|"
    r"maat|color|colour|kleur|attribute_\w+)$",
    re.IGNORECASE,
)


def listing_url(url: str) -> str:
    """A product page's URL as its listing's key: no fragment, no tracking or variant
    query parameters (the others kept, in their order)."""
    parts = urlsplit(url)
    query = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if not _NOT_THE_PRODUCT.match(key)
    ]
    return urlunsplit(parts._replace(query=urlencode(query), fragment=""))


def _page_url(response: TextResponse) -> str:
    """The page's canonical URL when it is on the same host, else the URL fetched; as
    a listing's key (`listing_url`)."""
    canonical = absolute_url(response.css("link[rel=canonical]::attr(href)").get(), response.url)
    if canonical and urlsplit(canonical).hostname == urlsplit(response.url).hostname:
        return listing_url(canonical)
    return listing_url(response.url)


class JsonLdSpider(ShopSpider):
    """Listing pages (with pagination) or a sitemap lead to product pages read generically."""

    name = "jsonld"

    async def start(self):
        if self.shop.sitemap_url:
            yield scrapy.Request(str(self.shop.sitemap_url), callback=self.parse_sitemap)
        for url in self.shop.start_urls:
            yield scrapy.Request(str(url), callback=self.parse_page)

    @property
    def links(self) -> LinkExtractor:
        return LinkExtractor(
            allow=self.shop.allow,
            deny=self.shop.deny,
            restrict_css=self.shop.selectors.product_links,
        )

    def parse_sitemap(self, response):
        if urlsplit(response.url).path.endswith("/robots.txt"):  # the sitemaps it names
            for location in sitemap_urls_from_robots(response.body, base_url=response.url):
                yield scrapy.Request(location, callback=self.parse_sitemap)
            return
        try:
            body = response.body
            if gzip_magic_number(response):  # sitemap.xml.gz, sent as a file, not encoded
                body = gunzip(body, max_size=SITEMAP_MAX_BYTES)
            sitemap = Sitemap(body)
            if sitemap.type not in ("urlset", "sitemapindex"):  # an HTML error page, say
                raise ValueError(sitemap.type)
        except Exception:  # gzip and lxml raise various errors on broken files
            self.crawler.stats.inc_value("bikematch/bad_sitemap")
            self.logger.error("not a sitemap: %s", response.url)
            return
        for entry in sitemap:
            location = entry.get("loc")
            if not location:
                continue
            if sitemap.type == "sitemapindex":
                yield scrapy.Request(location, callback=self.parse_sitemap)
            elif self.links.matches(location):
                yield scrapy.Request(location, callback=self.parse_page)

    def parse_page(self, response):
        if not isinstance(response, TextResponse):
            return
        page = read_product_page(response.text, response.url)
        if page.is_product:
            yield self.listing(_page_url(response), page)
        yield from self.follow_links(response)

    def follow_links(self, response):
        # The next page of a listing (rel="next") is the same depth as this one: a
        # shop listing its bikes over 40 pages is crawled whole whatever max_depth
        # says (the page limit and the seen-URL filter still stop a loop).
        following = {
            absolute_url(href, response.url)
            for href in response.css(
                "a[rel~=next]::attr(href), link[rel~=next]::attr(href)"
            ).getall()
        }
        following = {url for url in following if url and self.links.matches(url)}
        links = [link.url for link in self.links.extract_links(response)]
        for url in links:
            yield scrapy.Request(url, callback=self.parse_page, meta=_pagination(url in following))
        for url in sorted(following - set(links)):
            yield scrapy.Request(url, callback=self.parse_page, meta=_pagination(True))


class CssSpider(JsonLdSpider):
    """Sites without structured data: fields come from the configured selectors."""

    name = "css"

    def parse_page(self, response):
        if not isinstance(response, TextResponse):
            return
        selectors = self.shop.selectors
        name = _select(response, selectors.name)
        if name:
            yield self.listing(_page_url(response), self.read_page(response, name))
        yield from self.follow_links(response)
        next_page = _select(response, selectors.next_page)
        if next_page:
            yield response.follow(next_page, callback=self.parse_page, meta=_pagination(True))

    def read_page(self, response: TextResponse, name: str) -> ProductPage:
        """The configured selectors win; the generic reader fills what they leave."""
        selectors = self.shop.selectors
        page = read_product_page(response.text, response.url)
        configured = {
            "name": clean_text(name),
            "image_url": absolute_url(_select(response, selectors.image), response.url),
            "brand": clean_text(_select(response, selectors.brand)),
            "sku": clean_text(_select(response, selectors.sku)),
            "gtin": valid_gtin(_select(response, selectors.gtin)),
            "availability": availability(_select(response, selectors.availability)),
        }
        for key, value in configured.items():
            if value is not None:
                setattr(page, key, value)
        price_text = _select(response, selectors.price)
        if price_text is not None:
            try:
                page.price, currency = parse_price(price_text, self.shop.currency)
                page.currency = currency or page.currency
                page.price_error = None
            except PriceError as exc:
                page.price, page.price_error = None, str(exc)
        return page


def _pagination(is_next_page: bool) -> dict:
    """Request meta for a listing's next page: Scrapy's depth starts again from 0, so
    pagination never counts against max_depth."""
    return {"depth_reset": True} if is_next_page else {}


def _select(response: TextResponse, selector: str | None) -> str | None:
    if not selector:
        return None
    if selector.startswith("xpath:"):
        values = response.xpath(selector[6:]).getall()
    else:
        values = response.css(selector).getall()
    text = " ".join(v for v in values if v and v.strip())
    return text.strip() or None


class ShopifySpider(ShopSpider):
    """Shopify's public catalogue: /products.json?page=N, 250 products per page; the
    shop's currency from its /meta.json (products.json carries none), else the
    config's."""

    name = "shopify"
    page_size = 250
    shop_currency: str | None = None

    async def start(self):
        yield scrapy.Request(
            f"{self.shop.base_url}/meta.json",
            callback=self.parse_meta,
            errback=self.no_meta,
            dont_filter=True,
        )

    def parse_meta(self, response):
        data = self.load_json(response)
        code = data.get("currency") if isinstance(data, dict) else None
        self.shop_currency = currency_code(code) if isinstance(code, str) else None
        yield self.page_request(1)

    def no_meta(self, failure):
        self.logger.info("no /meta.json (%s): prices in the config's currency", failure.value)
        yield self.page_request(1)

    def page_request(self, page: int) -> scrapy.Request:
        url = f"{self.shop.base_url}/products.json?limit={self.page_size}&page={page}"
        return scrapy.Request(
            url, callback=self.parse_products, cb_kwargs={"page": page}, meta=_pagination(True)
        )

    def parse_products(self, response, page: int):
        data = self.load_json(response)
        products = data.get("products") if isinstance(data, dict) else None
        if not products:
            return
        for product in products:
            if isinstance(product, dict):
                yield self.product_listing(product, response.url)
        yield self.page_request(page + 1)

    def product_listing(self, product: dict, api_url: str) -> Listing:
        """One row per product: its first image, the lowest price of its variants on sale
        (of all, where none is), in stock when any variant is, and the GTIN and SKU its
        variants share, if they share one."""
        variants = [v for v in product.get("variants") or [] if isinstance(v, dict)]
        errors: list[str] = []

        def price(variant: dict):
            try:
                return parse_price(variant.get("price"))[0]
            except PriceError as exc:
                errors.append(str(exc))
                return None

        fields = variant_fields(variants, price, "available", "barcode")
        amount = fields.get("price")
        images = [i for i in product.get("images") or [] if isinstance(i, dict)]
        page = ProductPage(
            name=clean_text(product.get("title")),
            price=amount,
            currency=self.shop_currency if amount is not None else None,
            image_url=absolute_url(images[0].get("src"), api_url) if images else None,
            brand=clean_text(product.get("vendor")),
            gtin=fields.get("gtin"),
            sku=fields.get("sku"),
            availability=fields.get("availability"),
            price_error=errors[-1] if amount is None and errors else None,
        )
        handle = product.get("handle")
        return self.listing(f"{self.shop.base_url}/products/{handle}" if handle else None, page)


class WooCommerceSpider(ShopSpider):
    """WooCommerce's Store API: /wp-json/wc/store/v1/products, paged. A variable
    product (sizes, colours) gives only its price range there: its variations are
    asked for in a request per 100 of them (`type=variation&include=...`), and the listing
    takes the lowest price of those in stock, as for Shopify. A shop whose API does
    not answer that gets the range's lowest price."""

    name = "woocommerce"
    page_size = 100

    async def start(self):
        yield self.page_request(1)

    @property
    def api_url(self) -> str:
        return f"{self.shop.base_url}/wp-json/wc/store/v1/products"

    def page_request(self, page: int) -> scrapy.Request:
        url = f"{self.api_url}?per_page={self.page_size}&page={page}"
        return scrapy.Request(
            url, callback=self.parse_products, cb_kwargs={"page": page}, meta=_pagination(True)
        )

    def parse_products(self, response, page: int):
        products = self.load_json(response)
        if not isinstance(products, list) or not products:
            return
        products = [product for product in products if isinstance(product, dict)]
        group: list[dict] = []  # products whose variations go in one request
        asked = 0  # their variations
        for product in products:
            ids = _variation_ids(product)
            if not ids:
                yield self.product_listing(product, response.url)
                continue
            if group and asked + len(ids) > 100:
                yield self.variations_request(group, response.url)
                group, asked = [], 0
            group.append(product)
            asked += len(ids)
        if group:
            yield self.variations_request(group, response.url)
        total_pages = (response.headers.get("X-WP-TotalPages") or b"").strip()
        if not total_pages.isdigit() or page < int(total_pages):  # absent or garbled: go on
            yield self.page_request(page + 1)

    def variations_request(self, products: list[dict], api_url: str) -> scrapy.Request:
        ids = [i for product in products for i in _variation_ids(product)]
        url = (
            f"{self.api_url}?type=variation&per_page=100"
            f"&include={','.join(str(i) for i in ids[:100])}"
        )
        return scrapy.Request(
            url,
            callback=self.parse_variations,
            errback=self.no_variations,
            cb_kwargs={"products": products, "api_url": api_url},
            meta=_pagination(True),
        )

    def parse_variations(self, response, products: list[dict], api_url: str):
        found = self.load_json(response)
        by_id = {
            v.get("id"): v
            for v in (found if isinstance(found, list) else [])
            if isinstance(v, dict)
        }
        for product in products:
            variations = [by_id[i] for i in _variation_ids(product) if i in by_id]
            yield self.product_listing(product, api_url, variations)

    def no_variations(self, failure):
        request = failure.request
        self.logger.info("no variations from %s (%s): price ranges", request.url, failure.value)
        for product in request.cb_kwargs["products"]:
            yield self.product_listing(product, request.cb_kwargs["api_url"])

    def product_listing(
        self, product: dict, api_url: str, variations: list[dict] | None = None
    ) -> Listing:
        errors: list[str] = []

        def price(item: dict):
            prices = item.get("prices") or {}
            raw = prices.get("price")  # the current price: the sale price while on sale
            if raw in (None, ""):
                return None
            try:
                minor = int(prices.get("currency_minor_unit", 2))
                # parse_price's checks too: 0 or below is no price
                return parse_price(Decimal(str(raw)) / (10**minor))[0]
            except PriceError as exc:
                errors.append(str(exc))
            except (ArithmeticError, ValueError) as exc:
                errors.append(f"not a price: {raw!r} ({exc})")
            return None

        fields = variant_fields(variations or [], price, "is_in_stock")
        amount = fields.get("price") or price(product)
        images = [i for i in product.get("images") or [] if isinstance(i, dict)]
        brands = [b.get("name") for b in product.get("brands") or [] if isinstance(b, dict)]
        page = ProductPage(
            name=clean_text(product.get("name")),
            price=amount,
            currency=(product.get("prices") or {}).get("currency_code") or None,
            image_url=absolute_url(images[0].get("src"), api_url) if images else None,
            brand=clean_text(brands[0]) if brands else None,
            sku=clean_text(product.get("sku")) or fields.get("sku"),
            availability=fields.get("availability") or availability(product.get("is_in_stock")),
            price_error=errors[-1] if amount is None and errors else None,
        )
        return self.listing(absolute_url(product.get("permalink"), api_url), page)


def _variation_ids(product: dict) -> list[int]:
    """A variable product's variation ids (the Store API's `variations`)."""
    variations = product.get("variations") if product.get("type") == "variable" else None
    return [
        v["id"]
        for v in variations or []
        if isinstance(v, dict) and isinstance(v.get("id"), int) and not isinstance(v["id"], bool)
    ]
