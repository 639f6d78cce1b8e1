"""The embedding job against a local image server, with the tiny random model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from urllib.parse import quote

import numpy as np
import pytest
import torch
from PIL import Image

from bikematch.core.database import connect
from bikematch.core.listings import Listing, store_listings
from embedder import index, job, store
from embedder.decode import decode_image
from embedder.fetch import FetchSettings, cached_image, image_kind, retry_after
from embedder.job import (
    EmbedSettings,
    decode_workers,
    inference_streams,
    register,
    run_embedding,
)
from embedder.remote import RemoteModel
from perception_models import load_model

from .conftest import BIKEMATCH, eventually, run_cli
from .image_server import (
    LocalServer,
    encoded,
    grey16_png,
    huge_png,
    jpeg,
    palette_with_alpha,
    png,
)


def settings(tmp_path, **overrides) -> EmbedSettings:
    fetch = FetchSettings(
        allow_private=True, cache_dir=tmp_path / "cache", timeout=2, retries=1, backoff=0.05
    )
    values = {"batch_size": 4, "fetch": fetch, **overrides}
    return EmbedSettings(**values)


def add(conn, shop, url, name, image_url):
    store_listings(conn, [Listing(webshop=shop, url=url, name=name, image_url=image_url)])
    return conn.execute(
        "select id from scraped_bikes where webshop = %s and url = %s", (shop, url)
    ).fetchone()[0]


def vectors(conn, model="tiny-random"):
    return {
        row[0]: row[1:]
        for row in conn.execute(
            "select url, text_only, image_embedding is null, input_hash, embedded_at"
            " from vector_storage join scraped_bikes on id = bike_id where model = %s",
            (model,),
        )
    }


def failures(conn):
    return {
        row[0]: row[1:]
        for row in conn.execute(
            "select url, stage, error, attempts from embedding_failures"
            " join scraped_bikes on id = bike_id"
        )
    }


def test_decode_threads_start_no_torch_thread_teams():
    """Per image only numpy, PIL and torch's single-threaded uint8 resize run: another torch
    op in each decode thread would start an OpenMP thread team there, threads that compete
    with the model's for the cores."""
    model = load_model("tiny-random", device="cpu")
    model.image_size = 224  # big enough that torch would split an elementwise op
    photo = jpeg((120, 30, 200), size=(640, 480))

    def os_threads() -> int:
        return len(os.listdir("/proc/self/task"))

    with ThreadPoolExecutor(1) as decoder:
        decoder.submit(int).result()  # the decode thread itself
        before = os_threads()
        pixels = decoder.submit(decode_image, photo, model.preprocess, 224).result()
        assert os_threads() == before
    assert pixels.shape == (3, 224, 224) and pixels.dtype == torch.uint8
    vector = model.embed_images(pixels[None])  # normalised there, per batch
    assert torch.allclose(vector.norm(dim=-1), torch.ones(1))


def test_an_avif_decodes_on_its_decode_thread_alone():
    """PIL's AVIF decoder starts a thread per core for each photo unless told otherwise."""
    noise = np.random.default_rng(0).integers(0, 256, (900, 1200, 3), dtype=np.uint8)
    photo = encoded(Image.fromarray(noise), "AVIF")
    peak, decoding = 0, threading.Event()

    def watch():
        nonlocal peak
        while decoding.is_set():
            peak = max(peak, len(os.listdir("/proc/self/task")))

    with ThreadPoolExecutor(1) as decoder:
        decoder.submit(int).result()  # the decode thread itself
        decoding.set()
        watcher = threading.Thread(target=watch)
        watcher.start()
        before = len(os.listdir("/proc/self/task"))
        for _ in range(3):
            pixels = decoder.submit(decode_image, photo, lambda image: image).result()
        decoding.clear()
        watcher.join()
    assert pixels.size == (1200, 900)
    assert peak == before


def test_decode_threads_default_to_two_beside_a_cpu_model_and_the_cores_beside_a_gpu(
    monkeypatch,
):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert decode_workers(5, cpu) == decode_workers(5, cuda) == 5  # as asked
    assert decode_workers(None, cpu) == 2  # the model needs the cores
    for cores, threads in ((2, 2), (16, 15), (64, 16)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)))
        assert decode_workers(None, cuda) == threads


WEBP, AVIF = "image/webp", "image/avif"


