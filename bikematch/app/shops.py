"""`bikematch shops add` and `shops check`: a shop in one command, and a dry run of it."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bikematch.app.errors import UserError
from bikematch.core.settings import Settings
from scrapers.params import ShopConfigError, load_shops

#: The fields a dry run counts per listing.
CHECKED = ("price", "currency", "image_url", "brand", "gtin", "sku", "availability")


def add_shop(settings: Settings, path: Path, url: str, name: str | None = None):
    """Detect the shop's platform and append its entry to `path` (created if missing);
    returns the Detected entry. Raises UserError (an unreachable shop, a name already
    configured, an entry that does not validate); the file is left as it was then."""
    from scrapers.discover import DiscoveryError, detect_shop

    before = path.read_text(encoding="utf-8") if path.exists() else None
    names = _configured(path, before)
    if name and name in names:
        raise UserError(f"{path}: a shop named {name} is already configured")
    try:
        detected = detect_shop(url, name, user_agent=f"bikematch/0.1 (+{settings.contact})")
    except DiscoveryError as exc:
        raise UserError(str(exc)) from exc
    if detected.entry["name"] in names:
        raise UserError(f"{path}: a shop named {detected.entry['name']} is already configured")
    block = yaml.safe_dump([detected.entry], sort_keys=False, allow_unicode=True)
    block = "".join(f"  {line}\n" for line in block.splitlines())
    text = before or ""
    if text and not text.endswith("\n"):
        text += "\n"
    if not names:  # no entry yet: a bare (or empty-list) `shops:` line to append under
        text, found = re.subn(r"(?m)^shops:[ \t]*(?:\[\])?[ \t]*$", "shops:", text)
        text = text if found else text + "shops:\n"
    path.write_text(text + block, encoding="utf-8")
    try:
        load_shops(path)
    except ShopConfigError as exc:
        if before is None:
            path.unlink()
        else:
            path.write_text(before, encoding="utf-8")
        raise UserError(f"the detected entry does not validate ({path} unchanged): {exc}") from exc
    return detected


def _configured(path: Path, text: str | None) -> set[str]:
    """The names of the shops `path` configures (none for a missing or empty file)."""
    document = yaml.safe_load(text) if text else None
    if document is None or (isinstance(document, dict) and not document.get("shops")):
        return set()
    return {shop.name for shop in load_shops(path)}


@dataclass
class CheckResult:
    shop: str
    listings: list = field(default_factory=list)
    crawl: object | None = None
    platform: str = ""

    def lines(self) -> list[str]:
        found = Counter(
            name for listing in self.listings for name in CHECKED if getattr(listing, name)
        )
        lines = [f"{self.shop}: {len(self.listings)} listings read (nothing stored)"]
        for listing in self.listings:
            price = f"{listing.currency or ''} {listing.price}" if listing.price else "no price"
            have = [name for name in CHECKED[2:] if getattr(listing, name)]
            lines.append(f"  {listing.name}  {price.strip()}  [{', '.join(have) or '-'}]")
            lines.append(f"    {listing.url}")
        if self.listings:
            total = len(self.listings)
            lines.append(
                "fields found: " + ", ".join(f"{name} {found[name]}/{total}" for name in CHECKED)
            )
        reasons = [
            reason
            for reason in (self.crawl.stopped_early if self.crawl else [])
            if "closespider_itemcount" not in reason  # the dry run's own stop
        ]
        lines += [f"limit hit: {reason}" for reason in reasons]
        pages = self.crawl.pages if self.crawl else 0
        if not self.listings and pages and self.platform == "jsonld":
            lines.append(
                f"no listing found in {pages} pages read: none declares a product (JSON-LD,"
                " microdata or RDFa, or og:type product). Check start_urls and allow/deny;"
                " a shop whose product pages carry no such markup needs a css entry with"
                " selectors (bikematch -v shops check ... shows the crawl's log)"
            )
        elif not self.listings:
            lines.append(
                "no listing found: check start_urls, allow/deny and the platform"
                " (bikematch -v shops check ... shows the crawl's log)"
            )
        return lines


def check_shop(settings: Settings, path: Path, name: str, pages: int, verbose: bool = False):
    """A dry run of one configured shop: up to `pages` listings read, nothing stored."""
    from scrapers.run import run_shops

    shops = [shop for shop in load_shops(path) if shop.name == name]
    if not shops:
        configured = ", ".join(shop.name for shop in load_shops(path))
        raise UserError(f"{path}: no shop named {name} (configured: {configured})")
    result = CheckResult(name, platform=shops[0].platform)
    (crawl,) = run_shops(
        shops,
        "",
        contact=settings.contact,
        overrides={"LOG_LEVEL": "DEBUG" if verbose else "WARNING"},
        dry_run=pages,
        on_item=lambda shop, listing: result.listings.append(listing),
    )
    result.crawl = crawl
    result.listings = result.listings[:pages]
    return result
