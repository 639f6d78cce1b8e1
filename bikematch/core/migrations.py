"""Apply the SQL files in `sql/` in order, once each, recorded in `bikematch_migrations`.

A migration is a file named `NNNN_description.sql`. Each runs in its own
transaction together with its bookkeeping row, under an advisory lock so two
processes running `db init` at once apply each file exactly once. A file that
was edited after it was applied is reported rather than silently skipped.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bikematch.core.database import DatabaseError, check_server
from bikematch.core.settings import SQL_DIR

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant works; it only has to be the same for every bikematch process.
_LOCK_KEY = 0x6B1E3A7C


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(sql_dir: Path = SQL_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(sql_dir.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise DatabaseError(f"{path}: migration files must be named NNNN_description.sql")
        migrations.append(Migration(version=path.stem, path=path))
    numbers = [m.version[:4] for m in migrations]
    if len(numbers) != len(set(numbers)):
        raise DatabaseError(f"two migrations in {sql_dir} share a number: {numbers}")
    return migrations


def apply_migrations(conn: psycopg.Connection, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply pending migrations; return the versions applied (empty when up to date)."""
    check_server(conn)
    conn.commit()  # its look-ups' transaction: each migration's must not be a savepoint
    migrations = discover(sql_dir)
    applied_now: list[str] = []
    # One applier at a time: each transaction takes the lock, which its end releases.
    # A session's lock would not do behind a transaction pooler, where the unlock can
    # run on another server connection than the lock and leave it held.
    with conn.transaction():
        _begin_migration(conn)
        conn.execute(
            """
            create table if not exists bikematch_migrations (
                version text primary key,
                checksum text not null,
                applied_at timestamptz not null default now()
            )
            """
        )
    for migration in migrations:
        with conn.transaction():
            _begin_migration(conn)
            row = conn.execute(
                "select checksum from bikematch_migrations where version = %s",
                (migration.version,),
            ).fetchone()
            if row is not None:
                if row[0] != migration.checksum:
                    raise DatabaseError(
                        f"migration {migration.version} changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            try:
                conn.execute(migration.sql)
            except psycopg.errors.InsufficientPrivilege as exc:
                reason = exc.diag.message_primary
                raise DatabaseError(
                    f"migration {migration.version} needs more privileges: {reason} "
                    "(for pgvector, a superuser must run CREATE EXTENSION vector)"
                ) from exc
            conn.execute(
                "insert into bikematch_migrations (version, checksum) values (%s, %s)",
                (migration.version, migration.checksum),
            )
            applied_now.append(migration.version)
    return applied_now


def _begin_migration(conn: psycopg.Connection) -> None:
    """At the start of each migration's transaction: wait for other appliers, and
    lift the server's statement timeout (Supabase stops statements after 2 minutes;
    building an index over a large table takes longer)."""
    conn.execute("set local statement_timeout = 0")
    conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
