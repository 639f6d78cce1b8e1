"""Import, evaluation against labelled pairs, and calibration."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from .clustering import (
    DBT_TABLES,
    MODEL,
    add_listing,
    cluster,
    cluster_sets,
    drop_dbt_tables,
    near,
    product_vector,
)
from .conftest import run_cli


@pytest.fixture
def db(conn):
    drop_dbt_tables(conn)
    yield conn
    drop_dbt_tables(conn)


def test_import_csv_and_jsonl_through_the_listing_upsert(conn, database_url, tmp_path):
    feed = tmp_path / "feed.csv"
    feed.write_text(
        "id#title#manufacturer#price\n"
        "1#Gazelle Ultimate C380 500Wh#gazelle#2999.00\n"
        "2#  Sparta &amp; c-Grid   #sparta#0.0\n"
        "3##nobody#10\n"
        "#No id#x#10\n"
        "4#Cube Kathmandu#cube#op aanvraag\n"
    )
    env = {"DATABASE_URL": database_url}
    args = (
        "import",
        str(feed),
        "--shop",
        "feed.example",
        "--map",
        "url=id",
        "--map",
        "name=title",
        "--map",
        "brand=manufacturer",
        "--currency",
        "EUR",
    )
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    assert "read 5 rows: stored 3 (3 new" in result.stdout
    assert "missing_name 1" in result.stdout and "missing_url 1" in result.stdout
    assert "price unreadable 2" in result.stdout  # "op aanvraag", and 0.0 (no price)
    rows = {
        row[0]: row[1:]
        for row in conn.execute("select url, name, price, currency, brand from scraped_bikes")
    }
    assert rows["1"] == ("Gazelle Ultimate C380 500Wh", Decimal("2999.00"), "EUR", "gazelle")
    assert rows["2"] == ("Sparta & c-Grid", None, None, "sparta")  # 0.0 is no price
    again = run_cli(*args, env=env)
    assert "stored 3 (0 new, 0 price changes)" in again.stdout
    assert conn.execute("select count(*) from price_history").fetchone()[0] == 1

    jsonl = tmp_path / "feed.jsonl"
    jsonl.write_text('{"url": "abt:17", "name": "Stromer ST3", "price": "€ 7.490,00"}\n')
    result = run_cli("import", str(jsonl), "--shop", "abt.com", env=env)
    assert "stored 1 (1 new" in result.stdout
    price = conn.execute("select price, currency from scraped_bikes where url = 'abt:17'")
    assert price.fetchone() == (Decimal("7490.00"), "EUR")


def test_import_reads_excel_exports_and_says_which_file_it_cannot_read(
    conn, database_url, tmp_path
):
    env = {"DATABASE_URL": database_url}
    rows = "url\tname\tprice\nu1\tRiese & Müller Charger4\t€ 6.199,00\n"
    unicode_text = tmp_path / "unicode.txt"  # Excel's "Unicode text": UTF-16, tabs
    unicode_text.write_bytes(rows.encode("utf-16"))
    result = run_cli("import", str(unicode_text), "--shop", "excel.nl", env=env)
    assert result.returncode == 0 and "stored 1 (1 new" in result.stdout, result.stderr
    windows = tmp_path / "windows.csv"  # Excel's CSV on a Dutch Windows: cp1252, semicolons
    windows.write_bytes("url;name;price\nu2;Gazelle Médeo T10;€ 3.199,00\n".encode("cp1252"))
    result = run_cli("import", str(windows), "--shop", "excel.nl", env=env)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "not utf-8 text (byte 0xe9 near row 1)" in result.stderr
    assert "--encoding, e.g. cp1252" in result.stderr
    result = run_cli("import", str(windows), "--shop", "excel.nl", "--encoding", "cp1252", env=env)
    assert result.returncode == 0, result.stderr
    names = dict(conn.execute("select url, name from scraped_bikes where webshop = 'excel.nl'"))
    assert names == {"u1": "Riese & Müller Charger4", "u2": "Gazelle Médeo T10"}
    assert conn.execute("select price from scraped_bikes where url = 'u2'").fetchone()[0] == 3199

    nameless = tmp_path / "nameless.csv"
    nameless.write_text("id,label,price\n1,Bike,10\n")
    result = run_cli("import", str(nameless), "--shop", "x.nl", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {nameless}: no column for name (looked for name, title, product_name,"
        " product_title, item_name); its columns: id, label, price; name the column to use"
        " with --map name=COLUMN"
    ]
    result = run_cli("import", str(nameless), "--shop", "x.nl", "--map", "name=naam", env=env)
    assert result.returncode == 2 and "no column naam; its columns: id, label" in result.stderr


def test_import_knows_the_columns_of_common_feeds(conn, database_url, tmp_path):
    """A Google Merchant Center feed and a Shopify export load with no --map: a sale
    price wins over the regular one where there is one, the first of an export's
    listed photos is the image, availability is read."""
    env = {"DATABASE_URL": database_url}
    merchant = tmp_path / "merchant.tsv"
    merchant.write_text(
        "id\ttitle\tlink\timage_link\tprice\tsale_price\tbrand\tgtin\tmpn\tavailability\n"
        "A1\tGazelle Ultimate C380\thttps://s.nl/p/a1\thttps://s.nl/a1.jpg\t3299.00 EUR"
        "\t2999.00 EUR\tGazelle\t8712345678906\tGU-C380\tin_stock\n"
        "A2\tSparta c-Grid\thttps://s.nl/p/a2\thttps://s.nl/a2.jpg, https://s.nl/a2b.jpg"
        "\t2499.00 EUR\t\tSparta\t\t\tout_of_stock\n"
    )
    result = run_cli("import", str(merchant), "--shop", "s.nl", env=env)
    assert result.returncode == 0, result.stderr
    assert "stored 2 (2 new" in result.stdout
    assert (
        "columns: url=link, name=title, price=sale_price or price, image_url=image_link,"
        " brand=brand, gtin=gtin, sku=mpn, availability=availability"
    ) in result.stdout
    rows = {
        row[0]: row[1:]
        for row in conn.execute(
            "select url, price, currency, image_url, brand, gtin, sku, availability"
            " from scraped_bikes where webshop = 's.nl'"
        )
    }
    assert rows["https://s.nl/p/a1"] == (
        Decimal("2999.00"),
        "EUR",
        "https://s.nl/a1.jpg",
        "Gazelle",
        "8712345678906",
        "GU-C380",
        "InStock",
    )
    assert rows["https://s.nl/p/a2"][:3] == (Decimal("2499.00"), "EUR", "https://s.nl/a2.jpg")
    assert rows["https://s.nl/p/a2"][-1] == "OutOfStock"

    shopify = tmp_path / "products_export.csv"
    shopify.write_text(
        "Handle,Title,Vendor,Variant SKU,Variant Price,Variant Barcode,Image Src\n"
        "stromer-st3,Stromer ST3 Pinion,Stromer,ST3-P,7490.00,,https://cdn.example/st3.jpg\n"
    )
    result = run_cli(
        "import", str(shopify), "--shop", "ebikes.example", "--currency", "EUR", env=env
    )
    assert result.returncode == 0, result.stderr
    row = conn.execute(
        "select url, name, price, brand, sku, image_url from scraped_bikes"
        " where webshop = 'ebikes.example'"
    ).fetchone()
    assert row == (
        "stromer-st3",
        "Stromer ST3 Pinion",
        Decimal("7490.00"),
        "Stromer",
        "ST3-P",
        "https://cdn.example/st3.jpg",
    )


def test_import_takes_each_rows_shop_from_a_shop_column(conn, database_url, tmp_path):
    """One file of several shops' listings needs no --shop; without --shop or a shop
    column the file is refused before anything is stored."""
    env = {"DATABASE_URL": database_url}
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text(
        "shop,url,title,price\n"
        "a.nl,u1,Gazelle Ultimate C380,2999\n"
        "b.nl,u1,GAZELLE Ultimate C380 E-bike,2899\n"
        "b.nl,u2,Sparta c-Grid,1999\n"
        ",u3,No shop,10\n"
    )
    result = run_cli("import", str(catalogue), "--currency", "EUR", env=env)
    assert result.returncode == 0, result.stderr
    assert "read 4 rows: stored 3 (3 new" in result.stdout
    assert "missing_shop 1" in result.stdout
    assert "by shop: a.nl 1, b.nl 2" in result.stdout
    stored = conn.execute(
        "select webshop, url from scraped_bikes where webshop in ('a.nl', 'b.nl') order by 1, 2"
    ).fetchall()
    assert stored == [("a.nl", "u1"), ("b.nl", "u1"), ("b.nl", "u2")]

    shopless = tmp_path / "shopless.csv"
    shopless.write_text("url,title\nu9,Cube Kathmandu\n")
    result = run_cli("import", str(shopless), env=env)
    assert result.returncode == 2
    assert "no column for webshop" in result.stderr and "or give --shop" in result.stderr
    result = run_cli("import", str(shopless), "--shop", "c.nl", env=env)
    assert result.returncode == 0 and "stored 1 (1 new" in result.stdout, result.stderr


def test_import_reads_a_json_array_of_listings(conn, database_url, tmp_path):
    env = {"DATABASE_URL": database_url}
    products = tmp_path / "products.json"
    products.write_text(
        json.dumps(
            {
                "products": [
                    {"link": "https://j.nl/p/1", "title": "Cube Kathmandu Hybrid", "price": 2999},
                    {
                        "link": "https://j.nl/p/2",
                        "title": "Cube Touring Hybrid",
                        "price": "€ 2.499",
                    },
                ]
            }
        )
    )
    result = run_cli("import", str(products), "--shop", "j.nl", env=env)
    assert result.returncode == 0 and "stored 2 (2 new" in result.stdout, result.stderr
    assert conn.execute("select count(*) from scraped_bikes where webshop = 'j.nl'").fetchone() == (
        2,
    )
    products.write_text('{"count": 2, "next": null}')
    result = run_cli("import", str(products), "--shop", "j.nl", env=env)
    assert result.returncode == 2
    assert "not one holding a single array of listings (its keys: count, next)" in result.stderr


def test_import_reads_an_excel_workbook(conn, database_url, tmp_path):
    from openpyxl import Workbook

    env = {"DATABASE_URL": database_url}
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["Catalogue of 2026"])  # a title above the header
    sheet.append([])
    sheet.append(["Shop", "URL", "Title", "Price", "EAN"])
    sheet.append(["x.nl", "u1", "Stromer ST3 Pinion", 7490, "8712345678906"])
    sheet.append(["y.nl", "u1", "Stromer ST3", 7390.5, None])
    path = tmp_path / "catalogue.xlsx"
    workbook.save(path)
    # The first row that is not empty is the header: here the title, so no columns.
    result = run_cli("import", str(path), "--currency", "EUR", env=env)
    assert result.returncode == 2 and "no column for url" in result.stderr, result.stderr
    sheet.delete_rows(1, 2)
    workbook.save(path)
    result = run_cli("import", str(path), "--currency", "EUR", env=env)
    assert result.returncode == 0 and "stored 2 (2 new" in result.stdout, result.stderr
    rows = conn.execute(
        "select webshop, name, price, gtin from scraped_bikes where webshop in ('x.nl', 'y.nl')"
        " order by webshop"
    ).fetchall()
    assert rows == [
        ("x.nl", "Stromer ST3 Pinion", Decimal("7490.00"), "8712345678906"),
        ("y.nl", "Stromer ST3", Decimal("7390.50"), None),
    ]
    broken = tmp_path / "broken.xlsx"
    broken.write_text("not a workbook")
    result = run_cli("import", str(broken), "--shop", "z.nl", env=env)
    assert result.returncode == 2 and "not an Excel workbook" in result.stderr, result.stderr
    old_excel = tmp_path / "catalogue.xls"
    old_excel.write_bytes(b"\xd0\xcf\x11\xe0")
    result = run_cli("import", str(old_excel), "--shop", "z.nl", env=env)
    assert result.returncode == 2 and "save it as .xlsx or CSV" in result.stderr, result.stderr


def test_import_rejects_a_bad_mapping(tmp_path):
    feed = tmp_path / "feed.csv"
    feed.write_text("id,title\n1,x\n")
    result = run_cli("import", str(feed), "--shop", "s", "--map", "colour=title", cwd=tmp_path)
    assert result.returncode != 0 and "FIELD=COLUMN" in result.stderr
    assert not (tmp_path / ".bikematch").exists()  # no database started for a bad argument


def _labelled(db):
    p1, p2, p3 = product_vector(71), product_vector(72), product_vector(73)
    rows = [
        ("anchor.nl", "a1", p1),
        ("anchor.nl", "a2", p2),
        ("anchor.nl", "a3", p3),
        ("shop-b.nl", "b1", near(p1, 0.05, 1)),
        ("shop-b.nl", "b2", near(p2, 0.05, 2)),
        # Labelled as a3's match, but looks like a1: a miss and a false merge.
        ("shop-b.nl", "b3", near(p1, 0.06, 3)),
    ]
    for shop, url, vector in rows:
        add_listing(db, shop, url, vector, name=f"title {url}")


def _truth_file(tmp_path):
    truth = tmp_path / "truth.csv"
    truth.write_text(
        "webshop_a,url_a,webshop_b,url_b\n"
        "anchor.nl,a1,shop-b.nl,b1\nanchor.nl,a2,shop-b.nl,b2\nanchor.nl,a3,shop-b.nl,b3\n"
    )
    return truth


def test_eval_scores_clusters_against_labelled_pairs(db, database_url, tmp_path):
    _labelled(db)
    cluster(database_url)
    env = {"DATABASE_URL": database_url}
    result = run_cli(
        "eval", "--truth", str(_truth_file(tmp_path)), "--model", MODEL, "--json", env=env
    )
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert list(scores) == ["precision", "recall", "f1", "bcubed_precision", "bcubed_recall"]
    # b1 joins a1 (right); b3 (like a1) cannot join a1's cluster, one per shop: alone.
    assert scores["precision"] == 1.0 and scores["recall"] == pytest.approx(2 / 3, abs=1e-4)
    text = run_cli("eval", "--truth", str(_truth_file(tmp_path)), "--model", MODEL, env=env)
    assert "worst misses:" in text.stdout and "'title a3'" in text.stdout


def test_eval_reads_listings_labelled_with_their_product(db, database_url, tmp_path):
    """A truth of listings labelled with their product scores as its pairs do, and a
    listing labelled alone is scored: merging it is a false merge."""
    _labelled(db)
    add_listing(db, "shop-c.nl", "c1", near(product_vector(71), 0.05, 5), name="title c1")
    add_listing(db, "shop-c.nl", "c4", near(product_vector(73), 0.05, 6), name="title c4")
    cluster(database_url)
    truth = tmp_path / "products.csv"
    truth.write_text(
        "webshop,url,product_id\n"
        "anchor.nl,a1,P1\nshop-b.nl,b1,P1\nshop-c.nl,c1,P1\n"
        "anchor.nl,a2,P2\nshop-b.nl,b2,P2\n"
        "anchor.nl,a3,P3\nshop-b.nl,b3,P3\n"
        "shop-c.nl,c4,P4\n"  # a product of its own, that looks like a3
    )
    env = {"DATABASE_URL": database_url}
    result = run_cli("eval", "--truth", str(truth), "--model", MODEL, "--json", env=env)
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    clusters = cluster_sets(db)
    # Whatever the clusters are, the scores are those of every pair within a product.
    truth_pairs = {
        frozenset(pair)
        for pair in [("a1", "b1"), ("a1", "c1"), ("b1", "c1"), ("a2", "b2"), ("a3", "b3")]
    }
    predicted = {
        frozenset((a, b))
        for group in clusters
        for a in group
        for b in group
        if a < b and a[0] != b[0]
    }
    assert predicted, clusters
    assert scores["precision"] == pytest.approx(
        len(truth_pairs & predicted) / len(predicted), abs=1e-4
    )
    assert scores["recall"] == pytest.approx(
        len(truth_pairs & predicted) / len(truth_pairs), abs=1e-4
    )
    assert any("c4" in group and len(group) > 1 for group in clusters)  # c4 is merged: scored
    assert scores["precision"] < 1


def test_eval_complete_counts_merges_of_listings_no_pair_names(db, database_url, tmp_path):
    """A complete truth (every match listed, as the public benchmarks) makes a merge of an
    unnamed listing a false merge; a partial one cannot see it."""
    _labelled(db)
    # Named by no pair: with a complete truth it matches nothing, yet it looks like a3.
    add_listing(db, "shop-b.nl", "b4", near(product_vector(73), 0.05, 4), name="title b4")
    cluster(database_url)
    env = {"DATABASE_URL": database_url}
    truth = str(_truth_file(tmp_path))

    def scores(*flags):
        result = run_cli("eval", "--truth", truth, "--model", MODEL, *flags, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    partial = json.loads(scores("--json"))
    assert partial["precision"] == 1.0 and partial["recall"] == pytest.approx(2 / 3, abs=1e-4)
    complete = json.loads(scores("--json", "--complete"))
    assert complete["precision"] == pytest.approx(2 / 3, abs=1e-4)  # a3-b4 counts now
    assert complete["recall"] == pytest.approx(2 / 3, abs=1e-4)
    text = scores("--complete")
    assert "scored with all 7 listings of their shops" in text
    assert "'title a3'  <->  'title b4'" in text or "'title b4'  <->  'title a3'" in text


def test_calibrate_sweeps_and_keeps_the_best(db, database_url, tmp_path):
    _labelled(db)
    cluster(database_url)
    env = {"DATABASE_URL": database_url}
    result = run_cli(
        "calibrate",
        "--truth",
        str(_truth_file(tmp_path)),
        "--model",
        MODEL,
        "--anchor",
        "anchor.nl",
        "--thresholds",
        "0.5:0.99:0.245",
        "--weights",
        "0.5:0.5:0.1",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 + 3 + 1  # header, three thresholds, best
    assert lines[-1].startswith("best: threshold")
    assert DBT_TABLES  # the database stays clustered at the best setting
    assert db.execute("select count(*) from master_bikes").fetchone()[0] == 6
