"""Last-resort guesses for pages without structured data: visible title, price, image.

Kept apart from the structured extractors so their rules can be tested and
tuned on their own. Each function takes a parsed page (a parsel Selector).
"""

from __future__ import annotations

import re
from itertools import islice

from lxml.cssselect import CSSSelector
from parsel import Selector

from bikematch.core.normalise import (
    PriceError,
    clean_text,
    largest_from_srcset,
    parse_price,
    says_old_then_new,
)

# Class/id words that mark the price a buyer pays, and those that mark a price
# that is struck through or otherwise not the current one.
_CURRENT = re.compile(r"sale|special|current|actual|final|now|offer|aanbieding|prijs", re.I)
_NOT_CURRENT = re.compile(
    r"old|was|regular|list|strike|before|compare|msrp|van-?prijs|adviesprijs|original", re.I
)
# A price per unit or per month beside the price ("(36,22 € / kg)", "je 100 g", a
# lease's "€ 89 per maand", "€ 39 / month"), or without VAT ("€ 2.065,29 excl. BTW").
_UNIT_PRICE = re.compile(
    r"(?:/|\bper\b|\bpro\b|\bje\b|\bpar\b|\bal\b)\s*(?:\d+\s*)?"
    r"(?:kg|g|l|ml|cl|liter|litre|m|m²|m2|maand|mnd|month|mo|monat|mois|mese|mes)(?!\w)"
    r"|\b(?:excl|exkl|ex|ohne|zzgl|sans|senza|sin|bez|brez)\.?\s*(?:btw|vat|mwst|ust|tva|"
    r"iva|dph|ddv|pdv)\b",
    re.IGNORECASE,
)
# The words shops write before a recommended or former price.
_OLD_PRICE_WORD = re.compile(
    r"^\W*(?:adviesprijs|van|was|uvp|rrp|msrp|statt|vorher|regulär|normalpreis|"
    r"listprijs|list price|prix conseillé|prezzo consigliato|pvp)(?!\w)",
    re.IGNORECASE,
)
_PRICE_CONTAINER = "[class*=price], [id*=price], [class*=Price], [class*=prijs], [id*=prijs]"
_PRICE_ELEMENTS = CSSSelector(_PRICE_CONTAINER, translator="html")
_MAX_PRICE_ELEMENTS = 500


#: Where a product page keeps its product (and main_image looks for its photo).
_PRODUCT_AREA = "main, [class*=product], [id*=product]"


# The site's own parts, not the product's: the page's header or navigation (not an
# article's header), or what is marked as the logo or the site's title: a class word
# that starts with "logo" or ends in "-logo"/"_logo" ("catalogo" is not one), on an
# element below <body> (a theme's body classes say nothing of one element).
_CLASSES = "concat(' ', normalize-space(@class), ' ')"
_SITE_PART = (
    "ancestor-or-self::*[self::header or self::nav][not(ancestor::article or ancestor::main)]"
    " | ancestor-or-self::*[not(self::body or self::html)]["
    f"contains({_CLASSES}, ' logo') or contains({_CLASSES}, '-logo ')"
    f" or contains({_CLASSES}, '_logo ') or contains({_CLASSES}, ' site-title')"
    f" or contains({_CLASSES}, ' site-name') or starts-with(@id, 'logo')"
    " or contains(@id, '-logo') or contains(@id, '_logo')]"
)


def visible_title(page: Selector) -> str | None:
    """The page's heading: its non-empty h1 that is not the site's logo (themes put
    that in an h1 too), of several the one its <title> shares most words with;
    else its <title>, else the logo's h1."""
    headings = [
        (heading, clean_text(" ".join(heading.css("::text").getall())))
        for heading in page.css("h1")
    ]
    headings = [(heading, text) for heading, text in headings if text]
    title = clean_text(" ".join(page.css("title ::text").getall()))
    own = [text for heading, text in headings if not heading.xpath(_SITE_PART)]
    if len(own) > 1 and title:
        # several: the one the <title> repeats most of (not a popup's "Adding to cart")
        said = _words(title)
        return max(own, key=lambda text: len(_words(text) & said))  # the first of equals
    if own:
        return own[0]
    return title or (headings[0][1] if headings else None)


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def visible_price(page: Selector):
    """(amount, currency, error) from the most price-like element on the page."""
    best = None
    error = None
    # lxml's own elements (parsel's cost more than the reading here), the first
    # _MAX_PRICE_ELEMENTS: the page's own price comes before a long list's
    for rank, element in enumerate(_PRICE_ELEMENTS(page.root)[:_MAX_PRICE_ELEMENTS]):
        if _struck_or_code(element):
            continue
        marks = _marks(element)
        if len(element.text_content()) > 5000:  # a wrapper of much more than a price
            continue
        text = clean_text(_current_text(element))
        if not re.search(r"\d", text or ""):  # an "old" price with none beside it is the price
            text = clean_text(_current_text(element, by_class=False))
        if not text or not re.search(r"\d", text) or len(text) > 80 or _UNIT_PRICE.search(text):
            continue
        if _said_beside(element.getparent()):
            continue
        try:
            amount, currency = parse_price(text)
        except PriceError as exc:
            error = str(exc)
            continue
        if amount is None:
            continue
        # an old price by its class or by the word before it ("Adviesprijs € 3.299"),
        # unless the text goes on to the price to pay ("van € 3.299 voor € 2.799")
        old = _NOT_CURRENT.search(marks) or (
            _OLD_PRICE_WORD.match(text) and not says_old_then_new(text)
        )
        score = (2 if _CURRENT.search(marks) else 0) - (3 if old else 0) + (1 if currency else 0)
        if best is None or score > best[0]:
            best = (score, -rank, amount, currency)
    if best is None:
        return None, None, error
    return best[2], best[3], None


