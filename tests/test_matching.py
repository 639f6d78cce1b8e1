"""Matching an analyst can trust: product attributes read from titles, conflicts that
keep variants apart, price outliers, and corrections by hand (explain, link, unlink).

Real Postgres, real dbt builds, hand-made vectors (tests/clustering.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from psycopg import sql

from bikematch.app.dbt import run_dbt

from .clustering import (
    HALF_DIMS,
    add_listing,
    at_cosine,
    cluster,
    cluster_sets,
    drop_dbt_tables,
    near,
    product_vector,
    set_vector,
)
from .conftest import run_cli

ATTRIBUTE_COLUMNS = {
    "battery_wh": "battery_whs",
    "frame_type": "frame_types",
    "model_year": "model_years",
    "motor": "motors",
    "motor_position": "motor_positions",
    "brand": "brands",
    "edition": "editions",
}

# (title, brand field, attribute, the values the listing states)
WORDINGS = [
    ("Testbike 500Wh", None, "battery_wh", ["500"]),
    ("Testbike 500 Wh", None, "battery_wh", ["500"]),
    ("Testbike met 500wh accu", None, "battery_wh", ["500"]),
    ("Testbike PowerTube i625", None, "battery_wh", ["625"]),
    ("Testbike 0,5 kWh", None, "battery_wh", ["500"]),
    ("Testbike 0.625 kWh", None, "battery_wh", ["625"]),
    ("Testbike PowerPack 400", None, "battery_wh", ["400"]),
    ("Testbike dames", None, "frame_type", ["dames"]),
    ("Testbike Damesfiets", None, "frame_type", ["dames"]),
    ("Testbike heren", None, "frame_type", ["heren"]),
    ("Testbike lage instap", None, "frame_type", ["lage instap"]),
    ("Testbike moederfiets", None, "frame_type", ["lage instap"]),
    ("Testbike ladies", None, "frame_type", ["dames"]),
    ("Testbike women's", None, "frame_type", ["dames"]),
    ("Testbike gents", None, "frame_type", ["heren"]),
    ("Testbike men's", None, "frame_type", ["heren"]),
    ("Testbike step-through", None, "frame_type", ["lage instap"]),
    ("Testbike low-step", None, "frame_type", ["lage instap"]),
    ("Testbike crossbar", None, "frame_type", ["heren"]),
    ("Testbike Damen", None, "frame_type", ["dames"]),
    ("Testbike Herren", None, "frame_type", ["heren"]),
    ("Testbike Tiefeinsteiger", None, "frame_type", ["lage instap"]),
    ("Testbike Trapez", None, "frame_type", ["trapeze"]),
    ("Testbike Wave", None, "frame_type", ["lage instap"]),
    ("Testbike unisex", None, "frame_type", ["unisex"]),
    ("Testbike D53", None, "frame_type", ["dames"]),
    ("Testbike H 57", None, "frame_type", ["heren"]),
    ("Testbike dames/heren", None, "frame_type", ["dames", "heren"]),
    ("Testbike 2024", None, "model_year", ["2024"]),
    ("Testbike (2024)", None, "model_year", ["2024"]),
    ("Testbike MY24", None, "model_year", ["2024"]),
    ("Testbike MJ 2024", None, "model_year", ["2024"]),
    ("Testbike MY2025", None, "model_year", ["2025"]),
    ("Testbike homme", None, "frame_type", ["heren"]),
    ("Testbike femme", None, "frame_type", ["dames"]),
    ("Testbike Midstep", None, "frame_type", ["trapeze"]),
    ("Testbike High-Step", None, "frame_type", ["heren"]),
    ("Explore E+ 1 GTS", None, "frame_type", ["heren"]),
    ("Explore E+ 1 STA", None, "frame_type", ["lage instap"]),
    ("Verve+ 2 Stagger", None, "frame_type", ["trapeze"]),
    ("Testbike Bosch Performance CX", None, "motor", ["bosch/performance line/cx"]),
    ("Testbike Shimano EP5", None, "motor", ["shimano/ep5"]),
    ("Testbike Fazua Ride 60", None, "motor", ["fazua/ride 60"]),
    ("Testbike Mahle X35", None, "motor", ["mahle/x35"]),
    ("Testbike Panasonic GX Ultimate", None, "motor", ["panasonic"]),
    ("Explore E+ 1 SyncDrive Sport", None, "motor", ["giant syncdrive/sport"]),
    ("Explore E+ 1 SyncDrive Sport", None, "edition", ["plus"]),
    ("Testbike Ananda voorwielmotor", None, "motor", ["ananda"]),
    ("Testbike modeljaar 2024", None, "model_year", ["2024"]),
    ("Testbike Bosch Performance Line CX", None, "motor", ["bosch/performance line/cx"]),
    ("Testbike Bosch CX", None, "motor", ["bosch/performance line/cx"]),
    ("Testbike Bosch Active Line Plus", None, "motor", ["bosch/active line/plus"]),
    ("Testbike Bosch Cargo Line", None, "motor", ["bosch/cargo line"]),
    ("Testbike Bosch", None, "motor", ["bosch"]),
    ("Testbike Shimano EP8", None, "motor", ["shimano/ep8"]),
    ("Testbike Shimano EP801", None, "motor", ["shimano/ep801"]),
    ("Testbike Shimano Steps E6100", None, "motor", ["shimano/e6100"]),
    ("Testbike Bafang M420", None, "motor", ["bafang/m420"]),
    ("Testbike Yamaha PW-X3", None, "motor", ["yamaha/pw-x3"]),
    ("Testbike middenmotor", None, "motor_position", ["mid"]),
    ("Testbike voorwielmotor", None, "motor_position", ["front"]),
    ("Testbike achterwielmotor", None, "motor_position", ["rear"]),
    ("Testbike Bosch CX", None, "motor_position", ["mid"]),
    ("Load 75", "Riese & Müller", "brand", ["riese & müller"]),
    ("Load 75", "Riese und Muller", "brand", ["riese & müller"]),
    ("Load 75", "R&M", "brand", ["riese & müller"]),
    ("R&M Load 75", None, "brand", ["riese & müller"]),
    ("Testbike", "Gazelle", "brand", ["gazelle"]),
    ("Testbike", "Unknownbrand", "brand", []),
    ("KTM Macina Style 720", None, "brand", ["ktm"]),
    ("Testbike", "Rad Power Bikes", "brand", ["rad power bikes"]),
    ("Kalkhoff Endeavour 5.B Pro", None, "edition", ["pro"]),
    ("Cube Touring Hybrid Pro Plus", None, "edition", ["plus", "pro"]),
    ("Gazelle Grenoble C7+ HMB", None, "edition", ["plus"]),
    ("Kalkhoff Image 3.B Elite", None, "edition", ["elite"]),
    ("Testbike Sport", None, "edition", ["sport"]),
    ("Kalkhoff Endeavour 5.B Excite+", None, "edition", ["excite", "plus"]),
    ("Kalkhoff Image 3.B Move", None, "edition", ["move"]),
    ("Cube Reaction Hybrid SLT 750", None, "edition", ["slt"]),
    ("Specialized Turbo Vado SL 4.0", None, "edition", ["sl"]),
    ("Cube Stereo Hybrid 140 HPC Race 625", None, "edition", ["race"]),
    ("Testbike Bosch Performance Line CX Race", None, "edition", []),
    ("Testbike Bosch CX-Race", None, "edition", []),
    ("Riese & Müller Charger4 GT vario HS", None, "edition", ["gt", "hs"]),
    ("Stromer ST5 ABS", None, "edition", ["abs"]),
    ("Batavus Finez E-go Power Exclusive", None, "edition", ["exclusive"]),
    ("Testbike Bosch Active Line Plus", None, "edition", []),
    ("Testbike Bosch Active Plus", None, "edition", []),
    # what a title does not say, it does not state
    ("Testbike 28 inch 7 versnellingen", None, "battery_wh", []),
    ("Testbike 28 inch 7 versnellingen", None, "model_year", []),
    ("Testbike 28 inch 7 versnellingen", None, "frame_type", []),
]


def add_named(db, rows, field: str | None = None) -> None:
    """Listings from (shop, url, vector, title) rows, or (shop, url, vector, title, value
    of `field`) rows where a field is named (brand, sku)."""
    for shop, url, vector, name, *value in rows:
        add_listing(db, shop, url, vector, name=name, **({field: value[0]} if field else {}))


@pytest.fixture
def db(conn):
    drop_dbt_tables(conn)
    yield conn
    drop_dbt_tables(conn)


def test_the_vocabulary_reads_each_wording(db, database_url):
    for number, (title, brand, _, _) in enumerate(WORDINGS):
        add_listing(db, "shop.nl", f"w{number}", product_vector(number), name=title, brand=brand)
    run_dbt(
        ["build", "--select", "+int_listing_attributes", "--exclude-resource-type", "test"],
        database_url,
        capture=True,
    )
    wrong = []
    for number, (title, brand, attribute, expected) in enumerate(WORDINGS):
        column = ATTRIBUTE_COLUMNS[attribute]
        stated = db.execute(
            sql.SQL(
                "select {} from int_listing_attributes"
                " join scraped_bikes on scraped_bikes.id = int_listing_attributes.bike_id"
                " where url = %s"
            ).format(sql.Identifier(column)),
            (f"w{number}",),
        ).fetchone()[0]
        if sorted(stated) != sorted(expected):
            wrong.append(f"{title!r} (brand {brand!r}): {attribute} {stated}, not {expected}")
    assert not wrong, "\n".join(wrong)


def test_attributes_are_read_again_where_the_title_or_the_vocabulary_changed(db, database_url):
    names = {
        "a": "Gazelle Grenoble C7 500 Wh dames 2024",
        "b": "Sparta M8b 400Wh heren 2023",
        "c": "Batavus Finez 625Wh",
    }
    ids = {
        url: add_listing(db, "shop.nl", url, product_vector(n), name=name)
        for n, (url, name) in enumerate(names.items())
    }

    def build(*select):
        args = ["build", "--select", *select, "--exclude-resource-type", "test"]
        run_dbt(args, database_url, capture=True)

    def battery(url):
        row = db.execute(
            "select battery_whs from int_listing_attributes where bike_id = %s", (ids[url],)
        ).fetchone()
        return row and row[0]

    build("+int_listing_attributes")
    assert (battery("a"), battery("b"), battery("c")) == (["500"], ["400"], ["625"])
    # b's row is marked: kept as it is while b's title and the vocabulary stay the same
    db.execute(
        "update int_listing_attributes set battery_whs = '{1}' where bike_id = %s", (ids["b"],)
    )
    db.execute("update scraped_bikes set name = replace(name, '500', '545') where url = 'a'")
    db.execute("delete from scraped_bikes where url = 'c'")
    build("+int_listing_attributes")
    assert (battery("a"), battery("b"), battery("c")) == (["545"], ["1"], None)
    # a wording added to the vocabulary: every listing is read again
    db.execute(
        "insert into ebike_vocabulary (attribute, pattern, value) values"
        " ('edition', '\\mzzz\\M', 'zzz')"
    )
    try:
        build("int_listing_attributes")
    finally:
        db.execute("delete from ebike_vocabulary where value = 'zzz'")
    assert battery("b") == ["400"]


def test_what_the_title_says_is_readable_in_the_marts(db, database_url):
    add_listing(
        db, "anchor.nl", "a1", product_vector(1), name="Gazelle Grenoble C7 500 Wh dames (2024)"
    )
    cluster(database_url)
    row = db.execute(
        "select battery_wh, frame_type, model_year, motor from bike_offers where url = 'a1'"
    ).fetchone()
    assert row == (500, "dames", 2024, None)


def test_a_listing_that_contradicts_a_member_of_the_cluster_stays_out(db, database_url):
    """c1 is a heren bike; b1 leaves its frame out and so matches both a1 (dames) and c1
    (b1's price is a1's). c1 would join a1's cluster through b1, but a1 contradicts it:
    it stays out."""
    p1 = product_vector(1)
    rows = [
        ("anchor.nl", "a1", 11, "Gazelle Grenoble C7 500Wh dames 2024", 3000),
        ("shop-b.nl", "b1", 21, "Gazelle Grenoble C7 500Wh 2024", 3000),
        ("shop-c.nl", "c1", 31, "Gazelle Grenoble C7 500Wh heren 2024", 4000),
    ]
    for shop, url, seed, name, price in rows:
        add_listing(db, shop, url, near(p1, 0.03, seed), name=name, price=price)
    cluster(database_url)
    assert cluster_sets(db) == {frozenset({"a1", "b1"}), frozenset({"c1"})}
    # b1 and c1 are a candidate pair (what one omits is no conflict)...
    candidates = db.execute(
        "select count(*) from int_candidate_matches as c"
        " join scraped_bikes as l on l.id = c.bike_id"
        " join scraped_bikes as n on n.id = c.neighbour_id"
        " where l.url = 'c1' and n.url = 'b1' and c.passes"
    ).fetchone()[0]
    assert candidates == 1


def test_variants_never_merge_whatever_their_similarity(db, database_url):
    p1 = product_vector(1)
    names = {
        "a1": "Sparta M8b Ltd 500Wh dames Bosch Active Line Plus 2024",
        "b1": "Sparta M8b Ltd 625Wh dames Bosch Active Line Plus 2024",  # battery
        "c1": "Sparta M8b Ltd 500Wh heren Bosch Active Line Plus 2024",  # frame
        "d1": "Sparta M8b Ltd 500Wh dames Bosch Active Line Plus 2025",  # year
        "e1": "Sparta M8b Ltd 500Wh dames Bosch Performance Line CX 2024",  # motor
        "f1": "Sparta M10b Ltd 500Wh dames Bosch Active Line Plus 2024",  # model line
        "g1": "Sparta M8b Ltd 0,5 kWh Damesfiets Bosch Active Plus MY24",  # the same bike
    }
    for number, (url, name) in enumerate(names.items()):
        shop = "anchor.nl" if url == "a1" else f"shop-{url[0]}.nl"
        add_listing(db, shop, url, near(p1, 0.02, number), name=name)
    cluster(database_url)
    sets = cluster_sets(db)
    assert frozenset({"a1", "g1"}) in sets
    assert {frozenset({url}) for url in ("b1", "c1", "d1", "e1", "f1")} <= sets


def test_edition_words_make_another_model_line(db, database_url):
    """Pro, Plus, Sport... are part of a model line's name: a title without one names
    the base line. C7+ is C7 Plus, and still model C7."""
    p1 = product_vector(1)
    rows = [
        ("anchor.nl", "a1", near(p1, 0.02, 1), "Kalkhoff Endeavour 5.B 625Wh dames 2024"),
        ("shop-b.nl", "b1", near(p1, 0.02, 2), "Kalkhoff Endeavour 5.B Pro 625Wh dames 2024"),
        ("shop-c.nl", "c1", near(p1, 0.02, 3), "Kalkhoff Endeavour 5.B 625 Wh Damesfiets"),
        ("anchor.nl", "a2", near(p1, 0.02, 4), "Gazelle Grenoble C7 Plus 500Wh dames 2024"),
        ("shop-b.nl", "b2", near(p1, 0.02, 5), "Gazelle Grenoble C7+ 500Wh dames 2024"),
        ("shop-c.nl", "c2", near(p1, 0.02, 6), "Gazelle Grenoble C8+ 500Wh dames 2024"),
    ]
    add_named(db, rows)
    cluster(database_url)
    sets = cluster_sets(db)
    assert frozenset({"a1", "c1"}) in sets
    assert frozenset({"a2", "b2"}) in sets
    assert {frozenset({"b1"}), frozenset({"c2"})} <= sets


def test_a_brands_word_or_a_shared_part_number_outweighs_an_edition_word(db, database_url):
    """ "Elite Screens" is a brand, not the Elite edition; a shared part number
    (KX-TGA660B) names the edition, so "Plus" beside it describes. A model line's name
    (Charger4) is no part number: Charger4 Sport is another line."""
    p1, p2, p3 = product_vector(81), product_vector(82), product_vector(83)
    rows = [
        ("anchor.nl", "a1", p1, "Elite Screens MaxWhite Motorized Screen 92", "Elite Screens"),
        ("shop-b.nl", "b1", near(p1, 0.01, 1), "MaxWhite Motorized Screen 92", "Elite"),
        ("anchor.nl", "a2", p2, "Panasonic KX-TGA660B DECT 6.0 Plus Handset", None),
        ("shop-b.nl", "b2", near(p2, 0.01, 2), "Panasonic KX-TGA660B Extra Handset", None),
        ("anchor.nl", "a3", p3, "Riese & Müller Charger4 Sport 625Wh", None),
        ("shop-b.nl", "b3", near(p3, 0.01, 3), "Riese & Müller Charger4 625Wh", None),
    ]
    add_named(db, rows, "brand")
    cluster(database_url)
    assert cluster_sets(db) == {
        frozenset({"a1", "b1"}),
        frozenset({"a2", "b2"}),
        frozenset({"a3"}),
        frozenset({"b3"}),
    }


def test_a_listing_that_leaves_out_what_tells_two_products_apart_goes_by_price(db, database_url):
    """The anchor shop sells two variants of one line, a motor apart (a2's title leaves
    its motor out: one shop listing both makes them two products all the same). Titles
    that leave the motor out fit both, and their similarity then measures wording: b1's
    price is near a1's and far from a2's, so it joins a1; c1's and d1's say nothing
    clear (c1 sits between the two, d1 has no price): they stay alone, ambiguous. A
    link by hand still joins one (e1, unlike any other listing, to c1)."""
    p1 = product_vector(1)
    listings = [
        ("anchor.nl", "a1", 1, "Gazelle Grenoble C7 500Wh dames Bosch CX 2024", 3000),
        ("anchor.nl", "a2", 2, "Gazelle Grenoble C7 500Wh dames 2024", 4000),
        ("shop-b.nl", "b1", 3, "Gazelle Grenoble C7 500 Wh Damesfiets 2024", 3050),
        ("shop-c.nl", "c1", 4, "Gazelle Grenoble C7 dames 500Wh (2024)", 3480),
        ("shop-d.nl", "d1", 5, "Gazelle Grenoble C7 500Wh dames MY24", None),
    ]
    for shop, url, seed, name, price in listings:
        add_listing(db, shop, url, near(p1, 0.02, seed), name=name, price=price)
    add_listing(db, "shop-e.nl", "e1", product_vector(9), name="Grenoble C7 dames", price=3490)
    db.execute(
        "insert into match_links (first_id, second_id, decision)"
        " select least(c1.id, e1.id), greatest(c1.id, e1.id), 'link'"
        " from scraped_bikes as c1, scraped_bikes as e1 where c1.url = 'c1' and e1.url = 'e1'"
    )
    cluster(database_url)
    sets = cluster_sets(db)
    assert frozenset({"a1", "b1"}) in sets
    assert {frozenset({"a2"}), frozenset({"c1", "e1"}), frozenset({"d1"})} <= sets
    via = dict(
        db.execute(
            "select url, matched_via from master_bikes"
            " join scraped_bikes on scraped_bikes.id = master_bikes.bike_id"
        ).fetchall()
    )
    assert via["c1"] == via["d1"] == "ambiguous"
    assert via["b1"] == "embedding" and via["e1"] == "link"

    explained = run_cli(
        "explain", "a1", "c1", "--model", "test-model", env={"DATABASE_URL": database_url}
    )
    assert explained.returncode == 0, explained.stderr
    assert "B fits two different products" in explained.stdout


def test_a_clusters_price_is_its_members_median_not_its_nearest_member(db, database_url):
    """e1 leaves out the motor that tells a1's product (EUR 3,000 at both shops) from
    a2's (3,600 at two shops, 3,130 at shop c, whose discount is its own). e1's 3,115 is
    near a1's product; shop c's one low price must not make a2's look as near."""
    p1 = product_vector(1)
    listings = [
        ("anchor.nl", "a1", 1, "Gazelle Grenoble C7 500Wh dames Bosch CX 2024", 3000),
        ("anchor.nl", "a2", 2, "Gazelle Grenoble C7 500Wh dames Bafang M420 2024", 3600),
        ("shop-c.nl", "c1", 3, "Gazelle Grenoble C7 500Wh dames Bosch CX (2024)", 3000),
        ("shop-c.nl", "c2", 4, "Gazelle Grenoble C7 500Wh dames Bafang M420 (2024)", 3130),
        ("shop-d.nl", "d2", 5, "Gazelle Grenoble C7 dames 500Wh Bafang M420 2024", 3600),
        ("shop-e.nl", "e1", 6, "Gazelle Grenoble C7 500 Wh Damesfiets 2024", 3115),
    ]
    for shop, url, seed, name, price in listings:
        add_listing(db, shop, url, near(p1, 0.02, seed), name=name, price=price)
    cluster(database_url)
    sets = cluster_sets(db)
    assert frozenset({"a1", "c1", "e1"}) in sets
    assert frozenset({"a2", "c2", "d2"}) in sets


