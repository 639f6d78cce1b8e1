"""`bikematch run`: scrape, embed, cluster in order; stop at the first failed stage."""

from __future__ import annotations

import re

import pytest
from psycopg.conninfo import conninfo_to_dict

from bikematch.app.progress import ProgressLines, duration

from .conftest import run_cli
from .ecb import ecb_xml
from .fixture_shops import ShopServer
from .image_server import ImageServer
from .pooler import TransactionPooler


@pytest.fixture
def shops(tmp_path):
    with ShopServer() as server:
        config = tmp_path / "shops.yaml"
        config.write_text(server.shops_yaml())
        server.config = config
        yield server


def test_run_does_every_stage_in_order_through_a_transaction_pooler(conn, database_url, shops):
    """The whole job, as the nightly job runs it against Supabase: through a transaction
    pooler (port 6543), which runs each transaction on any server connection, so that
    prepared statements, session settings and temporary tables made in one transaction
    are gone in the next."""
    conn.execute("drop table if exists master_bikes, int_vector_neighbours cascade")
    socket_dir = conninfo_to_dict(database_url)["host"]
    # a progress line after every batch (not a terminal: lines, not a bar)
    # one of the shops sells in GBP: the job fetches the day's exchange rates
    with TransactionPooler(socket_dir) as pooler, ImageServer() as ecb:
        daily = ecb.add("daily.xml", ecb_xml("2026-11-20", {"GBP": "0.83"}), "text/xml")
        env = {
            "DATABASE_URL": pooler.url,
            "BIKEMATCH_IMAGE_CACHE": "off",
            "BIKEMATCH_PROGRESS_EVERY": "0",
            "BIKEMATCH_RATES_URL": daily,
        }
        run_cli("db", "init", env=env, check=True)
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
            "--batch-size",
            "4",
            env=env,
        )
        assert result.returncode == 0, result.stdout + result.stderr[-2000:]
        search = run_cli("search", "--text", "Gazelle", "--model", "tiny-random", env=env)
        assert search.returncode == 0, search.stdout + search.stderr[-3000:]
    assert pooler.transactions > 20
    out = result.stdout
    assert out.index("== scrape") < out.index("== embed") < out.index("== cluster")
    assert out.index("exchange rates: 1 of 2026-11-20 stored (ECB)") > out.index("== cluster")
    # the cluster stage's progress, a line as each model is built
    assert re.search(r"^  dbt: master_bikes built \(.+\), \d+ of \d+$", result.stderr, re.M)
    assert conn.execute("select count(*) from bike_offers where currency = 'GBP'").fetchone()[0]
    assert not conn.execute(
        "select count(*) from bike_offers where price is not null and comparable_price is null"
    ).fetchone()[0]
    assert "jsonld-shop.nl" in out and "model tiny-random: embedded" in out
    assert "clustered" in out
    progress = re.findall(
        r"embedding \(tiny-random\): (\d+) of (\d+) listings \(\d+ failed\), [\d.]+/s",
        result.stderr,
    )
    assert len(progress) >= 2 and int(progress[0][0]) < int(progress[-1][0]), result.stderr
    # The fixture's images are on 127.0.0.1, which the nightly job must refuse: every
    # listing is embedded from its title meanwhile.
    assert conn.execute("select count(*) from embedding_failures").fetchone()[0] > 0
    embedded = conn.execute("select count(*) from vector_storage").fetchone()[0]
    assert embedded == conn.execute("select count(*) from scraped_bikes").fetchone()[0]
    assert conn.execute("select count(*) from master_bikes").fetchone()[0] > 0

    # after an upgrade: every vector older than the upgrade is embedded again (but for
    # those whose image failed, which wait for their retry)
    env["DATABASE_URL"] = database_url
    embedded = conn.execute(
        "select count(*) from vector_storage as vector where not exists"
        " (select from embedding_failures as failure where failure.bike_id = vector.bike_id)"
    ).fetchone()[0]
    assert embedded > 0
    upgraded = conn.execute("select now()::text").fetchone()[0]
    args = result.args[1:]
    again = run_cli(*args, "--reembed-before", upgraded, env=env, check=True).stdout
    assert f"model tiny-random: embedded {embedded} " in again, again
    embed = ("embed", "--model", "tiny-random", "--device", "cpu")
    assert "embedded 0, nothing pending" in run_cli(*embed, env=env, check=True).stdout


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


def test_progress_lines_are_timed_and_say_what_is_left():
    lines, now = [], [100.0]
    progress = ProgressLines("embedding (m)", 30, lines.append, clock=lambda: now[0])
    now[0] = 110.0
    progress(100, 0, 1000)  # 10 s in: too soon
    now[0] = 130.0
    progress(290, 10, 1000)
    now[0] = 140.0
    progress(400, 10, 1000)  # 10 s after the last line
    now[0] = 200.0
    progress(990, 10, 1000)  # all done: the summary says it
    assert lines == ["  embedding (m): 300 of 1000 listings (10 failed), 10.0/s, about 1 min left"]
    assert [duration(s) for s in (40, 240, 7500)] == ["40 s", "4 min", "2 h 05 min"]


def test_report_and_eval_say_what_is_missing_in_one_line(conn, database_url, tmp_path):
    conn.execute(
        "drop table if exists master_bikes, bike_clusters, bike_offers, price_changes,"
        " int_vector_neighbours cascade"
    )
    env = {"DATABASE_URL": database_url}
    truth = tmp_path / "truth.csv"
    truth.write_text("webshop_a,url_a,webshop_b,url_b\na.nl,https://a.nl/1,b.nl,https://b.nl/1\n")
    one_column = tmp_path / "one-column.csv"
    one_column.write_text("url\nhttps://a.nl/1\n")

    def error(*args: str) -> str:
        result = run_cli(*args, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        return lines[0].removeprefix("error: ")

    no_clusters = "no clusters yet: run `bikematch cluster` (or `bikematch run`) first"
    assert error("report", "--out", str(tmp_path / "report")) == no_clusters
    assert error("eval", "--truth", str(truth)) == no_clusters
    assert error("eval", "--truth", str(one_column)).endswith(
        "needs columns url_a, url_b, webshop_a, webshop_b (labelled pairs), or webshop, url"
        " and product_id (each listing labelled with its product)"
    )
    # marts an earlier version built, without the columns added since
    conn.execute("create table master_bikes (bike_id uuid, cluster_id uuid)")
    conn.execute("create table bike_clusters (cluster_id uuid, shops int)")
    conn.execute("create table bike_offers (cluster_id uuid, price numeric)")
    assert error("report", "--out", str(tmp_path / "report")) == (
        "the clusters were built by an earlier bikematch: run `bikematch cluster` to rebuild them"
    )
    status = run_cli("db", "status", env=env, check=True).stdout
    assert "clusters: built by an earlier bikematch; `bikematch cluster` rebuilds them" in status
    conn.execute("drop table master_bikes, bike_clusters, bike_offers")
    # empty clusters: the listings are not there, and cluster says so
    empty = run_cli("cluster", env=env, check=True)
    assert "note: nothing to cluster: no listing on sale has a vector for model" in empty.stderr
    assert error("eval", "--truth", str(truth)) == (
        f"none of the 2 listings {truth} names is in the database"
        " (as webshop and url exactly as stored)"
    )
