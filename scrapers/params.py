"""Shop configuration (`shops.yaml`): validated up front, errors name shop and field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
    field_validator,
    model_validator,
)


class ShopConfigError(ValueError):
    """A bad shops.yaml; the message names the shop and the field."""


class Selectors(BaseModel):
    """CSS (or `xpath:`-prefixed XPath) selectors for the `css` platform and overrides."""

    model_config = ConfigDict(extra="forbid")

    product_links: str | None = None
    next_page: str | None = None
    name: str | None = None
    price: str | None = None
    image: str | None = None
    brand: str | None = None
    sku: str | None = None
    gtin: str | None = None
    availability: str | None = None


class Shop(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="the `webshop` key, e.g. fietsvoordeelshop.nl")
    platform: Literal["jsonld", "shopify", "woocommerce", "css"]
    start_urls: list[HttpUrl] = Field(default_factory=list)
    sitemap_url: HttpUrl | None = None
    allow: list[str] = Field(default_factory=list, description="regexes a followed URL must match")
    deny: list[str] = Field(default_factory=list, description="regexes no followed URL may match")
    selectors: Selectors = Field(default_factory=Selectors)
    currency: str | None = Field(None, description="ISO 4217, when the shop's data omits it")
    concurrency: int = Field(4, ge=1, le=64)
    delay: float = Field(0.5, ge=0, le=60, description="seconds between requests")
    max_pages: int = Field(5000, ge=1, description="stop after this many pages")
    max_depth: int = Field(4, ge=0, le=20)

    @field_validator("allow", "deny")
    @classmethod
    def _regexes_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from exc
        return patterns

    @field_validator("currency")
    @classmethod
    def _iso_currency(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError(f"{value!r} is not an ISO 4217 code like EUR")
        return value

    @model_validator(mode="after")
    def _platform_needs(self) -> Shop:
        if self.platform in ("jsonld", "css") and not (self.start_urls or self.sitemap_url):
            raise ValueError("needs start_urls or sitemap_url")
        if self.platform in ("shopify", "woocommerce") and not self.start_urls:
            raise ValueError("needs start_urls (the shop's base URL)")
        if self.platform == "css" and not (self.selectors.name and self.selectors.price):
            raise ValueError("the css platform needs selectors.name and selectors.price")
        return self

    @property
    def base_url(self) -> str:
        return str(self.start_urls[0]).rstrip("/")


def load_shops(path: Path | str) -> list[Shop]:
    """Read and validate shops.yaml; raise ShopConfigError naming shop and field."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ShopConfigError(f"{path}: no such file") from exc
    except yaml.YAMLError as exc:
        raise ShopConfigError(f"{path}: not valid YAML: {exc}") from exc
    entries = document.get("shops") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ShopConfigError(f"{path}: expected a top-level 'shops:' list")
    shops, seen = [], set()
    for position, entry in enumerate(entries, start=1):
        label = entry.get("name") if isinstance(entry, dict) else None
        label = label or f"#{position}"
        try:
            shop = Shop.model_validate(entry)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'shop'}: {error['msg']}"
                for error in exc.errors()
            )
            raise ShopConfigError(f"{path}: shop {label}: {problems}") from None
        if shop.name in seen:
            raise ShopConfigError(f"{path}: shop {shop.name}: name: listed twice")
        seen.add(shop.name)
        shops.append(shop)
    return shops
