"""`bikematch embed`: listings' images and titles into vectors, and its maintenance."""

from __future__ import annotations

import click

from bikematch.app.cli.options import (
    App,
    allow_private_hosts_option,
    batch_size_option,
    compile_option,
    device_option,
    dtype_option,
    echo_lines,
    model_option,
    options,
    pass_app,
    reembed_before_option,
)


@click.group(invoke_without_command=True)
@model_option(help="pe-core-l14-336, clip-vit-b-32, minilm-effnet-lite0 or tiny-random.")
@batch_size_option
@click.option("--limit", type=click.IntRange(1), help="Embed at most this many listings.")
@device_option
@dtype_option
@compile_option
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
    "--writers",
    type=click.IntRange(1, 32),
    help="Connections writing vectors at once [default: on CPU one per stream; on CUDA 4].",
)
@click.option(
    "--index",
    "index_mode",
    type=click.Choice(["auto", "keep", "rebuild"]),
    default="auto",
    show_default=True,
    help="The model's search index during the run: 'rebuild' writes without it and "
    "builds it once at the end (on parallel workers; searches go on), 'keep' inserts into "
    "it; 'auto' rebuilds for a backlog of 1,000 listings or more that is at least as "
    "large as what the model has stored (a first run, a re-embed of everything).",
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
@allow_private_hosts_option("Fetch images from private/loopback addresses (tests, intranets).")
@click.option("--cache-dir", help="Image cache directory ('off' for none).")
@click.option(
    "--max-minutes",
    type=click.FloatRange(min=0, min_open=True),
    help="Claim no new listings after this many minutes (the batches under way finish); "
    "the rest waits for the next run.",
)
@reembed_before_option(
    "Also embed again the listings whose vector is older than TIME (ISO 8601, UTC "
    "unless it says otherwise, e.g. the upgrade's): after an upgrade that reads photos "
    "differently. Rerun the same command, with the same TIME, to resume."
)
@click.pass_context
def embed(
    ctx,
    model_name,
    batch_size,
    limit,
    device,
    dtype,
    compile_model,
    workers,
    streams,
    writers,
    index_mode,
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
    from bikematch.app import pipeline
    from bikematch.app.progress import embedding_progress
    from embedder.job import EmbedSettings

    app: App = ctx.obj
    settings = app.settings
    # A bad model name or a missing device fails before a database starts.
    model = pipeline.load_embedding_model(
        settings, model_name, device, dtype, remote, compile_model
    )
    url = app.ready_database()
    embed_settings = EmbedSettings(
        batch_size=batch_size,
        limit=limit,
        workers=workers,
        streams=streams,
        writers=writers,
        index_mode=index_mode,
        text_only=text_only,
        image_weight=image_weight,
        fetch=pipeline.fetch_settings(
            settings,
            allow_private_hosts=allow_private_hosts,
            cache_dir=cache_dir,
            concurrency=fetch_concurrency,
        ),
        reembed_before=reembed_before,
        max_seconds=None if max_minutes is None else max_minutes * 60,
    )
    with embedding_progress(model.name, settings.progress_every) as progress:
        summary = pipeline.embed(url, model, embed_settings, progress, notice=_notice)
    echo_lines(summary.lines())


def _notice(line: str) -> None:
    click.echo(line, err=True)


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
@options(device_option, allow_private_hosts_option("Fetch images from private addresses."))
@pass_app
def embed_compare(app: App, models, sample, device, allow_private_hosts) -> None:
    """Cosine agreement of two models or backends on the same listings.

    Above 0.95 means practically identical.

    \b
    Example:
        bikematch embed compare --model clip-vit-b-32 --model remote:https://emb.example/embed
    """
    from bikematch.app import pipeline
    from embedder.compare import CompareError, compare_models

    if len(models) != 2:
        raise click.UsageError("give --model exactly twice")
    loaded = [
        pipeline.load_embedding_model(
            app.settings,
            name,
            device,
            remote=name.removeprefix("remote:") if name.startswith("remote:") else None,
        )
        for name in models
    ]
    url = app.ready_database()
    fetch = pipeline.fetch_settings(app.settings, allow_private_hosts=allow_private_hosts)
    try:
        lines = compare_models(url, loaded[0], loaded[1], sample, fetch)
    except CompareError as exc:
        raise click.ClickException(str(exc)) from exc
    echo_lines(lines)


@embed.command("check-precision")
@model_option()
@click.option("--sample", type=click.IntRange(2), default=32, show_default=True)
@options(device_option, allow_private_hosts_option("Fetch images from private addresses."))
@pass_app
def embed_check_precision(app: App, model_name, sample, device, allow_private_hosts) -> None:
    """Whether bfloat16 is safe and faster than float32 for a model on this machine.

    Embeds a sample of the catalogue's listings both ways and compares the vectors
    (every one must agree at cosine >= 0.999) and the time (at least 1.2x as fast);
    says which --dtype to give `embed` and `run`. Agreement depends on the photos, so
    check again when the catalogue changes much.

    \b
    Example:
        bikematch embed check-precision --model minilm-effnet-lite0
    """
    from bikematch.app import pipeline
    from embedder.compare import CompareError, check_precision

    model = pipeline.load_embedding_model(
        app.settings, model_name, device, "float32", compile_model=False
    )
    url = app.ready_database()
    fetch = pipeline.fetch_settings(app.settings, allow_private_hosts=allow_private_hosts)
    try:
        lines = check_precision(url, model, sample, fetch)
    except CompareError as exc:
        raise click.ClickException(str(exc)) from exc
    echo_lines(lines)


@embed.command("prune-cache")
@click.option("--cache-dir", help="Image cache directory.")
@pass_app
def embed_prune_cache(app: App, cache_dir) -> None:
    """Remove cached images that no listing's image URL names any more.

    The cache keeps every image the embedder fetched, so that reruns fetch nothing
    again and the report has thumbnails; on a long-lived machine it only grows.

    \b
    Example:
        bikematch embed prune-cache
    """
    from bikematch.app import pipeline
    from bikematch.core.database import connect
    from embedder.fetch import prune_cache
    from embedder.store import listing_image_urls

    cache = pipeline.fetch_settings(app.settings, cache_dir=cache_dir).cache_dir
    if cache is None:
        raise click.ClickException("the image cache is off (BIKEMATCH_IMAGE_CACHE=off)")
    with connect(app.ready_database()) as conn:
        removed, freed = prune_cache(cache, listing_image_urls(conn))
    click.echo(f"removed {removed} cached images ({freed / 2**20:.1f} MiB) from {cache}")


COMMANDS = [embed]
