"""What every command shares: the settings and database (`App`), and the options that
several commands take, declared once."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import click

from bikematch.app.pipeline import DEFAULT_MODEL
from bikematch.core.settings import Settings


class App:
    """The command's context: settings read once (on first use, so `--help` works with
    any environment) and the database they name."""

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_environment()
        return self._settings

    def database_url(self) -> str:
        """The database in use, as it is (no migrations applied)."""
        from bikematch.core.database import resolve_url

        return resolve_url(self.settings)

    def ready_database(self) -> str:
        """The database in use, with pending migrations applied."""
        from bikematch.app.pipeline import prepare_database

        return prepare_database(self.settings)


pass_app = click.make_pass_decorator(App)


def model_option(help: str = "The embedding model.", default: str | None = DEFAULT_MODEL):
    return click.option(
        "--model",
        "model_name",
        default=default,
        show_default=default is not None,
        help=help,
    )


def device_option(function):
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Where the model runs (auto: a CUDA GPU if torch sees one).",
    )(function)


def dtype_option(function):
    return click.option(
        "--dtype",
        type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
        default="auto",
        show_default=True,
        help="Inference precision. auto: bfloat16 weights on CUDA (float16 where the GPU "
        "lacks bfloat16), float32 on CPU; "
        "`bikematch embed check-precision` says whether bfloat16 is safe and faster on a CPU.",
    )(function)


def anchor_option(function):
    return click.option("--anchor", "anchor_shop", help="The shop whose listings seed clusters.")(
        function
    )


def batch_size_option(function):
    return click.option(
        "--batch-size",
        type=click.IntRange(1, 4096),
        help="Listings a batch [default: 32; on CUDA as many as half the free GPU memory "
        "holds, up to 512].",
    )(function)


def compile_option(function):
    return click.option(
        "--compile/--no-compile",
        "compile_model",
        default=None,
        help="Run the model as torch.compile graphs: compiled once a run (torch caches it "
        "for later runs), then faster [default: on CUDA].",
    )(function)


def shops_option(function):
    return click.option(
        "--shops",
        "shops_file",
        type=click.Path(dir_okay=False),
        help="The shops configuration. [default: BIKEMATCH_SHOPS, else shops.yaml]",
    )(function)


def allow_private_hosts_option(help: str):
    return click.option("--allow-private-hosts", is_flag=True, help=help)


def truth_option(help: str | None = None):
    return click.option(
        "--truth",
        "truth_file",
        required=True,
        type=click.Path(exists=True, dir_okay=False),
        help=help
        or "CSV of labelled pairs (webshop_a, url_a, webshop_b, url_b: every listed pair "
        "matches) or of listings labelled with their product (webshop, url, product_id).",
    )


def complete_option(function):
    return click.option(
        "--complete",
        is_flag=True,
        help="The file lists every match among its shops' listings (as public benchmarks "
        "do): a listing it never names matches nothing, and merging it counts as a false "
        "merge. Without it only the named listings are scored.",
    )(function)


def options(*decorators):
    """Several option decorators as one, applied in the order given."""

    def apply(function):
        return functools.reduce(lambda f, d: d(f), reversed(decorators), function)

    return apply


class PastTime(click.ParamType):
    """An ISO 8601 date or time, UTC unless it says otherwise; not in the future. (No
    'now': rerunning the same command would then start over instead of resuming.)"""

    name = "time"

    def convert(self, value, param, ctx):
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


def reembed_before_option(help: str):
    return click.option("--reembed-before", type=PastTime(), metavar="TIME", help=help)


def load_shops(app: App, shops_file: str | None, only: tuple[str, ...] = ()):
    """The configured shops (all, or those named in `only`)."""
    from scrapers.params import ShopConfigError
    from scrapers.params import load_shops as read

    path = shops_file or app.settings.shops_file
    shops = read(path)
    if only:
        unknown = sorted(set(only) - {shop.name for shop in shops})
        if unknown:
            raise ShopConfigError(f"{path}: no shop named {', '.join(unknown)}")
        shops = [shop for shop in shops if shop.name in only]
    return shops


def echo_lines(lines, err: bool = False) -> None:
    for line in lines:
        click.echo(line, err=err)
