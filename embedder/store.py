"""The embedder's database side: claiming work, writing vectors and failures."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import psycopg
from pgvector import HalfVector, Vector

from embedder import MAX_ATTEMPTS

# Pending listings after `after` in id order, locked so that a second
# embedder skips them (and waits for nothing). The lock lasts until the
# batch's transaction commits its vectors. `after` goes to the function too
# (sql/functions/02_embedding_work.sql), which applies it to every table it
# reads: a claim reads from where the last one stopped, not from the start of
# the pending set.
_CLAIM = """
select listing.id, listing.name, listing.image_url, pending.source_hash
from bikematch_listings_to_embed(%(model)s, %(max_attempts)s, %(after)s, %(before)s) as pending
inner join scraped_bikes as listing on pending.bike_id = listing.id
where listing.id > %(after)s
order by pending.bike_id
limit %(limit)s
for no key update of listing skip locked
"""

_COUNT = "select count(*) from bikematch_listings_to_embed(%s, %s, null, %s)"


@dataclass
class Work:
    bike_id: uuid.UUID
    name: str
    image_url: str | None
    source_hash: str


@dataclass
class Embedded:
    bike_id: uuid.UUID
    image: np.ndarray | None
    text: np.ndarray
    joined: np.ndarray
    input_hash: str
    source_hash: str


@dataclass
class Failure:
    bike_id: uuid.UUID
    stage: str
    error: str
    source_hash: str
    #: Every later try would fail the same way: recorded as given up at once.
    permanent: bool = False


def count_pending(
    conn: psycopg.Connection, model: str, max_attempts: int, before: datetime | None = None
) -> int:
    """Listings to embed; with `before`, also those whose vector is older than that."""
    return conn.execute(_COUNT, (model, max_attempts, before)).fetchone()[0]


def claim(
    conn,
    model: str,
    after: uuid.UUID,
    limit: int,
    max_attempts: int,
    before: datetime | None = None,
) -> list[Work]:
    """Lock the next page of pending listings in conn's open transaction."""
    values = {
        "model": model,
        "after": after,
        "limit": limit,
        "max_attempts": max_attempts,
        "before": before,
    }
    return [Work(*row) for row in conn.execute(_CLAIM, values).fetchall()]


def still_pending(
    conn, model: str, max_attempts: int, ids: list[uuid.UUID], before: datetime | None = None
) -> set[uuid.UUID]:
    """Of `ids`, those still pending (another embedder may have done some meanwhile)."""
    rows = conn.execute(
        "select bike_id from bikematch_listings_to_embed(%s, %s, null, %s) where bike_id = any(%s)",
        (model, max_attempts, before, ids),
    )
    return {row[0] for row in rows}


def write(
    conn,
    model: str,
    embedded: list[Embedded],
    failures: list[Failure],
    max_attempts: int = MAX_ATTEMPTS,
) -> None:
    """Vectors by binary COPY (through a temporary table, then one upsert); failures counted."""
    if embedded:
        conn.execute(
            "create temporary table if not exists incoming_vectors"
            " (like vector_storage including defaults) on commit delete rows"
        )
        columns = (
            "bike_id, model, image_embedding, text_embedding, embedding, text_only,"
            " input_hash, source_hash"
        )
        with conn.cursor().copy(
            f"copy incoming_vectors ({columns}) from stdin with (format binary)"
        ) as copy:
            copy.set_types(["uuid", "text", "vector", "vector", "halfvec", "bool", "text", "text"])
            for item in embedded:
                copy.write_row(
                    (
                        item.bike_id,
                        model,
                        None if item.image is None else Vector(item.image),
                        Vector(item.text),
                        HalfVector(item.joined),
                        item.image is None,
                        item.input_hash,
                        item.source_hash,
                    )
                )
        conn.execute(
            f"""
            insert into vector_storage ({columns}, embedded_at)
            select {columns}, now() from incoming_vectors
            on conflict (bike_id, model) do update set
                image_embedding = excluded.image_embedding,
                text_embedding = excluded.text_embedding,
                embedding = excluded.embedding,
                text_only = excluded.text_only,
                input_hash = excluded.input_hash,
                source_hash = excluded.source_hash,
                embedded_at = excluded.embedded_at
            """  # noqa: S608 (a constant column list; values come by COPY)
        )
        # Their images worked; a listing embedded from its title because its image
        # failed keeps its failure (updated below), to be retried.
        failed = {failure.bike_id for failure in failures}
        conn.execute(
            "delete from embedding_failures where model = %s and bike_id = any(%s)",
            (model, [item.bike_id for item in embedded if item.bike_id not in failed]),
        )
    if failures:
        conn.cursor().executemany(
            """
            insert into embedding_failures (bike_id, model, stage, error, source_hash, attempts)
            values (%s, %s, %s, %s, %s, %s)
            on conflict (bike_id, model) do update set
                stage = excluded.stage,
                error = excluded.error,
                attempts = case
                    when embedding_failures.source_hash is distinct from excluded.source_hash
                        then excluded.attempts
                    else greatest(embedding_failures.attempts + 1, excluded.attempts)
                end,
                source_hash = excluded.source_hash,
                last_attempt_at = now()
            """,
            [
                (
                    f.bike_id,
                    model,
                    f.stage,
                    f.error[:500],
                    f.source_hash,
                    max_attempts if f.permanent else 1,
                )
                for f in failures
            ],
        )


def listing_image_urls(conn: psycopg.Connection):
    """Every image URL a stored listing names (what the image cache should keep)."""
    return (
        row[0]
        for row in conn.execute(
            "select distinct image_url from scraped_bikes where image_url is not null"
        )
    )
