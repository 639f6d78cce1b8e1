"""`bikematch db`: migrations, the embedded server, what the database holds."""

from __future__ import annotations

import shlex

import click

from bikematch.app.cli.options import App, echo_lines, pass_app


@click.group()
def db() -> None:
    """Manage the database: migrations, the embedded server.

    \b
    Example:
        bikematch db init && bikematch db url
    """


@db.command("init")
@pass_app
def db_init(app: App) -> None:
    """Apply the migrations in sql/, then the SQL functions that changed (safe to run
    again: what is applied is skipped).

    \b
    Example:
        DATABASE_URL=postgresql://user:pw@host:5432/db bikematch db init
    """
    from bikematch.core.database import connect
    from bikematch.core.migrations import apply_migrations

    with connect(app.database_url()) as conn:
        applied = apply_migrations(conn)
    if applied:
        click.echo(f"applied {len(applied)} file(s): {', '.join(applied)}")
    else:
        click.echo("database is up to date")


@db.command("url")
@pass_app
def db_url(app: App) -> None:
    """Print the database URL in use (password masked); starts the embedded server if needed.

    \b
    Example:
        psql "$(bikematch db url)"
    """
    from bikematch.core.database import mask_password

    click.echo(mask_password(app.database_url()))


@db.command("stop")
@pass_app
def db_stop(app: App) -> None:
    """Stop the embedded server (data is kept; the next command starts it again).

    \b
    Example:
        bikematch db stop
    """
    from bikematch.core.database import stop_embedded

    settings = app.settings
    if not settings.embedded:
        click.echo("DATABASE_URL is set: there is no embedded server to stop")
    elif stop_embedded(settings.pgdata):
        click.echo(f"stopped the embedded server in {settings.pgdata}")
    else:
        click.echo(f"no embedded server is running in {settings.pgdata}")


@db.command("status")
@pass_app
def db_status(app: App) -> None:
    """Say which database is in use, whether it is reachable, and what it holds:
    migrations, listings per shop, vectors per model (pending, failed), clusters and
    exchange rates.

    \b
    Example:
        bikematch db status
    """
    from bikematch.app.status import database_status
    from bikematch.core.database import embedded_running

    settings = app.settings
    if settings.embedded:
        state = "running" if embedded_running(settings.pgdata) else "stopped"
        click.echo(f"embedded server in {settings.pgdata}: {state}")
        if state == "stopped":
            return
    echo_lines(database_status(app.database_url()))


@db.command("env")
@pass_app
def db_env(app: App) -> None:
    """Print `export PG...=...` lines for the database in use (for plain dbt or psql).

    \b
    Example:
        eval "$(bikematch db env)" && dbt build --profiles-dir .
    """
    from bikematch.app.dbt import dbt_env

    for name, value in dbt_env(app.database_url()).items():
        click.echo(f"export {name}={shlex.quote(value)}")


COMMANDS = [db]
