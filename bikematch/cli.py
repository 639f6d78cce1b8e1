"""The `bikematch` command line: a thin layer over the library modules."""

from __future__ import annotations

import logging
import sys

import click
import psycopg

from bikematch import __version__
from bikematch.database import (
    DatabaseError,
    connect,
    embedded_running,
    mask_password,
    resolve_url,
    stop_embedded,
)
from bikematch.settings import load_settings


class _Group(click.Group):
    """Turns the errors a user can fix into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        from scrapers.params import ShopConfigError

        try:
            return super().invoke(ctx)
        except (DatabaseError, ShopConfigError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except psycopg.OperationalError as exc:  # the server went away, a timeout, a lock
            reason = str(exc).strip().splitlines()
            click.echo(
                f"error: the database ended the command: {reason[0] if reason else exc} "
                "(what was stored before stays; run the command again to go on)",
                err=True,
            )
            sys.exit(2)


def _ready_database() -> str:
    """The URL of a reachable database with bikematch's schema (pending migrations applied)."""
    from bikematch.pipeline import prepare_database

    url = resolve_url(load_settings())
    prepare_database(url)
    return url


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="bikematch")
@click.option("-v", "--verbose", is_flag=True, help="Log debug details to stderr.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Find the same e-bike across webshops and compare its offers.

    The database is DATABASE_URL (environment or .env); when it is unset,
    an embedded Postgres with pgvector runs under ./.bikematch/pgdata.

    \b
    Example:
        bikematch db init
    """
    ctx.obj = {"verbose": verbose}
    if verbose:
        logging.basicConfig(
            level=logging.DEBUG, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )


@cli.group()
def db() -> None:
    """Manage the database: migrations, the embedded server.

    \b
    Example:
        bikematch db init && bikematch db url
    """


@db.command("init")
def db_init() -> None:
    """Apply the migrations in sql/ (safe to run again: applied ones are skipped).

    \b
    Example:
        DATABASE_URL=postgresql://user:pw@host:5432/db bikematch db init
    """
    from bikematch.migrations import apply_migrations

    url = resolve_url(load_settings())
    with connect(url) as conn:
        applied = apply_migrations(conn)
    if applied:
        click.echo(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        click.echo("database is up to date")


@db.command("url")
def db_url() -> None:
    """Print the database URL in use (password masked); starts the embedded server if needed.

    \b
    Example:
        psql "$(bikematch db url)"
    """
    click.echo(mask_password(resolve_url(load_settings())))


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded server (data is kept; the next command starts it again).

    \b
    Example:
        bikematch db stop
    """
    settings = load_settings()
    if not settings.embedded:
        click.echo("DATABASE_URL is set: there is no embedded server to stop")
        return
    if stop_embedded(settings.pgdata):
        click.echo(f"stopped the embedded server in {settings.pgdata}")
    else:
        click.echo(f"no embedded server is running in {settings.pgdata}")


@db.command("status")
def db_status() -> None:
    """Say which database is in use, whether it is reachable, and what it holds:
    migrations, listings per shop, vectors per model (pending, failed), clusters and
    exchange rates.

    \b
    Example:
        bikematch db status
    """
    from bikematch.status import database_status

    settings = load_settings()
    if settings.embedded:
        state = "running" if embedded_running(settings.pgdata) else "stopped"
        click.echo(f"embedded server in {settings.pgdata}: {state}")
        if state == "stopped":
            return
    url = resolve_url(settings)
    with connect(url) as conn:
        version = conn.execute("show server_version").fetchone()[0]
        click.echo(f"connected to {mask_password(url)} (Postgres {version})")
        for line in database_status(conn):
            click.echo(line)


@db.command("env")
def db_env() -> None:
    """Print `export PG...=...` lines for the database in use (for plain dbt or psql).

    \b
    Example:
        eval "$(bikematch db env)" && dbt build --profiles-dir .
    """
    import shlex

    from bikematch.dbt import dbt_env

    for name, value in dbt_env(resolve_url(load_settings())).items():
        click.echo(f"export {name}={shlex.quote(value)}")


def _parse_vars(pairs: tuple[str, ...]) -> dict:
    import yaml

    parsed = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--var")
        parsed[name] = yaml.safe_load(value)
    return parsed


@cli.command()
@click.option("--model", "embedding_model", help="Embedding model whose vectors to cluster.")
@click.option("--anchor", "anchor_shop", help="The shop whose listings seed clusters.")
@click.option("--threshold", type=float, help="Cosine similarity at which listings match.")
@click.option("--var", "extra_vars", multiple=True, metavar="NAME=VALUE", help="Any dbt var.")
@click.option("--full-refresh", is_flag=True, help="Rebuild incremental models from scratch.")
def cluster(embedding_model, anchor_shop, threshold, extra_vars, full_refresh) -> None:
    """Cluster listings into products: `dbt build` on the bikematch dbt project.

    \b
    Example:
        bikematch cluster --model pe-core-l14-336 --anchor fietsvoordeelshop.nl
    """
    from bikematch.dbt import run_dbt
    from bikematch.pipeline import cluster_notes

    dbt_vars = _parse_vars(extra_vars)
    for name, value in (
        ("embedding_model", embedding_model),
        ("anchor_shop", anchor_shop),
        ("match_threshold", threshold),
    ):
        if value is not None:
            dbt_vars[name] = value
    command = ["build"] + (["--full-refresh"] if full_refresh else [])
    url = resolve_url(load_settings())
    run_dbt(command, url, dbt_vars=dbt_vars)
    with connect(url) as conn:
        for note in cluster_notes(conn, dbt_vars):
            click.echo(note, err=True)


@cli.command()
@click.option(
    "--url",
    "source_url",
    help="Where to read the rates (the ECB's eurofxref XML format). "
    "[default: BIKEMATCH_RATES_URL, else the ECB's daily file]",
)
def rates(source_url) -> None:
    """Store the ECB's euro reference rates, for comparing prices across currencies.

    The dbt models convert prices in other currencies through them (`bikematch run`
    fetches them itself when the listings are priced in more than one currency).
    Rates written by hand into exchange_rates (source other than 'ecb') are kept.

    \b
    Example:
        bikematch rates && bikematch cluster --var report_currency=EUR
    """
    from bikematch.rates import RatesError, fetch_rates, store_rates

    try:
        fetched = fetch_rates(source_url)
    except RatesError as exc:
        raise click.ClickException(str(exc)) from exc
    url = _ready_database()
    with connect(url) as conn:
        written = store_rates(conn, fetched)
    kept = len(fetched.per_euro) - written
    click.echo(
        f"stored {written} exchange rates of {fetched.day}"
        + (f"; kept {kept} stored ones (newer, or written by hand)" if kept else "")
    )


@cli.command()
@click.option(
    "--shops",
    "shops_file",
    type=click.Path(dir_okay=False),
    envvar="BIKEMATCH_SHOPS",
    default="shops.yaml",
    show_default=True,
    help="The shops configuration.",
)
@click.option("--shop", "only", multiple=True, metavar="NAME", help="Only this shop (repeatable).")
@click.option("--httpcache", is_flag=True, help="Replay cached pages (for development).")
@click.pass_context
def scrape(ctx, shops_file, only, httpcache) -> None:
    """Scrape the configured webshops into scraped_bikes.

    \b
    Example:
        bikematch scrape --shops shops.yaml --shop fietsvoordeelshop.nl
    """
    from scrapers.params import ShopConfigError, load_shops

    shops = load_shops(shops_file)
    if only:
        unknown = sorted(set(only) - {shop.name for shop in shops})
        if unknown:
            raise ShopConfigError(f"{shops_file}: no shop named {', '.join(unknown)}")
        shops = [shop for shop in shops if shop.name in only]
    url = _ready_database()
    summaries = _scrape_stage(url, shops, ctx.obj["verbose"], httpcache)
    _print_scrape_summary(summaries)


def _scrape_stage(url, shops, verbose=False, httpcache=False):
    from bikematch import pipeline

    def progress(shop, pages, items):
        click.echo(f"  {shop}: {pages} pages, {items} listings", err=True)

    click.echo(f"scraping {len(shops)} shop(s): {', '.join(s.name for s in shops)}", err=True)
    overrides = {"LOG_LEVEL": "DEBUG" if verbose else "WARNING"}
    if httpcache:
        overrides["HTTPCACHE_ENABLED"] = True
    return pipeline.scrape(url, shops, overrides, progress=progress)


def _print_scrape_summary(summaries) -> None:
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
            s.shop,
            s.pages,
            s.stored,
            s.new,
            s.price_changes,
            s.price_unparsed,
            ", ".join(f"{reason} {n}" for reason, n in sorted(s.dropped.items())) or "0",
            s.http_errors,
        )
        for s in summaries
    ]
    widths = [max(len(str(v)) for v in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    for s in summaries:
        if s.bad_sitemaps:
            click.echo(f"{s.shop}: {s.bad_sitemaps} sitemap(s) could not be read (see the log)")
        if s.reconnects:
            click.echo(
                f"{s.shop}: the database dropped the connection {s.reconnects} time(s);"
                " reconnected, nothing lost"
            )


@cli.command()
@click.argument("page", type=click.File("rb"))
@click.option("--url", required=True, help="The URL the page was fetched from (for links).")
def extract(page, url) -> None:
    """Print the main product of a saved product page as JSON.

    Keys: name, price, currency, image_url, brand, gtin, sku, availability.

    \b
    Example:
        bikematch extract page.html --url https://shop.example/bikes/x1
    """
    import json

    from scrapers.extract import extract_product

    click.echo(json.dumps(extract_product(page.read(), url), ensure_ascii=False, indent=2))


def _load_embedding_model(name, device, remote, dtype="auto"):
    import os

    if remote:
        from embedder.remote import RemoteModel

        return RemoteModel(
            remote,
            name=name,
            token=os.environ.get("BIKEMATCH_REMOTE_TOKEN"),
            timeout=float(os.environ.get("BIKEMATCH_REMOTE_TIMEOUT", "60")),
        )
    import torch

    from perception_models import DeviceUnavailable, WeightsNotFound, load_model

    try:
        return load_model(
            name, device=device, dtype=None if dtype == "auto" else getattr(torch, dtype)
        )
    except (WeightsNotFound, FileNotFoundError, KeyError, DeviceUnavailable) as exc:
        raise click.ClickException(str(exc).strip("'\"")) from exc


def _fetch_settings(allow_private_hosts, cache_dir, concurrency=None):
    import os
    from pathlib import Path

    from embedder.fetch import FetchSettings

    allow = allow_private_hosts or os.environ.get("BIKEMATCH_ALLOW_PRIVATE_IMAGE_HOSTS") == "1"
    cache = cache_dir or os.environ.get("BIKEMATCH_IMAGE_CACHE") or ".bikematch/image-cache"
    extra = {"concurrency": concurrency} if concurrency else {}
    return FetchSettings(
        allow_private=allow, cache_dir=Path(cache) if cache != "off" else None, **extra
    )


class _PastTime(click.ParamType):
    """An ISO 8601 date or time, UTC unless it says otherwise; not in the future. (No
    'now': rerunning the same command would then start over instead of resuming.)"""

    name = "time"

    def convert(self, value, param, ctx):
        from datetime import UTC, datetime, timedelta

        if isinstance(value, datetime):
            return value
        now = datetime.now(UTC)
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 date or time (2026-11-21T08:00Z)", param, ctx)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        if moment > now + timedelta(minutes=1):
            self.fail(
                f"{value} is in the future: every run would embed everything again", param, ctx
            )
        return moment


@cli.group(invoke_without_command=True)
@click.option(
    "--model",
    "model_name",
    default="pe-core-l14-336",
    show_default=True,
    help="pe-core-l14-336, clip-vit-b-32, minilm-effnet-lite0 or tiny-random.",
)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True)
@click.option("--limit", type=click.IntRange(1), help="Embed at most this many listings.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
    default="auto",
    show_default=True,
    help="Inference precision. auto: bfloat16 autocast on CUDA; on CPU, float32 unless "
    "one batch embedded both ways shows bfloat16 agrees (cosine >= 0.999) and is faster. "
    "The outcome is stored for this model and kind of machine and reused for 30 days.",
)
@click.option(
    "--remeasure-precision",
    is_flag=True,
    help="With --dtype auto on CPU: measure bfloat16 against float32 again on this run "
    "instead of using the stored outcome (e.g. after changing the model's weights).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Threads decoding and preprocessing images [default: 2 beside a CPU model; "
    "on CUDA every core but one, up to 16].",
)
@click.option(
    "--streams",
    type=click.IntRange(1, 64),
    help="Batches the model embeds at once, each on its own threads [default: on CPU one "
    "per core, up to 4, sharing the cores out; on CUDA 1].",
)
@click.option(
    "--fetch-concurrency",
    type=click.IntRange(1, 512),
    default=16,
    show_default=True,
    help="Image downloads at once. Listings/s can reach this over the shops' response "
    "time (16 at 0.1 s: 160/s); raise it for a GPU.",
)
@click.option(
    "--text-only/--no-text-only",
    default=True,
    show_default=True,
    help="Embed listings without an image, or whose image fails (it is retried on "
    "later runs), from their title alone.",
)
@click.option(
    "--image-weight",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Weight of the image half in the stored embedding.",
)
@click.option(
    "--remote", metavar="URL", help="A hosted embedding endpoint instead of a local model."
)
@click.option(
    "--allow-private-hosts",
    is_flag=True,
    help="Fetch images from private/loopback addresses (tests, intranets).",
)
@click.option("--cache-dir", help="Image cache directory ('off' for none).")
@click.option(
    "--max-minutes",
    type=click.FloatRange(min=0, min_open=True),
    help="Claim no new listings after this many minutes (the batches under way finish); "
    "the rest waits for the next run.",
)
@click.option(
    "--reembed-before",
    type=_PastTime(),
    metavar="TIME",
    help="Also embed again the listings whose vector is older than TIME (ISO 8601, UTC "
    "unless it says otherwise, e.g. the upgrade's): after an upgrade that reads photos "
    "differently. Rerun the same command, with the same TIME, to resume.",
)
@click.pass_context
def embed(
    ctx,
    model_name,
    batch_size,
    limit,
    device,
    dtype,
    remeasure_precision,
    workers,
    streams,
    fetch_concurrency,
    text_only,
    image_weight,
    remote,
    allow_private_hosts,
    cache_dir,
    max_minutes,
    reembed_before,
) -> None:
    """Embed pending listings' images and titles into vector_storage.

    Pending: no vector for this model yet, or the title or image URL changed.
    Safe to interrupt and rerun; several embedders can share one database.

    \b
    Example:
        bikematch embed --model minilm-effnet-lite0 --batch-size 64
    """
    if ctx.invoked_subcommand is not None:
        return
    from bikematch.progress import embedding_progress
    from embedder.job import EmbedSettings, run_embedding

    model = _load_embedding_model(model_name, device, remote, dtype)  # a bad name fails first
    url = _ready_database()
    settings = EmbedSettings(
        batch_size=batch_size,
        limit=limit,
        workers=workers,
        streams=streams,
        text_only=text_only,
        image_weight=image_weight,
        choose_precision=dtype == "auto" and not remote,
        precision_max_age=None if remeasure_precision else EmbedSettings.precision_max_age,
        fetch=_fetch_settings(allow_private_hosts, cache_dir, fetch_concurrency),
        reembed_before=reembed_before,
        max_seconds=None if max_minutes is None else max_minutes * 60,
    )
    with embedding_progress(model.name) as progress:
        summary = run_embedding(url, model, settings, progress)
    for line in summary.lines():
        click.echo(line)


@embed.command("compare")
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    metavar="NAME",
    help="Two models (a name, or remote:URL for a hosted backend).",
)
@click.option("--sample", type=click.IntRange(1), default=50, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option("--allow-private-hosts", is_flag=True)
def embed_compare(models, sample, device, allow_private_hosts) -> None:
    """Cosine agreement of two models or backends on the same listings.

    Above 0.95 means practically identical (seed 001).

    \b
    Example:
        bikematch embed compare --model clip-vit-b-32 --model remote:https://emb.example/embed
    """
    from embedder.compare import CompareError, compare_models

    if len(models) != 2:
        raise click.UsageError("give --model exactly twice")
    loaded = []
    for name in models:
        if name.startswith("remote:"):
            loaded.append(_load_embedding_model(name, device, name.removeprefix("remote:")))
        else:
            loaded.append(_load_embedding_model(name, device, None))
    url = _ready_database()
    fetch = _fetch_settings(allow_private_hosts, None)
    try:
        lines = compare_models(url, loaded[0], loaded[1], sample, fetch)
    except CompareError as exc:
        raise click.ClickException(str(exc)) from exc
    for line in lines:
        click.echo(line)


@embed.command("prune-cache")
@click.option("--cache-dir", help="Image cache directory.")
def embed_prune_cache(cache_dir) -> None:
    """Remove cached images that no listing's image URL names any more.

    The cache keeps every image the embedder fetched, so that reruns fetch nothing
    again and the report has thumbnails; on a long-lived machine it only grows.

    \b
    Example:
        bikematch embed prune-cache
    """
    from embedder.fetch import prune_cache

    cache = _fetch_settings(False, cache_dir).cache_dir
    if cache is None:
        raise click.ClickException("the image cache is off (BIKEMATCH_IMAGE_CACHE=off)")
    url = _ready_database()
    with connect(url) as conn:
        urls = conn.execute(
            "select distinct image_url from scraped_bikes where image_url is not null"
        )
        removed, freed = prune_cache(cache, (row[0] for row in urls))
    click.echo(f"removed {removed} cached images ({freed / 2**20:.1f} MiB) from {cache}")


@cli.command()
@click.option(
    "--shops",
    "shops_file",
    type=click.Path(dir_okay=False),
    envvar="BIKEMATCH_SHOPS",
    default="shops.yaml",
    show_default=True,
    help="The shops configuration.",
)
@click.option(
    "--model",
    "model_name",
    default="pe-core-l14-336",
    show_default=True,
    help="Embedding model for the embed and cluster stages.",
)
@click.option("--anchor", "anchor_shop", help="The shop whose listings seed clusters.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True)
@click.option(
    "--embed-minutes",
    type=click.FloatRange(min=0, min_open=True),
    help="Embed for at most this many minutes, then cluster what is embedded; the rest "
    "of a backlog waits for the next run (a CPU runner's first nights).",
)
@click.option(
    "--reembed-before",
    type=_PastTime(),
    metavar="TIME",
    help="Also embed again the listings whose vector is older than TIME, as `embed "
    "--reembed-before` (after an upgrade that reads photos differently); with "
    "--embed-minutes, later runs with the same TIME go on where this one stopped.",
)
@click.pass_context
def run(
    ctx, shops_file, model_name, anchor_shop, device, batch_size, embed_minutes, reembed_before
) -> None:
    """The nightly job: scrape, embed, cluster, in order; stops at the first failed stage.

    \b
    Example:
        DATABASE_URL=postgresql://... bikematch run --shops shops.yaml
    """
    from bikematch import pipeline
    from bikematch.progress import embedding_progress
    from bikematch.rates import refresh_if_needed
    from embedder.job import EmbedSettings
    from perception_models import MODELS
    from scrapers.params import load_shops

    shops = load_shops(shops_file)
    url = _ready_database()
    stage = "scrape"
    try:
        click.echo("== scrape")
        crawls = _scrape_stage(url, shops, ctx.obj["verbose"])
        _print_scrape_summary(crawls)
        if sum(crawl.stored for crawl in crawls) == 0:
            raise pipeline.StageFailed("no listing was stored from any shop")
        stage = "embed"
        click.echo("== embed")
        model = _load_embedding_model(model_name, device, None)
        settings = EmbedSettings(
            batch_size=batch_size,
            choose_precision=True,
            fetch=_fetch_settings(False, None),
            max_seconds=None if embed_minutes is None else embed_minutes * 60,
            reembed_before=reembed_before,
        )
        with embedding_progress(model.name) as progress:
            summary = pipeline.embed(url, model, settings, progress)
        for line in summary.lines():
            click.echo(line)
        stage = "cluster"
        click.echo("== cluster")
        for line in refresh_if_needed(url):
            click.echo(line)
        dbt_vars = {"embedding_model": model_name}
        if model_name in MODELS:
            dbt_vars["match_threshold"] = MODELS[model_name].default_threshold
        if anchor_shop:
            dbt_vars["anchor_shop"] = anchor_shop
        clustered = pipeline.cluster(
            url, dbt_vars, on_model=lambda line: click.echo(f"  dbt: {line}", err=True)
        )
        for line in clustered.lines():
            click.echo(line)
    except (pipeline.StageFailed, DatabaseError, click.ClickException) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        click.echo(f"error: the {stage} stage failed: {message}", err=True)
        sys.exit(1)


@cli.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8377,
    show_default=True,
    help="Port of the local demo shops (listing URLs include it: keep it fixed).",
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False),
    default=".bikematch/report",
    show_default=True,
    help="Where to write the HTML report.",
)
def demo(port, report_dir) -> None:
    """The whole job, offline, on a generated catalogue served as four local shops.

    Scrapes them with the real spiders, embeds with minilm-effnet-lite0 (no
    download), clusters with dbt, prints a summary and its own precision and
    recall, and writes the HTML report. A second run only does what changed.

    \b
    Example:
        bikematch demo && open .bikematch/report/index.html
    """
    from pathlib import Path

    from bikematch.demo.run import run_demo

    url = resolve_url(load_settings())
    work_dir = Path(".bikematch") / "demo"
    try:
        run_demo(url, work_dir, port, echo=click.echo)
    except OSError as exc:
        if "Address already in use" in str(exc):
            raise click.ClickException(f"port {port} is in use: pass --port") from exc
        raise
    from bikematch.report import write_report

    index = write_report(url, Path(report_dir), image_cache=work_dir / "image-cache")
    click.echo(f"report: {index}")


