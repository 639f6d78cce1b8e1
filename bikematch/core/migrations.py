"""The schema: the migrations in `sql/`, then the functions in `sql/functions/`.

A migration is a file named `NNNN_description.sql` that changes tables. Each is
applied once, in order, recorded in `bikematch_migrations`. A file that was edited
after it was applied is reported rather than silently skipped, unless it names the
checksum of the text that was applied in a line `-- supersedes <sha256>` (a
migration rewritten without changing what it leaves in the database).

The functions (and their triggers) are defined once each, in `sql/functions/NN_name.sql`
with CREATE OR REPLACE: a file is applied after the migrations whenever its text
differs from the one recorded in `bikematch_functions`, so a change to a function is
an edit of its file, not a new copy of it. A migration runs before the functions
are (re)defined, so it does not call them.

Each file runs in its own transaction together with its bookkeeping row, under an
advisory lock, so two processes running `db init` at once apply each exactly once.
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
_FUNCTIONS_NAME = re.compile(r"^\d{2}_[a-z0-9_]+\.sql$")
_SUPERSEDES = re.compile(r"^-- supersedes ([0-9a-f]{64})$", re.MULTILINE)
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

    @property
    def superseded(self) -> set[str]:
        """Checksums of earlier texts of this file that left the same database."""
        return set(_SUPERSEDES.findall(self.sql))


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


def discover_functions(sql_dir: Path = SQL_DIR) -> list[Migration]:
    functions = []
    for path in sorted((sql_dir / "functions").glob("*.sql")):
        if not _FUNCTIONS_NAME.match(path.name):
            raise DatabaseError(f"{path}: function files must be named NN_description.sql")
        functions.append(Migration(version=f"functions/{path.stem}", path=path))
    return functions


def apply_migrations(conn: psycopg.Connection, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply pending migrations, then the function files that changed; return what was
    applied (empty when up to date)."""
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
        conn.execute(
            """
            create table if not exists bikematch_functions (
                file text primary key,
                checksum text not null,
                applied_at timestamptz not null default now()
            )
            """
        )
        # An older release would put back its own functions over a newer one's.
        known = [m.version for m in migrations]
        unknown = conn.execute(
            "select version from bikematch_migrations where version <> all(%s) order by 1",
            (known,),
        ).fetchall()
        if unknown:
            raise DatabaseError(
                f"the database was set up by a newer bikematch (migration {unknown[-1][0]} "
                "is not in this one): upgrade bikematch before running it on this database"
            )
    for migration in migrations:
        with conn.transaction():
            _begin_migration(conn)
            row = conn.execute(
                "select checksum from bikematch_migrations where version = %s",
                (migration.version,),
            ).fetchone()
            if row is not None:
                if row[0] in migration.superseded:
                    conn.execute(
                        "update bikematch_migrations set checksum = %s where version = %s",
                        (migration.checksum, migration.version),
                    )
                elif row[0] != migration.checksum:
                    raise DatabaseError(
                        f"migration {migration.version} changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            _execute(conn, migration)
            conn.execute(
                "insert into bikematch_migrations (version, checksum) values (%s, %s)",
                (migration.version, migration.checksum),
            )
            applied_now.append(migration.version)
    for functions in discover_functions(sql_dir):
        with conn.transaction():
            _begin_migration(conn)
            row = conn.execute(
                "select checksum from bikematch_functions where file = %s", (functions.version,)
            ).fetchone()
            if row is not None and row[0] == functions.checksum:
                continue
            _execute(conn, functions)
            conn.execute(
                """
                insert into bikematch_functions (file, checksum) values (%s, %s)
                on conflict (file) do update
                set checksum = excluded.checksum, applied_at = now()
                """,
                (functions.version, functions.checksum),
            )
            applied_now.append(functions.version)
    return applied_now


def pending(conn: psycopg.Connection, sql_dir: Path = SQL_DIR) -> tuple[int, list[str]]:
    """How many migrations the database has applied, and what `db init` would apply:
    the migrations it lacks, and the function files whose text changed."""
    if conn.execute("select to_regclass('bikematch_migrations')").fetchone()[0] is None:
        return 0, [m.version for m in discover(sql_dir)]
    applied = dict(conn.execute("select version, checksum from bikematch_migrations").fetchall())
    functions = {}
    if conn.execute("select to_regclass('bikematch_functions')").fetchone()[0] is not None:
        functions = dict(conn.execute("select file, checksum from bikematch_functions").fetchall())
    waiting = [m.version for m in discover(sql_dir) if m.version not in applied]
    waiting += [
        f.version for f in discover_functions(sql_dir) if functions.get(f.version) != f.checksum
    ]
    return len(applied), waiting


def _execute(conn: psycopg.Connection, migration: Migration) -> None:
    try:
        conn.execute(migration.sql)
    except psycopg.errors.InsufficientPrivilege as exc:
        reason = exc.diag.message_primary
        raise DatabaseError(
            f"{migration.path.name} needs more privileges: {reason} "
            "(for pgvector, a superuser must run CREATE EXTENSION vector)"
        ) from exc


def _begin_migration(conn: psycopg.Connection) -> None:
    """At the start of each migration's transaction: wait for other appliers, and
    lift the server's statement timeout (Supabase stops statements after 2 minutes;
    building an index over a large table takes longer)."""
    conn.execute("set local statement_timeout = 0")
    conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