def _placed(db) -> dict[str, str]:
    return dict(
        db.execute(
            "select url, matched_via from master_bikes"
            " join scraped_bikes on scraped_bikes.id = master_bikes.bike_id"
        ).fetchall()
    )


def test_prices_compare_like_for_like_across_shops_priced_apart(db, database_url):
    """shop-b prices every product 15% below the anchor shop. bx leaves out the motor
    that tells a1 (3000) and a2 (3300) apart: at 2800 it is nearer a1's price, but
    what shop-b asks is what the anchor shop would ask less 15%, 2800 / 0.85 = 3294:
    it is a2's. The pairs that are each other's best match show shop-b's level."""
    p1 = product_vector(1)
    listings = [
        ("anchor.nl", "a1", p1, 1, "Gazelle Grenoble C7 500Wh dames Bosch CX 2024", 3000),
        ("anchor.nl", "a2", p1, 2, "Gazelle Grenoble C7 500Wh dames Bosch Active Plus 2024", 3300),
        ("shop-b.nl", "bx", p1, 3, "Gazelle Grenoble C7 500Wh dames 2024", 2800),
    ]
    for number, price in enumerate((2000, 2600, 3400, 4100)):
        vector = product_vector(10 + number)
        name = f"Testbike Model{number} {400 + 100 * number}Wh"
        listings += [
            ("anchor.nl", f"a{number + 3}", vector, 10 + number, name, price),
            ("shop-b.nl", f"b{number + 3}", vector, 20 + number, name, round(price * 0.85)),
        ]
    for shop, url, vector, seed, name, price in listings:
        add_listing(db, shop, url, near(vector, 0.02, seed), name=name, price=price)
    cluster(database_url, price_level_min_pairs=3)
    sets = cluster_sets(db)
    assert frozenset({"a2", "bx"}) in sets
    assert frozenset({"a1"}) in sets
    assert {frozenset({f"a{n}", f"b{n}"}) for n in range(3, 7)} <= sets
    ratio = db.execute(
        "select c.price_ratio from int_candidate_matches as c"
        " join scraped_bikes as l on l.id = c.bike_id"
        " join scraped_bikes as n on n.id = c.neighbour_id"
        " where l.url = 'b4' and n.url = 'a4'"
    ).fetchone()[0]
    assert ratio == pytest.approx(1.0, abs=0.01)
    # Too few pairs to know shop-b's level: prices compare as the shops ask them.
    drop_dbt_tables(db)
    cluster(database_url)
    assert frozenset({"a1", "bx"}) in cluster_sets(db)


