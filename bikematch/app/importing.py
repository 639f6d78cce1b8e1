"""Loading listings from CSV, JSONL, JSON or Excel files: shop feeds and labelled
benchmarks alike.

Rows go through the scrapers' normalisation and the same upsert as scraped
listings (bikematch.core.listings). A row without a url or name is rejected and
counted by reason; an unreadable price is stored as NULL and counted.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bikematch.core.listings import Listing, StoreResult, store_in_batches
from bikematch.core.normalise import (
    PriceError,
    availability,
    clean_text,
    currency_code,
    parse_price,
    valid_gtin,
)

FIELDS = (
    "url",
    "name",
    "price",
    "currency",
    "image_url",
    "brand",
    "gtin",
    "sku",
    "availability",
    "webshop",
)

#: The columns feeds name each field by, in order of preference: plain names, Google
#: Merchant Center feeds (link, image_link, sale_price before price, mpn), Shopify
#: exports (handle, vendor, variant_price, image_src) and WooCommerce exports
#: (sale_price before regular_price, images). Compared in lower case, with spaces and
#: hyphens as underscores. A field takes the first of them the file has; the price,
#: row by row, the first that has a value (a sale price where there is one). `--map`
#: names the column outright.
KNOWN_COLUMNS = {
    "url": ("url", "link", "product_url", "product_link", "deeplink", "id", "handle"),
    "name": ("name", "title", "product_name", "product_title", "item_name"),
    "price": ("sale_price", "price", "variant_price", "regular_price", "current_price"),
    "currency": ("currency", "price_currency", "currency_code"),
    "image_url": ("image_url", "image_link", "image_src", "image", "images", "main_image"),
    "brand": ("brand", "brands", "vendor", "manufacturer", "make"),
    "gtin": ("gtin", "ean", "upc", "barcode", "variant_barcode", "ean13", "gtin13"),
    "sku": (
        "sku",
        "mpn",
        "variant_sku",
        "article_number",
        "item_number",
        "product_code",
        "model_number",
        "modelno",
    ),
    "availability": ("availability", "stock_status", "in_stock"),
    # a file of several shops' listings, where no --shop is given
    "webshop": ("webshop", "shop", "store", "merchant", "retailer"),
}


class ImportError_(ValueError):
    """A file that cannot be imported at all (the message says why)."""


@dataclass
class ImportSummary:
    read: int = 0
    stored: StoreResult = field(default_factory=StoreResult)
    rejected: Counter = field(default_factory=Counter)
    price_unreadable: int = 0
    #: The columns each field was read from (of the header, or of the first JSON line).
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Rows read for each shop (several where a column names the shop).
    by_shop: Counter = field(default_factory=Counter)

    def lines(self) -> list[str]:
        rejected = ", ".join(f"{why} {n}" for why, n in sorted(self.rejected.items())) or "none"
        used = ", ".join(f"{name}={' or '.join(cols)}" for name, cols in self.columns.items())
        return [
            f"read {self.read} rows: stored {self.stored.stored} ({self.stored.new} new, "
            f"{self.stored.price_changes} price changes), rejected {sum(self.rejected.values())} "
            f"({rejected}), price unreadable {self.price_unreadable}",
            *([f"columns: {used}"] if used else []),
            *(
                [f"by shop: {', '.join(f'{n} {c}' for n, c in sorted(self.by_shop.items()))}"]
                if len(self.by_shop) > 1
                else []
            ),
        ]


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """`dest=src` pairs: which source column fills each listing field."""
    mapping = {}
    for pair in pairs:
        destination, sep, source = pair.partition("=")
        if not sep or destination not in FIELDS or not source:
            raise ImportError_(
                f"--map {pair!r}: expected FIELD=COLUMN with FIELD one of {', '.join(FIELDS)}"
            )
        mapping[destination] = source
    return mapping


def file_encoding(path: Path, given: str | None = None) -> str:
    """`given` (checked), else what the file's byte-order mark says (Excel's "Unicode
    text" is UTF-16), else UTF-8."""
    if given:
        try:
            return codecs.lookup(given).name
        except LookupError:
            raise ImportError_(f"--encoding {given}: not an encoding Python knows") from None
    with path.open("rb") as handle:
        head = handle.read(4)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return "utf-8"


