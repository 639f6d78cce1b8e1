"""`bikematch run`: scrape, embed, cluster in order; stop at the first failed stage."""

from __future__ import annotations

import pytest

from .conftest import run_cli
from .fixture_shops import ShopServer


@pytest.fixture
def shops(tmp_path):
    with ShopServer() as server:
        config = tmp_path / "shops.yaml"
        config.write_text(server.shops_yaml())
        server.config = config
        yield server


def test_run_does_every_stage_in_order(conn, database_url, shops):
    conn.execute("drop table if exists master_bikes, int_vector_neighbours cascade")
    env = {"DATABASE_URL": database_url, "BIKEMATCH_IMAGE_CACHE": "off"}
    result = run_cli(
        "run",
        "--shops",
        str(shops.config),
        "--model",
        "tiny-random",
        "--anchor",
        "jsonld-shop.nl",
        "--device",
        "cpu",
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    out = result.stdout
    assert out.index("== scrape") < out.index("== embed") < out.index("== cluster")
    assert "jsonld-shop.nl" in out and "model tiny-random: embedded" in out
    assert "clustered" in out
    # The fixture's images are on 127.0.0.1, which the nightly job must refuse.
    assert conn.execute("select count(*) from embedding_failures").fetchone()[0] > 0
    assert conn.execute("select count(*) from master_bikes").fetchone()[0] > 0


def test_run_stops_at_the_first_failed_stage(conn, database_url, shops):
    env = {"DATABASE_URL": database_url, "HF_HUB_OFFLINE": "1", "HF_HOME": "/nonexistent"}
    result = run_cli(
        "run",
        "--shops",
        str(shops.config),
        "--model",
        "pe-core-l14-336",
        "--device",
        "cpu",
        env=env,
    )
    assert result.returncode == 1
    assert "== scrape" in result.stdout and "== cluster" not in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith("error: the embed stage failed:")
    assert "facebook/PE-Core-L14-336" in result.stderr
