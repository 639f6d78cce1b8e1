"""serve: the embedding and visual-search service."""

from __future__ import annotations

import asyncio

import click

from bikematch.app.cli.options import (
    App,
    allow_private_hosts_option,
    compile_option,
    device_option,
    dtype_option,
    model_option,
    pass_app,
)
from bikematch.app.errors import UserError

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@click.command()
@model_option(help="The model the service embeds with: the one that embedded the catalogue.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@device_option
@dtype_option
@compile_option
@click.option(
    "--max-batch",
    type=click.IntRange(1, 4096),
    help="The most queued items embedded at once [default: 8 on CPU, where one core a "
    "batch of 8 beats larger ones; 128 on CUDA].",
)
@click.option(
    "--wait-ms",
    type=click.FloatRange(0, 1000),
    default=5.0,
    show_default=True,
    help="How long a batch waits for requests on their way (read, decoded) to join it.",
)
@click.option(
    "--max-queue",
    type=click.IntRange(1),
    default=512,
    show_default=True,
    help="Items waiting beyond which requests are answered 503 with Retry-After.",
)
@click.option(
    "--no-database",
    is_flag=True,
    help="Embed only: no /search, and no database is started or needed.",
)
@allow_private_hosts_option("Let /search fetch image_url from private addresses (testing).")
@pass_app
def serve(
    app: App,
    model_name,
    host,
    port,
    device,
    dtype,
    compile_model,
    max_batch,
    wait_ms,
    max_queue,
    no_database,
    allow_private_hosts,
) -> None:
    """Serve embeddings and visual search over HTTP for an app.

    POST / or /embed: the JSON contract of `embed --remote`. POST /search: a photo
    (multipart field `image`, or `image_url`) or a `text`, `k`, `shop` -> the nearest
    listings on sale with their cluster's cheapest offer. GET /health, GET /metrics.
    Set BIKEMATCH_SERVE_TOKEN to require a bearer token.

    \b
    Example:
        bikematch serve --model minilm-effnet-lite0 --port 8000
        curl -F image=@photo.jpg -F k=5 http://127.0.0.1:8000/search
    """
    from bikematch.app import pipeline
    from bikematch.app.search import require_vectors
    from bikematch.app.serve import ServeOptions, Service, serve_forever

    url = None
    if not no_database:
        url = app.ready_database()
        try:
            require_vectors(url, model_name)
        except UserError as exc:  # it can still embed (the catalogue, through it)
            click.echo(f"warning: /search finds nothing yet: {exc}", err=True)
    model = pipeline.load_embedding_model(
        app.settings, model_name, device, dtype, compile_model=compile_model
    )
    options = ServeOptions(
        host=host,
        port=port,
        token=app.settings.serve_token,
        max_batch=max_batch or (128 if model.device.type == "cuda" else 8),
        wait=wait_ms / 1000,
        max_queue=max_queue,
        fetch=pipeline.fetch_settings(
            app.settings, allow_private_hosts=allow_private_hosts, cache_dir="off"
        ),
    )
    if host not in LOOPBACK and not options.token:
        click.echo(
            f"warning: listening on {host} without BIKEMATCH_SERVE_TOKEN: anyone who can"
            " reach it can use it",
            err=True,
        )

    service = Service(model, url, options)

    def ready(bound: int) -> None:
        where = f"http://{host}:{bound}"
        compiled = service.batcher.compile_seconds
        if compiled is not None:
            click.echo(f"compiled the model in {compiled:.1f} s", err=True)
        click.echo(f"serving {model.name} on {model.device} at {where} (Ctrl-C stops)", err=True)

    try:
        asyncio.run(serve_forever(service, options, on_ready=ready))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # the port is taken, the address is not this machine's
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from exc


COMMANDS = [serve]
