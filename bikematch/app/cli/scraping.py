"""Getting listings in: `bikematch scrape`, `extract` and `import`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bikematch.app.cli.options import App, echo_lines, load_shops, pass_app, shops_option


@click.command()
@shops_option
@click.option("--shop", "only", multiple=True, metavar="NAME", help="Only this shop (repeatable).")
@click.option("--httpcache", is_flag=True, help="Replay cached pages (for development).")
@pass_app
def scrape(app: App, shops_file, only, httpcache) -> None:
    """Scrape the configured webshops into scraped_bikes.

    \b
    Example:
        bikematch scrape --shops shops.yaml --shop fietsvoordeelshop.nl
    """
    from bikematch.app import pipeline

    shops = load_shops(app, shops_file, only)
    url = app.ready_database()
    click.echo(f"scraping {len(shops)} shop(s): {', '.join(s.name for s in shops)}", err=True)
    crawls = pipeline.scrape(
        app.settings,
        url,
        shops,
        verbose=app.verbose,
        overrides={"HTTPCACHE_ENABLED": True} if httpcache else None,
        progress=scrape_progress,
    )
    echo_lines(pipeline.crawl_table(crawls))


def scrape_progress(shop: str, pages: int, items: int) -> None:
    click.echo(f"  {shop}: {pages} pages, {items} listings", err=True)


@click.command()
@click.argument("page", type=click.File("rb"))
@click.option("--url", required=True, help="The URL the page was fetched from (for links).")
def extract(page, url) -> None:
    """Print the main product of a saved product page as JSON.

    Keys: name, price, currency, image_url, brand, gtin, sku, availability.

    \b
    Example:
        bikematch extract page.html --url https://shop.example/bikes/x1
    """
    from scrapers.extract import extract_product

    click.echo(json.dumps(extract_product(page.read(), url), ensure_ascii=False, indent=2))


@click.command("import")
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
@pass_app
def import_command(app: App, file, shop, delimiter, mappings, currency, encoding) -> None:
    """Load listings from a CSV or JSONL file (a shop feed, a benchmark) into scraped_bikes.

    The same upsert as scraped listings: rerunning changes nothing, a changed
    price adds one price_history row. `url` may be any unique key of the shop.

    \b
    Example:
        bikematch import feed.csv --shop abt.com --map url=id --map name=title
    """
    from bikematch.app.importing import ImportError_, import_file, parse_mapping
    from bikematch.core.database import connect
    from bikematch.core.normalise import currency_code

    if currency is not None:
        if currency_code(currency) is None:
            raise click.BadParameter(
                f"{currency!r} is not an ISO 4217 currency (EUR, GBP, ...)",
                param_hint="--currency",
            )
        currency = currency_code(currency)
    try:
        mapping = parse_mapping(list(mappings))  # before starting a database for nothing
        with connect(app.ready_database()) as conn:
            summary = import_file(
                conn, Path(file), shop, mapping, delimiter, currency, encoding=encoding
            )
    except ImportError_ as exc:
        raise click.ClickException(str(exc)) from exc
    echo_lines(summary.lines())


COMMANDS = [scrape, extract, import_command]
