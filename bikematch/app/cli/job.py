"""The whole job: `bikematch run` (the nightly one) and `bikematch demo`."""

from __future__ import annotations

from pathlib import Path

import click

from bikematch.app.cli.clustering import dbt_progress
from bikematch.app.cli.options import (
    App,
    anchor_option,
    batch_size_option,
    compile_option,
    device_option,
    dtype_option,
    echo_lines,
    load_shops,
    model_option,
    pass_app,
    reembed_before_option,
    shops_option,
)
from bikematch.app.cli.scraping import scrape_progress
from bikematch.app.demo.catalogue import DEFAULT_PRODUCTS, DEFAULT_SEED
from bikematch.app.pipeline import JobOptions, JobReport


class _PrintedReport(JobReport):
    """The job's summaries on stdout, its progress on stderr."""

    def __init__(self, progress_every: float) -> None:
        self.progress_every = progress_every

    def stage(self, name: str) -> None:
        click.echo(f"== {name}")

    def scrape_progress(self, shop: str, pages: int, items: int) -> None:
        scrape_progress(shop, pages, items)

    def scraped(self, crawls) -> None:
        from bikematch.app.pipeline import crawl_table

        echo_lines(crawl_table(crawls))

    def embedding_progress(self, model_name: str):
        from bikematch.app.progress import embedding_progress

        return embedding_progress(model_name, self.progress_every)

    def embedding_notice(self, line: str) -> None:
        click.echo(line, err=True)

    def embedded(self, summary) -> None:
        echo_lines(summary.lines())

    def rates(self, lines: list[str]) -> None:
        echo_lines(lines)

    def dbt_model(self, line: str) -> None:
        dbt_progress(line)

    def clustered(self, summary) -> None:
        echo_lines(summary.lines())


@click.command()
@shops_option
@model_option(help="Embedding model for the embed and cluster stages.")
@anchor_option
@device_option
@dtype_option
@compile_option
@batch_size_option
@click.option(
    "--scrape-minutes",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop scraping after this many minutes and go on with what was stored; each "
    "shop's summary line says it stopped early (a slow shop cannot starve clustering).",
)
@click.option(
    "--embed-minutes",
    type=click.FloatRange(min=0, min_open=True),
    help="Embed for at most this many minutes, then cluster what is embedded; the rest "
    "of a backlog waits for the next run (a CPU runner's first nights).",
)
@reembed_before_option(
    "Also embed again the listings whose vector is older than TIME, as `embed "
    "--reembed-before` (after an upgrade that reads photos differently); with "
    "--embed-minutes, later runs with the same TIME go on where this one stopped."
)
@pass_app
def run(
    app: App,
    shops_file,
    model_name,
    anchor_shop,
    device,
    dtype,
    compile_model,
    batch_size,
    scrape_minutes,
    embed_minutes,
    reembed_before,
) -> None:
    """The nightly job: scrape, embed, cluster, in order; stops at the first failed stage.

    \b
    Example:
        DATABASE_URL=postgresql://... bikematch run --shops shops.yaml
    """
    from bikematch.app.pipeline import run_job

    shops = load_shops(app, shops_file)
    if anchor_shop is not None and anchor_shop not in {shop.name for shop in shops}:
        raise click.BadParameter(
            f"{anchor_shop} is none of the configured shops"
            f" ({', '.join(shop.name for shop in shops)})",
            param_hint="--anchor",
        )
    url = app.ready_database()
    options = JobOptions(
        model_name=model_name,
        anchor_shop=anchor_shop,
        device=device,
        dtype=dtype,
        compile_model=compile_model,
        batch_size=batch_size,
        scrape_minutes=scrape_minutes,
        embed_minutes=embed_minutes,
        reembed_before=reembed_before,
        verbose=app.verbose,
    )
    run_job(app.settings, url, shops, options, _PrintedReport(app.settings.progress_every))


@click.command()
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
@click.option(
    "--products",
    type=click.IntRange(1, 5000),
    default=DEFAULT_PRODUCTS,
    show_default=True,
    help="How many products the generated catalogue holds (look-alike variants included).",
)
@click.option(
    "--seed",
    type=int,
    default=DEFAULT_SEED,
    show_default=True,
    help="Which catalogue to generate: another seed draws other bikes, prices and wordings.",
)
@pass_app
def demo(app: App, port, report_dir, products, seed) -> None:
    """The whole job, offline, on a generated catalogue served as four local shops.

    Scrapes them with the real spiders, embeds with minilm-effnet-lite0 (no
    download), clusters with dbt, prints a summary and its own precision and
    recall, and writes the HTML report. A second run only does what changed.

    \b
    Example:
        bikematch demo && open .bikematch/report/index.html
    """
    from bikematch.app.demo.run import run_demo
    from bikematch.app.report import write_report

    url = app.ready_database()
    try:
        run_demo(
            app.settings,
            url,
            Path(".bikematch") / "demo",
            port,
            echo=click.echo,
            products=products,
            seed=seed,
        )
    except OSError as exc:
        if "Address already in use" in str(exc):
            raise click.ClickException(f"port {port} is in use: pass --port") from exc
        raise
    index = write_report(url, Path(report_dir), image_cache=app.settings.image_cache)
    click.echo(f"report: {index}")


COMMANDS = [run, demo]
