"""Explaining and correcting matches: `bikematch explain`, `link`, `unlink` and `links`.

A link (the same product) or an unlink (not the same product) is stored in the
match_links table; every later build honours it (int_candidate_matches and the
cluster assignment read it). `explain` runs the matching's own dbt macros on the
pair, so what it says is what a build decides.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from psycopg import sql

from bikematch.app.clusters import cluster_vars, require_clusters
from bikematch.app.dbt import run_dbt
from bikematch.app.errors import UserError
from bikematch.core.database import connect


@dataclass(frozen=True)
class Listing:
    bike_id: uuid.UUID
    webshop: str
    url: str
    name: str


@dataclass(frozen=True)
class Link:
    decision: str
    first: Listing
    second: Listing
    note: str | None
    created_at: datetime


def find_listing(conn, ref: str) -> Listing:
    """The stored listing a user means: its id, or its URL (as stored)."""
    try:
        row = conn.execute(
            "select id, webshop, url, name from scraped_bikes where id = %s", (uuid.UUID(ref),)
        ).fetchall()
    except ValueError:
        row = conn.execute(
            "select id, webshop, url, name from scraped_bikes where url = %s", (ref,)
        ).fetchall()
    if not row:
        raise UserError(f"no stored listing has the id or URL {ref!r}")
    if len(row) > 1:
        shops = ", ".join(webshop for _, webshop, _, _ in row)
        raise UserError(f"{len(row)} shops list {ref!r} ({shops}): give the listing's id instead")
    return Listing(*row[0])


def _two(conn, first: str, second: str) -> tuple[Listing, Listing]:
    """The two listings a user means, in the order given."""
    a, b = find_listing(conn, first), find_listing(conn, second)
    if a.bike_id == b.bike_id:
        raise UserError("both name the same listing: give two different listings")
    return a, b


def _pair(conn, first: str, second: str) -> tuple[Listing, Listing]:
    """The two listings as match_links stores them: the smaller id first."""
    a, b = _two(conn, first, second)
    return (a, b) if a.bike_id < b.bike_id else (b, a)


def set_decision(url: str, first: str, second: str, decision: str, note: str | None) -> Link:
    """Store that two listings are (link) or are not (unlink) the same product,
    replacing an earlier decision on the pair."""
    if decision not in ("link", "unlink"):
        raise ValueError(decision)
    with connect(url) as conn:
        a, b = _pair(conn, first, second)
        if decision == "link" and a.webshop == b.webshop:
            raise UserError(
                f"both listings are from {a.webshop}: a product holds one listing per shop "
                "(dbt var max_listings_per_shop)"
            )
        created = conn.execute(
            "insert into match_links (first_id, second_id, decision, note)"
            " values (%s, %s, %s, %s)"
            " on conflict (first_id, second_id) do update"
            " set decision = excluded.decision, note = excluded.note, created_at = now()"
            " returning created_at",
            (a.bike_id, b.bike_id, decision, note),
        ).fetchone()[0]
    return Link(decision, a, b, note, created)


def forget_decision(url: str, first: str, second: str) -> bool:
    """Remove the decision stored on a pair; whether there was one."""
    with connect(url) as conn:
        a, b = _pair(conn, first, second)
        removed = conn.execute(
            "delete from match_links where first_id = %s and second_id = %s",
            (a.bike_id, b.bike_id),
        ).rowcount
    return bool(removed)


def list_links(url: str) -> list[Link]:
    with connect(url) as conn:
        rows = conn.execute(
            "select links.decision, links.note, links.created_at,"
            " first.id, first.webshop, first.url, first.name,"
            " second.id, second.webshop, second.url, second.name"
            " from match_links as links"
            " join scraped_bikes as first on first.id = links.first_id"
            " join scraped_bikes as second on second.id = links.second_id"
            " order by links.created_at, first.url, second.url"
        ).fetchall()
    return [Link(row[0], Listing(*row[3:7]), Listing(*row[7:11]), row[1], row[2]) for row in rows]


# ---------------------------------------------------------------------------- explain


@dataclass(frozen=True)
class Explanation:
    first: Listing
    second: Listing
    model: str
    facts: dict

    def lines(self) -> list[str]:
        f = self.facts
        lines = [
            f"A: {self.first.name} ({self.first.webshop}, {self.first.url})",
            f"B: {self.second.name} ({self.second.webshop}, {self.second.url})",
            f"similarity ({self.model}): image {_number(f['image_similarity'])}, "
            f"text {_number(f['text_similarity'])}, combined {_number(f['combined_similarity'])}"
            + (" (judged by text alone: a listing has no usable photo)" if f["text_only"] else ""),
        ]
        for label, key in (
            ("battery (Wh)", "battery_whs"),
            ("frame type", "frame_types"),
            ("model year", "model_years"),
            ("motor", "motors"),
            ("motor position", "motor_positions"),
            ("edition", "editions"),
            ("brand", "brands"),
            ("model numbers", "model_codes"),
            ("numbered words", "numbered_words"),
        ):
            a, b = f["first"][key], f["second"][key]
            if a or b:
                lines.append(f"  {label}: A {_values(a)}, B {_values(b)}")
        lines.append("evidence:")
        evidence = []
        if f["same_gtin"]:
            evidence.append("the same valid GTIN: the same product")
        if f["codes_agree"]:
            evidence.append(f"a shared rare model number: +{_number(f['code_agree_bonus'])}")
        if f["brand_conflict"]:
            evidence.append(f"brand fields differ: -{_number(f['brand_conflict_penalty'])}")
        if f["price_conflict"]:
            penalty = _number(f["price_conflict_penalty"])
            evidence.append(f"prices differ {_number(f['price_ratio'])}x: -{penalty}")
        if f["conflicts"]:
            evidence.append(f"they disagree on {f['conflicts'].replace(',', ', ')}")
        if f["agreements"]:
            evidence.append(f"{f['agreements']} product attributes stated alike by both")
        lines += [f"  {item}" for item in evidence] or ["  none beyond the similarity"]
        lines.append(
            f"score {_number(f['score'])} (threshold {_number(f['threshold'])}): {self.decision()}"
        )
        lines.append(self.outcome())
        return lines

    def decision(self) -> str:
        f = self.facts
        if f["same_shop"]:
            return "not compared: both are from one shop"
        if f["decision_by_hand"] == "unlink":
            return "different products (unlinked by hand, `bikematch links`)"
        if f["decision_by_hand"] == "link":
            return "the same product (linked by hand, `bikematch links`)"
        if f["same_gtin"]:
            return "the same product (rule: an equal valid GTIN)"
        if f["conflicts"]:
            return (
                "different products (rule: two listings that both state "
                f"{f['conflicts'].replace(',', ', ')} and disagree never match)"
            )
        if f["score"] >= f["threshold"]:
            return "a match (rule: score at or above the threshold)"
        return "no match (rule: score below the threshold)"

    def outcome(self) -> str:
        f = self.facts
        if f["first_cluster_id"] is None or f["second_cluster_id"] is None:
            return "clusters: not both clustered by the last build"
        if f["first_cluster_id"] == f["second_cluster_id"]:
            return f"clusters: both in product {f['first_cluster_id']}"
        why = ""
        ambiguous = [
            name
            for name, via in (("A", f["first_matched_via"]), ("B", f["second_matched_via"]))
            if via == "ambiguous"
        ]
        if ambiguous:
            why = (
                f" ({' and '.join(ambiguous)} fits two different products, leaves out what"
                " tells them apart and is not clearly nearer in price to one: it stays alone)"
            )
        elif f["candidate_via"] and not f["conflicts"]:
            why = (
                " (a candidate pair, but a listing joins one cluster: its best fit, and none"
                " whose other members it contradicts)"
            )
        return (
            f"clusters: A in product {f['first_cluster_id']}, "
            f"B in product {f['second_cluster_id']}{why}"
        )


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _values(values) -> str:
    return "/".join(values) if values else "-"


#: What explain shows of each listing (int_listings' columns).
_SHOWN = (
    "battery_whs",
    "frame_types",
    "model_years",
    "motors",
    "motor_positions",
    "editions",
    "brands",
    "model_codes",
    "numbered_words",
)


def explain(url: str, first: str, second: str, model_name: str | None = None) -> Explanation:
    """How the matching judges two listings, as the last build's tables and the
    project's rules have it."""
    require_clusters(url)
    with connect(url) as conn:
        a, b = _two(conn, first, second)
        if model_name is None:
            row = conn.execute(
                "select model from master_bikes where bike_id = %s", (a.bike_id,)
            ).fetchone()
            model_name = row[0] if row else None
        attributes = {}
        for listing in (a, b):
            row = conn.execute(
                sql.SQL("select {} from int_listings where bike_id = %s").format(
                    sql.SQL(", ").join(map(sql.Identifier, _SHOWN))
                ),
                (listing.bike_id,),
            ).fetchone()
            if row is None:
                raise UserError(
                    f"{listing.url} is not in the last build: not on sale, or not embedded "
                    "with its model (run `bikematch embed` and `bikematch cluster`)"
                )
            attributes[listing.bike_id] = dict(zip(_SHOWN, row, strict=True))
    dbt_vars = cluster_vars(model_name)
    inline = f"{{{{ explain_pair('{a.bike_id}', '{b.bike_id}') }}}}"
    result = run_dbt(
        ["show", "--inline", inline, "--output", "json", "--quiet"],
        url,
        dbt_vars=dbt_vars,
        capture=True,
    )
    rows = json.loads(result.stdout[result.stdout.index("{") :])["show"]
    if not rows:
        raise UserError(
            f"no vectors of model {dbt_vars['embedding_model']} for both listings: "
            "pass the --model the clusters were built with"
        )
    facts = rows[0] | {
        "first": attributes[a.bike_id],
        "second": attributes[b.bike_id],
    }
    return Explanation(a, b, dbt_vars["embedding_model"], facts)