@cli.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=".bikematch/report",
    show_default=True,
    help="Directory for index.html and thumbnails.",
)
@click.option(
    "--image-cache",
    type=click.Path(file_okay=False),
    default=".bikematch/image-cache",
    show_default=True,
    help="The embedder's image cache, for local thumbnails.",
)
def report(out_dir, image_cache) -> None:
    """Write a static HTML page of the clusters: images side by side, prices, spreads.

    \b
    Example:
        bikematch report --out public/ && open public/index.html
    """
    from pathlib import Path

    from bikematch.report import write_report

    url = resolve_url(load_settings())
    _require_clusters(url, current=True)
    click.echo(str(write_report(url, Path(out_dir), image_cache=Path(image_cache))))


def _require_clusters(url: str, current: bool = False) -> None:
    """A one-line error where `bikematch cluster` has not built the cluster tables yet
    (or, with `current`, an earlier bikematch built them, without today's columns)."""
    from bikematch.status import marts_are_current

    with connect(url) as conn:
        found = conn.execute(
            "select to_regclass('master_bikes') is not null and"
            " to_regclass('bike_clusters') is not null"
        ).fetchone()[0]
        outdated = found and current and not marts_are_current(conn)
    if not found:
        raise click.ClickException(
            "no clusters yet: run `bikematch cluster` (or `bikematch run`) first"
        )
    if outdated:
        raise click.ClickException(
            "the clusters were built by an earlier bikematch: run `bikematch cluster` to"
            " rebuild them"
        )