def test_a_listing_placed_before_its_product_was_seen_moves_to_it(db, database_url):
    """Shops are placed one at a time, so b1 (no motor, 4100) saw only a1's cluster
    (no motor either, 3200) and joined it; c1 (Shimano EP801, 4150) came later and
    could not join, since c2 (Bosch Active Line Plus, 3150) had. Once every shop is
    placed, b1 fits both products and c1's price is its own: it moves there. Model
    line two: the anchor listing d1 (no motor, 5300) is the odd one out of its
    cluster, whose other members (e1, f1: Bosch CX, 4700) tell the product; f2
    (Active Line Plus, 5250) is its own product: the anchor listing moves to f2."""
    p1, p2 = product_vector(1), product_vector(2)
    listings = [
        ("anchor.nl", "a1", p1, 1, "Stromer ST1 Sport 750Wh heren 2024", 3200),
        ("shop-b.nl", "b1", p1, 2, "Stromer ST1 Sport 750Wh heren MY24", 4100),
        ("shop-c.nl", "c1", p1, 3, "Stromer ST1 Sport heren Shimano EP801 750Wh 2024", 4150),
        (
            "shop-c.nl",
            "c2",
            p1,
            4,
            "Stromer ST1 Sport heren Bosch Active Line Plus 750Wh 2024",
            3150,
        ),
        ("anchor.nl", "d1", p2, 5, "Gazelle Grenoble C8 545Wh dames 2025", 5300),
        ("shop-e.nl", "e1", p2, 6, "Gazelle Grenoble C8 dames Bosch CX 545Wh 2025", 4700),
        ("shop-f.nl", "f1", p2, 7, "Gazelle Grenoble C8 dames Bosch CX 545 Wh (2025)", 4750),
        ("shop-f.nl", "f2", p2, 8, "Gazelle Grenoble C8 dames Bosch Active Line Plus 545 Wh", 5250),
    ]
    for shop, url, vector, seed, name, price in listings:
        add_listing(db, shop, url, near(vector, 0.02, seed), name=name, price=price)
    cluster(database_url)
    sets = cluster_sets(db)
    assert {frozenset({"a1", "c2"}), frozenset({"b1", "c1"})} <= sets
    assert {frozenset({"d1", "f2"}), frozenset({"e1", "f1"})} <= sets
    placed = _placed(db)
    assert placed["b1"].startswith("embedding") and placed["d1"].startswith("embedding")