def test_good_and_broken_images(conn, database_url, images, tmp_path, tiny):
    cases = {
        "ok": images.add("ok.jpg", jpeg((200, 0, 0))),
        "cmyk": images.add("cmyk.jpg", jpeg((0, 100, 100, 0), mode="CMYK")),
        "palette": images.add("palette.png", palette_with_alpha(), "image/png"),
        "rotated": images.add("rotated.jpg", jpeg((0, 0, 200), exif_rotate=True)),
        "webp": images.add("p.webp", encoded(Image.new("RGB", (60, 40), "teal"), "WEBP"), WEBP),
        "avif": images.add("p.avif", encoded(Image.new("RGB", (60, 40), "olive"), "AVIF"), AVIF),
        "grey16": images.add("grey16.png", grey16_png(), "image/png"),
        "untyped": images.add("s3.jpg", jpeg((0, 90, 0)), "binary/octet-stream"),
        "redirected": f"{images.base}/redirect/ok.jpg",
        "missing": f"{images.base}/img/nothing.jpg",
        "html": images.add("page.jpg", b"<html>not an image</html>", "text/html"),
        "fake": images.add("fake.jpg", b"GIF89a but not really", "image/jpeg"),
        "truncated": images.add("cut.jpg", jpeg((9, 9, 9), size=(400, 300))[:600]),
        "empty": images.add("empty.jpg", b""),
        "huge": images.add("huge.png", huge_png(), "image/png"),
        "server-error": images.add("boom.jpg", b"", status=500),
        "timeout": f"{images.base}/slow/ok.jpg",
        # scraped URLs that no request can be made for
        "bad-ipv6": "https://[::1/x.jpg",
        "bad-port": "http://127.0.0.1:99999/x.jpg",
        "bad-label": f"http://{'a' * 64}.example/x.jpg",
        "bad-redirect": f"{images.base}/moved/{quote('http://[::1/x.jpg', safe='')}",
        "no-image": None,
    }
    for name, url in cases.items():
        add(conn, "shop.nl", name, f"Bike {name}", url)
    summary = run_embedding(database_url, tiny, settings(tmp_path))
    stored, failed = vectors(conn), failures(conn)
    with_image = {
        *("ok", "cmyk", "palette", "rotated", "webp", "avif", "grey16", "untyped"),
        "redirected",
    }
    assert {name for name, row in stored.items() if row[:2] == (False, False)} == with_image
    # every other listing from its title alone: no image, or one that failed (recorded)
    assert set(stored) == set(cases)
    assert stored["no-image"][:2] == (True, True)  # text-only, no image vector
    expected = {
        "missing": ("fetch", "HTTP 404"),
        "html": ("fetch", "not an image: Content-Type text/html"),
        "fake": ("decode", "not an image"),
        "truncated": ("decode", "corrupt image"),
        "empty": ("fetch", "0 bytes"),
        "huge": ("decode", "huge dimensions"),
        "server-error": ("fetch", "HTTP 500"),
        "timeout": ("fetch", "timed out"),
        "bad-ipv6": ("fetch", "not a valid URL: Invalid IPv6 URL"),
        "bad-port": ("fetch", "not a valid URL: Port out of range"),
        "bad-label": ("fetch", "not a valid URL: encoding with 'idna' codec failed"),
        "bad-redirect": ("fetch", "not a valid URL: Invalid IPv6 URL: http://[::1/x.jpg"),
    }
    assert set(failed) == set(expected)
    for name, (stage, error) in expected.items():
        assert failed[name][0] == stage and error in failed[name][1], (name, failed[name])
        assert failed[name][2] == 1
    assert summary.embedded == 22 and summary.text_only == 13
    assert summary.image_failed_text_only == 12 and summary.not_embedded == 0
    assert 0 < summary.model_seconds < summary.seconds
    assert sum(summary.failed.values()) == 12
    assert "embedded 22 (13 text-only, 12 of them as their image failed)" in summary.lines()[0]
    assert images.requests["/img/boom.jpg"] == 2  # retried once


def test_an_unexpected_error_on_one_image_is_that_listings_failure(
    conn, database_url, images, tmp_path, tiny, monkeypatch
):
    """Not a known kind of bad input but a defect (a library's bug, memory): recorded for
    its listing, with its type, and the job goes on."""
    cursed = jpeg((66, 6, 6))
    add(conn, "shop.nl", "cursed", "Bike c", images.add("c.jpg", cursed))
    add(conn, "shop.nl", "fine", "Bike f", images.add("f.jpg", jpeg((6, 66, 6))))
    decode = job.decode_image

    def decode_or_break(data, *args):
        if data == cursed:
            raise RuntimeError("kaboom\nsecond line")
        return decode(data, *args)

    monkeypatch.setattr(job, "decode_image", decode_or_break)
    summary = run_embedding(database_url, tiny, settings(tmp_path))
    assert summary.embedded == 2 and summary.image_failed_text_only == 1
    assert failures(conn)["cursed"][:2] == ("decode", "RuntimeError: kaboom")
    assert vectors(conn)["fine"][:2] == (False, False)


def test_avif_is_known_by_its_brands_and_heic_is_not_taken_for_an_image():
    def ftyp(major: bytes, *compatible: bytes) -> bytes:
        brands = major + b"\x00\x00\x00\x00" + b"".join(compatible)
        return (8 + len(brands)).to_bytes(4, "big") + b"ftyp" + brands + b"\x00\x00\x00\x0cmeta"

    assert image_kind(ftyp(b"avif", b"avif", b"mif1", b"miaf")) == "avif"
    assert image_kind(ftyp(b"mif1", b"mif1", b"avif")) == "avif"  # avif as a compatible brand
    assert image_kind(ftyp(b"avis", b"avis", b"msf1")) == "avif"  # an AVIF sequence
    assert image_kind(ftyp(b"heic", b"mif1", b"heic")) is None  # PIL cannot read HEIC
    assert image_kind(ftyp(b"mif1", b"mif1") + b"avif") is None  # past the box: not a brand
    assert image_kind(ftyp(b"isom", b"isom", b"mp42")) is None  # an MP4 video


def test_a_busy_server_is_asked_again_after_the_time_it_asks_for(
    conn, database_url, images, tmp_path, tiny
):
    images.add("b.jpg", jpeg((10, 100, 10)))
    images.add("c.jpg", jpeg((10, 10, 100)))
    other_host = images.base.replace("127.0.0.1", "localhost")  # the same server
    add(conn, "shop.nl", "b", "Bike b", f"{images.base}/busy/1/b.jpg")
    add(conn, "shop.nl", "c", "Bike c", f"{other_host}/busy/3600/c.jpg")
    run_embedding(database_url, tiny, settings(tmp_path))  # a backoff of 0.05 s
    first, second = images.asked_at["/busy/1/b.jpg"]
    assert second - first >= 1.0 and vectors(conn)["b"][:2] == (False, False)
    # an hour is more than a run waits: it fails now, for a later run to retry
    assert images.requests["/busy/3600/c.jpg"] == 1
    assert failures(conn)["c"][:2] == ("fetch", "HTTP 429 (retry after 3600 s)")