def _column_key(column: str) -> str:
    return re.sub(r"[\s-]+", "_", str(column).strip().lower())


def resolve_columns(
    columns: list[str], mapping: dict[str, str] | None = None
) -> dict[str, tuple[str, ...]]:
    """Which of `columns` each field is read from: the one `mapping` names, else those
    of KNOWN_COLUMNS the file has (all of them for the price, the first for the rest).
    Fields the file has no column for are left out."""
    by_key: dict[str, str] = {}
    for column in columns:
        by_key.setdefault(_column_key(column), column)
    resolved = {}
    for name in FIELDS:
        if mapping and name in mapping:
            resolved[name] = (mapping[name],)
            continue
        found = tuple(by_key[key] for key in KNOWN_COLUMNS[name] if key in by_key)
        if found:
            resolved[name] = found if name == "price" else found[:1]
    return resolved


def _missing(
    path: Path, columns: list[str], mapping: dict[str, str] | None, shop: str | None
) -> str | None:
    """Why a file with these columns cannot be imported (no url or name column, or no
    shop column where no shop is given), or None."""
    resolved = resolve_columns(columns, mapping)
    for name in ("url", "name") if shop else ("url", "name", "webshop"):
        if mapping and name in mapping and mapping[name] not in columns:
            wanted = f"column {mapping[name]}"
        elif name not in resolved:
            wanted = f"column for {name} (looked for {', '.join(KNOWN_COLUMNS[name])})"
        else:
            continue
        fix = f"--map {name}=COLUMN" + (" or give --shop" if name == "webshop" else "")
        return (
            f"{path}: no {wanted}; its columns: {', '.join(columns)[:300] or 'none'}; name the"
            f" column to use with {fix}"
        )
    return None


def read_rows(
    path: Path,
    delimiter: str | None = None,
    encoding: str | None = None,
    mapping: dict[str, str] | None = None,
    shop: str | None = None,
) -> Iterator[dict]:
    """The file's rows as dicts, read as its suffix says (CSV otherwise); a CSV or
    workbook whose header has no column for the url or the name, or for the shop
    where `shop` is not given (resolve_columns), is refused, naming its columns."""
    if not path.exists():
        raise ImportError_(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        yield from _json_lines_rows(path, file_encoding(path, encoding))
    elif suffix == ".json":
        yield from _json_rows(path, file_encoding(path, encoding))
    elif suffix in (".xlsx", ".xlsm"):
        yield from _workbook_rows(path, mapping, shop)
    elif suffix == ".xls":
        raise ImportError_(f"{path}: an Excel 97-2003 workbook; save it as .xlsx or CSV")
    else:
        yield from _csv_rows(path, file_encoding(path, encoding), delimiter, mapping, shop)


def _csv_rows(
    path: Path,
    encoding: str,
    delimiter: str | None,
    mapping: dict[str, str] | None,
    shop: str | None,
) -> Iterator[dict]:
    with path.open(encoding=encoding, newline="") as handle:
        if delimiter is None:
            sample = handle.read(8192)
            handle.seek(0)
            try:
                delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|#").delimiter
            except csv.Error:
                delimiter = ","
        rows = csv.DictReader(handle, delimiter=delimiter)
        columns = list(rows.fieldnames or [])  # reads the header
        why = _missing(path, columns, mapping, shop)
        if why:
            raise ImportError_(why)
        yield from rows


def _json_lines_rows(path: Path, encoding: str) -> Iterator[dict]:
    with path.open(encoding=encoding) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ImportError_(f"{path}:{number}: not JSON ({exc})") from exc
            yield row if isinstance(row, dict) else {}


def _json_rows(path: Path, encoding: str) -> list[dict]:
    """The objects of a JSON file: an array of them, or an object holding one array
    of them ({"products": [...]}, as shop APIs answer)."""
    try:
        data = json.loads(path.read_text(encoding=encoding))
    except ValueError as exc:
        raise ImportError_(f"{path}: not JSON ({exc})") from exc
    if isinstance(data, dict):
        arrays = [value for value in data.values() if isinstance(value, list)]
        if len(arrays) != 1:
            raise ImportError_(
                f"{path}: a JSON object, but not one holding a single array of listings"
                f" (its keys: {', '.join(map(str, data))[:200]})"
            )
        data = arrays[0]
    if not isinstance(data, list):
        raise ImportError_(f"{path}: JSON, but no array of listings")
    return [row if isinstance(row, dict) else {} for row in data]


def _workbook_rows(path: Path, mapping: dict[str, str] | None, shop: str | None) -> Iterator[dict]:
    """The rows of an Excel workbook's first sheet as dicts, under the header its first
    row that is not empty holds (checked as a CSV header is)."""
    from zipfile import BadZipFile

    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, BadZipFile, OSError, KeyError, ValueError) as exc:
        raise ImportError_(f"{path}: not an Excel workbook ({exc})") from None
    try:
        rows = workbook.worksheets[0].iter_rows(values_only=True) if workbook.worksheets else []
        header: list[str] | None = None
        for values in rows:
            if header is None:
                if any(value not in (None, "") for value in values):
                    header = ["" if value is None else str(value).strip() for value in values]
                    why = _missing(path, header, mapping, shop)
                    if why:
                        raise ImportError_(why)
                continue
            if any(value not in (None, "") for value in values):
                yield {
                    column: value for column, value in zip(header, values, strict=False) if column
                }
        if header is None:
            raise ImportError_(f"{path}: its first sheet is empty")
    finally:
        workbook.close()


