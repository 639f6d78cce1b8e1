"""What shop platforms write into product pages besides schema.org markup.

- Shopify themes embed the product as JSON (`<script type="application/json"
  data-product-json>`, `id="ProductJson-..."`, the analytics `var meta = {"product":
  ...}`): vendor, and per variant SKU, barcode, price in cents and availability; the
  shop's currency is `Shopify.currency.active`.
- WooCommerce writes a variable product's variations into the add-to-cart form's
  `data-product_variations`: per variation SKU, display price and stock.
- Magento 2 gives the final price in `data-price-amount` of the `finalPrice` box;
  Magento, WooCommerce, Shopware 6, Lightspeed and CCV Shop themes mark the SKU,
  the brand and the manufacturer with class names (`.sku`, `.product-brand`,
  `.product-detail-manufacturer-link`...).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation

from parsel import Selector

from bikematch.core.normalise import clean_text, only_value, valid_gtin

_SHOPIFY_JSON = (
    "script[type='application/json'][data-product-json]::text,"
    " script[id^=ProductJson]::text, script[data-product-json]::text"
)
_SHOPIFY_META = re.compile(r"var meta\s*=\s*(\{.*?\});\s*(?:\n|for|window|var|$)", re.S)
_SHOPIFY_CURRENCY = re.compile(r'Shopify\.currency\s*=\s*\{[^}]*"active"\s*:\s*"([A-Z]{3})"')

#: Class names themes give the SKU's value (Magento's `.sku .value`, WooCommerce's
#: `.sku`, Shopware's order number, Lightspeed's and CCV's article codes).
_SKU_ELEMENTS = (
    ".product.attribute.sku .value, .product_meta .sku, span.sku, .product-detail-ordernumber,"
    " .product-sku .value, .product-code .value, .productcode .value, .articlenumber .value"
)
_BRAND_ELEMENTS = (
    ".product-brand, .product__vendor, .product-vendor, .product-single__vendor,"
    " [class*=brand-name], [itemprop=brand] [itemprop=name]"
)
#: Attributes that name the brand where the element shows a logo.
_BRAND_ATTRIBUTES = (
    ".product-detail-manufacturer-link::attr(title), .product-detail-manufacturer-logo::attr(alt),"
    " meta[itemprop=brand]::attr(content)"
)


def platform_fields(page: Selector, html: str) -> dict:
    """Fields (price, currency, brand, sku, gtin, availability) the platform's own
    product data gives; absent keys where it gives none."""
    fields: dict = {}
    product = _shopify_product(page, html)
    if product:
        fields.update(_from_shopify(product))
        currency = _SHOPIFY_CURRENCY.search(html)
        if currency and "price" in fields:
            fields["currency"] = currency.group(1)
    variations = _woocommerce_variations(page)
    if variations:
        for key, value in _from_woocommerce(variations).items():
            fields.setdefault(key, value)
    final = page.css("[data-price-type=finalPrice]::attr(data-price-amount)").get()
    if final and "price" not in fields:
        amount = _decimal(final)
        if amount is not None and amount > 0:
            fields["price"] = amount
    sku = _first_clean(_texts(page.css(_SKU_ELEMENTS)))
    if sku and "sku" not in fields:
        fields["sku"] = sku
    brand = _first_clean(page.css(_BRAND_ATTRIBUTES).getall() + _texts(page.css(_BRAND_ELEMENTS)))
    if brand and "brand" not in fields:
        fields["brand"] = brand
    return fields


def _shopify_product(page: Selector, html: str) -> dict | None:
    for text in page.css(_SHOPIFY_JSON).getall():
        data = parse_json(text)
        data = data.get("product", data) if isinstance(data, dict) else None
        if isinstance(data, dict) and isinstance(data.get("variants"), list):
            return data
    if "Shopify" in html:
        found = _SHOPIFY_META.search(html)
        data = parse_json(found.group(1)) if found else None
        product = data.get("product") if isinstance(data, dict) else None
        if isinstance(product, dict) and isinstance(product.get("variants"), list):
            return product
    return None


def _from_shopify(product: dict) -> dict:
    variants = [v for v in product["variants"] if isinstance(v, dict)]
    fields = variant_fields(variants, lambda v: _cents(v.get("price")), "available", "barcode")
    vendor = clean_text(product.get("vendor"))
    if vendor:
        fields["brand"] = vendor
    return fields


def variant_fields(
    variants: list[dict], price, stock_key: str, barcode_key: str | None = None
) -> dict:
    """What a product's variants (sizes, colours) say together: in stock when any is
    (out of stock when all that say so are not), the lowest `price(variant)` of those
    on sale (of all, where none is or none says), and the SKU and GTIN (`barcode_key`)
    they share, where they share one (`only_value`). Keys absent where they say none."""
    fields: dict = {}
    stated = [v for v in variants if isinstance(v.get(stock_key), bool)]
    on_sale = [v for v in stated if v[stock_key]]
    if stated:
        fields["availability"] = "InStock" if on_sale else "OutOfStock"
    prices = [amount for amount in map(price, on_sale or variants) if amount and amount > 0]
    if prices:
        fields["price"] = min(prices)
    sku = only_value(clean_text(v.get("sku")) for v in variants)
    if sku:
        fields["sku"] = sku
    if barcode_key:
        gtins = (valid_gtin(str(v.get(barcode_key) or "")) for v in variants)
        gtin = only_value(gtins, key=lambda g: g.zfill(14))
        if gtin:
            fields["gtin"] = gtin
    return fields


def _cents(value) -> Decimal | None:
    """A Shopify product JSON price: whole cents as a number ("249900"), or a decimal
    string ("2499.00") in the analytics meta of some themes."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return (Decimal(value) / 100).quantize(Decimal("0.01"))
    text = str(value).strip()
    if text.isdigit():
        return (Decimal(text) / 100).quantize(Decimal("0.01"))
    return _decimal(text)


def _woocommerce_variations(page: Selector) -> list[dict]:
    data = parse_json(page.css("form.variations_form::attr(data-product_variations)").get())
    return [v for v in data if isinstance(v, dict)] if isinstance(data, list) else []


def _from_woocommerce(variations: list[dict]) -> dict:
    return variant_fields(variations, lambda v: _decimal(v.get("display_price")), "is_in_stock")


def _decimal(value) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value).strip()).quantize(Decimal("0.01"))
    except InvalidOperation:
        return None


def parse_json(text: str | bytes | None):
    """The JSON document `text` holds, or None (empty, or not JSON)."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _texts(elements) -> list[str]:
    return [" ".join(element.css("::text").getall()) for element in elements]


def _first_clean(values: list[str]) -> str | None:
    for value in values:
        text = clean_text(value)
        if text and len(text) <= 60:
            return text
    return None
