"""What a product page says in words: labelled values, stock text, breadcrumbs.

Shops without structured data for a field still show it to the buyer: a spec table
row "Merk | Gazelle", "Artikelnummer: 4561-22", "EAN 8712345678906", a stock line
"Op voorraad", a sold-out button, a breadcrumb "Home > E-bikes > Gazelle". Each
function takes a parsed page (a parsel Selector) and reads one kind of them, in
Dutch, English and German, and in the other languages European shops write in.
"""

from __future__ import annotations

import re

from lxml import etree
from parsel import Selector

from bikematch.core.normalise import clean_text, looks_like_code

#: Field -> the labels shops give it, compared as _label_key writes them (so "Art.nr"
#: is also "Art. nr." and "Art.-Nr."): Dutch, English and German first, then the
#: other languages European shops write in.
LABELS = {
    "sku": (
        "artikelnummer", "artikelnr", "art.nr", "artikelcode", "productcode",
        "productnummer", "produktnummer", "bestelnummer", "bestellnummer", "sku",
        "item number", "item no", "item nr", "sku nr", "article number", "referentie",
        "reference", "asin",
        "bestelnr", "best.-nr", "bestellnr", "produktnr", "productnr", "item code",
        "product id", "artikel id",
        # French, Italian, Spanish, Portuguese
        "référence", "réf", "ref", "code article", "code produit", "numéro d'article",
        "n° d'article", "codice articolo", "codice prodotto", "cod. articolo",
        "riferimento", "referencia", "código de producto", "código del producto",
        "código de artículo", "referência", "código do produto", "código do artigo",
        # Polish, Czech, Slovak, Slovenian, Croatian, Hungarian
        "kod produktu", "numer katalogowy", "indeks", "kód produktu", "katalogové číslo",
        "objednací číslo", "kód tovaru", "šifra", "šifra proizvoda", "šifra artikla",
        "cikkszám", "termékkód",
        # Danish, Norwegian, Swedish, Finnish
        "varenummer", "varenr", "artikkelnummer", "tuotenumero", "tuotekoodi",
        # Russian, Ukrainian; Chinese, Japanese
        "артикул", "код товара", "код", "код товару", "商品編號", "商品编号", "商品番号",
        # Romanian, Greek, Turkish, Hebrew
        "cod produs", "cod articol", "κωδικός προϊόντος", "κωδικός", "ürün kodu",
        "stok kodu", "קוד מוצר", "מק\"ט",
    ),
    "mpn": (
        "mpn", "fabrikantcode", "fabrikantnummer", "herstellernummer",
        "hersteller-artikelnummer", "manufacturer part number", "part number", "typenummer",
        "hersteller-nr", "modelnummer", "teilenummer", "onderdeelnummer",
        "model number", "item model number", "modellnummer", "référence fabricant",
        "codice produttore", "referencia del fabricante", "numer części", "型號", "型番",
    ),
    "gtin": (
        "ean", "ean-code", "ean13", "gtin", "gtin13", "barcode", "upc", "ean/gtin",
        "gtin/ean", "ean-nummer", "code ean", "codice ean", "código ean", "kod ean",
        "ean kód", "штрихкод", "isbn", "isbn-13",
    ),
    "brand": (
        "merk", "marke", "brand", "hersteller", "fabrikant", "manufacturer", "merknaam",
        "brand name", "markenname",
        "marque", "fabricant", "marca", "produttore", "fabricante", "marka", "producent",
        "značka", "výrobce", "výrobca", "proizvajalec", "proizvođač", "gyártó", "márka",
        "mærke", "merke", "märke", "produsent", "tillverkare", "valmistaja", "merkki",
        "kaubamärk", "tootja", "zīmols", "ražotājs", "prekės ženklas", "gamintojas",
        "бренд", "производитель", "виробник", "品牌", "ブランド", "メーカー",
    ),
}  # fmt: skip


def _label_key(label: str) -> str:
    """A label as compared: lower case, without a note in brackets, spaces and
    punctuation, "#" read as "nr" ("Art.-Nr.", "Art. nr", "artnr" and "Art #" are
    one; "Artikelnummer (SKU)" is "artikelnummer")."""
    label = re.sub(r"\([^)]*\)", " ", label.lower()).replace("#", "nr")
    return re.sub(r"[\W_]+", "", label)


