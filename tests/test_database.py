"""The foundation: migrations, the embedded server, the schema, bad input."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import subprocess

import numpy as np
import psycopg
import pytest
from pgvector import HalfVector, Vector

from bikematch.core.database import DatabaseError, connect, mask_password
from bikematch.core.migrations import apply_migrations, discover, discover_functions

from .conftest import BIKEMATCH, eventually, run_cli
from .pooler import TransactionPooler


def _schema_snapshot(conn) -> list[tuple]:
    columns = conn.execute(
        """
        select table_name, column_name, data_type, is_nullable, column_default
        from information_schema.columns where table_schema = 'public'
        order by table_name, ordinal_position
        """
    ).fetchall()
    indexes = conn.execute(
        "select indexname, indexdef from pg_indexes where schemaname = 'public' order by 1"
    ).fetchall()
    applied = conn.execute(
        "select version, checksum, applied_at from bikematch_migrations order by 1"
    ).fetchall()
    return columns + indexes + applied


def test_migrations_apply_twice_without_change(conn):
    before = _schema_snapshot(conn)
    assert apply_migrations(conn) == []
    assert _schema_snapshot(conn) == before
    versions = [row[0] for row in conn.execute("select version from bikematch_migrations")]
    assert sorted(versions) == [m.version for m in discover()]


def test_edited_migration_is_reported(conn, tmp_path):
    for migration in discover():
        (tmp_path / migration.path.name).write_text(migration.sql)
    first = sorted(tmp_path.glob("*.sql"))[-1]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(DatabaseError, match="changed after it was applied"):
        apply_migrations(conn, tmp_path)


def test_unique_webshop_url(conn):
    insert = "insert into scraped_bikes (webshop, url, name) values (%s, %s, %s)"
    conn.execute(insert, ("shop-a.nl", "https://shop-a.nl/p/1", "Bike"))
    conn.execute(insert, ("shop-b.nl", "https://shop-a.nl/p/1", "Same URL, other shop"))
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(insert, ("shop-a.nl", "https://shop-a.nl/p/1", "Duplicate"))
    assert conn.execute("select count(*) from scraped_bikes").fetchone()[0] == 2


def test_vectors_and_halfvecs_round_trip(conn):
    conn.execute("select bikematch_register_model('roundtrip', 3, 2)")
    bike_id = conn.execute(
        "insert into scraped_bikes (webshop, url, name) values ('s', 'u', 'n') returning id"
    ).fetchone()[0]
    image = np.array([0.1, -0.25, 0.5], dtype=np.float32)
    text = np.array([1e-3, 0.999], dtype=np.float32)
    joined = np.concatenate([image, text]) / np.sqrt(2)
    conn.execute(
        """
        insert into vector_storage
            (bike_id, model, image_embedding, text_embedding, embedding, input_hash)
        values (%s, 'roundtrip', %s, %s, %s, 'hash')
        """,
        (bike_id, Vector(image), Vector(text), HalfVector(joined)),
    )
    row = conn.execute(
        "select image_embedding, text_embedding, embedding from vector_storage"
    ).fetchone()
    assert isinstance(row[0], Vector) and isinstance(row[2], HalfVector)
    np.testing.assert_array_equal(row[0].to_numpy(), image)
    np.testing.assert_array_equal(row[1].to_numpy(), text)
    np.testing.assert_allclose(row[2].to_numpy(), joined, rtol=1e-3)  # fp16 precision


def test_vector_of_wrong_dimension_is_rejected(conn):
    conn.execute("select bikematch_register_model('dims', 3, 2)")
    bike_id = conn.execute(
        "insert into scraped_bikes (webshop, url, name) values ('s', 'u', 'n') returning id"
    ).fetchone()[0]
    with pytest.raises(psycopg.errors.DataException, match="do not match model dims"):
        conn.execute(
            """
            insert into vector_storage
                (bike_id, model, image_embedding, text_embedding, embedding, input_hash)
            values (%s, 'dims', '[1,2]', '[1,2]', '[1,2,3,4]', 'h')
            """,
            (bike_id,),
        )


def test_model_registration_creates_one_hnsw_index_and_checks_dims(conn):
    name = conn.execute("select bikematch_register_model('pe-like', 1024, 1024)").fetchone()[0]
    assert (
        conn.execute("select bikematch_register_model('pe-like', 1024, 1024)").fetchone()[0] == name
    )
    indexdef = conn.execute(
        "select indexdef from pg_indexes where indexname = %s", (name,)
    ).fetchone()[0]
    assert "hnsw" in indexdef and "halfvec(2048)" in indexdef and "halfvec_cosine_ops" in indexdef
    with pytest.raises(psycopg.errors.DataException, match="registered with dimensions"):
        conn.execute("select bikematch_register_model('pe-like', 512, 512)")


def test_embedded_server_stops_and_restarts_with_data_intact(pg_root):
    env = {"BIKEMATCH_PGDATA": str(pg_root / "restart")}
    assert "applied" in run_cli("db", "init", env=env, check=True).stdout
    url = run_cli("db", "url", env=env, check=True).stdout.strip()
    with connect(url) as conn:
        conn.execute("insert into scraped_bikes (webshop, url, name) values ('s', 'u', 'kept')")
    assert "stopped" in run_cli("db", "stop", env=env, check=True).stdout
    assert "stopped" in run_cli("db", "status", env=env, check=True).stdout
    with pytest.raises(DatabaseError):
        connect(url)
    assert "up to date" in run_cli("db", "init", env=env, check=True).stdout
    with connect(url) as conn:
        assert conn.execute("select name from scraped_bikes").fetchall() == [("kept",)]
    assert "stopped" in run_cli("db", "stop", env=env, check=True).stdout
    assert "no embedded server" in run_cli("db", "stop", env=env, check=True).stdout


def test_two_processes_on_one_data_dir_share_one_server(pg_root):
    env = {"BIKEMATCH_PGDATA": str(pg_root / "shared")}
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: run_cli("db", "init", env=env), range(3)))
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
    # Each migration was applied by exactly one of them.
    outputs = "".join(r.stdout for r in results)
    assert outputs.count("0002_scraped_bikes") == 1
    urls = {run_cli("db", "url", env=env, check=True).stdout for _ in range(2)}
    assert len(urls) == 1
    with connect(urls.pop().strip()) as conn:  # sized for vector work from the first start
        assert conn.execute("show shared_buffers").fetchone()[0] != "128MB"
    run_cli("db", "stop", env=env, check=True)


def test_unreachable_database_url_is_one_line_exit_2():
    result = run_cli("db", "init", env={"DATABASE_URL": "postgresql://u:secret@127.0.0.1:9/db"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "127.0.0.1:9" in lines[0] and "Traceback" not in result.stderr
    assert "secret" not in result.stderr


def test_an_unreachable_supabase_direct_connection_names_the_pooler():
    """Supabase shows its direct connection first, which has an IPv6 address only;
    GitHub's runners have IPv4 only. (hostaddr: a refused port, without DNS.)"""
    url = "postgresql://postgres:pw@db.abcdefghijkl.supabase.co:9/postgres?hostaddr=127.0.0.1"
    result = run_cli("db", "init", env={"DATABASE_URL": url})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "db.abcdefghijkl.supabase.co:9" in result.stderr
    assert "use a pooler's connection string" in result.stderr
    other = run_cli("db", "init", env={"DATABASE_URL": "postgresql://u@127.0.0.1:9/db"})
    assert "pooler" not in other.stderr


