"""What the clusters give: `bikematch report` and `bikematch search`."""

from __future__ import annotations

from pathlib import Path

import click

from bikematch.app.cli.options import (
    App,
    allow_private_hosts_option,
    device_option,
    model_option,
    pass_app,
)


@click.command()
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
    help="The embedder's image cache, for local thumbnails [default: BIKEMATCH_IMAGE_CACHE, "
    "else .bikematch/image-cache].",
)
@pass_app
def report(app: App, out_dir, image_cache) -> None:
    """Write a static HTML page of the clusters: images side by side, prices, spreads.

    \b
    Example:
        bikematch report --out public/ && open public/index.html
    """
    from bikematch.app.clusters import require_clusters
    from bikematch.app.report import write_report

    url = app.database_url()
    require_clusters(url, current=True)
    cache = Path(image_cache) if image_cache else app.settings.image_cache
    click.echo(str(write_report(url, Path(out_dir), image_cache=cache)))


@click.command()
@click.option("--image", help="A photo: a file path or an http(s) URL.")
@click.option("--text", help="A title or description to search for.")
@model_option()
@click.option("-k", "count", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option(
    "--threshold", type=float, default=0.0, show_default=True, help="Lowest similarity to show."
)
@device_option
@allow_private_hosts_option("Let --image be a URL on a private address.")
@pass_app
def search(app: App, image, text, model_name, count, threshold, device, allow_private_hosts):
    """The listings nearest to a photo or a text (through match_bikes and the HNSW index).

    \b
    Example:
        bikematch search --text "Gazelle Ultimate C380 500Wh" -k 5
    """
    from bikematch.app import pipeline
    from bikematch.app.search import read_photo, require_vectors, search_listings
    from embedder.decode import DecodeError
    from embedder.fetch import FetchError

    if bool(image) == bool(text):
        raise click.UsageError("give exactly one of --image and --text")
    photo = None
    if image:  # read before the model loads: a wrong path fails at once
        fetch = pipeline.fetch_settings(
            app.settings, allow_private_hosts=allow_private_hosts, cache_dir="off"
        )
        try:
            photo = read_photo(image, fetch)
        except (OSError, FetchError, DecodeError) as exc:
            raise click.ClickException(f"cannot read {image}: {exc}") from exc
    url = app.ready_database()
    require_vectors(url, model_name)  # before the model loads, too
    model = pipeline.load_embedding_model(app.settings, model_name, device)
    rows = search_listings(url, model, image=photo, text=text, count=count, threshold=threshold)
    if not rows:
        click.echo("no listing found")
    for row in rows:
        price = f"{row['currency'] or ''} {row['price']:.2f}" if row["price"] is not None else "-"
        gone = row["gone_since"]
        gone = f"  (no longer listed; last seen {gone:%Y-%m-%d})" if gone else ""
        click.echo(
            f"{row['similarity']:.3f}  {row['shop']:22}  {price:>12}  {row['title']}"
            f"  {row['url']}{gone}"
        )


COMMANDS = [report, search]
