"""Explaining and correcting matches: `bikematch explain`, `link`, `unlink`, `links`."""

from __future__ import annotations

import click

from bikematch.app.cli.options import App, echo_lines, model_option, pass_app

_LISTING_HELP = "A and B: listings, each by its URL (as stored) or its id."


@click.command()
@click.argument("first", metavar="A")
@click.argument("second", metavar="B")
@model_option(
    help="The embedding model whose vectors to compare [default: the one the clusters "
    "were built with].",
    default=None,
)
@pass_app
def explain(app: App, first, second, model_name) -> None:
    """Say how the matching judges two listings, and why.

    Prints their image, text and combined similarity, what each title states
    (battery, frame type, year, motor, model numbers), each piece of evidence and
    conflict, the score against the threshold, the decision with its rule, and the
    clusters the last build put them in. A and B: listings by URL or id.

    \b
    Example:
        bikematch explain https://shop-a.nl/p/c7-dames https://shop-b.nl/c7-heren
    """
    from bikematch.app.links import explain as explain_pair

    echo_lines(explain_pair(app.ready_database(), first, second, model_name).lines())


def _decision_command(decision: str, summary: str):
    example = (
        f"\n\n\b\nExample:\n    bikematch {decision} https://shop-a.nl/p/c7-dames"
        f' https://shop-b.nl/c7 --note "checked by hand"'
    )

    @click.command(name=decision, help=summary + example, epilog=_LISTING_HELP)
    @click.argument("first", metavar="A")
    @click.argument("second", metavar="B")
    @click.option("--note", help="Why (kept with the decision, shown by `bikematch links`).")
    @click.option("--forget", is_flag=True, help="Remove the decision stored on the pair.")
    @pass_app
    def command(app: App, first, second, note, forget) -> None:
        from bikematch.app.links import forget_decision, set_decision

        url = app.ready_database()
        if forget:
            found = forget_decision(url, first, second)
            click.echo("removed the decision on the pair" if found else "no decision on the pair")
        else:
            link = set_decision(url, first, second, decision, note)
            word = "the same product" if decision == "link" else "different products"
            click.echo(f"stored: {link.first.url} and {link.second.url} are {word}")
        click.echo("the next `bikematch cluster` (or `run`) applies it")

    return command


link = _decision_command(
    "link",
    "Store that two listings are the same product: every later build puts them in one "
    "cluster, whatever the similarity says (--forget removes the decision).",
)
unlink = _decision_command(
    "unlink",
    "Store that two listings are different products: every later build keeps them in "
    "different clusters, splitting one that held both (--forget removes the decision).",
)


@click.command()
@pass_app
def links(app: App) -> None:
    """List the decisions stored with `bikematch link` and `bikematch unlink`.

    \b
    Example:
        bikematch links
    """
    from bikematch.app.links import list_links

    stored = list_links(app.ready_database())
    if not stored:
        click.echo("no links or unlinks stored")
    for item in stored:
        note = f" ({item.note})" if item.note else ""
        click.echo(
            f"{item.decision:<6} {item.created_at:%Y-%m-%d} {item.first.webshop} "
            f"{item.first.url} | {item.second.webshop} {item.second.url}{note}"
        )


COMMANDS = [explain, link, unlink, links]