def shown_as_old_price(page: Selector, amount) -> bool:
    """Whether the page shows `amount` only as a former price: struck through or
    marked old ("original-price", "price-was", "adviesprijs"), never as the price to
    pay (an element's text without its old-marked parts)."""
    elements = _PRICE_ELEMENTS(page.root)[:_MAX_PRICE_ELEMENTS]

    # the old prices first, by their marks alone: most pages show none of this amount
    old = [element for element in elements if _NOT_CURRENT.search(_marks(element))]
    old += list(islice(page.root.iter(*_STRUCK), _MAX_PRICE_ELEMENTS))
    if not any(_reads_as(clean_text(element.text_content()), amount) for element in old):
        return False
    for element in elements:
        if _NOT_CURRENT.search(_marks(element)) or _struck_or_code(element):
            continue
        text = clean_text(_current_text(element))
        if _reads_as(text, amount) and not _UNIT_PRICE.search(text):
            return False
    return True


_STRUCK = ("del", "s", "strike")


def _marks(element) -> str:
    """An lxml element's class and id words, where themes say what a price is."""
    return f"{element.get('class') or ''} {element.get('id') or ''}"


def _struck_or_code(element) -> bool:
    """Whether an lxml element is struck through (or inside a struck part), or a
    script or style: no price a buyer pays."""
    return element.tag in (*_STRUCK, "script", "style") or bool(
        element.xpath("ancestor::del | ancestor::s | ancestor::strike")
    )


def _reads_as(text: str | None, amount) -> bool:
    """Whether a text reads as the price `amount`."""
    if not text or not re.search(r"\d", text) or len(text) > 80:
        return False
    try:
        return parse_price(text)[0] == amount
    except PriceError:
        return False


def _said_beside(parent) -> bool:
    """Whether the element around a price says it is per unit or without VAT:
    "Excl. BTW: <span class=price>...", "<span>ohne MwSt.</span> <span class=price>...",
    where that element holds no other price."""
    if parent is None or len(parent.text_content()) > 1000:
        return False
    text = clean_text(_current_text(parent, by_class=False)) or ""
    return (
        len(text) <= 60
        and len(re.findall(r"\d[\d.,]*", text)) == 1
        and bool(_UNIT_PRICE.search(text))
    )


def _current_text(element, by_class: bool = True) -> str:
    """An lxml element's text without what a part of it marks as an old price (struck
    through, or by_class a class such as "price-old" inside a "product-price")."""
    parts = []
    for text in element.xpath(".//text()"):
        node = text.getparent()
        if text.is_tail:
            node = node.getparent()
        while node is not None and node is not element:
            marks = _marks(node)
            if node.tag in (*_STRUCK, "script", "style"):
                break
            if by_class and _NOT_CURRENT.search(marks):
                break
            node = node.getparent()
        else:
            parts.append(text)
    return " ".join(parts)


def main_image(page: Selector, name: str | None = None) -> str | None:
    """The product's photo: the largest image whose alt text is the product's name
    (`name`), else the largest of the product area's images, by declared size or
    srcset; the first of equals."""
    linked = page.css("link[rel=image_src]::attr(href)").get()
    if linked:
        return linked
    named = _words(name or "")
    if len(named) >= 2:
        photo = _largest(
            image
            for image in page.css("img[alt]")
            if len(_words(image.attrib["alt"]) & named) >= 0.6 * len(named)
        )
        if photo:
            return photo
    scope = page.css(_PRODUCT_AREA) or [page]
    return _largest(scope[0].css("img"))


def _largest(images) -> str | None:
    best, best_area = None, -1
    for image in images:
        src, from_srcset = _image_source(image)
        if not src or image.xpath(_SITE_PART):  # the shop's logo, not the product
            continue
        try:
            area = int(image.attrib.get("width", 0)) * int(image.attrib.get("height", 0))
        except ValueError:
            area = 0
        if from_srcset:
            area = max(area, 10**6)
        if area > best_area:
            best, best_area = src, area
    return best


# Where lazy-loading scripts and shop themes keep an image's real address, the
# largest first (WooCommerce's gallery: data-large_image; zoom scripts:
# data-zoom-image), while `src` holds a placeholder until the image scrolls into view.
_SRCSET_ATTRIBUTES = ("data-srcset", "data-lazy-srcset", "srcset")
_SRC_ATTRIBUTES = (
    "data-large_image",
    "data-zoom-image",
    "data-old-hires",
    "data-src",
    "data-lazy-src",
    "data-original",
    "src",
)


def _image_source(image: Selector) -> tuple[str | None, bool]:
    """(the image's address, whether a srcset gave it): the largest srcset candidate
    of the image and of its <picture>'s sources, else its real (not lazy placeholder)
    src."""
    sets = [image.attrib.get(name) for name in _SRCSET_ATTRIBUTES]
    # (lxml's parser does not know <source> is empty: the <img> ends up inside it)
    for source in image.xpath("ancestor::picture[1]//source"):
        sets += [source.attrib.get(name) for name in _SRCSET_ATTRIBUTES]
    candidates = ", ".join(
        entry
        for srcset in sets
        if srcset
        for entry in srcset.split(",")
        if entry.strip() and not entry.strip().startswith("data:")
    )
    largest = largest_from_srcset(candidates) if candidates else None
    if largest:
        return largest, True
    for name in _SRC_ATTRIBUTES:
        value = (image.attrib.get(name) or "").strip()
        if value and not value.startswith("data:"):
            return value, False
    return None, False
