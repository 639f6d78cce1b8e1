"""A model's HNSW index around a large load: left out while the vectors go in, built
once afterwards.

Every vector written into an indexed table is also inserted into the HNSW graph,
which is most of what a write costs (docs/benchmarks.md, "Writing vectors"). For a
large backlog (a first run, a re-embed of everything) the job therefore drops the
model's index, writes without it and builds it again at the end, on parallel
maintenance workers (searches carry on meanwhile, on a sequential scan while the
index is missing). The build also runs when the job fails or is
interrupted; a run killed outright leaves the index to the next `embed` or
`cluster`, which make it again (`bikematch_register_model`, in
sql/functions/01_embedding_models.sql).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from bikematch.core.database import connect

#: EmbedSettings.index_mode values: choose by the backlog; always keep the index
#: (insert into it); always drop it and build it after the load.
INDEX_MODES = ("auto", "keep", "rebuild")

#: In auto mode, a backlog of at least this many listings, and at least as many as the
#: model has vectors already, is loaded without the index. Below it, a build costs more
#: than the inserts it saves (docs/benchmarks.md).
REBUILD_MIN_LISTINGS = 1_000


@dataclass(frozen=True)
class IndexPlan:
    """What the job does with the model's index, and why (for its summary)."""

    rebuild: bool
    reason: str


def plan(mode: str, backlog: int, stored: int) -> IndexPlan:
    """Whether to load `backlog` listings without the index, next to `stored` vectors."""
    if mode == "keep":
        return IndexPlan(False, "kept (--index keep)")
    if mode == "rebuild":
        return IndexPlan(True, "built after the load (--index rebuild)")
    if mode != "auto":
        raise ValueError(f"index mode must be one of {', '.join(INDEX_MODES)}, not {mode!r}")
    if backlog >= REBUILD_MIN_LISTINGS and backlog >= stored:
        return IndexPlan(True, f"built after the load ({backlog} listings to embed)")
    return IndexPlan(False, "kept (a small backlog goes into it)")


def stored_vectors(conn: psycopg.Connection, model: str) -> int:
    row = conn.execute("select count(*) from vector_storage where model = %s", (model,))
    return row.fetchone()[0]


def state(conn: psycopg.Connection, model: str) -> str:
    """'valid', 'invalid' (an interrupted CREATE INDEX CONCURRENTLY) or 'missing'."""
    return conn.execute("select bikematch_hnsw_index_state(%s)", (model,)).fetchone()[0]


def drop(url: str, model: str) -> None:
    """Drop the model's index without blocking searches or other writers."""
    with connect(url, autocommit=True) as conn:
        name = conn.execute("select bikematch_hnsw_index_name(%s)", (model,)).fetchone()[0]
        conn.execute(sql.SQL("drop index concurrently if exists {}").format(sql.Identifier(name)))


def maintenance_workers() -> int:
    """Parallel workers for the build: every core of this machine but one, at most 7
    (Postgres' default pool is 8 workers, and the server caps the number anyway)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(7, (cores or 1) - 1))


def build(url: str, model: str, workers: int | None = None) -> float:
    """Make the model's index valid (built where missing, or left invalid by a build
    that was interrupted) and return the seconds it took; 0 where it was there already.

    One transaction: its settings (no statement timeout, the parallel workers) hold
    through a transaction pooler, where a session's would not, and a build that fails
    leaves nothing behind. It blocks writes to vector_storage meanwhile, not reads:
    searches go on. Jobs that finish loading at once build it one after the other
    (the second finds it made).
    """
    started = time.perf_counter()
    workers = maintenance_workers() if workers is None else workers
    with connect(url) as conn, conn.transaction():
        conn.execute("set local statement_timeout = 0")
        conn.execute(
            "select set_config('max_parallel_maintenance_workers', %s, true)", (str(workers),)
        )
        conn.execute("select pg_advisory_xact_lock(hashtext('bikematch index ' || %s))", (model,))
        current = state(conn, model)
        if current == "valid":
            return 0.0
        if current == "invalid":
            name = conn.execute("select bikematch_hnsw_index_name(%s)", (model,)).fetchone()[0]
            conn.execute(sql.SQL("drop index {}").format(sql.Identifier(name)))
        conn.execute(conn.execute("select bikematch_hnsw_index_ddl(%s)", (model,)).fetchone()[0])
    return time.perf_counter() - started
