"""Loading listings from CSV or JSONL files: shop feeds and labelled benchmarks alike.

Rows go through the scrapers' normalisation and the same upsert as scraped
listings (bikematch.core.listings). A row without a url or name is rejected and
counted by reason; an unreadable price is stored as NULL and counted.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bikematch.core.listings import Listing, StoreResult, store_in_batches
from bikematch.core.normalise import PriceError, clean_text, currency_code, parse_price, valid_gtin

FIELDS = ("url", "name", "price", "currency", "image_url", "brand", "gtin", "sku")


class ImportError_(ValueError):
    """A file that cannot be imported at all (the message says why)."""


@dataclass
class ImportSummary:
    read: int = 0
    stored: StoreResult = field(default_factory=StoreResult)
    rejected: Counter = field(default_factory=Counter)
    price_unreadable: int = 0

    def lines(self) -> list[str]:
        rejected = ", ".join(f"{why} {n}" for why, n in sorted(self.rejected.items())) or "none"
        return [
            f"read {self.read} rows: stored {self.stored.stored} ({self.stored.new} new, "
            f"{self.stored.price_changes} price changes), rejected {sum(self.rejected.values())} "
            f"({rejected}), price unreadable {self.price_unreadable}"
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


def read_rows(
    path: Path,
    delimiter: str | None = None,
    encoding: str | None = None,
    required: dict[str, str] | None = None,
) -> Iterator[dict]:
    """The file's rows as dicts; a CSV whose header lacks a `required` column (field ->
    column) is refused, naming its columns."""
    if not path.exists():
        raise ImportError_(f"{path}: no such file")
    encoding = file_encoding(path, encoding)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        with path.open(encoding=encoding) as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise ImportError_(f"{path}:{number}: not JSON ({exc})") from exc
                yield row if isinstance(row, dict) else {}
        return
    with path.open(encoding=encoding, newline="") as handle:
        if delimiter is None:
            sample = handle.read(8192)
            handle.seek(0)
            try:
                delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|#").delimiter
            except csv.Error:
                delimiter = ","
        rows = csv.DictReader(handle, delimiter=delimiter)
        columns = rows.fieldnames or []  # reads the header
        missing = {f: c for f, c in (required or {}).items() if c not in columns}
        if missing:
            raise ImportError_(
                f"{path}: no column {' or '.join(missing.values())} (its columns:"
                f" {', '.join(columns)[:300] or 'none'}); name the column to use with"
                f" {' '.join(f'--map {f}=COLUMN' for f in missing)}"
            )
        yield from rows


def import_file(
    conn,
    path: Path,
    shop: str,
    mapping: dict[str, str] | None = None,
    delimiter: str | None = None,
    currency: str | None = None,
    encoding: str | None = None,
) -> ImportSummary:
    summary = ImportSummary()
    mapping = {name: (mapping or {}).get(name, name) for name in FIELDS}

    def listings() -> Iterator[Listing]:
        required = {f: mapping[f] for f in ("url", "name")}
        for row in read_rows(path, delimiter, encoding, required):
            summary.read += 1
            value = {name: row.get(source) for name, source in mapping.items()}
            url = str(value["url"]).strip() if value["url"] not in (None, "") else None
            name = clean_text(value["name"])
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
            yield Listing(
                webshop=shop,
                url=url,
                name=name,
                image_url=clean_text(value["image_url"]),
                price=price,
                currency=(currency_code(value["currency"]) or found_currency or currency)
                if price is not None
                else None,
                brand=clean_text(value["brand"]),
                gtin=valid_gtin(value["gtin"]),
                sku=clean_text(value["sku"]),
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
