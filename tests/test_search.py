"""match_bikes(): the SQL search function (a Supabase RPC), through the HNSW index."""

from __future__ import annotations

import pytest
from pgvector import HalfVector

from .clustering import MODEL, add_listing, concatenate, product_vector
from .conftest import eventually

SCANS = (
    "select coalesce(sum(idx_scan), 0) from pg_stat_user_indexes"
    " where indexrelname like 'vector_storage_hnsw_test_model%'"
)


def test_match_bikes_finds_the_nearest_through_the_hnsw_index(conn):
    for i in range(1500):
        add_listing(conn, f"shop-{i % 5}.nl", f"u{i}", product_vector(5000 + i), price=1000 + i)
    conn.execute("analyze vector_storage")
    query = HalfVector(concatenate(product_vector(5000 + 42))[2])
    before = conn.execute(SCANS).fetchone()[0]
    rows = conn.execute(
        "select url, similarity from match_bikes(%s::halfvec, 0.5, 5, %s)", (query, MODEL)
    ).fetchall()
    assert rows[0][0] == "u42" and rows[0][1] > 0.999
    assert len(rows) <= 5 and all(similarity >= 0.5 for _, similarity in rows)
    conn.execute("select pg_stat_force_next_flush()")

    def scanned():
        """the index scan is counted"""
        return conn.execute(SCANS).fetchone()[0] > before

    eventually(scanned)


def test_match_bikes_rejects_a_wrong_model_or_size(conn):
    add_listing(conn, "shop.nl", "u", product_vector(1))
    with pytest.raises(Exception, match="has 3 dimensions"):
        conn.execute("select * from match_bikes('[1,2,3]', 0.5, 5, %s)", (MODEL,))
    with pytest.raises(Exception, match="no vectors for model"):
        conn.execute("select * from match_bikes('[1,2,3]', 0.5, 5, 'nope')")