def test_a_busy_host_is_asked_for_none_of_its_images_until_the_time_it_gave(
    conn, database_url, images, tmp_path, tiny
):
    """A 429 speaks for the whole host: its other images wait too (one request at a time
    here, so that the second image is asked for after the first one's 429)."""
    for name in "abc":
        images.add(f"{name}.jpg", jpeg((10, 20 * ord(name) % 256, 10)))
        add(conn, "shop.nl", name, f"Bike {name}", f"{images.base}/busy/1/{name}.jpg")
    one_at_a_time = FetchSettings(allow_private=True, concurrency=1, retries=3, backoff=0.05)
    summary = run_embedding(database_url, tiny, settings(tmp_path, fetch=one_at_a_time))
    assert summary.embedded == 3 and summary.text_only == 0 and failures(conn) == {}
    # (when, whether answered 429): each image's first request was
    asked = sorted((t, i == 0) for times in images.asked_at.values() for i, t in enumerate(times))
    assert len(asked) == 6
    # each 429 holds the host for its second: no request comes sooner after one
    for at, _ in asked[1:]:
        last_429 = max(earlier for earlier, busy in asked if busy and earlier < at)
        assert at - last_429 >= 0.9, asked

    # A host that asks for longer than a run waits: its other images fail at once,
    # without being asked for, for a later run to retry.
    for name in "def":
        images.add(f"{name}.jpg", jpeg((10, 20 * ord(name) % 256, 90)))
        add(conn, "shop.nl", name, f"Bike {name}", f"{images.base}/busy/3600/{name}.jpg")
    summary = run_embedding(database_url, tiny, settings(tmp_path, fetch=one_at_a_time))
    assert sum(images.requests[f"/busy/3600/{name}.jpg"] for name in "def") == 1
    stages = {name: failures(conn)[name][:2] for name in "def"}
    assert sorted(stages.values()) == [
        ("fetch", "HTTP 429 (retry after 3600 s)"),
        ("fetch", f"HTTP 429 earlier from {images.base[7:]} (retry after 3600 s)"),
        ("fetch", f"HTTP 429 earlier from {images.base[7:]} (retry after 3600 s)"),
    ]
    assert summary.text_only == 3  # from their titles meanwhile


def test_retry_after_takes_seconds_or_an_http_date():
    assert retry_after("5") == 5.0 and retry_after(" 0 ") == 0.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # past
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    assert 115 < retry_after(soon) <= 120
    assert retry_after(None) is retry_after("") is retry_after("soon") is retry_after("-3") is None


def test_failures_are_retried_up_to_a_cap_and_changes_reset_them(
    conn, database_url, images, tmp_path, tiny
):
    bike = add(conn, "shop.nl", "p", "Bike", f"{images.base}/img/later.jpg")
    run_embedding(database_url, tiny, settings(tmp_path, max_attempts=2))
    assert vectors(conn)["p"][:2] == (True, True)  # from its title, meanwhile
    # Not pending again until its backoff passes; then retried; then capped.
    pending = "select count(*) from bikematch_listings_to_embed('tiny-random', 2)"
    assert conn.execute(pending).fetchone()[0] == 0
    conn.execute("update embedding_failures set last_attempt_at = now() - interval '1 day'")
    assert conn.execute(pending).fetchone()[0] == 1
    run_embedding(database_url, tiny, settings(tmp_path, max_attempts=2))
    assert failures(conn)["p"][2] == 2
    conn.execute("update embedding_failures set last_attempt_at = now() - interval '1 day'")
    assert conn.execute(pending).fetchone()[0] == 0  # capped
    # A new image URL is new input: pending at once, and it works now.
    url = images.add("later2.jpg", jpeg((1, 2, 3)))
    conn.execute("update scraped_bikes set image_url = %s where id = %s", (url, bike))
    run_embedding(database_url, tiny, settings(tmp_path, max_attempts=2))
    assert vectors(conn)["p"][:2] == (False, False) and failures(conn) == {}


def test_changed_title_or_image_is_embedded_again_and_cached_images_not_refetched(
    conn, database_url, images, tmp_path, tiny
):
    for i in range(3):
        add(conn, "shop.nl", f"p{i}", f"Bike {i}", images.add(f"{i}.jpg", jpeg((i * 50, 0, 0))))
    run_embedding(database_url, tiny, settings(tmp_path))
    before = vectors(conn)
    again = run_embedding(database_url, tiny, settings(tmp_path))
    assert again.embedded == 0 and vectors(conn) == before

    conn.execute("update scraped_bikes set name = 'Bike 0, renamed' where url = 'p0'")
    new_image = images.add("new.jpg", jpeg((0, 255, 0)))
    conn.execute("update scraped_bikes set image_url = %s where url = 'p1'", (new_image,))
    summary = run_embedding(database_url, tiny, settings(tmp_path))
    after = vectors(conn)
    assert summary.embedded == 2
    assert after["p0"][2] != before["p0"][2] and after["p1"][2] != before["p1"][2]
    assert after["p2"] == before["p2"]
    assert images.requests["/img/0.jpg"] == 1  # the renamed listing's image came from the cache
    assert summary.cache_hits == 1


def test_prune_cache_removes_images_no_listing_names(conn, database_url, images, tmp_path, tiny):
    red = jpeg((200, 0, 0))
    for name in ("a", "b", "c"):
        add(conn, "shop.nl", name, f"Bike {name}", images.add(f"{name}.jpg", red))  # one blob
    add(conn, "shop.nl", "d", "Bike d", images.add("d.jpg", jpeg((0, 0, 200))))
    add(conn, "shop.nl", "e", "Bike e", images.add("e.jpg", jpeg((0, 200, 0))))
    run_embedding(database_url, tiny, settings(tmp_path))
    cache = tmp_path / "cache"
    assert len(list((cache / "blobs").iterdir())) == 3
    (cache / "blobs" / "left-over.1.2.tmp").write_bytes(b"x")
    os.utime(cache / "blobs" / "left-over.1.2.tmp", (0, 0))  # a write that died long ago
    conn.execute("update scraped_bikes set image_url = null where url in ('a', 'b', 'd')")

    env = {"DATABASE_URL": database_url, "BIKEMATCH_IMAGE_CACHE": str(cache)}
    result = run_cli("embed", "prune-cache", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"removed 1 cached images (0.0 MiB) from {cache}")
    kept = {url: cached_image(cache, f"{images.base}/img/{url}.jpg") for url in "abcde"}
    assert kept["c"] == red and kept["e"] is not None  # c's blob was a's and b's too
    assert kept["a"] is kept["b"] is kept["d"] is None
    assert len(list((cache / "blobs").iterdir())) == 2

    off = run_cli("embed", "prune-cache", env={**env, "BIKEMATCH_IMAGE_CACHE": "off"})
    assert off.returncode == 2 and off.stderr.strip() == (
        "error: the image cache is off (BIKEMATCH_IMAGE_CACHE=off)"
    )