def test_variants_are_told_by_their_photos_not_by_the_titles_wording(db, database_url):
    """b1 leaves out the motor in which a1 and a2 differ, and the three are priced
    alike. a2's title reads like b1's, but its photo is another bike's (cosine 0.85):
    not a variant b1 could be, so b1 joins a1 rather than stay ambiguous. c1 leaves out
    the motor of a3 and a4, which share one photo: it fits both and stays alone."""
    p1, p3 = product_vector(1), product_vector(3)
    other_photo = np.concatenate([at_cosine(p1, 0.85, 5)[:HALF_DIMS], p1[HALF_DIMS:]])
    listings = [
        ("anchor.nl", "a1", p1, "Cube Kathmandu 400Wh dames Bosch CX 2025", 3000),
        ("anchor.nl", "a2", other_photo, "Cube Kathmandu 400Wh dames Bafang M420 2025", 3040),
        ("shop-b.nl", "b1", p1, "Cube Kathmandu 400Wh dames 2025", 3020),
        ("anchor.nl", "a3", p3, "Sparta M8b 500Wh dames Bosch CX 2024", 3000),
        ("anchor.nl", "a4", p3, "Sparta M8b 500Wh dames Bafang M420 2024", 3030),
        ("shop-c.nl", "c1", p3, "Sparta M8b 500Wh dames 2024", 3015),
    ]
    for seed, (shop, url, vector, name, price) in enumerate(listings):
        add_listing(db, shop, url, near(vector, 0.01, seed), name=name, price=price)
    cluster(database_url)
    sets = cluster_sets(db)
    assert frozenset({"a1", "b1"}) in sets
    assert {frozenset({"a2"}), frozenset({"c1"})} <= sets
    assert _placed(db)["c1"] == "ambiguous"


