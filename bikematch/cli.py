"""The `bikematch` command line: a thin layer over the library modules."""

from __future__ import annotations

import logging
import sys

import click

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
        try:
            return super().invoke(ctx)
        except DatabaseError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="bikematch")
@click.option("-v", "--verbose", is_flag=True, help="Log debug details to stderr.")
def cli(verbose: bool) -> None:
    """Find the same e-bike across webshops and compare its offers.

    The database is DATABASE_URL (environment or .env); when it is unset,
    an embedded Postgres with pgvector runs under ./.bikematch/pgdata.

    \b
    Example:
        bikematch db init
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
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
    """Say which database is in use and whether it is reachable.

    \b
    Example:
        bikematch db status
    """
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


def main() -> None:
    cli(prog_name="bikematch")


if __name__ == "__main__":
    main()
