"""The job: its stages (prepare, scrape, embed, exchange rates, cluster) and their order.

`run_job` is what `bikematch run`, `bikematch demo` and the tests call. It returns every
stage's summary as data and tells a `JobReport` as each stage starts and ends, so the
command line and the demo print what they like while the order and the rules (no
listing stored fails the job; the model's own threshold clusters) live here alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bikematch.app.clusters import ClusterSummary, build_clusters, check_anchor, cluster_vars
from bikematch.app.errors import UserError
from bikematch.core.database import DatabaseError, connect, resolve_url
from bikematch.core.migrations import apply_migrations
from bikematch.core.settings import Settings
from scrapers.errors import CrawlError
from scrapers.params import ShopConfigError

DEFAULT_MODEL = "pe-core-l14-336"


class StageFailed(RuntimeError):
    """A stage of the job failed; the message names the stage and why."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"the {stage} stage failed: {reason}")
        self.stage = stage
        self.reason = reason


def prepare_database(settings: Settings) -> str:
    """The URL of a reachable database with bikematch's schema (pending migrations
    applied); starts the embedded server where no DATABASE_URL is set."""
    url = resolve_url(settings)
    with connect(url) as conn:
        apply_migrations(conn)
    return url


# -- the stages -------------------------------------------------------------------------


def scrape(
    settings: Settings,
    url: str,
    shops,
    *,
    verbose: bool = False,
    overrides: dict | None = None,
    progress=None,
):
    """Crawl the shops into scraped_bikes; one CrawlSummary per shop."""
    from scrapers.run import run_shops

    scrapy_settings = {
        "LOG_LEVEL": "DEBUG" if verbose else "WARNING",
        "HTTPCACHE_ENABLED": settings.httpcache,
        **(overrides or {}),
    }
    return run_shops(
        shops, url, contact=settings.contact, overrides=scrapy_settings, progress=progress
    )


def embed(url: str, model, embed_settings, progress=None, notice=None):
    """Embed the pending listings with `model`; an EmbedSummary."""
    from embedder.job import run_embedding

    return run_embedding(url, model, embed_settings, progress, notice=notice)


def load_embedding_model(
    settings: Settings,
    name: str,
    device: str = "auto",
    dtype: str = "auto",
    remote: str | None = None,
    compile_model: bool | None = None,
):
    """A registered model with its local files from the settings, or a hosted backend
    (`remote`: its URL). Raises UserError for an unknown name, missing weights or a
    device this machine lacks."""
    if remote:
        from embedder.remote import RemoteError, RemoteModel

        try:
            return RemoteModel(
                remote, name=name, token=settings.remote_token, timeout=settings.remote_timeout
            )
        except RemoteError as exc:
            raise UserError(f"the embedding service does not answer: {exc}") from exc
    import torch

    from perception_models import DeviceUnavailable, ModelFiles, WeightsNotFound, load_model
    from perception_models.allocator import keep_freed_memory

    if device != "cuda":
        # A process-wide setting, made by the job before any thread has its own malloc
        # arena (set later, it leaves those arenas as they are): CPU batches reuse the
        # memory freed by the one before instead of page-faulting it in again.
        keep_freed_memory()

    files = ModelFiles(
        pe_core_weights=settings.pe_core_weights,
        clip_weights=settings.clip_weights,
        clip_tokenizer=settings.clip_tokenizer,
    )
    try:
        return load_model(
            name,
            device=device,
            dtype=None if dtype == "auto" else getattr(torch, dtype),
            files=files,
            compile=compile_model,
        )
    except (WeightsNotFound, FileNotFoundError, KeyError, DeviceUnavailable) as exc:
        raise UserError(str(exc).strip("'\"")) from exc


def fetch_settings(
    settings: Settings,
    *,
    allow_private_hosts: bool = False,
    cache_dir: str | Path | None = None,
    concurrency: int | None = None,
):
    """How the embedder fetches images: the settings, with a command's options on top
    (`cache_dir` 'off' turns the cache off)."""
    from embedder.fetch import FetchSettings

    cache = settings.image_cache
    if cache_dir is not None:
        cache = None if str(cache_dir) == "off" else Path(cache_dir)
    extra = {"concurrency": concurrency} if concurrency else {}
    return FetchSettings(
        allow_private=allow_private_hosts or settings.allow_private_image_hosts,
        cache_dir=cache,
        **extra,
    )


def refresh_rates(settings: Settings, url: str) -> list[str]:
    """The job's exchange-rate step: the ECB's rates where listings are priced in more
    than one currency (lines to show)."""
    from bikematch.app.rates import refresh_if_needed

    return refresh_if_needed(url, settings.rates_url)


# -- the whole job ----------------------------------------------------------------------