_FIELD_OF = {_label_key(label): name for name, labels in LABELS.items() for label in labels}
_LABEL_TEXT = re.compile(r"^\s*([^:：|]{1,40}?)\s*[:：|]\s*(.{1,80}?)\s*$")

#: Stock phrases, the negative ones first ("niet op voorraad" holds "op voorraad"). As
#: for schema.org's BackOrder, "available on backorder" is not in stock.
_STOCK = (
    ("OutOfStock", (
        # a "tell me when it is back" form is shown for what is out of stock
        "back in stock", "weer op voorraad", "weer leverbaar", "wieder verfügbar",
        "wieder lieferbar", "wieder auf lager",
        "niet op voorraad", "niet leverbaar", "niet meer leverbaar", "uitverkocht",
        "geen voorraad",
        "tijdelijk uitverkocht", "niet beschikbaar", "out of stock", "sold out",
        "soldout", "currently unavailable", "not available", "unavailable",
        "nicht lieferbar", "nicht auf lager", "nicht verfügbar", "ausverkauft",
        "vergriffen", "nicht vorrätig", "backorder", "nabestelling",
        # French, Italian, Spanish, Portuguese
        "epuisé", "épuisé", "rupture de stock", "indisponible", "non disponible",
        "esaurito", "non disponibile", "agotado", "sin stock", "no disponible",
        "esgotado", "indisponível",
        # Polish, Czech, Slovak; Danish, Norwegian, Swedish, Finnish
        "niedostępny", "brak w magazynie", "vyprodáno", "nedostupné", "vypredané",
        "udsolgt", "utsolgt", "slutsåld", "loppu varastosta",
    )),
    ("InStock", (
        "op voorraad", "direct leverbaar", "leverbaar", "beschikbaar", "in stock",
        "available", "ships in", "auf lager", "sofort lieferbar", "lieferbar",
        "verfügbar", "vorrätig", "versandfertig", "pre-order", "preorder", "pre order",
        "vooruitbestellen", "vorbestellen", "vorbestellbar", "bestellbar", "bestelbaar",
        "en stock", "disponible",
        "disponibile", "disponibilità immediata", "em stock", "disponível", "dostępny",
        "w magazynie", "skladem", "na skladě", "na sklade", "på lager", "i lager",
        "varastossa",
    )),
)  # fmt: skip
#: Where themes write stock: class or id words.
_STOCK_AREA = (
    "[class*=stock], [id*=stock], [class*=Stock], [class*=availability], "
    "[id*=availability], [class*=Availability], [class*=voorraad], [class*=delivery], "
    "[class*=levertijd], [class*=leverbaar], [class*=beschikbaar], [class*=liefer], "
    "[class*=verfuegbar], [class*=inventory]"
)
#: Phrases too vague to say stock outside an element marked as the stock line
#: ("Available in 3 colours").
_VAGUE = {"available", "unavailable", "not available", "beschikbaar", "niet beschikbaar",
          "leverbaar", "verfügbar", "nicht verfügbar", "disponible", "ships in",
          "en stock", "indisponible", "non disponible", "non disponibile", "disponibile",
          "no disponible", "disponível", "indisponível", "dostępny", "niedostępny",
          "nedostupné"}  # fmt: skip
#: A short text that starts with one of the other stock phrases says stock anywhere.
_PLAIN_STOCK = re.compile(
    "^(?:"
    + "|".join(re.escape(p) for _, phrases in _STOCK for p in phrases if p not in _VAGUE)
    + r")(?!\w)",
    re.IGNORECASE,
)
_CART_BUTTON = (
    "button[name=add-to-cart], button[name=add], button[type=submit][class*=cart], "
    "button[class*=add-to-cart], button[class*=addtocart], button[id*=add-to-cart], "
    "button[class*=product-form__submit], button[class*=btn-buy], "
    "button[id*=product-addtocart], input[type=submit][class*=cart]"
)