def _with_text(photo: np.ndarray, text: np.ndarray) -> np.ndarray:
    return np.concatenate([photo[:HALF_DIMS], text])


def _text_at(text: np.ndarray, cosine: float, seed: int) -> np.ndarray:
    return at_cosine(np.concatenate([text, text]), cosine, seed)[HALF_DIMS:]


def test_a_rival_a_little_below_the_threshold_still_counts(db, database_url):
    """c1 leaves out the year in which a1 (2024) and a2 (2023) differ; all four share
    one photo. Its title reads like b2's (2023), which joined a2, and a1's only just
    below the threshold (0.85 against 0.9). a1 is a rival all the same, its photo as
    like c1's as its own cluster's: c1's price sits between the two, so c1 stays
    alone rather than make a 2023 product of a 2024 listing. With a photo less like
    c1's than a2's and b2's are, a1 is another bike, and c1 joins them."""
    photo = product_vector(1)
    text = product_vector(2)[HALF_DIMS:]
    b2_text = _text_at(text, 0.95, 3)
    listings = [
        ("anchor.nl", "a1", _text_at(text, 0.7, 4), "Sparta a-Shine 625Wh dames 2024", 5100),
        ("anchor.nl", "a2", _text_at(b2_text, 0.95, 5), "Sparta a-Shine 625Wh dames 2023", 5150),
        ("shop-b.nl", "b2", b2_text, "Sparta a-Shine dames Bosch Active Plus 625Wh 2023", 5260),
        ("shop-c.nl", "c1", text, "Sparta a-Shine Damesfiets Bosch Active Line Plus 625Wh", 5055),
    ]
    for shop, url, title_vector, name, price in listings:
        add_listing(db, shop, url, _with_text(photo, title_vector), name=name, price=price)
    cluster(database_url)
    sets = cluster_sets(db)
    assert {frozenset({"a2", "b2"}), frozenset({"c1"}), frozenset({"a1"})} <= sets
    assert _placed(db)["c1"] == "ambiguous"
    # the near pair is kept for that, and joins nothing by itself
    passes = db.execute(
        "select c.passes from int_candidate_matches as c"
        " join scraped_bikes as l on l.id = c.bike_id"
        " join scraped_bikes as n on n.id = c.neighbour_id"
        " where l.url = 'c1' and n.url = 'a1'"
    ).fetchone()
    assert passes == (False,)
    drop_dbt_tables(db)
    other_photo = at_cosine(photo, 0.96, 6)
    add_listing(db, "anchor.nl", "a1", _with_text(other_photo, listings[0][2]))
    cluster(database_url)
    assert frozenset({"a2", "b2", "c1"}) in cluster_sets(db)


