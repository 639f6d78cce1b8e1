"""Turn scraped strings into clean values: prices, currencies, titles, GTINs, URLs."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from urllib.parse import urljoin

from price_parser import Price
from w3lib.html import remove_tags, replace_entities

# Symbols and local spellings price-parser reports, mapped to ISO 4217.
_CURRENCY_CODES = {
    "€": "EUR",
    "eur": "EUR",
    "euro": "EUR",
    "£": "GBP",
    "gbp": "GBP",
    "$": "USD",
    "us$": "USD",
    "usd": "USD",
    "chf": "CHF",
    "fr.": "CHF",
    "sfr.": "CHF",
    "sfr": "CHF",
    "ft": "HUF",
    "lei": "RON",
    "₺": "TRY",
    "kr": "SEK",
    "sek": "SEK",
    "dkk": "DKK",
    "nok": "NOK",
    "zł": "PLN",
    "pln": "PLN",
    "kč": "CZK",
    "czk": "CZK",
}
#: ISO 4217's codes of the currencies in use: three capitals that are none of them
#: ("SFR" for "sFr") are no currency code.
_ISO_CODES = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD
    BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB
    EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IQD IRR ISK
    JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA
    MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK
    PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN
    SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST
    XAF XCD XOF XPF YER ZAR ZMW ZWL
    """.split()
)
#: Apostrophes and primes that group thousands in Swiss prices ("CHF 3’499.–"), as
#: the price reader knows them: "'".
_THOUSANDS_APOSTROPHES = str.maketrans(dict.fromkeys("\u2019\u02bc\u2032\u00b4", "'"))
# "1.999 - 2.499", "€ 1.999 tot € 2.499", "1,999 to 2,499": ranges take the lowest.
_RANGE = re.compile(r"\s+(?:-|–|—|tot|to|bis|à)\s+", re.IGNORECASE)
# "van € 3.499 voor € 2.999", "was £3,499 now £2,999", "statt 3.499 € nur 2.999 €": an
# old price, then the one to pay. Split there too, where each side is a price with its
# currency ("€ 2.499 nu 10% korting", "£2,499 only 3 left" are not), and the lowest is
# the one to pay.
_WAS_NOW = re.compile(r"\s+(?:voor|nu|now|jetzt|nur|only)\s+", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
#: Control characters (C0, DEL, C1) left once whitespace is collapsed: Postgres refuses
#: NUL in text, and none of them belongs in a title.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: Invisible characters that change how text is shown or matched, not what it says:
#: bidirectional controls (U+202E shows a title backwards), zero-width spaces and
#: joiners, the word joiner, the byte-order mark and the soft hyphen.
_INVISIBLE = re.compile("[\u00ad\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
#: A minus just before the text's first number ("-5", "€ -100,00", "−€ 5"); not the
#: Dutch "€ 1.999,-" (no number follows it) nor a range "1.999-2.499".
_NEGATIVE = re.compile(r"^[^\d]*[-−]\s*(?:[^\d\s]{1,3}\s*)?\d")
_MAX_PRICE = Decimal("9999999999.99")  # numeric(12, 2)


class PriceError(ValueError):
    """A price that could not be read; the message says why (for logs and stats)."""


def currency_code(text: str | None) -> str | None:
    """ISO 4217 code for a currency symbol or code, or None when unknown."""
    if not text:
        return None
    cleaned = text.strip()
    if cleaned.upper() in _ISO_CODES:
        return cleaned.upper()
    return _CURRENCY_CODES.get(cleaned.lower())


def says_old_then_new(text: str) -> bool:
    """Whether a price text holds an old price and then the one to pay ("van € 3.499
    voor € 2.999")."""
    return len(_WAS_NOW.split(text)) > 1


def parse_price(value, currency_hint: str | None = None) -> tuple[Decimal | None, str | None]:
    """(amount, ISO currency) from a number or a shop's price text.

    Handles Dutch and English formats ("€ 2.499,00", "2,499.00", "vanaf € 1.999,-"),
    ranges (the lowest bound) and an old price before the one to pay ("van € 3.499 voor
    € 2.999"). Raises PriceError when there is text but no price.
    """
    currency = currency_code(currency_hint) if currency_hint else None
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, currency
    if isinstance(value, bool):
        raise PriceError(f"not a price: {value!r}")
    if isinstance(value, int | float | Decimal):
        amount = Decimal(str(value))
    else:
        text = _WHITESPACE.sub(" ", str(value)).strip().translate(_THOUSANDS_APOSTROPHES)
        if _NEGATIVE.match(text):
            raise PriceError(f"a negative price: {text[:60]!r}")
        prices = []
        for part in _RANGE.split(text):
            pieces = [
                Price.fromstring(p, currency_hint=currency_hint) for p in _WAS_NOW.split(part)
            ]
            if len(pieces) > 1 and not all(p.amount is not None and p.currency for p in pieces):
                pieces = [Price.fromstring(part, currency_hint=currency_hint)]
            prices += [price for price in pieces if price.amount is not None]
        amounts = [price.amount for price in prices]
        for price in prices:
            currency = currency or currency_code(price.currency)
        if not amounts:
            raise PriceError(f"no price in {text[:60]!r}")
        # A range's bounds are of a size; "€ 2.499 - 3 dagen levertijd" or "€ 2.499 tot
        # 5 jaar garantie" is a price and a number beside it: the price comes first.
        amount = min(amounts) if min(amounts) * 10 >= max(amounts) else amounts[0]
    try:
        amount = amount.quantize(Decimal("0.01"))
    except InvalidOperation as exc:
        raise PriceError(f"not a price: {value!r}") from exc
    if amount <= 0 or amount > _MAX_PRICE:
        # 0 is a placeholder ("price on request"), never what a bike costs
        raise PriceError(f"price out of range: {amount}")
    return amount, currency


def clean_text(text) -> str | None:
    """Tags stripped, entities decoded, whitespace collapsed, control, bidirectional
    and zero-width characters dropped; None when empty."""
    if text is None:
        return None
    if isinstance(text, list):
        text = " ".join(str(part) for part in text if part)
    visible = _INVISIBLE.sub("", replace_entities(remove_tags(str(text))))
    collapsed = _WHITESPACE.sub(" ", visible)
    cleaned = _CONTROL.sub("", collapsed).strip()
    return cleaned or None


def valid_gtin(value) -> str | None:
    """The GTIN (8, 12, 13 or 14 digits) when its check digit is right, else None."""
    if value is None:
        return None
    digits = re.sub(r"[\s-]", "", str(value))
    if not digits.isdigit() or len(digits) not in (8, 12, 13, 14) or not digits.strip("0"):
        return None
    body, check = digits[:-1], int(digits[-1])
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return digits if (10 - total % 10) % 10 == check else None


def looks_like_code(value: str, label: bool = False) -> bool:
    """Whether a value can be an article number: not written as words ("Zwart
    Frame", "Gazelle Ultimate C380" are names; "GAZ 570 EASY II" is a code). A
    labelled one also holds a digit or is written in capitals ("BAT-FIN-EGPS"), not
    as a word ("Ref: nieuwsbrief")."""
    words = value.split()
    if len(words) > 1 and any(
        len(word) >= 4 and word.isalpha() and not word.isupper() for word in words
    ):
        return False
    return not label or any(c.isdigit() for c in value) or not any(c.islower() for c in value)


#: A template's unfilled placeholder ("$metabrand", "{{ product.vendor }}", "%brand%").
_PLACEHOLDER = re.compile(r"^\$\w+$|\{\{|\}\}|\$\{|^%\w+%$")


def plausible_brand(value: str | None) -> str | None:
    """A brand as a page gives it (after a label the value carries: "More from the
    brand: Gazelle"), or None where it is no brand: a template's placeholder, or a
    whole page title ("Gazelle Ultimate C380 | Fietsshop")."""
    if not value or _PLACEHOLDER.search(value) or " | " in value or len(value) > 60:
        return None
    # a link's text: "More from the brand: Gazelle"
    return value.rpartition(": ")[2].strip() or None


def only_value(values, key=lambda value: value) -> str | None:
    """The one value the non-empty `values` agree on (equal under `key`), else None.

    A product page of several variants (frame sizes, colours) has a GTIN or SKU of its
    own only where its variants give one value (some may give none): any one of several
    would stand for one size, and a GTIN vetoes matches with a shop that lists another.
    """
    found = {key(value): value for value in values if value}
    return next(iter(found.values())) if len(found) == 1 else None


def absolute_url(url, base: str) -> str | None:
    if not url or not isinstance(url, str):
        return None
    url = url.strip()
    if url.startswith("data:"):
        return None
    return urljoin(base, url)


def largest_from_srcset(srcset: str) -> str | None:
    """The candidate with the largest width (or density) in an img srcset."""
    best, best_size = None, -1.0
    for candidate in srcset.split(","):
        parts = candidate.strip().split()
        if not parts:
            continue
        size = 1.0
        if len(parts) > 1 and parts[1][:-1].replace(".", "", 1).isdigit():
            size = float(parts[1][:-1])
        if size > best_size:
            best, best_size = parts[0], size
    return best


_AVAILABILITY = {
    # schema.org's ItemAvailability values, and how shops spell them
    "instock": "InStock",
    "onlineonly": "InStock",
    "limitedavailability": "InStock",
    "instoreonly": "InStock",
    "preorder": "InStock",
    "presale": "InStock",
    "madetoorder": "InStock",
    "available": "InStock",
    "outofstock": "OutOfStock",
    "soldout": "OutOfStock",
    "discontinued": "OutOfStock",
    "backorder": "OutOfStock",
    "unavailable": "OutOfStock",
    "true": "InStock",
    "false": "OutOfStock",
}


def availability(value) -> str | None:
    """ "InStock", "OutOfStock" or None from schema.org's values in any spelling, codes
    or booleans (orderable counts as in stock: pre-order, limited; backorder does not)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "InStock" if value else "OutOfStock"
    # "http://schema.org/InStock", "schema:InStock", "In Stock", "in_stock", "pre-order"
    word = re.split(r"[/:#]", str(value).strip())[-1]
    return _AVAILABILITY.get(re.sub(r"[\s_-]+", "", word).lower())
