"""The `bikematch` command line: each command a few lines over the application modules.

The commands live by group: `database` (db), `scraping` (scrape, extract, import),
`embedding` (embed), `clustering` (cluster, rates, eval, calibrate), `matches` (explain,
link, unlink, links), `job` (run, demo),
`results` (report, search) and `serving` (serve). Every problem the user can fix ends as one line on
stderr, `error: ...`, and exit code 2.
"""

from __future__ import annotations

import logging
import sys

import click
import psycopg

from bikematch import __version__
from bikematch.app.cli.options import App
from bikematch.app.errors import UserError
from bikematch.core.database import DatabaseError
from bikematch.core.settings import SettingsError


def _fail(message: str, code: int = 2):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Turns the errors a user can fix into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        from bikematch.app.pipeline import StageFailed
        from scrapers.params import ShopConfigError

        try:
            return super().invoke(ctx)
        except StageFailed as exc:
            _fail(str(exc), code=1)
        except (UserError, DatabaseError, ShopConfigError, SettingsError) as exc:
            _fail(str(exc))
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            _fail(exc.format_message() + hint)
        except click.ClickException as exc:
            _fail(exc.format_message())
        except psycopg.OperationalError as exc:  # the server went away, a timeout, a lock
            reason = str(exc).strip().splitlines()
            _fail(
                f"the database ended the command: {reason[0] if reason else exc} "
                "(what was stored before stays; run the command again to go on)"
            )


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="bikematch")
@click.option("-v", "--verbose", is_flag=True, help="Log debug details to stderr.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Find the same e-bike across webshops and compare its offers.

    The database is DATABASE_URL (environment or .env); when it is unset,
    an embedded Postgres with pgvector runs under ./.bikematch/pgdata.

    \b
    Example:
        bikematch db init
    """
    ctx.obj = App(verbose=verbose)
    if verbose:
        logging.basicConfig(
            level=logging.DEBUG, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )


def _register() -> None:
    from bikematch.app.cli import (
        clustering,
        database,
        embedding,
        job,
        matches,
        results,
        scraping,
        serving,
    )

    for module in (database, scraping, embedding, clustering, matches, job, results, serving):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="bikematch")


if __name__ == "__main__":
    main()