def test_a_listing_that_seeded_a_product_takes_the_second_look(db, database_url):
    """No anchor listing sells this bike. b1 leaves out the motor and seeds a product;
    c2 (Bafang, 6380) joins it, while c1 (Bosch, 5280) reads just below the threshold
    to b1 and seeds its own, which d1 (Bosch) joins. Once every shop is placed, b1 fits
    both products, and its price (5130) is the Bosch one's: it moves there."""
    photo = product_vector(1)
    text = product_vector(2)[HALF_DIMS:]
    c1_text = _text_at(text, 0.7, 3)
    d1_text = 0.9 * text + np.sqrt(1 - 0.81) * (c1_text - 0.7 * text) / np.sqrt(1 - 0.49)
    listings = [
        ("anchor.nl", "a1", product_vector(9)[HALF_DIMS:], "Gazelle Grenoble C7 500Wh", 3000),
        ("shop-b.nl", "b1", text, "Riese & Müller Load 75 625Wh dames 2025", 5130),
        ("shop-c.nl", "c1", c1_text, "R&M Load 75 dames Bosch Active Plus 625Wh 2025", 5280),
        (
            "shop-c.nl",
            "c2",
            _text_at(text, 0.95, 4),
            "Riese & Müller Load 75 dames Bafang M420 625Wh 2025",
            6380,
        ),
        ("shop-d.nl", "d1", d1_text, "Riese und Muller Load 75 Bosch Active Plus 625Wh", 5570),
    ]
    for seed, (shop, url, title_vector, name, price) in enumerate(listings):
        vector = _with_text(near(photo, 0.01, seed), title_vector)
        add_listing(db, shop, url, vector, name=name, price=price)
    cluster(database_url)
    sets = cluster_sets(db)
    assert {frozenset({"b1", "c1", "d1"}), frozenset({"c2"})} <= sets
    assert _placed(db)["b1"].startswith("embedding")


def test_model_numbers_written_apart_agree_and_letters_make_another_model(db, database_url):
    """020-45821-07 in one shop's SKU and 020 45821 07 in another's are one article
    number: it lifts the pair over the threshold. PX2210KW and PX2210KS (one letter
    apart) are two models however alike they look; T300 and T300X may be two, so
    the longer one does not agree."""
    p1, p2, p3 = product_vector(91), product_vector(92), product_vector(93)
    rows = [
        ("anchor.nl", "a1", p1, "Kettingkast", "020-45821-07"),
        ("shop-b.nl", "b1", at_cosine(p1, 0.8, 1), "Kettingkast zwart", "020 45821 07"),
        ("anchor.nl", "a2", p2, "Casio PX2210KW", None),
        ("shop-b.nl", "b2", near(p2, 0.01, 2), "Casio PX2210KS", None),
        ("anchor.nl", "a3", p3, "Lamp T300", None),
        ("shop-b.nl", "b3", at_cosine(p3, 0.8, 3), "Lamp T300X", None),
    ]
    add_named(db, rows, "sku")
    cluster(database_url)
    assert cluster_sets(db) == {
        frozenset({"a1", "b1"}),
        frozenset({"a2"}),
        frozenset({"b2"}),
        frozenset({"a3"}),
        frozenset({"b3"}),
    }


