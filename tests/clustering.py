"""Helpers to put listings with hand-made vectors into the database and cluster them."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import yaml
from pgvector import HalfVector, Vector

from bikematch.app.dbt import dbt_env
from bikematch.core.settings import PROJECT_ROOT

MODEL = "test-model"
HALF_DIMS = 16
DBT_TABLES = ["master_bikes", "int_vector_neighbours"]


def product_vector(seed: int) -> np.ndarray:
    """A random unit [image, text] pair standing for one product."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=2 * HALF_DIMS)


def near(base: np.ndarray, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return base + noise * np.linalg.norm(base) / np.sqrt(base.size) * rng.normal(size=base.size)


def at_cosine(base: np.ndarray, cosine: float, seed: int) -> np.ndarray:
    """A vector whose image and text halves each sit at `cosine` to base's."""
    rng = np.random.default_rng(seed)
    halves = []
    for half in (base[:HALF_DIMS], base[HALF_DIMS:]):
        unit = half / np.linalg.norm(half)
        other = rng.normal(size=HALF_DIMS)
        other -= (other @ unit) * unit
        halves.append(cosine * unit + np.sqrt(1 - cosine**2) * other / np.linalg.norm(other))
    return np.concatenate(halves)


def concatenate(vector: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = vector[:HALF_DIMS] / np.linalg.norm(vector[:HALF_DIMS])
    text = vector[HALF_DIMS:] / np.linalg.norm(vector[HALF_DIMS:])
    return image, text, np.concatenate([image, text]) / np.sqrt(2)


def add_listing(
    conn,
    shop,
    url,
    vector,
    *,
    gtin=None,
    price=None,
    name=None,
    model=MODEL,
    text_only=False,
    image_url=None,
    brand=None,
    sku=None,
):
    """Insert a listing and its vectors (text_only: no image half); returns its id."""
    conn.execute("select bikematch_register_model(%s, %s, %s)", (model, HALF_DIMS, HALF_DIMS))
    bike_id = conn.execute(
        """
        insert into scraped_bikes (webshop, url, name, gtin, price, currency, image_url, brand, sku)
        values (%s, %s, %s, %s, %s, 'EUR', %s, %s, %s)
        on conflict (webshop, url) do update set last_seen_at = now()
        returning id
        """,
        (shop, url, name or f"{shop} {url}", gtin, price, image_url, brand, sku),
    ).fetchone()[0]
    set_vector(conn, bike_id, vector, model=model, text_only=text_only)
    return bike_id


def set_vector(conn, bike_id, vector, *, model=MODEL, text_only=False):
    image, text, joined = concatenate(np.asarray(vector, dtype=np.float64))
    if text_only:  # as the embedder stores it: [zeros, text], the text half the whole vector
        image, joined = None, np.concatenate([np.zeros(HALF_DIMS), text])
    input_hash = hashlib.sha256(joined.tobytes()).hexdigest()
    conn.execute(
        """
        insert into vector_storage
            (bike_id, model, image_embedding, text_embedding, embedding, text_only, input_hash)
        values (%s, %s, %s, %s, %s, %s, %s)
        on conflict (bike_id, model) do update set
            image_embedding = excluded.image_embedding,
            text_embedding = excluded.text_embedding,
            embedding = excluded.embedding,
            text_only = excluded.text_only,
            input_hash = excluded.input_hash,
            embedded_at = now()
        """,
        (
            bike_id,
            model,
            None if image is None else Vector(image),
            Vector(text),
            HalfVector(joined),
            text_only,
            input_hash,
        ),
    )


def drop_dbt_tables(conn) -> None:
    for table in DBT_TABLES:
        conn.execute(f"drop table if exists {table} cascade")


def cluster(url: str, **dbt_vars) -> None:
    """Build the dbt project's models (not its data tests).

    In this process, through dbt's own runner: a build in a subprocess (as
    `bikematch cluster` runs it, which the tests of the command line exercise) spends
    more time starting Python and importing dbt than these small catalogues take to
    cluster. The data tests run in the command-line, job and demo tests."""
    from dbt.cli.main import dbtRunner

    settings = {
        "embedding_model": MODEL,
        "anchor_shop": "anchor.nl",
        "match_threshold": 0.9,
        **dbt_vars,
    }
    args = ["build", "--project-dir", str(PROJECT_ROOT), "--profiles-dir", _profiles(url)]
    args += ["--vars", json.dumps(settings), "--quiet", "--exclude-resource-type", "test"]
    result = dbtRunner().invoke(args)
    if not result.success:
        failed = [
            f"{node.node.name}: {node.message}"
            for node in getattr(result.result, "results", [])
            if str(node.status) in ("error", "fail")
        ]
        raise AssertionError(f"dbt build failed: {result.exception or '; '.join(failed)}")


@cache
def _profiles(url: str) -> str:
    """A profiles.yml naming the database at `url` outright (the values `run_dbt` puts
    in the PG* variables): dbt in this process reads no PG* variables, and the tests
    set none."""
    env = dbt_env(url)
    output = {
        "type": "postgres",
        "host": env.get("PGHOST", "localhost"),
        "port": int(env.get("PGPORT", 5432)),
        "user": env.get("PGUSER", "postgres"),
        "password": env.get("PGPASSWORD", ""),
        "dbname": env.get("PGDATABASE", "postgres"),
        "schema": "public",
        "threads": 2,
    }
    # a folder per database: a test may cluster a database of its own beside the session's
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    folder = Path(os.environ.get("DBT_TARGET_PATH") or tempfile.mkdtemp()) / f"profiles-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    profile = {"bikematch": {"target": "default", "outputs": {"default": output}}}
    (folder / "profiles.yml").write_text(yaml.safe_dump(profile))
    return str(folder)


def clusters_by_url(conn) -> dict[str, set[str]]:
    """cluster_id -> the urls of its listings on sale (from the bike_offers mart)."""
    rows = conn.execute("select cluster_id::text, url from bike_offers").fetchall()
    clusters: dict[str, set[str]] = {}
    for cluster_id, url in rows:
        clusters.setdefault(cluster_id, set()).add(url)
    return clusters


def cluster_sets(conn) -> set[frozenset[str]]:
    return {frozenset(urls) for urls in clusters_by_url(conn).values()}


def master_rows(conn) -> list[tuple]:
    return conn.execute(
        "select bike_id, cluster_id, matched_via, matched_bike_id, similarity, clustered_at"
        " from master_bikes order by bike_id"
    ).fetchall()