def labelled_values(page: Selector) -> dict[str, str]:
    """{field: value} for the labelled values the page shows (sku, mpn, gtin, brand):
    spec tables (th/td), definition lists (dt/dd), "Label: value" lines, and a label
    element beside its value. The first of each field counts."""
    found: dict[str, str] = {}

    def add(label: str | None, value: str | None) -> None:
        # "〈商品編號：M10023〉": no brackets or marks before the label
        label = _LEADING_MARKS.sub("", (clean_text(label) or "").lower())
        field = _FIELD_OF.get(_label_key(label))
        value = clean_text(value)
        if not (field and value and field not in found and len(value) <= 80):
            return
        value = value.lstrip(":： ").strip()
        # and no closing bracket after the value whose opening one was before the label
        for opening, closing in _BRACKETS:
            if value.endswith(closing) and opening not in value:
                value = value[: -len(closing)].strip()
        # "Ref: nieuwsbrief" or "Part number: see manual" names no article
        if field in ("sku", "mpn") and not looks_like_code(value, label=True):
            return
        found[field] = value

    # lxml's own elements, not parsel's: a page has thousands of them
    root = page.root
    texts = _short_texts(root)

    def _plain(element) -> str | None:
        return clean_text(texts.get(element))

    for row in root.iter("tr"):
        cells = [cell for cell in row if cell.tag in ("th", "td")]
        if len(cells) % 2 == 0:  # label | value, or two pairs side by side
            for label, value in zip(cells[::2], cells[1::2], strict=True):
                add(_plain(label), _plain(value))
    for term in root.iter("dt"):
        value = next((sibling for sibling in term.itersiblings() if sibling.tag == "dd"), None)
        add(_plain(term), _plain(value))
    # "Artikelnummer: 4561-22" in one element, or a label element and its value
    body = root.find("body")
    for element in (root if body is None else body).iter(*_LINE_TAGS):
        own = " ".join(filter(None, [element.text, *(child.tail for child in element)]))
        own = " ".join(own.split())
        colon = own[-1:] in (":", "：")
        # a label element with or without its colon ("<p>Merk</p><p>Gazelle</p>"); a
        # heading only with one ("<h4>Bestellnummer:</h4>", not "<h3>Brand</h3>" above
        # a story)
        plain_label = len(element) == 0 and element.tag not in _HEADINGS and _is_label(own)
        if own and len(own) <= 40 and (colon or plain_label):
            # "Artikelnummer: <span>4561-22</span>" (the value inside), else the label
            # element and its value after it: its text ("<span>Item #</span> 4561"),
            # else the next element
            whole = _plain(element) or ""
            inside = whole[len(own) :].strip() if whole.startswith(own) else ""
            # the label element's sibling, or its wrapper's ("<div><span>Merk:</span>
            # </div><div>Gazelle</div>")
            beside = _next_element(element)
            parent = element.getparent()
            if beside is None and parent is not None and len(parent) == 1:
                beside = _next_element(parent)
            if beside is not None and (
                beside.tag in ("ul", "ol", "select") or beside.find(".//li") is not None
            ):
                beside = None  # a list of choices (a filter's brands), not a value
            add(own, inside or clean_text(element.tail) or _plain(beside))
            continue
        text = _plain(element)
        if (
            text
            and len(text) <= 120
            and (":" in text or "：" in text)
            and not any(child.tag == "li" for child in element)
        ):
            match = _LABEL_TEXT.match(text)
            # one line, not a block holding several ("Merk: Sparta Art.nr.: 0412")
            if match and not _HAS_LABEL.search(match.group(2)):
                add(match.group(1), match.group(2))
        elif text and len(text) <= 60 and ":" not in text and "：" not in text:
            # "Bestellnummer 79961", "EAN 8712345678906": a number's label and the
            # number, no colon between
            label, _, value = text.rpartition(" ")
            if _FIELD_OF.get(_label_key(label)) in ("sku", "mpn", "gtin") and _NUMBER.match(value):
                add(label, value)
    return found


_HEADINGS = ("h2", "h3", "h4", "h5", "h6")
_LINE_TAGS = ("li", "p", "span", "div", "small", "strong", "b", "label", "td", "dd", *_HEADINGS)
#: An article number written after its label without a colon: one token with a digit.
_NUMBER = re.compile(r"^(?=\S*\d)[\w./-]{4,40}$")
_LEADING_MARKS = re.compile(r"^[^\w]+")
_BRACKETS = (("(", ")"), ("[", "]"), ("〈", "〉"), ("【", "】"), ("「", "」"))
_HAS_LABEL = re.compile(r"\w[:：]\s")


def _is_label(text: str) -> bool:
    return _label_key(text) in _FIELD_OF


def _next_element(element):
    return next((s for s in element.itersiblings() if isinstance(s.tag, str)), None)