class JobReport:
    """What the job tells as it goes; every method does nothing unless overridden."""

    def stage(self, name: str) -> None: ...

    def scrape_progress(self, shop: str, pages: int, items: int) -> None: ...

    def scraped(self, crawls: list) -> None: ...

    def embedding_progress(self, model_name: str):
        """A context manager giving `progress(done, failed, total)` to the embedder."""
        return contextlib.nullcontext(None)

    def embedding_notice(self, line: str) -> None:
        """What the embedder does besides embedding (building the search index)."""

    def embedded(self, summary) -> None: ...

    def rates(self, lines: list[str]) -> None: ...

    def dbt_model(self, line: str) -> None: ...

    def clustered(self, summary: ClusterSummary) -> None: ...


@dataclass
class JobOptions:
    model_name: str = DEFAULT_MODEL
    anchor_shop: str | None = None
    #: None: the model's registered threshold.
    threshold: float | None = None
    device: str = "auto"
    #: Inference precision: auto (bfloat16 on CUDA, float32 on CPU), or a dtype's name.
    dtype: str = "auto"
    #: None: 32, or on CUDA what free GPU memory holds.
    batch_size: int | None = None
    #: torch.compile the model; None: on CUDA.
    compile_model: bool | None = None
    #: Scrapy's CLOSESPIDER_TIMEOUT for every shop: the crawls stop and the job goes on.
    scrape_minutes: float | None = None
    embed_minutes: float | None = None
    reembed_before: datetime | None = None
    verbose: bool = False
    #: Scrapy settings on top of the job's (the demo turns AutoThrottle off).
    scrape_overrides: dict = field(default_factory=dict)
    #: How images are fetched; None: from the settings.
    fetch: object | None = None
    #: The exchange-rate step; None: `refresh_rates`.
    rates: Callable[[Settings, str], list[str]] | None = None


@dataclass
class JobResult:
    crawls: list
    embedded: object
    clustered: ClusterSummary


def run_job(
    settings: Settings, url: str, shops, options: JobOptions, report: JobReport | None = None
) -> JobResult:
    """Scrape, embed, cluster, in order; raises StageFailed at the first stage that fails
    (what the stages before it stored stays)."""
    from embedder.job import EmbedSettings

    report = report or JobReport()
    stage = "scrape"
    try:
        report.stage(stage)
        crawls = scrape(
            settings,
            url,
            shops,
            verbose=options.verbose,
            overrides=_scrape_budget(options) | options.scrape_overrides,
            progress=report.scrape_progress,
        )
        report.scraped(crawls)
        if sum(crawl.stored for crawl in crawls) == 0:
            raise StageFailed(stage, "no listing was stored from any shop")

        stage = "embed"
        report.stage(stage)
        model = load_embedding_model(
            settings,
            options.model_name,
            options.device,
            options.dtype,
            compile_model=options.compile_model,
        )
        embed_settings = EmbedSettings(
            batch_size=options.batch_size,
            fetch=options.fetch or fetch_settings(settings),
            max_seconds=None if options.embed_minutes is None else options.embed_minutes * 60,
            reembed_before=options.reembed_before,
        )
        with report.embedding_progress(model.name) as progress:
            embedded = embed(url, model, embed_settings, progress, report.embedding_notice)
        report.embedded(embedded)

        stage = "cluster"
        report.stage(stage)
        report.rates((options.rates or refresh_rates)(settings, url))
        dbt_vars = cluster_vars(options.model_name, options.anchor_shop, options.threshold)
        check_anchor(url, dbt_vars)
        clustered = build_clusters(url, dbt_vars, on_model=report.dbt_model)
        report.clustered(clustered)
    except (DatabaseError, UserError, CrawlError, ShopConfigError) as exc:
        raise StageFailed(stage, str(exc)) from exc
    return JobResult(crawls, embedded, clustered)


def _scrape_budget(options: JobOptions) -> dict:
    if options.scrape_minutes is None:
        return {}
    return {"CLOSESPIDER_TIMEOUT": options.scrape_minutes * 60}


def crawl_table(crawls) -> list[str]:
    """The scrape stage's summary: a row per shop, then what went wrong where."""
    header = (
        "shop",
        "pages",
        "stored",
        "new",
        "price changes",
        "no price",
        "dropped",
        "HTTP errors",
    )
    rows = [
        (
            c.shop,
            c.pages,
            c.stored,
            c.new,
            c.price_changes,
            c.price_unparsed,
            ", ".join(f"{reason} {n}" for reason, n in sorted(c.dropped.items())) or "0",
            c.http_errors,
        )
        for c in crawls
    ]
    widths = [max(len(str(v)) for v in column) for column in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    for c in crawls:
        for reason in c.stopped_early:
            lines.append(f"{c.shop}: stopped early: {reason}; the shop may have more listings")
        if c.bad_sitemaps:
            lines.append(f"{c.shop}: {c.bad_sitemaps} sitemap(s) could not be read (see the log)")
        if c.reconnects:
            lines.append(
                f"{c.shop}: the database dropped the connection {c.reconnects} time(s);"
                " reconnected, nothing lost"
            )
    return lines