def test_an_image_cache_that_cannot_be_written_does_not_stop_the_job(
    conn, database_url, images, tmp_path, tiny, caplog
):
    add(conn, "shop.nl", "p", "Bike", images.add("p.jpg", jpeg((9, 99, 9))))
    (tmp_path / "cache").write_text("a file where the cache directory should be")
    summary = run_embedding(database_url, tiny, settings(tmp_path))
    assert summary.embedded == 1 and not summary.failed
    assert "images are not being cached" in caplog.text


def test_a_claim_reads_from_where_the_last_one_stopped(conn, tiny):
    """A run claims pages of pending listings in id order. Each claim must start reading
    at the last page's end: read from the start of the pending set, a run's claims
    cost grew with the square of the table (95 ms a claim at 90% of 200,000)."""
    register(conn, tiny)
    conn.execute(
        "insert into scraped_bikes (webshop, url, name)"
        " select 'shop.nl', 'p' || g, 'Bike ' || g from generate_series(1, 3000) as g"
    )
    ids = [row[0] for row in conn.execute("select id from scraped_bikes order by id")]
    after = ids[-41]  # all before it embedded already; 40 pending after it
    conn.execute(
        """
        insert into vector_storage
            (bike_id, model, text_embedding, embedding, text_only, input_hash, source_hash)
        select
            id, 'tiny-random', array_fill(1, array[32])::vector,
            (array_fill(0, array[32]) || array_fill(1, array[32]))::halfvec, true, 'x',
            bikematch_embedding_source(name, image_url)
        from scraped_bikes where id <= %s
        """,
        (after,),
    )
    values = {
        "model": "tiny-random",
        "after": after,
        "limit": 32,
        "max_attempts": 5,
        "before": None,
    }
    claimed = [work.bike_id for work in store.claim(conn, **values)]
    assert claimed == ids[-40:-8]
    (plan,) = conn.execute("explain (analyze, format json) " + store._CLAIM, values).fetchone()[0]

    def rows_read(node) -> float:
        own = node["Actual Rows"] * node["Actual Loops"] if "Scan" in node["Node Type"] else 0
        return own + sum(rows_read(child) for child in node.get("Plans", []))

    assert rows_read(plan["Plan"]) < 500  # from the start: several thousand


def test_text_only_can_be_switched_off(conn, database_url, images, tmp_path, tiny):
    add(conn, "shop.nl", "p", "Bike without a picture", None)
    add(conn, "shop.nl", "q", "Bike with a broken picture", f"{images.base}/img/gone.jpg")
    summary = run_embedding(database_url, tiny, settings(tmp_path, text_only=False))
    assert summary.skipped == 1 and vectors(conn) == {}
    assert set(failures(conn)) == {"q"} and summary.not_embedded == 1


def test_an_image_that_works_again_replaces_the_title_only_vector(
    conn, database_url, images, tmp_path, tiny
):
    add(conn, "shop.nl", "p", "Bike", f"{images.base}/img/soon.jpg")
    run_embedding(database_url, tiny, settings(tmp_path))
    assert vectors(conn)["p"][:2] == (True, True) and failures(conn)["p"][2] == 1
    images.add("soon.jpg", jpeg((5, 50, 150)))  # the shop fixed it, at the same URL
    assert run_embedding(database_url, tiny, settings(tmp_path)).embedded == 0  # backoff
    conn.execute("update embedding_failures set last_attempt_at = now() - interval '1 day'")
    summary = run_embedding(database_url, tiny, settings(tmp_path))
    assert summary.embedded == 1 and summary.text_only == 0
    assert vectors(conn)["p"][:2] == (False, False) and failures(conn) == {}


def test_vectors_older_than_a_time_are_embedded_again_once(
    conn, database_url, images, tmp_path, tiny
):
    for i in range(3):
        add(conn, "shop.nl", f"p{i}", f"Bike {i}", images.add(f"{i}.jpg", jpeg((80 * i, 9, 9))))
    add(conn, "shop.nl", "bare", "Bike without a photo", None)
    assert run_embedding(database_url, tiny, settings(tmp_path)).embedded == 4
    first = vectors(conn)
    upgraded_at = conn.execute("select now()").fetchone()[0]
    earlier = upgraded_at - timedelta(hours=1)
    assert (
        run_embedding(database_url, tiny, settings(tmp_path, reembed_before=earlier)).embedded == 0
    )
    # embedded again differently (here: another image weight), same titles and photos
    again = settings(tmp_path, reembed_before=upgraded_at, image_weight=0.8)
    summary = run_embedding(database_url, tiny, again)
    assert summary.embedded == 4 and summary.text_only == 1
    second = vectors(conn)
    assert all(second[url][3] > upgraded_at >= first[url][3] for url in first)
    assert {url: row[:2] for url, row in second.items()} == {
        url: row[:2] for url, row in first.items()
    }
    # a new vector, a new input_hash: clustering searches its neighbours again
    assert all(second[f"p{i}"][2] != first[f"p{i}"][2] for i in range(3))
    # each once: the same command again (after a kill, say) finds nothing left to do
    assert run_embedding(database_url, tiny, again).embedded == 0