def _short_texts(root, limit: int = 200) -> dict:
    """{element: its text, whitespace collapsed} for the elements whose text is at most
    `limit` characters (a script's or style's counts as none); built from the leaves
    up, so each text is joined once."""
    texts: dict = {}
    for element in reversed(list(root.iter())):  # children before their parent
        if not isinstance(element.tag, str):  # a comment
            continue
        if element.tag in ("script", "style"):
            texts[element] = ""
            continue
        parts = [element.text or ""]
        for child in element:
            if isinstance(child.tag, str):
                text = texts.get(child)
                if text is None:
                    break  # a child too long: so is its parent
                parts.append(text)
            parts.append(child.tail or "")
        else:
            text = " ".join(" ".join(parts).split())
            if len(text) <= limit:
                texts[element] = text
    return texts


def visible_availability(page: Selector) -> str | None:
    """InStock or OutOfStock from the page's stock text, else from its add-to-cart
    button (disabled or saying "sold out": out of stock); None where it says neither."""
    for element in page.css(_STOCK_AREA):
        if element.root.tag in ("script", "style", "body", "html", "form"):
            continue
        state = stock_phrase(_text(element))
        if state:
            return state
    for element in page.xpath(
        "//body/descendant::*[self::p or self::span or self::div or self::li or self::strong]"
        "[not(*[self::p or self::div or self::li])]"
        "[not(ancestor::nav or ancestor::header or ancestor::footer or ancestor::script)]"
    ):
        text = _text(element)
        if text and len(text) <= 60 and _PLAIN_STOCK.match(text):
            return stock_phrase(text)
    for button in page.css(_CART_BUTTON):
        text = _text(button) or button.attrib.get("value", "")
        state = stock_phrase(text)
        if state:
            return state
        if "disabled" in button.attrib or button.attrib.get("aria-disabled") == "true":
            return "OutOfStock"
    return None


def stock_phrase(text: str | None) -> str | None:
    """The stock state a short text says ("Op voorraad", "Sold out"), else None."""
    if not text or len(text) > 200:
        return None
    lowered = text.lower().replace("-", " ").replace("_", " ")  # "out-of-stock"
    for state, phrases in _STOCK:
        for phrase in phrases:
            found = re.search(rf"(?<!\w){re.escape(phrase.replace('-', ' '))}(?!\w)", lowered)
            if found:
                # "nicht mehr lieferbar", "niet meer op voorraad", "no longer available"
                if state == "InStock" and _NEGATED.search(lowered[: found.start()]):
                    return "OutOfStock"
                return state
    return None


#: A negation just before a stock phrase: "nicht (mehr)", "niet (meer)", "not", "no
#: (longer)", "non", "nie", "ne", "geen", "kein(e)".
_NEGATED = re.compile(r"(?<!\w)(?:niet|nicht|not|no|non|nie|ne|geen|kein|keine)\s+(?:\w+\s+)?$")


#: Breadcrumb entries that are never a brand.
_NOT_BRAND = {"home", "start", "startseite", "homepage", "shop", "winkel", "webshop"}


def breadcrumb_brand(page: Selector, name: str | None, crumbs: list[str] = ()) -> str | None:
    """The brand a breadcrumb gives: an entry (not the first, not the product itself)
    that the product's name starts with ("Home > E-bikes > Gazelle > Gazelle Ultimate
    C380" -> Gazelle). `crumbs`: entries structured data gave; else the page's
    breadcrumb trail."""
    if not name:
        return None
    entries = list(crumbs) or [
        clean_text(" ".join(item.css("::text").getall()))
        for item in page.css(
            "nav[aria-label*=readcrumb] li, nav[aria-label*=readcrumb] a, [class*=readcrumb] li,"
            " [class*=readcrumb] a, [class*=Breadcrumb] li, [class*=Breadcrumb] a"
        )
    ]
    entries = [entry for entry in entries if entry]
    lowered = name.lower()
    for entry in entries[1:]:
        candidate = entry.strip(" >/»›").strip()
        key = candidate.lower()
        if (
            candidate
            and key not in _NOT_BRAND
            and key != lowered
            and len(candidate) < len(name)
            and re.match(rf"{re.escape(key)}(?!\w)", lowered)
        ):
            return candidate
    return None


def _text(element) -> str | None:
    if not element:
        return None
    # on lxml's element: parsel would wrap each text in a Selector
    return clean_text(" ".join(_VISIBLE_TEXTS(element.root)))


_VISIBLE_TEXTS = etree.XPath(".//text()[not(ancestor::script) and not(ancestor::style)]")