def test_invalid_database_url_is_one_line_exit_2():
    result = run_cli("db", "url", env={"DATABASE_URL": "postgresql://host:notaport/db"})
    # `db url` only prints; `db init` connects and must fail cleanly.
    assert result.returncode == 0
    result = run_cli("db", "init", env={"DATABASE_URL": "postgresql://host:notaport/db"})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_database_without_pgvector_rights_names_create_extension(conn, database_url):
    conn.execute("drop database if exists plain")
    conn.execute("drop role if exists plain_user")
    conn.execute("create role plain_user login")
    conn.execute("create database plain owner plain_user")
    plain_url = database_url.replace("/postgres?", "/plain?").replace("postgres:@", "plain_user:@")
    result = run_cli("db", "init", env={"DATABASE_URL": plain_url})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "CREATE EXTENSION vector" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_mask_password():
    assert mask_password("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert mask_password("postgresql://u@h/d") == "postgresql://u@h/d"


def test_database_url_is_read_from_dot_env(tmp_path):
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://u:pw@127.0.0.1:7/fromdotenv\n")
    result = run_cli("db", "url", cwd=tmp_path)
    assert result.stdout.strip() == "postgresql://u:***@127.0.0.1:7/fromdotenv"
    result = run_cli("db", "init", cwd=tmp_path)
    assert result.returncode == 2 and "127.0.0.1:7" in result.stderr


def test_migrations_leave_no_lock_behind_a_transaction_pooler(conn, database_url):
    """Through a transaction pooler (Supabase's port 6543) each transaction may run on
    another server connection: a session's advisory lock, unlocked from another
    connection, stayed held, and the next `db init` waited for it forever."""
    conn.execute("drop table bikematch_migrations")  # every migration's bookkeeping again
    socket_dir = psycopg.conninfo.conninfo_to_dict(database_url)["host"]
    # More server connections than one run has transactions: no two share one.
    servers = len(discover()) + 3
    with TransactionPooler(socket_dir, servers) as pooler, connect(pooler.url) as pooled:
        assert apply_migrations(pooled) == [m.version for m in discover()]
        assert apply_migrations(pooled) == []
        held = conn.execute("select pid from pg_locks where locktype = 'advisory'")
        assert held.fetchall() == []
    assert pooler.transactions > len(discover())


def test_a_connection_dropped_mid_command_is_one_line_exit_2(conn, database_url, tmp_path):
    feed = tmp_path / "feed.csv"
    feed.write_text("url,name\nhttps://a.nl/1,Gazelle Ultimate C380\n")
    with connect(database_url) as locker:
        locker.execute("lock table scraped_bikes in access exclusive mode")
        command = subprocess.Popen(
            [BIKEMATCH, "import", str(feed), "--shop", "a.nl"],
            env={**os.environ, "DATABASE_URL": database_url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        waiting = "select pid from pg_stat_activity where wait_event_type = 'Lock'"

        def import_waits():
            """the import waits for the lock (or ended)"""
            return command.poll() is not None or conn.execute(waiting).fetchone()

        row = eventually(import_waits)
        assert row is not True, command.communicate()
        conn.execute("select pg_terminate_backend(%s)", row)
        _, stderr = command.communicate(timeout=60)
    assert command.returncode == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith(
        "error: the database ended the command: terminating connection due to administrator"
    ), stderr


def test_migrations_run_past_the_servers_statement_timeout(scratch_url, tmp_path):
    """Supabase stops any statement after 2 minutes; building an index over a large
    table in a migration takes longer. Each migration lifts the timeout for itself."""
    (tmp_path / "0001_slow.sql").write_text("select pg_sleep(0.2);\n")
    with connect(scratch_url) as slow:
        slow.execute("set statement_timeout = '50ms'")
        slow.commit()
        assert apply_migrations(slow, tmp_path) == ["0001_slow"]
        timeout = slow.execute("show statement_timeout").fetchone()[0]
        assert timeout == "50ms"  # the session's own setting is left as it was


def test_a_rewritten_migration_naming_the_applied_text_is_up_to_date(scratch_url, tmp_path):
    migration = tmp_path / "0001_table.sql"
    migration.write_text("create table t (a int);\n")
    with connect(scratch_url) as db:
        assert apply_migrations(db, tmp_path) == ["0001_table"]
        applied = hashlib.sha256(migration.read_bytes()).hexdigest()
        rewritten = f"-- its function moved\ncreate table t (a int);\n-- supersedes {applied}\n"
        migration.write_text(rewritten)
        assert apply_migrations(db, tmp_path) == []
        recorded = db.execute("select checksum from bikematch_migrations").fetchone()[0]
        assert recorded == hashlib.sha256(migration.read_bytes()).hexdigest()
        assert apply_migrations(db, tmp_path) == []
        migration.write_text(migration.read_text() + "-- edited\n")  # names another text
        with pytest.raises(DatabaseError, match="changed after it was applied"):
            apply_migrations(db, tmp_path)


def test_a_database_set_up_by_a_newer_release_is_left_alone(scratch_url, tmp_path):
    (tmp_path / "0001_table.sql").write_text("create table t (a int);\n")
    (tmp_path / "functions").mkdir()
    (tmp_path / "functions" / "01_f.sql").write_text(
        "create or replace function f() returns int language sql as $$ select 2 $$;\n"
    )
    newer = tmp_path / "0002_more.sql"
    newer.write_text("alter table t add column b int;\n")
    with connect(scratch_url) as db:
        apply_migrations(db, tmp_path)
        newer.unlink()  # the older release, without that migration
        (tmp_path / "functions" / "01_f.sql").write_text(
            "create or replace function f() returns int language sql as $$ select 1 $$;\n"
        )
        with pytest.raises(DatabaseError, match="set up by a newer bikematch .migration 0002_more"):
            apply_migrations(db, tmp_path)
        assert db.execute("select f()").fetchone()[0] == 2


def test_function_files_apply_after_the_migrations_and_again_when_edited(scratch_url, tmp_path):
    (tmp_path / "0001_table.sql").write_text("create table t (a int);\n")
    (tmp_path / "functions").mkdir()
    function = tmp_path / "functions" / "01_count.sql"
    function.write_text(
        "create or replace function f() returns bigint\n"
        "language sql as $$ select count(*) from t $$;\n"
    )
    with connect(scratch_url) as db:
        assert apply_migrations(db, tmp_path) == ["0001_table", "functions/01_count"]
        assert apply_migrations(db, tmp_path) == []
        function.write_text(function.read_text().replace("count(*)", "count(*) + 1"))
        assert apply_migrations(db, tmp_path) == ["functions/01_count"]
        assert db.execute("select f()").fetchone()[0] == 1


def test_db_status_says_what_the_database_holds(conn, database_url):
    from .clustering import add_listing, product_vector

    ids = [
        add_listing(conn, shop, url, product_vector(seed))
        for seed, (shop, url) in enumerate([("a.nl", "a1"), ("a.nl", "a2"), ("b.de", "b1")])
    ]
    conn.execute(  # as the embedder stores them: from the listing's current title and image
        "update vector_storage set source_hash = bikematch_embedding_source(name, image_url)"
        " from scraped_bikes where scraped_bikes.id = bike_id"
    )
    conn.execute("insert into scraped_bikes (webshop, url, name) values ('b.de', 'b2', 'New')")
    conn.execute("delete from vector_storage where bike_id = %s", (ids[2],))
    conn.execute(
        "insert into embedding_failures (bike_id, model, stage, error, attempts, source_hash)"
        " select id, 'test-model', 'fetch', 'HTTP 404', 5,"
        " bikematch_embedding_source(name, image_url) from scraped_bikes where id = %s",
        (ids[2],),
    )
    # a.nl: crawled whole, then stopped early by a limit; b.de never crawled (imported)
    conn.execute(
        "insert into crawls (webshop, started_at, finished_at, pages, stored, complete,"
        " stopped_early) values"
        " ('a.nl', '2026-12-01 02:00Z', '2026-12-01 02:40Z', 90, 2, true, '{}'),"
        " ('a.nl', '2026-12-02 02:00Z', '2026-12-02 02:30Z', 60, 1, false,"
        " '{\"reached max_pages (60)\"}')"
    )
    out = run_cli("db", "status", env={"DATABASE_URL": database_url}, check=True).stdout
    lines = out.splitlines()
    assert f"migrations: {len(discover())} applied, none pending" in lines
    assert "listings: 4 in 2 shops" in lines
    a_shop = next(line for line in lines if line.startswith("  a.nl: 2, last seen 20"))
    assert a_shop.endswith(
        ", last complete crawl 2026-12-01 02:40 UTC"
        " (the crawl of 2026-12-02 02:30 UTC stopped early)"
    ), a_shop
    assert any(line.startswith("  b.de: 2, last seen 20") for line in lines), out
    # b2 has no vector yet; b1's image failed for good
    assert any(line.startswith("  test-model: 2, 1 pending, 1 failed 5 times") for line in lines), (
        out
    )
    assert "exchange rates: none (`bikematch rates` stores the ECB's)" in lines


def test_db_status_of_a_database_without_the_schema_says_what_to_run(conn, database_url):
    conn.execute("drop database if exists bare")
    conn.execute("create database bare")
    bare = database_url.replace("/postgres?", "/bare?")
    env = {"DATABASE_URL": bare}
    out = run_cli("db", "status", env=env, check=True).stdout
    assert "schema: none yet; `bikematch db init` creates it" in out
    with connect(bare, autocommit=True) as other:
        other.execute("create table bikematch_migrations (version text, checksum text)")
        other.execute("insert into bikematch_migrations values ('0001_pgvector', '')")
    out = run_cli("db", "status", env=env, check=True).stdout
    waiting = len(discover()) - 1 + len(discover_functions())
    assert f"migrations: 1 applied, {waiting} pending (0002_" in out
    assert "functions/04_cluster_assignment): run `bikematch db init`" in out
    assert "run `bikematch db init`" in out
    conn.execute("drop database bare")


def test_price_history_records_changes_not_a_currency_filled_in(conn):
    """A row when the price or a stated currency changes; none when a currency that was
    missing is filled in (an import's --currency, a shop that adds it) at the same price."""
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    from bikematch.core.listings import Listing, store_listings

    start = datetime(2026, 12, 1, tzinfo=UTC)

    def seen(day: int, price, currency):
        listing = Listing(webshop="a.nl", url="u1", name="Gazelle", price=price, currency=currency)
        return store_listings(conn, [listing], seen_at=start + timedelta(days=day))

    seen(0, Decimal("2499.00"), None)
    assert seen(1, Decimal("2499.00"), "EUR").price_changes == 0  # filled in
    assert seen(2, Decimal("2299.00"), "EUR").price_changes == 1
    assert seen(3, Decimal("2299.00"), "GBP").price_changes == 1  # another currency
    assert seen(4, Decimal("2299.00"), None).price_changes == 0  # dropped again
    rows = conn.execute("select price, currency from price_history order by seen_at").fetchall()
    assert rows == [
        (Decimal("2499.00"), None),
        (Decimal("2299.00"), "EUR"),
        (Decimal("2299.00"), "GBP"),
    ]