def test_a_time_budget_stops_claiming_and_the_next_run_goes_on(
    conn, database_url, images, tmp_path
):
    """A clock that moves a second each batch the model embeds: the budget of two seconds
    is spent after two batches, while the pipeline holds a few more it claimed."""
    model = load_model("tiny-random", device="cpu")
    now, embed_images = [0.0], model.embed_images

    def one_second_a_batch(pixels):
        now[0] += 1.0
        return embed_images(pixels)

    model.embed_images = one_second_a_batch
    photo = images.add("p.jpg", jpeg((90, 90, 9)))
    for i in range(40):
        add(conn, "shop.nl", f"p{i}", f"Bike {i}", photo)
    budget = settings(tmp_path, streams=1, max_seconds=2.0)
    first = run_embedding(database_url, model, budget, clock=lambda: now[0])
    assert 0 < first.embedded < 40 and first.left_for_later == 40 - first.embedded
    assert first.lines()[-1] == (
        f"stopped at its time budget: about {40 - first.embedded} listings left for the next run"
    )
    second = run_embedding(database_url, model, settings(tmp_path, streams=1))
    assert second.embedded == 40 - first.embedded and second.left_for_later is None
    assert len(vectors(conn)) == 40


def test_connections_the_database_drops_are_replaced_and_nothing_is_lost(
    conn, database_url, tmp_path, tiny
):
    """A server restart, a failover or a pooler's timeout drops the job's connections
    mid-run: each is replaced, the claim or write it was doing is done again."""
    for i in range(20):
        add(conn, "shop.nl", f"p{i}", f"Bike {i}", None)
    dropped = []

    def progress(done, failed, total):
        if not dropped:  # after the first batch's write: every other session goes
            dropped.extend(
                conn.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity"
                    " where backend_type = 'client backend' and pid <> pg_backend_pid()"
                ).fetchall()
            )

    summary = run_embedding(database_url, tiny, settings(tmp_path, batch_size=2), progress)
    assert len(dropped) >= 3
    assert summary.embedded == 20 and not summary.failed
    assert summary.reconnects >= 3, summary.lines()
    times = f"{summary.reconnects} times"
    assert summary.lines()[-1] == (
        f"the database dropped a connection {times}: reconnected, nothing lost"
    )
    assert len(vectors(conn)) == 20


def test_the_summary_says_when_database_writes_held_the_job_up(conn, database_url, tmp_path, tiny):
    for i in range(30):
        add(conn, "shop.nl", f"p{i}", f"Bike {i}", None)
    # Another session blocks writes (not reads) for 2 s: the first batches are
    # embedded, their writes wait, and with every connection holding an unwritten
    # batch the job can claim nothing more.
    with connect(database_url) as other:
        other.execute("lock table embedding_failures in exclusive mode")
        release = threading.Timer(2.0, other.commit)
        release.start()
        summary = run_embedding(database_url, tiny, settings(tmp_path, batch_size=2))
        release.join()
    assert summary.embedded == 30
    assert summary.write_wait_seconds >= 1.0, summary.lines()
    assert "waiting for database writes" in summary.lines()[1]


def test_the_model_embeds_batches_at_once_on_its_streams(conn, database_url, images, tmp_path):
    """Two streams: two batches are in the model at the same time, each on its stream's
    threads, and torch's thread count is restored afterwards. Each call waits at a
    barrier for a second one: with one batch at a time the barrier would break."""
    model = load_model("tiny-random", device="cpu")
    both = threading.Barrier(2, timeout=30)
    threads_seen, embed_images = set(), model.embed_images

    def together(pixels):
        threads_seen.add(torch.get_num_threads())
        if len(pixels) == 8:  # the full pages; the last, shorter one may come alone
            both.wait()
        return embed_images(pixels)

    model.embed_images = together
    for i in range(20):
        add(conn, "shop.nl", f"p{i}", f"Bike {i}", images.add(f"{i}.jpg", jpeg((9 * i, 90, 9))))
    threads = torch.get_num_threads()
    summary = run_embedding(database_url, model, settings(tmp_path, batch_size=8, streams=2))
    assert summary.embedded == 20 and summary.streams == 2 and not summary.failed
    assert "the model's 2 streams busy" in summary.lines()[1]
    assert threads_seen == {inference_streams(2, torch.device("cpu"))[1]}
    assert torch.get_num_threads() == threads
    with ThreadPoolExecutor(1) as fresh:  # the default for threads started later, too
        assert fresh.submit(torch.get_num_threads).result() == threads


def test_the_job_embeds_in_the_models_precision(conn, database_url, images, tmp_path):
    """--dtype decides: bf16 autocast where the model was loaded so, and the summary says."""
    model = load_model("tiny-random", device="cpu", dtype=torch.bfloat16)
    for i in range(4):
        add(conn, "shop.nl", f"p{i}", f"Bike {i}", images.add(f"{i}.jpg", jpeg((9 * i, 9, 9))))
    summary = run_embedding(database_url, model, settings(tmp_path))
    assert summary.embedded == 4 and summary.lines()[-1] == "precision bfloat16 autocast"
    plain = run_embedding(database_url, load_model("tiny-random", device="cpu"), settings(tmp_path))
    assert not any(line.startswith("precision") for line in plain.lines())