def _first_url(images: str | None) -> str | None:
    """The first of the image URLs an export lists in one column ("https://a.jpg,
    https://b.jpg"); a comma inside a URL stays."""
    return re.split(r",\s*(?=https?://)", images)[0] if images else images


def import_file(
    conn,
    path: Path,
    shop: str | None,
    mapping: dict[str, str] | None = None,
    delimiter: str | None = None,
    currency: str | None = None,
    encoding: str | None = None,
) -> ImportSummary:
    summary = ImportSummary()
    resolved_for: dict[tuple, dict[str, tuple[str, ...]]] = {}

    def fields(row: dict) -> dict:
        """Each field's value in the row: the first of its columns that has one."""
        columns = tuple(row)
        if columns not in resolved_for:  # a CSV's rows share one header; JSON lines may differ
            resolved_for[columns] = resolve_columns(list(columns), mapping)
            summary.columns = summary.columns or resolved_for[columns]
        value = dict.fromkeys(FIELDS)
        for name, sources in resolved_for[columns].items():
            found = next((row[c] for c in sources if row.get(c) not in (None, "", [])), None)
            if isinstance(found, list):  # a JSON list of images: the first
                found = found[0]
            value[name] = found
        return value

    def listings() -> Iterator[Listing]:
        for row in read_rows(path, delimiter, encoding, mapping, shop):
            summary.read += 1
            value = fields(row)
            url = str(value["url"]).strip() if value["url"] not in (None, "") else None
            name = clean_text(value["name"])
            webshop = shop or clean_text(value["webshop"])
            if not webshop:
                summary.rejected["missing_shop"] += 1
                continue
            if not url:
                summary.rejected["missing_url"] += 1
                continue
            if not name:
                summary.rejected["missing_name"] += 1
                continue
            try:
                price, found_currency = parse_price(value["price"], value["currency"] or currency)
            except PriceError:
                price, found_currency = None, None
                summary.price_unreadable += 1
            if price is not None and price == 0:
                price = None  # feeds write 0 for "unknown"; no bike costs nothing
            summary.by_shop[webshop] += 1
            yield Listing(
                webshop=webshop,
                url=url,
                name=name,
                image_url=_first_url(clean_text(value["image_url"])),
                price=price,
                currency=(currency_code(value["currency"]) or found_currency or currency)
                if price is not None
                else None,
                brand=clean_text(value["brand"]),
                gtin=valid_gtin(value["gtin"]),
                sku=clean_text(value["sku"]),
                availability=availability(value["availability"]),
            )

    try:
        summary.stored = store_in_batches(conn, listings())
    except UnicodeDecodeError as exc:
        raise ImportError_(
            f"{path}: not {exc.encoding} text (byte 0x{exc.object[exc.start]:02x} near row"
            f" {summary.read + 1}): give its encoding with --encoding, e.g. cp1252 for a"
            " Windows export"
        ) from None
    return summary
