"""Listings into products: `bikematch cluster`, `rates`, `eval` and `calibrate`."""

from __future__ import annotations

import json

import click

from bikematch.app.cli.options import (
    App,
    anchor_option,
    complete_option,
    echo_lines,
    model_option,
    pass_app,
    truth_option,
)


def _parse_vars(pairs: tuple[str, ...]) -> dict:
    import yaml

    parsed = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--var")
        parsed[name] = yaml.safe_load(value)
    return parsed


def dbt_progress(line: str) -> None:
    click.echo(f"  dbt: {line}", err=True)


@click.command()
@model_option(
    help="Embedding model whose vectors to cluster [default: dbt_project.yml's]; its "
    "registered threshold applies unless --threshold says otherwise.",
    default=None,
)
@anchor_option
@click.option("--threshold", type=float, help="Cosine similarity at which listings match.")
@click.option("--var", "extra_vars", multiple=True, metavar="NAME=VALUE", help="Any dbt var.")
@click.option("--full-refresh", is_flag=True, help="Rebuild incremental models from scratch.")
@pass_app
def cluster(app: App, model_name, anchor_shop, threshold, extra_vars, full_refresh) -> None:
    """Cluster listings into products: `dbt build` on the bikematch dbt project.

    Prints a line per model as dbt builds it and a summary (-v: dbt's own log).

    \b
    Example:
        bikematch cluster --model pe-core-l14-336 --anchor fietsvoordeelshop.nl
    """
    from bikematch.app.clusters import build_clusters, check_anchor, cluster_vars

    dbt_vars = cluster_vars(model_name, anchor_shop, threshold, _parse_vars(extra_vars))
    url = app.database_url()
    check_anchor(url, dbt_vars)
    summary = build_clusters(
        url,
        dbt_vars,
        full_refresh=full_refresh,
        on_model=dbt_progress,
        show_dbt_log=app.verbose,
    )
    echo_lines(summary.lines()[:1])
    echo_lines(summary.notes, err=True)


@click.command()
@click.option(
    "--url",
    "source_url",
    help="Where to read the rates (the ECB's eurofxref XML format). "
    "[default: BIKEMATCH_RATES_URL, else the ECB's daily file]",
)
@pass_app
def rates(app: App, source_url) -> None:
    """Store the ECB's euro reference rates, for comparing prices across currencies.

    The dbt models convert prices in other currencies through them (`bikematch run`
    fetches them itself when the listings are priced in more than one currency).
    Rates written by hand into exchange_rates (source other than 'ecb') are kept.

    \b
    Example:
        bikematch rates && bikematch cluster --var report_currency=EUR
    """
    from bikematch.app.rates import RatesError, fetch_rates, store_rates
    from bikematch.core.database import connect

    try:
        fetched = fetch_rates(source_url or app.settings.rates_url)
    except RatesError as exc:
        raise click.ClickException(str(exc)) from exc
    with connect(app.ready_database()) as conn:
        written = store_rates(conn, fetched)
    kept = len(fetched.per_euro) - written
    click.echo(
        f"stored {written} exchange rates of {fetched.day}"
        + (f"; kept {kept} stored ones (newer, or written by hand)" if kept else "")
    )


def _read_truth(truth_file):
    from bikematch.app.evaluation import read_truth

    try:
        return read_truth(truth_file)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("eval")
@truth_option()
@model_option(help="The model whose similarities to show for false merges and misses.")
@complete_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object with the scores.")
@pass_app
def eval_command(app: App, truth_file, model_name, complete, as_json) -> None:
    """Score master_bikes against labelled matches: pairwise and B-cubed precision/recall.

    Every listed pair is a match, as are the listings labelled with one product;
    every other cross-shop pair of listed listings is not (with --complete: of
    all listings of the file's shops). Also lists the worst false merges and
    misses with both titles.

    \b
    Example:
        bikematch eval --truth labelled_pairs.csv --json
        bikematch eval --truth products.csv   # webshop,url,product_id
    """
    from bikematch.app.clusters import require_clusters
    from bikematch.app.evaluation import evaluate_truth
    from bikematch.core.database import connect

    pairs = _read_truth(truth_file)
    url = app.database_url()
    require_clusters(url)
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
        echo_lines(result.lines())


def _sweep(text: str, option: str) -> list[float]:
    try:
        start, stop, step = (float(part) for part in text.split(":"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not START:STOP:STEP", param_hint=option) from None
    if step <= 0 or stop < start:
        raise click.BadParameter(f"{text!r}: give START <= STOP and STEP > 0", param_hint=option)
    values, value = [], start
    while value <= stop + 1e-9:
        values.append(round(value, 4))
        value += step
    return values


@click.command()
@truth_option()
@model_option()
@anchor_option
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
@complete_option
@pass_app
def calibrate(app: App, truth_file, model_name, anchor_shop, thresholds, weights, complete) -> None:
    """Sweep the match threshold (and image/text weight) on labelled pairs; print the curve.

    Clusters at each setting with dbt and scores it like `bikematch eval`; ends
    with the database clustered at the best setting.

    \b
    Example:
        bikematch calibrate --truth labelled_pairs.csv --model minilm-effnet-lite0
    """
    from bikematch.app.calibration import calibrate as sweep
    from bikematch.app.clusters import has_images

    pairs = _read_truth(truth_file)
    threshold_values = _sweep(thresholds, "--thresholds")
    url = app.database_url()
    weight_values = _sweep(weights, "--weights") if has_images(url, model_name) else [None]
    click.echo(f"{'threshold':>9} {'image w':>7} {'precision':>9} {'recall':>7} {'F1':>7}")

    def show(result):
        weight = "-" if result.image_weight is None else f"{result.image_weight:.2f}"
        click.echo(
            f"{result.threshold:>9.3f} {weight:>7} {result.precision:>9.4f} "
            f"{result.recall:>7.4f} {result.f1:>7.4f}"
        )

    results, _ = sweep(
        url, pairs, model_name, threshold_values, weight_values, anchor_shop, show, complete
    )
    best = results[0]
    click.echo(
        f"best: threshold {best.threshold}"
        + (f", image weight {best.image_weight}" if best.image_weight is not None else "")
        + f" (F1 {best.f1:.4f}); clustered at it"
    )


COMMANDS = [cluster, rates, eval_command, calibrate]