def test_a_compiled_model_is_compiled_before_the_first_batch_and_stores_eager_vectors(
    conn, database_url, images, tmp_path, tiny
):
    """Compiled once, on the threads the batches then run on (a graph is kept per torch
    thread count): the batches of this run and of the next compile nothing more."""
    from torch._dynamo.utils import counters

    def graphs() -> int:
        return counters["stats"]["unique_graphs"]

    compiled = load_model("tiny-random", device="cpu", compile=True)
    for i in range(6):
        add(conn, "shop.nl", f"p{i}", f"Bike {i}", images.add(f"{i}.jpg", jpeg((40 * i, 9, 9))))
    before = graphs()
    summary = run_embedding(database_url, compiled, settings(tmp_path, batch_size=None))
    assert summary.embedded == 6 and summary.batch_size == 32  # the CPU default
    assert summary.compile_seconds > 0
    assert "precision compiled" in summary.lines()
    assert any(line.startswith("compiled in ") for line in summary.lines())
    assert graphs() - before <= 4  # each tower for a batch of 32 and a batch of 1
    for i in range(6, 16):
        add(conn, "shop.nl", f"p{i}", f"Bike {i}", images.add(f"{i}.jpg", jpeg((9 * i, 9, 9))))
    before = graphs()
    assert run_embedding(database_url, compiled, settings(tmp_path)).embedded == 10  # 4, 4, 2
    assert graphs() == before
    stored = dict(conn.execute("select bike_id, image_embedding from vector_storage").fetchall())
    conn.execute("delete from vector_storage")
    run_embedding(database_url, tiny, settings(tmp_path))
    for bike_id, eager in conn.execute("select bike_id, image_embedding from vector_storage"):
        assert np.dot(eager.to_numpy(), stored[bike_id].to_numpy()) >= 0.9999


def test_nothing_pending_compiles_nothing_and_claims_nothing(conn, database_url, tmp_path):
    model = load_model("tiny-random", device="cpu", compile=True)
    summary = run_embedding(database_url, model, settings(tmp_path, batch_size=None, limit=5))
    assert summary.lines() == ["model tiny-random: embedded 0, nothing pending"]
    assert summary.compile_seconds is None


def test_a_model_that_fails_to_compile_is_embedded_without(conn, database_url, tmp_path):
    def no_compiler(graph, inputs):
        raise RuntimeError("no C++ compiler here")

    model = load_model("tiny-random", device="cpu")
    model.compile(backend=no_compiler)
    for i in range(3):
        add(conn, "shop.nl", f"p{i}", f"Bike {i}", None)
    notices = []
    summary = run_embedding(database_url, model, settings(tmp_path), notice=notices.append)
    assert summary.embedded == 3 and summary.compile_seconds is None
    assert not model.compiled and summary.precision is None
    [notice] = notices
    assert notice.startswith("compiling the model failed (") and "no C++ compiler here" in notice
    assert notice.endswith("; going on without")