def test_one_model_number_written_fuller_or_padded_is_one_model(db, database_url):
    """C6658AN424 is C6658AN with a number written on; RVD0110 is RVD110 padded; 100-Disc
    and 100-Pack are quantities of different things, not two models. C70 is another
    model than C7: a number that goes on after a digit makes another number. A seller's
    letters before a number (VER97185) still carry it: it lifts the pair. Letters after
    a number name a colour or region: KX-TG4022N and KX-TG6532B are two models, C270
    and C270H one number."""
    p4, p5, p6, p7, p8, p9, p10 = (product_vector(number) for number in range(94, 101))
    rows = [
        ("anchor.nl", "a4", p4, "HP 58 Photo Cartridge C6658AN"),
        ("shop-b.nl", "b4", near(p4, 0.01, 4), "HP 58 Photo Cartridge C6658AN424"),
        ("anchor.nl", "a5", p5, "OCZ RevoDrive RVD0110"),
        ("shop-b.nl", "b5", at_cosine(p5, 0.8, 5), "OCZ RevoDrive 110 GB RVD110"),
        ("anchor.nl", "a6", p6, "Verbatim 97017 DVD-R 100-Disc Spindle"),
        ("shop-b.nl", "b6", near(p6, 0.01, 6), "Verbatim 97017 DVD-R 100-Pack Spindle"),
        ("anchor.nl", "a7", p7, "Gazelle Orange C7 dames"),
        ("shop-b.nl", "b7", near(p7, 0.01, 7), "Gazelle Orange C70 dames"),
        ("anchor.nl", "a8", p8, "Verbatim Acclaim 320 GB Drive 97185"),
        ("shop-b.nl", "b8", at_cosine(p8, 0.8, 8), "Verbatim Acclaim Portable VER97185"),
        ("anchor.nl", "a9", p9, "Panasonic KX-TG4022N DECT Cordless Phone"),
        ("shop-b.nl", "b9", near(p9, 0.01, 9), "Panasonic KX-TG6532B DECT Cordless Phone"),
        ("anchor.nl", "a10", p10, "Logitech HD Webcam C270"),
        ("shop-b.nl", "b10", near(p10, 0.01, 10), "Logitech USB Webcam C270H"),
    ]
    add_named(db, rows)
    cluster(database_url)
    assert cluster_sets(db) == {
        frozenset({"a4", "b4"}),
        frozenset({"a5", "b5"}),
        frozenset({"a6", "b6"}),
        frozenset({"a7"}),
        frozenset({"b7"}),
        frozenset({"a8", "b8"}),
        frozenset({"a9"}),
        frozenset({"b9"}),
        frozenset({"a10", "b10"}),
    }


def test_numbered_trims_of_a_model_line_are_two_products(db, database_url):
    """Makers number the trims of a model line: Powerfly 5 and Powerfly 7, Explore E+ 1
    and E+ 2, Kathmandu Hybrid Pro 625 and 750 are different bikes at different prices,
    however alike their titles and photos. 4.0 is 4; a two-digit frame size, a number
    with its unit ("120 km", "0,5 kWh" for "500 Wh") and a number one title leaves out
    say nothing of the trim."""
    vectors = [product_vector(number) for number in range(101, 109)]
    rows = [
        ("anchor.nl", "a1", vectors[0], "Trek Powerfly 5 625Wh 2023"),
        ("shop-b.nl", "b1", near(vectors[0], 0.01, 1), "Trek Powerfly 7 625Wh 2023"),
        ("anchor.nl", "a2", vectors[1], "Giant Explore E+ 1 GTS"),
        ("shop-b.nl", "b2", near(vectors[1], 0.01, 2), "Giant Explore E+2 GTS"),
        ("anchor.nl", "a3", vectors[2], "Cube Kathmandu Hybrid Pro 625 Allroad"),
        ("shop-b.nl", "b3", near(vectors[2], 0.01, 3), "CUBE Kathmandu Hybrid Pro 750 Allroad"),
        ("anchor.nl", "a4", vectors[3], "Specialized Turbo Vado 4.0 Step-Through"),
        ("shop-b.nl", "b4", near(vectors[3], 0.01, 4), "Specialized Turbo Vado 4 ST"),
        ("anchor.nl", "a5", vectors[4], "Gazelle Ultimate C380 HMB 28 inch 57 cm"),
        ("shop-b.nl", "b5", near(vectors[4], 0.01, 5), "Gazelle Ultimate C380 HMB 28 inch 53 cm"),
        ("anchor.nl", "a6", vectors[5], "Stromer ST3 Pinion, range 120 km"),
        ("shop-b.nl", "b6", near(vectors[5], 0.01, 6), "Stromer ST3 Pinion, range 150 km"),
        ("anchor.nl", "a7", vectors[6], "Trek Allant+ 7 Gen 2 Lowstep"),
        ("shop-b.nl", "b7", near(vectors[6], 0.01, 7), "Trek Allant+ 7 Lowstep"),
        ("anchor.nl", "a8", vectors[7], "Sparta a-Shine M8 - Bosch CX - 500 Wh"),
        ("shop-b.nl", "b8", near(vectors[7], 0.01, 8), "Sparta a-Shine M8 - Bosch CX - 0,5 kWh"),
    ]
    add_named(db, rows)
    cluster(database_url)
    apart = {frozenset({f"a{n}"}) for n in (1, 2, 3)} | {frozenset({f"b{n}"}) for n in (1, 2, 3)}
    together = {frozenset({f"a{n}", f"b{n}"}) for n in (4, 5, 6, 7, 8)}
    assert cluster_sets(db) == apart | together
    explained = run_cli(
        "explain", "a1", "b1", "--model", "test-model", env={"DATABASE_URL": database_url}
    )
    assert explained.returncode == 0, explained.stderr
    assert "numbered words: A powerfly 5, B powerfly 7" in explained.stdout
    assert "they disagree on model_number" in explained.stdout


