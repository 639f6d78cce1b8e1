"""Getting listings in: `bikematch scrape`, `extract`, `import` and `shops`."""

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
@click.option(
    "--shop",
    help="The webshop these listings belong to [default: each row's webshop or shop column].",
)
@click.option("--delimiter", help="CSV delimiter (guessed when not given).")
@click.option(
    "--map",
    "mappings",
    multiple=True,
    metavar="FIELD=COLUMN",
    help="Which column fills a field: url, name, price, currency, image_url, brand, "
    "gtin, sku, availability, webshop (repeatable; the columns of Google Merchant feeds and "
    "Shopify or WooCommerce exports are known without it).",
)
@click.option("--currency", help="ISO 4217 currency for prices without one.")
@click.option(
    "--encoding",
    help="The file's text encoding, e.g. cp1252 (default: UTF-8, or as its byte-order mark says).",
)
@pass_app
def import_command(app: App, file, shop, delimiter, mappings, currency, encoding) -> None:
    """Load listings from a CSV, JSONL, JSON or Excel file (a feed, a catalogue) into scraped_bikes.

    The same upsert as scraped listings: rerunning changes nothing, a changed
    price adds one price_history row. `url` may be any unique key of the shop.
    Common column names (title, link, sale_price, image_link, vendor, mpn...)
    are recognised; the summary says which column filled each field. A file of
    several shops' listings names each row's shop in a webshop or shop column.

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


@click.group()
def shops() -> None:
    """Add a shop to shops.yaml in one command, and check what it would store."""


@shops.command("add")
@click.argument("url")
@click.option("--name", help="The shop's key [default: the URL's host without www.].")
@shops_option
@pass_app
def shops_add(app: App, url, name, shops_file) -> None:
    """Detect a shop's platform and add its entry to shops.yaml.

    Shopify (/products.json), WooCommerce (the Store API), sitemaps (robots.txt's
    Sitemap lines, /sitemap.xml), product pages linked from URL, else a css entry
    whose selectors you fill in. The entry is validated before it is kept.

    \b
    Example:
        bikematch shops add https://www.fietsvoordeelshop.nl/e-bikes
    """
    from bikematch.app.shops import add_shop

    path = Path(shops_file) if shops_file else app.settings.shops_file
    detected = add_shop(app.settings, path, url, name)
    entry = detected.entry
    click.echo(f"added {entry['name']} ({entry['platform']}) to {path}")
    echo_lines(f"  {note}" for note in detected.notes)
    click.echo(f"next: bikematch shops check {entry['name']}")


@shops.command("check")
@click.argument("name")
@click.option(
    "--pages",
    type=click.IntRange(1, 500),
    default=10,
    show_default=True,
    help="How many listings to read.",
)
@shops_option
@pass_app
def shops_check(app: App, name, pages, shops_file) -> None:
    """A dry run of one configured shop: what it would store for a few listings, the
    fields found on each, and any limit the crawl hit. Nothing is stored.

    \b
    Example:
        bikematch shops check fietsvoordeelshop.nl --pages 5
    """
    from bikematch.app.shops import check_shop

    path = Path(shops_file) if shops_file else app.settings.shops_file
    result = check_shop(app.settings, path, name, pages, verbose=app.verbose)
    echo_lines(result.lines())


COMMANDS = [scrape, extract, import_command, shops]