@cli.command()
@click.option("--image", help="A photo: a file path or an http(s) URL.")
@click.option("--text", help="A title or description to search for.")
@click.option("--model", "model_name", default="pe-core-l14-336", show_default=True)
@click.option("-k", "count", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option(
    "--threshold", type=float, default=0.0, show_default=True, help="Lowest similarity to show."
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option(
    "--allow-private-hosts", is_flag=True, help="Let --image be a URL on a private address."
)
def search(image, text, model_name, count, threshold, device, allow_private_hosts) -> None:
    """The listings nearest to a photo or a text (through match_bikes and the HNSW index).

    \b
    Example:
        bikematch search --text "Gazelle Ultimate C380 500Wh" -k 5
    """
    from bikematch.search import read_photo, search_listings
    from embedder.decode import DecodeError
    from embedder.fetch import FetchError

    if bool(image) == bool(text):
        raise click.UsageError("give exactly one of --image and --text")
    photo = None
    if image:  # read before the model loads: a wrong path fails at once
        try:
            photo = read_photo(image, _fetch_settings(allow_private_hosts, "off"))
        except (OSError, FetchError, DecodeError) as exc:
            raise click.ClickException(f"cannot read {image}: {exc}") from exc
    url = _ready_database()
    _require_vectors(url, model_name)  # before the model loads, too
    model = _load_embedding_model(model_name, device, None)
    rows = search_listings(url, model, image=photo, text=text, count=count, threshold=threshold)
    if not rows:
        click.echo("no listing found")
    for row in rows:
        shop, name, price, currency, listing_url, similarity, gone_since = row
        price_text = f"{currency or ''} {price}" if price is not None else "-"
        gone = f"  (no longer listed; last seen {gone_since:%Y-%m-%d})" if gone_since else ""
        click.echo(f"{similarity:.3f}  {shop:22}  {price_text:>12}  {name}  {listing_url}{gone}")


def _require_vectors(url: str, model_name: str) -> None:
    """A one-line error, naming the models that have vectors, where this one has none."""
    with connect(url) as conn:
        models = [
            name
            for (name,) in conn.execute(
                "select name from embedding_models as model where exists"
                " (select from vector_storage as vector where vector.model = model.name)"
                " order by name"
            )
        ]
    if model_name not in models:
        have = f"vectors exist for {', '.join(models)}" if models else "no model has vectors yet"
        raise click.ClickException(
            f"no vectors for model {model_name} ({have}): run `bikematch embed --model"
            f" {model_name}` first, or search with --model"
        )


@cli.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--shop", required=True, help="The webshop these listings belong to.")
@click.option("--delimiter", help="CSV delimiter (guessed when not given).")
@click.option(
    "--map",
    "mappings",
    multiple=True,
    metavar="FIELD=COLUMN",
    help="Which column fills a field: url, name, price, currency, image_url, brand, "
    "gtin, sku (repeatable).",
)
@click.option("--currency", help="ISO 4217 currency for prices without one.")
@click.option(
    "--encoding",
    help="The file's text encoding, e.g. cp1252 (default: UTF-8, or as its byte-order mark says).",
)
def import_command(file, shop, delimiter, mappings, currency, encoding) -> None:
    """Load listings from a CSV or JSONL file (a shop feed, a benchmark) into scraped_bikes.

    The same upsert as scraped listings: rerunning changes nothing, a changed
    price adds one price_history row. `url` may be any unique key of the shop.

    \b
    Example:
        bikematch import feed.csv --shop abt.com --map url=id --map name=title
    """
    from pathlib import Path

    from bikematch.importing import ImportError_, import_file, parse_mapping

    try:
        mapping = parse_mapping(list(mappings))  # before starting a database for nothing
        with connect(_ready_database()) as conn:
            summary = import_file(
                conn, Path(file), shop, mapping, delimiter, currency, encoding=encoding
            )
    except ImportError_ as exc:
        raise click.ClickException(str(exc)) from exc
    for line in summary.lines():
        click.echo(line)


_COMPLETE_OPTION = click.option(
    "--complete",
    is_flag=True,
    help="The file lists every match among its shops' listings (as public benchmarks "
    "do): a listing it never names matches nothing, and merging it counts as a false "
    "merge. Without it only the named listings are scored.",
)


@cli.command("eval")
@click.option(
    "--truth",
    "truth_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="CSV with webshop_a, url_a, webshop_b, url_b: every listed pair matches.",
)
@click.option(
    "--model",
    "model_name",
    default="pe-core-l14-336",
    show_default=True,
    help="The model whose similarities to show for false merges and misses.",
)
@_COMPLETE_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object with the scores.")
def eval_command(truth_file, model_name, complete, as_json) -> None:
    """Score master_bikes against labelled matches: pairwise and B-cubed precision/recall.

    Every listed pair is a match; every other cross-shop pair of listed listings
    is not (with --complete: of all listings of the file's shops). Also lists
    the worst false merges and misses with both titles.

    \b
    Example:
        bikematch eval --truth labelled_pairs.csv --json
    """
    import json

    from bikematch.evaluation import evaluate_truth, read_truth

    try:
        pairs = read_truth(truth_file)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    url = resolve_url(load_settings())
    _require_clusters(url)
    with connect(url) as conn:
        result = evaluate_truth(conn, pairs, model_name, complete=complete)
    if result.listed and result.missing == result.listed:
        raise click.ClickException(
            f"none of the {result.listed} listings {truth_file} names is in the database"
            " (as webshop and url exactly as stored)"
        )
    if as_json:
        click.echo(json.dumps(result.as_json()))
    else:
        for line in result.lines():
            click.echo(line)


def _sweep(text: str) -> list[float]:
    start, stop, step = (float(part) for part in text.split(":"))
    values, value = [], start
    while value <= stop + 1e-9:
        values.append(round(value, 4))
        value += step
    return values


@cli.command()
@click.option("--truth", "truth_file", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "model_name", default="pe-core-l14-336", show_default=True)
@click.option("--anchor", "anchor_shop", help="The shop whose listings seed clusters.")
@click.option(
    "--thresholds",
    default="0.70:0.98:0.02",
    show_default=True,
    help="START:STOP:STEP of the similarity thresholds to try.",
)
@click.option(
    "--weights",
    default="0.3:0.7:0.2",
    show_default=True,
    help="START:STOP:STEP of image weights to try (when listings have images).",
)
@_COMPLETE_OPTION
def calibrate(truth_file, model_name, anchor_shop, thresholds, weights, complete) -> None:
    """Sweep the match threshold (and image/text weight) on labelled pairs; print the curve.

    Clusters at each setting with dbt and scores it like `bikematch eval`; ends
    with the database clustered at the best setting.

    \b
    Example:
        bikematch calibrate --truth labelled_pairs.csv --model minilm-effnet-lite0
    """
    from bikematch.calibration import calibrate as sweep
    from bikematch.calibration import has_images
    from bikematch.dbt import run_dbt
    from bikematch.evaluation import read_truth

    url = resolve_url(load_settings())
    pairs = read_truth(truth_file)
    dbt_vars = {"anchor_shop": anchor_shop} if anchor_shop else {}
    run_dbt(["run"], url, dbt_vars={**dbt_vars, "embedding_model": model_name}, capture=True)
    weight_values = _sweep(weights) if has_images(url, model_name) else [None]
    click.echo(f"{'threshold':>9} {'image w':>7} {'precision':>9} {'recall':>7} {'F1':>7}")

    def show(result):
        weight = "-" if result.image_weight is None else f"{result.image_weight:.2f}"
        click.echo(
            f"{result.threshold:>9.3f} {weight:>7} {result.precision:>9.4f} "
            f"{result.recall:>7.4f} {result.f1:>7.4f}"
        )

    results = sweep(
        url, pairs, model_name, _sweep(thresholds), weight_values, dbt_vars, show, complete
    )
    best = results[0]
    final = {**dbt_vars, "embedding_model": model_name, "match_threshold": best.threshold}
    if best.image_weight is not None:
        final["image_weight"] = best.image_weight
    run_dbt(["build"], url, dbt_vars=final, capture=True)
    click.echo(
        f"best: threshold {best.threshold}"
        + (f", image weight {best.image_weight}" if best.image_weight is not None else "")
        + f" (F1 {best.f1:.4f}); clustered at it"
    )


def main() -> None:
    cli(prog_name="bikematch")


if __name__ == "__main__":
    main()