def test_an_offer_priced_far_from_the_others_is_flagged(db, database_url):
    p1, p2 = product_vector(1), product_vector(2)
    rows = [
        ("anchor.nl", "a1", near(p1, 0.02, 1), 1000),
        ("shop-b.nl", "b1", near(p1, 0.02, 2), 1050),
        ("shop-c.nl", "c1", near(p1, 0.02, 3), 1600),  # 55% above the others' 1025
        ("anchor.nl", "a2", near(p2, 0.02, 4), 1000),
        ("shop-b.nl", "b2", near(p2, 0.02, 5), 1500),  # two offers: which is off?
        ("anchor.nl", "a3", product_vector(3), 900),  # alone: nothing to compare with
    ]
    for shop, url, vector, price in rows:
        add_listing(db, shop, url, vector, price=price)
    cluster(database_url)
    flags = {
        url: (outlier, reason)
        for url, outlier, reason in db.execute(
            "select url, price_outlier, price_outlier_reason from bike_offers"
        ).fetchall()
    }
    assert flags["c1"] == (True, "56% above the median 1025.00 of the 2 other offers")
    assert not flags["a1"][0] and not flags["b1"][0]
    assert flags["a2"][0] and flags["b2"][0]
    assert flags["a3"] == (False, None)
    spreads = db.execute(
        "select price_spread, usual_price_spread, price_outliers from bike_clusters"
        " join bike_offers using (cluster_id) where url = 'a1'"
    ).fetchone()
    assert spreads == (600, 50, 1)


def _ids(db, *urls):
    return [
        db.execute("select id::text from scraped_bikes where url = %s", (url,)).fetchone()[0]
        for url in urls
    ]


def test_links_and_unlinks_hold_through_reruns_new_listings_and_reembedding(db, database_url):
    from bikematch.app.links import set_decision

    p1, p2, p3 = product_vector(1), product_vector(2), product_vector(3)
    rows = [
        ("anchor.nl", "a1", near(p1, 0.02, 1)),
        ("shop-b.nl", "b1", near(p1, 0.02, 2)),
        ("shop-c.nl", "c1", near(p1, 0.02, 3)),
        ("anchor.nl", "a2", near(p2, 0.02, 4)),
        ("shop-c.nl", "c3", near(p3, 0.02, 5)),  # looks like nothing else
    ]
    for shop, url, vector in rows:
        add_listing(db, shop, url, vector)
    cluster(database_url)
    assert frozenset({"a1", "b1", "c1"}) in cluster_sets(db)

    env = {"DATABASE_URL": database_url}
    unlinked = run_cli("unlink", "a1", "b1", "--note", "b1 is the 2023 model", env=env)
    assert unlinked.returncode == 0, unlinked.stderr
    assert "different products" in unlinked.stdout
    a2, c3 = _ids(db, "a2", "c3")
    linked = run_cli("link", a2, c3, env=env)  # ids work as well as URLs
    assert linked.returncode == 0, linked.stderr
    listed = run_cli("links", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("unlink") and "b1 is the 2023 model" in lines[0]
    assert lines[1].startswith("link")

    def holds():
        sets = cluster_sets(db)
        assert not any({"a1", "b1"} <= group for group in sets), sets
        assert any({"a2", "c3"} <= group for group in sets), sets

    cluster(database_url)
    holds()
    cluster(database_url)  # a rerun
    holds()
    add_listing(db, "shop-d.nl", "d1", near(p1, 0.02, 6))  # a new listing
    add_listing(db, "shop-d.nl", "d3", near(p3, 0.001, 7))  # c3's twin, for its place
    cluster(database_url)
    holds()
    (c3_id,) = _ids(db, "c3")
    set_vector(db, c3_id, product_vector(33))  # re-embedded
    cluster(database_url)
    holds()

    # A link replaces an unlink; --forget removes the decision.
    set_decision(database_url, "a1", "b1", "link", None)
    cluster(database_url)
    assert frozenset({"a1", "b1", "c1", "d1"}) in cluster_sets(db)
    forgot = run_cli("link", "--forget", "a2", "c3", env=env)
    assert forgot.returncode == 0 and "removed" in forgot.stdout
    cluster(database_url)
    assert not any({"a2", "c3"} <= group for group in cluster_sets(db))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("link", "a1", "nowhere"), "error: no stored listing has the id or URL 'nowhere'"),
        (("link", "a1", "a1"), "error: both name the same listing"),
        (("link", "a1", "a2"), "error: both listings are from anchor.nl"),
    ],
)
def test_link_mistakes_are_one_line_errors(db, database_url, args, message):
    add_listing(db, "anchor.nl", "a1", product_vector(1))
    add_listing(db, "anchor.nl", "a2", product_vector(2))
    result = run_cli(*args, env={"DATABASE_URL": database_url})
    assert result.returncode == 2
    assert result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1


def test_explain_says_how_a_pair_is_judged(db, database_url):
    p1 = product_vector(1)
    rows = [
        ("anchor.nl", "a1", near(p1, 0.02, 1), "Gazelle Grenoble C7 500Wh dames 2024"),
        ("shop-b.nl", "b1", near(p1, 0.02, 2), "Gazelle Grenoble C7 500 Wh Dames"),
        ("shop-c.nl", "c1", near(p1, 0.02, 3), "Gazelle Grenoble C7 400Wh dames 2024"),
    ]
    add_named(db, rows)
    cluster(database_url)
    env = {"DATABASE_URL": database_url}
    args = ("--model", "test-model")

    same = run_cli("explain", "a1", "b1", *args, env=env)
    assert same.returncode == 0, same.stderr
    out = same.stdout
    assert "A: Gazelle Grenoble C7 500Wh dames 2024 (anchor.nl, a1)" in out
    assert re.search(r"similarity \(test-model\): image 1\.000, text 1\.000, combined 1\.000", out)
    assert "battery (Wh): A 500, B 500" in out
    assert "model year: A 2024, B -" in out
    assert "a match (rule: score at or above the threshold)" in out
    assert "clusters: both in product" in out

    apart = run_cli("explain", "a1", "c1", *args, env=env)
    assert apart.returncode == 0, apart.stderr
    assert "they disagree on battery_wh" in apart.stdout
    assert "different products (rule: two listings that both state battery_wh" in apart.stdout
    assert "clusters: A in product" in apart.stdout
