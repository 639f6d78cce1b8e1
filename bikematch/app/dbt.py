"""Run dbt against the database bikematch uses.

dbt reads its connection from the PG* environment variables named in
`profiles.yml.example`; this module derives them from DATABASE_URL (or the
embedded server), so `bikematch cluster` and a plain `dbt build` agree.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bikematch.core.database import DatabaseError, connect
from bikematch.core.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

#: The advisory lock one dbt invocation at a time holds on a database (the
#: migrations' is 0x6B1E3A7C).
_BUILD_LOCK = 0x6B1E3A7D

_PG_VARIABLES = {
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "dbname": "PGDATABASE",
    "sslmode": "PGSSLMODE",
}


def dbt_env(url: str) -> dict[str, str]:
    """The PG* variables profiles.yml.example reads, for the database at `url`."""
    params = conninfo_to_dict(url)
    return {name: str(params[key]) for key, name in _PG_VARIABLES.items() if params.get(key)}


def profiles_dir(work_dir: Path) -> Path:
    """A directory holding profiles.yml: the user's own at the root, else the example."""
    if (PROJECT_ROOT / "profiles.yml").exists():
        return PROJECT_ROOT
    target = work_dir / "dbt"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT_ROOT / "profiles.yml.example", target / "profiles.yml")
    return target


def run_dbt(
    command: list[str],
    url: str,
    *,
    dbt_vars: dict | None = None,
    work_dir: Path | None = None,
    capture: bool = False,
    on_model=None,
) -> subprocess.CompletedProcess:
    """Run `dbt <command>` in the project root; raises DatabaseError if dbt fails.

    capture: keep dbt's output (for the error) instead of printing it; on_model, with
    capture: called with a short line as each model is built (`model_done`), so a long
    build shows progress."""
    work_dir = work_dir or PROJECT_ROOT / ".bikematch"
    dbt = Path(sys.executable).parent / "dbt"
    args = [str(dbt), *command, "--profiles-dir", str(profiles_dir(work_dir))]
    if dbt_vars:
        args += ["--vars", json.dumps(dbt_vars)]
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env.update(dbt_env(url))
    env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    with one_build_at_a_time(url, f"dbt {command[0]}"):
        if capture and on_model is not None:
            result = _run_reporting_models(args, env, on_model)
        else:
            result = subprocess.run(
                args, cwd=PROJECT_ROOT, env=env, capture_output=capture, text=True, check=False
            )
    if result.returncode != 0:
        error = _first_error(result.stdout) if capture else ""
        detail = f": {error}" if error else ""
        raise DatabaseError(f"dbt {' '.join(command)} failed (exit {result.returncode}){detail}")
    return result


def _run_reporting_models(args: list[str], env: dict, on_model) -> subprocess.CompletedProcess:
    """dbt with its output kept, passing each model's completion to on_model as it comes."""
    lines = []
    with subprocess.Popen(
        args,
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        for line in process.stdout:
            lines.append(line)
            done = model_done(line)
            if done:
                on_model(done)
    return subprocess.CompletedProcess(args, process.returncode, "".join(lines), "")


# "12 of 60 OK created sql table model public.int_listings .... [SELECT 135 in 0.12s]"
_MODEL_DONE = re.compile(
    r"(\d+) of (\d+) (OK created|ERROR creating) sql \w+ model (?:\w+\.)?(\w+) \.* \[(.*)\]"
)


def model_done(line: str) -> str | None:
    """'int_listings built (SELECT 135 in 0.12s), 12 of 60' for a dbt line saying a model
    was built (or failed), else None."""
    match = _MODEL_DONE.search(_COLOURS.sub("", line))
    if not match:
        return None
    step, steps, outcome, model, detail = match.groups()
    verb = "built" if outcome.startswith("OK") else "FAILED"
    return f"{model} {verb} ({detail.strip()}), {step} of {steps}"


# dbt's log prefix: colour codes and the time.
_LOG_PREFIX = re.compile(r"^(?:\x1b\[[0-9;]*m)*(?:\d\d:\d\d:\d\d\s+)?")
_COLOURS = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_HEADING = re.compile(r"^Encountered an error:$|^\w+ Error in |^Failure in (unit_)?test ")


def _first_error(output: str) -> str:
    """dbt's first error, with the lines that say what it is: "Encountered an error:",
    "Database Error in model X (path)" and "Failure in test X (path)" are followed by
    the error itself (for a data test: how many rows broke it)."""
    lines = [_COLOURS.sub("", _LOG_PREFIX.sub("", line)).strip() for line in output.splitlines()]
    lines = [line for line in lines if line]
    for index, line in enumerate(lines):
        if _ERROR_HEADING.search(line):
            following = itertools.takewhile(
                lambda text: not text.startswith(("compiled code at", "Done.")),
                lines[index + 1 : index + 3],
            )
            return " ".join([line, *following])
    return next((line for line in lines if "error" in line.lower()), "")


@contextmanager
def one_build_at_a_time(url: str, what: str) -> Iterator[None]:
    """Hold the database's build lock for the duration: a second `bikematch cluster`
    (or `run`, `calibrate`) on the same database waits for the first, saying so, instead of
    both merging into the same tables at once (which fails with "tuple concurrently
    updated", or worse, interleaves two builds' merges).

    The lock is a transaction's (`pg_advisory_xact_lock`), kept open on a connection of
    its own: a session lock would not survive a transaction pooler (Supabase's port
    6543), which may hand each transaction another server connection. The transaction
    is told it may wait and idle as long as the build takes, and carries a name for
    the one that waits to print. A plain `dbt build` does not take the lock.
    """
    conn = connect(url)
    try:
        conn.execute("set local statement_timeout = 0")
        conn.execute("set local idle_in_transaction_session_timeout = 0")
        label = f"bikematch {what} on {socket.gethostname()} (pid {os.getpid()})"
        conn.execute("select set_config('application_name', %s, true)", (label,))
        if not conn.execute("select pg_try_advisory_xact_lock(%s)", (_BUILD_LOCK,)).fetchone()[0]:
            started = time.monotonic()
            log.warning("%s; waiting for it to finish", _holder(conn))
            conn.execute("select pg_advisory_xact_lock(%s)", (_BUILD_LOCK,))
            log.warning("the other build finished (waited %.0f s)", time.monotonic() - started)
        yield
    finally:
        try:
            conn.close()  # ends the transaction, and with it the lock
        except psycopg.Error:
            pass


def _holder(conn: psycopg.Connection) -> str:
    """Who holds the build lock, as far as the server lets this role see."""
    row = conn.execute(
        "select a.application_name, to_char(a.xact_start at time zone 'UTC', 'HH24:MI')"
        " from pg_locks as l join pg_stat_activity as a on a.pid = l.pid"
        " where l.locktype = 'advisory' and l.granted and l.classid = 0"
        " and l.objid = %s::bigint::oid and l.objsubid = 1",
        (_BUILD_LOCK,),
    ).fetchone()
    if row is None or not row[0]:
        return "another dbt build is running on this database"
    return f"another dbt build is running on this database: {row[0]}, since {row[1]} UTC"
