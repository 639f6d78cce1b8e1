"""`bikematch demo` end to end, its report in a real browser, and search."""

from __future__ import annotations

import io
import re
import shutil
import socket
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from .conftest import run_cli

# Floors under the demo's own precision/recall, so a regression fails CI.
PRECISION_FLOOR = 0.98  # measured 1.000 at the default threshold (docs/quality.md)
RECALL_FLOOR = 0.95  # measured 0.962 (ambiguous listings stay alone)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def demo(database_url, tmp_path_factory):
    from bikematch.core.database import connect

    with connect(database_url, autocommit=True) as conn:
        conn.execute("truncate scraped_bikes, embedding_failures cascade")
        conn.execute("drop table if exists master_bikes, int_vector_neighbours cascade")
    work = tmp_path_factory.mktemp("demo")
    port = str(_free_port())
    env = {"DATABASE_URL": database_url}
    args = ("demo", "--port", port, "--report", str(work / "report"))
    first = run_cli(*args, env=env, cwd=work, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr[-3000:]
    second = run_cli(*args, env=env, cwd=work, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr[-3000:]
    return {"first": first.stdout, "second": second.stdout, "report": work / "report", "env": env}


def test_make_demo_runs_the_demo():
    """The README's first command: `make demo` sets up and runs the whole job."""
    from bikematch.core.settings import PROJECT_ROOT

    dry = subprocess.run(
        ["make", "-n", "demo"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert re.search(r"^\S*/bikematch demo$", dry.stdout, re.M), dry.stdout


def test_another_seed_generates_another_catalogue_the_same_every_time():
    from bikematch.app.demo.catalogue import generate

    def offers(catalogue):
        return [(listing.title, listing.price) for listing in catalogue.listings]

    assert offers(generate(48)) == offers(generate(48))
    assert offers(generate(48, seed=1)) == offers(generate(48, seed=1))
    assert offers(generate(48, seed=1)) != offers(generate(48))
    shown = run_cli("demo", "--help")
    assert shown.returncode == 0 and "--seed" in shown.stdout


def test_demo_prints_its_summary_and_scores(demo):
    out = demo["first"]
    for shop in (
        "fietsvoordeelshop.nl",
        "fietsenwinkel.nl",
        "ebike-outlet.nl",
        "cyclesdirect.co.uk",
    ):
        assert re.search(rf"scraped {re.escape(shop)}: [1-9]\d* listings", out), out
    assert re.search(r"into \d+ products, [1-9]\d* sold by more than one shop", out), out
    assert "biggest price spreads:" in out
    match = re.search(r"pairwise precision ([\d.]+), recall ([\d.]+)", out)
    assert match, out
    precision, recall = float(match.group(1)), float(match.group(2))
    assert precision >= PRECISION_FLOOR and recall >= RECALL_FLOOR, out
    # The biggest price spreads compare one product, not variants (measured: 20 of 20).
    spreads = re.search(r"of the (\d+) biggest price spreads, (\d+) compare one product", out)
    assert spreads and spreads.groups() == ("20", "20"), out


def test_the_uk_shops_pounds_compare_with_the_others_euros(demo, database_url):
    from bikematch.core.database import connect

    with connect(database_url) as conn:
        pounds, compared = conn.execute(
            "select count(*), count(comparable_price) from bike_offers where currency = 'GBP'"
        ).fetchone()
        currencies = conn.execute("select distinct currency from bike_clusters").fetchall()
    assert pounds > 0 and compared == pounds
    assert currencies == [("EUR",)]
    assert re.search(r"GBP [\d.]+ \(≈ EUR [\d.]+\)", (demo["report"] / "index.html").read_text())


def test_db_status_after_the_demo_names_its_clusters_and_rate(demo, database_url):
    out = run_cli("db", "status", env={"DATABASE_URL": database_url}, check=True).stdout
    assert re.search(
        r"^clusters: \d+ products, [1-9]\d* sold by more than one shop \(built 20", out, re.M
    ), out
    assert re.search(r"^exchange rates: 1 \(demo\), of 20", out, re.M), out
    assert re.search(r"^  minilm-effnet-lite0: \d+, 0 pending", out, re.M), out


def test_second_demo_run_is_incremental(demo):
    assert "embedded 0, nothing pending" in demo["second"], demo["second"]
    assert "listings/s" not in demo["second"]
    assert re.search(r"scraped fietsvoordeelshop.nl: \d+ listings \(0 new", demo["second"])


def test_search_by_text_finds_the_bike(demo, database_url):
    from bikematch.core.database import connect

    with connect(database_url) as conn:
        title = conn.execute(
            "select name from scraped_bikes"
            " where webshop = 'fietsvoordeelshop.nl' order by url limit 1"
        ).fetchone()[0]
    result = run_cli(
        "search",
        "--text",
        title,
        "--model",
        "minilm-effnet-lite0",
        "-k",
        "3",
        "--device",
        "cpu",
        env=demo["env"],
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3 and title in lines[0], result.stdout
    assert lines[0].startswith("1.000")  # the text half's own cosine, not scaled
    assert "no longer listed" not in result.stdout
    # a listing its shop stopped listing is still found, and said to be gone
    with connect(database_url, autocommit=True) as conn:
        conn.execute(
            "update scraped_bikes set first_seen_at = first_seen_at - interval '10 days',"
            " last_seen_at = last_seen_at - interval '10 days'"
            " where name = %s and webshop = 'fietsvoordeelshop.nl'",
            (title,),
        )
        try:
            again = run_cli(*result.args[1:], env=demo["env"], check=True).stdout
        finally:
            conn.execute(
                "update scraped_bikes set first_seen_at = first_seen_at + interval '10 days',"
                " last_seen_at = last_seen_at + interval '10 days'"
                " where name = %s and webshop = 'fietsvoordeelshop.nl'",
                (title,),
            )
    first = again.strip().splitlines()[0]
    assert title in first and re.search(r"\(no longer listed; last seen 20\d\d-\d\d-\d\d\)$", first)
    # The default model (PE-Core) has no vectors here: said before loading it (its weights
    # are not on this machine, and fetching them would be the error).
    result = run_cli("search", "--text", title, env=demo["env"])
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: no vectors for model pe-core-l14-336 (vectors exist for minilm-effnet-lite0):"
        " run `bikematch embed --model pe-core-l14-336` first, or search with --model"
    ]


def test_search_by_photo_finds_the_listing_it_came_from(demo, database_url, tmp_path):
    """The query photo is decoded as the embedder decoded the listing's, so the listing's
    own photo comes back first at about 1 (the demo stores bf16 vectors in halfvec)."""
    from bikematch.core.database import connect
    from embedder.fetch import cached_image

    with connect(database_url) as conn:
        name, image_url = conn.execute(
            "select name, image_url from scraped_bikes"
            " where webshop = 'fietsvoordeelshop.nl' and image_url is not null"
            " order by url limit 1"
        ).fetchone()
    cache = demo["report"].parent / ".bikematch" / "image-cache"  # where `embed` caches too
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(cached_image(cache, image_url))
    (tmp_path / "notes.txt").write_text("not a photo")

    def search(image):
        args = ("search", "--image", image, "--model", "minilm-effnet-lite0", "-k", "3")
        return run_cli(*args, "--device", "cpu", env=demo["env"])

    result = search(str(photo))
    assert result.returncode == 0, result.stderr
    first = result.stdout.strip().splitlines()[0]
    assert name in first and float(first.split()[0]) >= 0.998, result.stdout
    for image, error in (
        (str(tmp_path / "notes.txt"), "not an image"),
        (str(tmp_path / "missing.jpg"), "No such file"),
    ):
        result = search(image)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: cannot read {image}: "), lines
        assert error in lines[0], lines


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail(
        "Chromium is not installed: make test installs it as root; else: apt-get install chromium"
    )


def _render(page: Path, out: Path, query: str = "") -> str:
    browser = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={out / 'profile'}",
        "--virtual-time-budget=5000",
    ]
    url = page.as_uri() + query
    subprocess.run(
        [*browser, f"--screenshot={out / 'report.png'}", "--window-size=1280,2000", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    dom = subprocess.run(
        [*browser, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    )
    return dom.stdout


def test_report_renders_what_a_person_needs(demo, database_url):
    from bikematch.core.database import connect

    report = demo["report"] / "index.html"
    assert report.exists()
    out = Path(__file__).resolve().parent.parent / ".bikematch" / "test-artifacts"
    out.mkdir(parents=True, exist_ok=True)
    dom = _render(report, out, "?sort=spread")
    assert (out / "report.png").stat().st_size > 10_000  # a real screenshot
    with connect(database_url) as conn:
        multi = conn.execute("select count(*) from bike_clusters where shops > 1").fetchone()[0]
    sections = re.findall(r'<section class="cluster" data-spread="([\d.]+)"', dom)
    assert len(sections) == multi
    spreads = [float(value) for value in sections]
    assert spreads == sorted(spreads, reverse=True)  # sorted by spread on request
    images = re.findall(r"<img [^>]*>", dom)
    assert images and all('data-loaded="1"' in image for image in images[:20])  # local thumbnails
    assert "Listings that matched nothing" in dom
    assert "similarity 0." in dom and "cheapest at" in dom


def test_report_links_only_to_web_pages_and_escapes_what_shops_wrote(tmp_path):
    from bikematch.app.report import _offer_html

    offer = (
        "shop<b>.nl",
        '<script>alert("title")</script>',
        "javascript:alert(document.cookie)",
        "JavaScript:alert(1)//.jpg",
        Decimal("2499.00"),
        "EUR",
        0.97,
        "embedding",
        1,
        Decimal("2499.00"),
        "EUR",
        "InStock",
        0.97,
        "shop-a.nl",
        None,
    )
    card = _offer_html(offer, tmp_path, None, cheapest=True)
    assert "javascript:" not in card.lower() and "<script>" not in card and "<b>" not in card
    assert 'href=""' in card and "<img" not in card
    safe = ("shop.nl", "Bike", "https://shop.nl/b?a=1&b=2", "https://shop.nl/b.jpg", *offer[4:])
    card = _offer_html(safe, tmp_path, None, cheapest=False)
    assert 'href="https://shop.nl/b?a=1&amp;b=2"' in card
    assert 'src="https://shop.nl/b.jpg"' in card
    assert '<div class="price">EUR 2499.00</div>' in card
    assert "out of stock" not in card
    assert "matched shop-a.nl&#x27;s listing · score 0.970 (similarity 0.970)" in card
    gone = _offer_html((*safe[:11], "OutOfStock", *safe[12:]), tmp_path, None, cheapest=False)
    assert '<div class="stock">out of stock</div>' in gone
    flagged = (*safe[:14], "56% above the median 1025.00 of the 2 other offers")
    card = _offer_html(flagged, tmp_path, None, cheapest=False)
    assert "price flagged: 56% above the median 1025.00 of the 2 other offers" in card


def test_report_shows_a_price_in_another_currency_as_compared(tmp_path):
    from bikematch.app.report import _offer_html

    def price_of(price, currency, comparable_price) -> str:
        offer = ("shop.co.uk", "Bike", "https://shop.co.uk/b", None, price, currency)
        card = _offer_html(
            (*offer, 0.97, "embedding", 1, comparable_price, "EUR", None, 0.97, "shop.nl", None),
            tmp_path,
            None,
            False,
        )
        return card.split('<div class="price">')[1].split("</div>")[0]

    assert price_of(Decimal("2100.00"), "GBP", Decimal("2625.00")) == (
        "GBP 2100.00 (≈ EUR 2625.00)"
    )
    assert price_of(Decimal("2100.00"), "GBP", None) == (
        "GBP 2100.00 (no exchange rate: not compared)"
    )
    assert price_of(None, "GBP", None) == "price unknown"


def test_report_thumbnails_show_photos_as_a_browser_would(tmp_path):
    """Upright (EXIF rotation), in sRGB (an embedded profile), small; a photo that is not
    one (here a decompression bomb) keeps its URL instead of failing the report."""
    import asyncio

    import numpy as np
    from PIL import Image, ImageCms

    from bikematch.app.report import THUMBNAIL, _thumbnail
    from embedder.fetch import FetchSettings, ImageFetcher

    from .image_server import ImageServer, display_p3_profile, encoded, huge_png, jpeg

    p3 = ImageCms.ImageCmsProfile(io.BytesIO(display_p3_profile()))
    red_in_p3 = Image.new("RGB", (800, 600), (234, 51, 35))  # sRGB's red
    cache, thumbs = tmp_path / "cache", tmp_path / "thumbs"
    thumbs.mkdir()
    with ImageServer() as server:
        urls = {
            "rotated": server.add("rotated.jpg", jpeg((0, 0, 200), (800, 600), exif_rotate=True)),
            "p3": server.add("p3.png", encoded(red_in_p3, "PNG", icc_profile=p3.tobytes())),
            "bomb": server.add("bomb.png", huge_png()),
        }

        async def fetch_all():
            settings = FetchSettings(allow_private=True, cache_dir=cache)
            async with ImageFetcher(settings) as fetcher:
                for url in urls.values():
                    await fetcher.fetch(url)

        asyncio.run(fetch_all())
    made = {name: _thumbnail(url, thumbs, cache) for name, url in urls.items()}
    assert made["bomb"] == urls["bomb"]
    rotated = Image.open(tmp_path / made["rotated"])
    assert rotated.size == (THUMBNAIL[1] * 600 // 800, THUMBNAIL[1])  # portrait now
    red = np.asarray(Image.open(tmp_path / made["p3"]), dtype=int)
    assert red.shape == (THUMBNAIL[1], THUMBNAIL[0], 3)
    assert np.abs(red - (255, 0, 0)).max() <= 4  # JPEG rounding
