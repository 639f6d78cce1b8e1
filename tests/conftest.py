"""Shared fixtures: one throwaway embedded Postgres (with pgvector) per test session."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from bikematch.core.database import connect, start_embedded, stop_embedded
from bikematch.core.migrations import apply_migrations

# No test reaches the ECB: where the nightly job would fetch exchange rates, it finds
# nothing listening instead, unless a test serves rates of its own.
os.environ.setdefault("BIKEMATCH_RATES_URL", "http://127.0.0.1:9/eurofxref-daily.xml")

# A job started in the background (`cmd &` in a script, as some CI runners start one)
# ignores Ctrl-C, and so do the processes it starts: the tests that interrupt a run, in
# this process or in a command it starts, need Python's own SIGINT handler back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

BIN = Path(sys.executable).parent
BIKEMATCH = str(BIN / "bikematch")

# Tables Python writes, in an order TRUNCATE ... CASCADE is happy with.
SOURCE_TABLES = (
    "scraped_bikes, price_history, vector_storage, embedding_failures, exchange_rates, crawls"
)


# The files that take longest, longest first: pytest-xdist (make test: two workers, a
# file's tests on one worker) hands files out in collection order, so these start at
# once and the workers finish together instead of one waiting on the last long file.
LONGEST_FIRST = (
    "test_clustering.py",
    "test_er_benchmarks.py",
    "test_embed.py",
    "test_matching.py",
    "test_demo.py",
    "test_run.py",
    "test_scrape.py",
    "test_quality.py",
    "test_models.py",
)


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: a file's tests keep their order


@pytest.fixture(scope="session", autouse=True)
def dbt_target(tmp_path_factory) -> Path:
    """Where this worker's dbt runs (and the commands the tests start) write dbt's
    target folder: two workers writing one would read each other's compiled SQL, and a
    build that finds the parse of its own last build reuses it (a partial parse)."""
    target = tmp_path_factory.mktemp("dbt-target")
    os.environ["DBT_TARGET_PATH"] = str(target)
    return target


@pytest.fixture(scope="session")
def pg_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pg")


@pytest.fixture(scope="session")
def database_url(pg_root) -> str:
    """A fresh embedded cluster with bikematch's migrations applied."""
    pgdata = pg_root / "session"
    url = start_embedded(pgdata)
    with connect(url) as conn:
        apply_migrations(conn)
    yield url
    stop_embedded(pgdata)
    shutil.rmtree(pgdata, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny():
    """The tiny random model: real code paths at almost no compute."""
    from perception_models import load_model

    return load_model("tiny-random", device="cpu")


@pytest.fixture
def images():
    """A local image server (tests/image_server.py)."""
    from .image_server import ImageServer

    with ImageServer() as server:
        yield server


@pytest.fixture
def conn(database_url):
    """A connection to an empty bikematch schema (source tables truncated)."""
    with connect(database_url, autocommit=True) as connection:
        connection.execute(f"truncate {SOURCE_TABLES} cascade")
        yield connection


@pytest.fixture
def scratch_url(conn, database_url):
    """An empty database of its own (no migrations applied), dropped afterwards."""
    conn.execute("drop database if exists scratch")
    conn.execute("create database scratch")
    yield psycopg.conninfo.make_conninfo(database_url, dbname="scratch")
    conn.execute("drop database scratch with (force)")


def eventually(condition, timeout: float = 60.0):
    """Poll `condition()` until it returns something true (returned), or fail after
    `timeout` seconds: for what another process or the server does in its own time (a
    lock wait, a statistics flush). The only waiting the tests do; no test sleeps a
    guessed time and then asserts."""
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {condition.__doc__ or condition}")
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def run_cli(*args: str, env=None, check: bool = False, timeout=300, cwd=None):
    """Run the installed `bikematch` console script; returns the CompletedProcess."""
    full_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    full_env.update(env or {})
    result = subprocess.run(
        [BIKEMATCH, *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"bikematch {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result