def test_check_precision_measures_bf16_on_the_catalogues_own_listings(conn, database_url, images):
    for i in range(6):
        add(conn, "shop.nl", f"p{i}", f"Bike {i}", images.add(f"{i}.jpg", jpeg((40 * i, 9, 9))))
    args = ("embed", "check-precision", "--model", "tiny-random", "--device", "cpu")
    result = run_cli(*args, "--allow-private-hosts", env={"DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.strip().splitlines()
    assert line.startswith("tiny-random: bfloat16 agreed with float32 at cosine >= "), line
    assert "on 6 listings and ran" in line
    assert line.endswith(("is safe and faster here", "(needs >= 0.999 and 1.2x)")), line
    # nothing with an image to measure on: one line
    conn.execute("update scraped_bikes set image_url = null")
    result = run_cli(*args, env={"DATABASE_URL": database_url})
    assert result.returncode == 2
    assert result.stderr.strip() == "error: no listings with an image to compare on"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_job_on_a_gpu_stores_what_the_cpu_would(conn, database_url, images, tmp_path):
    cpu = load_model("tiny-random", device="cpu")
    gpu = load_model("tiny-random", device="cuda")  # bf16 weights, compiled, by default
    gpu.network.load_state_dict(cpu.network.state_dict())
    photos = {f"p{i}": jpeg((25 * i, 90, 200 - 9 * i), size=(320, 240)) for i in range(10)}
    for name, photo in photos.items():
        add(conn, "shop.nl", name, f"Bike {name}", images.add(f"{name}.jpg", photo))
    summary = run_embedding(database_url, gpu, settings(tmp_path, batch_size=None))
    assert summary.embedded == 10 and not summary.failed, summary.lines()
    assert "precision bfloat16 weights, compiled" in summary.lines()
    assert 8 <= summary.batch_size <= 512  # from the free GPU memory
    for url, image, text, title in conn.execute(
        "select url, image_embedding::text, text_embedding::text, name"
        " from vector_storage join scraped_bikes on id = bike_id"
    ):
        pixels = decode_image(photos[url], cpu.preprocess, cpu.image_size)
        for stored, expected in [
            (image, cpu.embed_images(pixels[None])[0]),
            (text, cpu.embed_texts(cpu.tokenize([title]))[0]),
        ]:
            assert torch.dot(torch.tensor(json.loads(stored)), expected) >= 0.999


def test_inference_streams_by_device():
    cores = torch.get_num_threads()
    assert inference_streams(None, torch.device("cpu")) == (min(cores, 4), max(1, cores // 4))
    assert inference_streams(3, torch.device("cpu")) == (3, max(1, cores // 3))
    assert inference_streams(None, torch.device("cuda")) == (1, None)


def test_private_addresses_are_refused_unless_allowed(conn, database_url, images, tmp_path, tiny):
    add(conn, "shop.nl", "loopback", "Bike", images.add("a.jpg", jpeg((1, 1, 1))))
    named = images.add("b.jpg", jpeg((2, 2, 2))).replace("127.0.0.1", "localhost")
    add(conn, "shop.nl", "named", "Bike", named)
    add(conn, "shop.nl", "metadata", "Bike", "http://169.254.169.254/latest/meta-data/x.jpg")
    strict = settings(tmp_path, fetch=FetchSettings(cache_dir=None, timeout=2, retries=0))
    run_embedding(database_url, tiny, strict)
    failed = failures(conn)
    assert set(failed) == {"loopback", "named", "metadata"}
    for name in failed:
        assert "refused" in failed[name][1] and "private or reserved" in failed[name][1]
        assert failed[name][2] == 5  # given up at once: every try would be refused
    assert images.requests["/img/a.jpg"] == 0 and images.requests["/img/b.jpg"] == 0
    # so a later run does not try them again (they keep their title-only vectors)
    conn.execute("update embedding_failures set last_attempt_at = now() - interval '1 day'")
    assert run_embedding(database_url, tiny, strict).lines()[0].endswith("nothing pending")
    assert {name: row[2] for name, row in failures(conn).items()} == dict.fromkeys(failed, 5)


def _embed_process(database_url, *args):
    return subprocess.Popen(
        [
            BIKEMATCH,
            "embed",
            "--model",
            "tiny-random",
            "--device",
            "cpu",
            "--allow-private-hosts",
            "--cache-dir",
            "off",
            *args,
        ],
        env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_fetch_concurrency_bounds_the_downloads_at_once(conn, database_url, images):
    for i in range(8):
        add(conn, "shop.nl", f"p{i}", f"Bike {i}", images.add(f"{i}.jpg", jpeg((i * 20, 5, 5))))
    images.delay = 0.2
    process = _embed_process(database_url, "--batch-size", "8", "--fetch-concurrency", "3")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "embedded 8" in out
    assert images.most_at_once == 3  # 8 fetches of one batch, 3 at a time


def test_cli_takes_the_number_of_streams(conn, database_url):
    for i in range(6):
        add(conn, "shop.nl", f"p{i}", f"Bike {i}", None)
    process = _embed_process(database_url, "--batch-size", "2", "--streams", "3")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "embedded 6 (6 text-only)" in out and "the model's 3 streams busy" in out, out


def test_resume_after_a_kill(conn, database_url, images, tmp_path):
    for i in range(12):
        add(conn, "shop.nl", f"p{i}", f"Bike {i}", images.add(f"{i}.jpg", jpeg((i * 20, 5, 5))))
    images.delay = 0.3
    process = _embed_process(database_url, "--batch-size", "2")
    eventually(lambda: vectors(conn))  # some batches are stored
    process.kill()
    process.wait()
    partial = len(vectors(conn))
    assert 0 < partial < 12
    images.delay = 0
    rerun = _embed_process(database_url, "--batch-size", "4")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert f"embedded {12 - partial} " in out
    assert len(vectors(conn)) == 12


def test_two_embedders_never_embed_the_same_listing(conn, database_url, images):
    for i in range(24):
        add(conn, "shop.nl", f"p{i}", f"Bike {i}", images.add(f"{i}.jpg", jpeg((i * 10, 5, 5))))
    # Slow enough that one embedder alone would take ~6 s: longer than the two
    # processes' start-up (torch, the model) can differ on a loaded machine.
    images.delay = 0.5
    args = ("--batch-size", "3", "--fetch-concurrency", "2")
    first = _embed_process(database_url, *args)
    second = _embed_process(database_url, *args)
    outputs = [process.communicate(timeout=180) for process in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    embedded = [int(out.split("embedded ")[1].split(" ")[0]) for out, _ in outputs]
    assert sum(embedded) == 24, outputs
    assert min(embedded) > 0  # both did a share
    assert len(vectors(conn)) == 24


class _RemoteService:
    """A hosted backend speaking the remote contract, serving the tiny model."""

    def __init__(self, model, token):
        service = self
        self.calls = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                service.calls += 1
                if self.headers.get("Authorization") != f"Bearer {token}":
                    self.send_response(401)
                    self.end_headers()
                    return
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if "texts" in payload:
                    vectors = model.embed_texts(model.tokenize(payload["texts"]))
                else:
                    import base64
                    import io

                    pixels = [
                        model.preprocess(Image.open(io.BytesIO(base64.b64decode(item))))
                        for item in payload["images"]
                    ]
                    vectors = model.embed_images(torch.stack(pixels))
                body = json.dumps({"embeddings": vectors.tolist()}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = LocalServer(Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/embed"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_remote_backend_has_the_same_contract(conn, database_url, images, tmp_path, tiny):
    service = _RemoteService(tiny, "secret")
    remote = RemoteModel(service.url, name="tiny-remote", token="secret", batch_size=2)
    assert (remote.image_dims, remote.text_dims) == (32, 32)
    for i in range(5):
        add(
            conn,
            "shop.nl",
            f"p{i}",
            f"Bike {i}",
            images.add(f"{i}.png", png(Image.new("RGB", (40, 30), (i * 40, 0, 0)))),
        )
    summary = run_embedding(database_url, remote, settings(tmp_path))
    assert summary.embedded == 5 and len(vectors(conn, "tiny-remote")) == 5

    from embedder.compare import CompareError, compare_models

    lines = compare_models(database_url, tiny, remote, 5, settings(tmp_path).fetch)
    assert "image: mean cosine 1.0000" in lines[1] or "image: mean cosine 0.99" in lines[1], lines
    assert "100% above 0.95" in lines[2], lines
    # nothing to compare: an error (the CLI's exit status 1), not a report
    result = run_cli(
        "embed",
        "compare",
        "--model",
        "tiny-random",
        "--model",
        "minilm-effnet-lite0",
        env={"DATABASE_URL": database_url},
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        "error: tiny-random and minilm-effnet-lite0 have different dimensions"
        " (32/32 vs 1280/384): their vectors cannot be compared"
    )
    conn.execute("update scraped_bikes set image_url = 'http://[::1/x.jpg'")
    with pytest.raises(CompareError, match="none of the 5 sampled listings' images could be read"):
        compare_models(database_url, tiny, remote, 5, settings(tmp_path).fetch)
    with pytest.raises(Exception, match="HTTP 401"):
        RemoteModel(service.url, name="x", token="wrong", retries=0)


def test_reembed_before_takes_a_past_time(tmp_path):
    for value, error in (
        ("2999-01-01", "2999-01-01 is in the future: every run would embed everything again"),
        ("yesterday", "'yesterday' is not an ISO 8601 date or time (2026-11-21T08:00Z)"),
    ):
        result = run_cli("embed", "--model", "tiny-random", "--reembed-before", value, cwd=tmp_path)
        assert result.returncode == 2 and error in result.stderr, result.stderr
    assert not (tmp_path / ".bikematch").exists()  # refused before starting a database


def test_an_unknown_model_is_one_line_and_starts_no_database(tmp_path):
    result = run_cli("embed", "--model", "no-such-model", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown model 'no-such-model'; known: pe-core-l14-336, clip-vit-b-32, "
        "minilm-effnet-lite0, tiny-random"
    ]
    assert not (tmp_path / ".bikematch").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_is_one_line_and_starts_no_database(tmp_path):
    result = run_cli("embed", "--model", "tiny-random", "--device", "cuda", cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: device 'cuda': torch sees no CUDA GPU here"), line
    assert not (tmp_path / ".bikematch").exists()


def index_state(conn, model="tiny-random") -> str:
    return conn.execute("select bikematch_hnsw_index_state(%s)", (model,)).fetchone()[0]


def test_the_index_is_kept_for_a_small_backlog_and_rebuilt_for_a_large_one():
    assert index.plan("auto", 999, 0).rebuild is False  # too small to pay
    assert index.plan("auto", 1000, 0).rebuild is True  # a first run
    assert index.plan("auto", 5000, 5000).rebuild is True  # a re-embed of everything
    assert index.plan("auto", 5000, 20000).rebuild is False  # a night's new listings
    assert index.plan("rebuild", 1, 10**6).rebuild is True
    assert index.plan("keep", 10**6, 0).rebuild is False
    with pytest.raises(ValueError, match="index mode must be one of auto, keep, rebuild"):
        index.plan("sometimes", 1, 1)


def test_a_large_load_goes_in_without_the_index_which_is_built_afterwards(
    conn, database_url, tmp_path, tiny
):
    """While the job writes, the model has no index (each progress call looks); at the
    end it has a valid one, and the summary says how long the build took."""
    for i in range(12):
        add(conn, "shop.nl", f"p{i}", f"Bike {i}", None)
    seen, notices = [], []
    summary = run_embedding(
        database_url,
        tiny,
        settings(tmp_path, index_mode="rebuild", writers=3),
        lambda done, failed, total: seen.append(index_state(conn)),
        notice=notices.append,
    )
    assert summary.embedded == 12 and summary.writers == 3
    assert seen and set(seen) == {"missing"}
    assert index_state(conn) == "valid"
    assert notices == ["building the search index of tiny-random (the vectors are stored)"]
    assert summary.lines()[-1].startswith("search index built after the load (--index rebuild): ")
    # The built index is the one searches use (12 rows: the planner must be told to).
    conn.execute("set enable_seqscan = off")
    plan = conn.execute(
        "explain select bike_id from vector_storage where model = 'tiny-random'"
        " order by embedding::halfvec(64) <=> (select embedding from vector_storage limit 1)"
        " limit 3"
    ).fetchall()
    conn.execute("reset enable_seqscan")
    assert "vector_storage_hnsw_tiny_random" in " ".join(row[0] for row in plan)


def test_an_interrupted_load_still_leaves_the_model_its_index(conn, database_url, tmp_path, tiny):
    for i in range(12):
        add(conn, "shop.nl", f"p{i}", f"Bike {i}", None)

    interrupted = []

    def interrupt(done, failed, total):  # Ctrl-C after the first batch is written
        if not interrupted:
            interrupted.append(index_state(conn))
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        run_embedding(
            database_url, tiny, settings(tmp_path, index_mode="rebuild", streams=1), interrupt
        )
    assert interrupted == ["missing"] and index_state(conn) == "valid"
    assert 0 < len(vectors(conn)) < 12
    # No claim outlives the run: a claim or write still on a thread as Ctrl-C closed
    # its connection opens no new one to hold listings from the next run.
    holding = conn.execute(
        "select count(*) from pg_stat_activity"
        " where state like 'idle in transaction%%' and pid <> pg_backend_pid()"
    ).fetchone()[0]
    assert holding == 0
    rerun = run_embedding(database_url, tiny, settings(tmp_path))
    assert len(vectors(conn)) == 12 and rerun.index_seconds is None


def test_a_run_killed_without_the_index_leaves_it_to_the_next_embed_or_cluster(
    conn, database_url, tiny
):
    """A kill -9 mid-load leaves no index, an interrupted CREATE INDEX CONCURRENTLY an
    invalid one: the next registration (every embed) and the cluster command's check
    build it."""
    from bikematch.app.clusters import ensure_search_index

    register(conn, tiny)
    conn.execute("drop index if exists " + index_name(conn))
    assert index_state(conn) == "missing"
    said = []
    ensure_search_index(database_url, "tiny-random", said.append)
    assert index_state(conn) == "valid"
    assert said == ["building the search index of tiny-random (an embedding run left it out)"]
    ensure_search_index(database_url, "tiny-random", said.append)  # there: nothing to do
    assert len(said) == 1
    # What an interrupted CREATE INDEX CONCURRENTLY leaves: an index marked invalid.
    conn.execute(
        "update pg_index set indisvalid = false where indexrelid = %s::regclass",
        (index_name(conn),),
    )
    assert index_state(conn) == "invalid"
    register(conn, tiny)
    assert index_state(conn) == "valid"


def index_name(conn) -> str:
    return conn.execute("select bikematch_hnsw_index_name('tiny-random')").fetchone()[0]
