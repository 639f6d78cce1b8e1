"""bikematch serve: the embedding contract, /search, batching, bad input, a full queue."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from bikematch.app.clusters import build_clusters, cluster_vars
from bikematch.app.search import NoVectors, nearest
from bikematch.app.serve import ServeOptions, Service, serve_forever
from bikematch.core.listings import Listing, store_listings
from embedder.fetch import FetchSettings
from embedder.job import EmbedSettings, run_embedding
from perception_models import load_model

from .conftest import BIKEMATCH, eventually
from .image_server import encoded, jpeg, png


class Running:
    """A Service served on 127.0.0.1 from a thread of the test's, with a small client."""

    def __init__(self, service: Service, token: str | None = None) -> None:
        self.service = service
        self.token = token
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def listening(port: int) -> None:
            self.port = port
            ready.set()

        options = ServeOptions(port=0)
        self.task = self.loop.create_task(serve_forever(service, options, on_ready=listening))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert ready.wait(60), "the service did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(60)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, path, body=None, content_type="application/json", token=None, method=None):
        """(status, headers, decoded answer) of one request."""
        if isinstance(body, dict | list):
            body = json.dumps(body).encode()
        headers = {"Content-Type": content_type} if body is not None else {}
        if token or self.token:
            headers["Authorization"] = f"Bearer {token or self.token}"
        request = urllib.request.Request(self.url + path, body, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                status, answer, got = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, answer, got = error.code, error.read(), error.headers
        if got.get("Content-Type", "").startswith("application/json"):
            return status, got, json.loads(answer)
        return status, got, answer.decode()

    def upload(self, path, fields: dict, file: bytes | None):
        """A multipart/form-data POST: `fields`, and `file` as the field `image`."""
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            .encode()
            for name, value in fields.items()
        ]  # fmt: skip
        if file is not None:
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="image";'
                ' filename="photo.jpg"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
                + file
                + b"\r\n"
            )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request(path, body, f"multipart/form-data; boundary={boundary}")


@pytest.fixture
def serving():
    started = []

    def start(model, database_url=None, **options):
        token = options.pop("token", None)
        service = Service(model, database_url, ServeOptions(token=token, **options))
        running = Running(service, token)
        started.append(running)
        return running

    yield start
    for running in started:
        running.close()


def photo(seed: int) -> bytes:
    """A JPEG of random colour blocks, larger than the model's input (a draft decode)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize((640, 480), Image.NEAREST)
    return encoded(image, "JPEG", quality=90)


def catalogue(conn, images, count=6):
    listings = []
    for i in range(count):
        image = photo(i) if i % 2 == 0 else png(Image.fromarray(np.full((50, 70, 4), i * 30, "u1")))
        listings.append(
            Listing(
                webshop=f"shop-{'ab'[i % 2]}.nl",
                url=f"https://shop.example/{i}",
                name=f"Gazelle Ultimate C{380 + i} {400 + 100 * i}Wh",
                price=2000 + 100 * i,
                currency="EUR",
                image_url=images.add(
                    f"{i}.img", image, "image/jpeg" if i % 2 == 0 else "image/png"
                ),
            )
        )
    store_listings(conn, listings)


def embed_settings(tmp_path) -> EmbedSettings:
    fetch = FetchSettings(allow_private=True, cache_dir=tmp_path / "cache", timeout=5, retries=1)
    return EmbedSettings(batch_size=4, fetch=fetch)


def stored(conn, model):
    return {
        url: np.array(embedding.to_list(), dtype=np.float32)
        for url, embedding in conn.execute(
            "select url, embedding from vector_storage join scraped_bikes on id = bike_id"
            " where model = %s",
            (model,),
        )
    }


def test_embed_remote_against_serve_stores_the_local_vectors(
    conn, database_url, images, tmp_path, tiny, serving
):
    catalogue(conn, images)
    assert run_embedding(database_url, tiny, embed_settings(tmp_path)).embedded == 6
    local = stored(conn, "tiny-random")
    conn.execute("delete from vector_storage")
    service = serving(tiny)
    result = subprocess.run(
        [BIKEMATCH, "embed", "--model", "tiny-random", "--remote", service.url,
         "--allow-private-hosts", "--cache-dir", "off"],
        env={**_env(), "DATABASE_URL": database_url}, capture_output=True, text=True,
        timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    remote = stored(conn, "tiny-random")
    assert remote.keys() == local.keys() and len(remote) == 6
    for url, vector in local.items():  # (half precision: unit vectors to about 1e-4)
        cosine = vector @ remote[url] / np.linalg.norm(vector) / np.linalg.norm(remote[url])
        assert cosine >= 0.9999, url
    assert conn.execute("select count(*) from vector_storage where text_only").fetchone()[0] == 0


def _env():
    import os

    return {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}


def test_search_answers_with_the_listing_and_its_clusters_cheapest_offer(
    conn, database_url, images, tmp_path, tiny, serving
):
    catalogue(conn, images)
    run_embedding(database_url, tiny, embed_settings(tmp_path))
    service = serving(tiny, database_url)
    own = photo(2)
    status, _, answer = service.upload("/search", {"k": "3"}, own)
    assert status == 200, answer
    first = answer["results"][0]
    assert first["url"] == "https://shop.example/2" and first["similarity"] > 0.999
    assert first["shop"] == "shop-a.nl" and first["price"] == 2200.0 and first["currency"] == "EUR"
    assert first["title"].startswith("Gazelle Ultimate C382") and first["image_url"]
    assert first["cluster_id"] is None and first["cheapest"] is None  # not clustered yet
    assert len(answer["results"]) == 3 and answer["query"] == "image"

    build_clusters(database_url, cluster_vars("tiny-random", None, 0.5))
    status, _, answer = service.request("/search", {"text": "Gazelle Ultimate", "k": 6})
    assert status == 200 and len(answer["results"]) == 6 and answer["query"] == "text"
    clusters = dict(conn.execute("select cluster_id::text, min_price from bike_clusters"))
    for result in answer["results"]:
        assert result["cluster_id"] in clusters
        cheapest = result["cheapest"]
        assert cheapest["price"] == float(clusters[result["cluster_id"]])
        assert cheapest["price"] <= result["price"] and cheapest["currency"] == "EUR"

    status, _, answer = service.request(
        "/search", {"text": "Gazelle", "k": 10, "shops": ["shop-b.nl"]}
    )
    assert status == 200 and {r["shop"] for r in answer["results"]} == {"shop-b.nl"}
    assert len(answer["results"]) == 3
    # a listing its shop no longer lists is not on sale
    conn.execute(
        "update scraped_bikes set last_seen_at = now() - interval '30 days',"
        " first_seen_at = now() - interval '31 days' where url = 'https://shop.example/2'"
    )
    status, _, answer = service.upload("/search", {"k": "3"}, own)
    assert "https://shop.example/2" not in {r["url"] for r in answer["results"]}


class Gated:
    """A model whose first batch waits for the test's go (what concurrent requests queue
    behind); every other call is the wrapped model's."""

    def __init__(self, model) -> None:
        self.model = model
        self.entered = threading.Event()
        self.go = threading.Event()
        self.first = True

    def __getattr__(self, name):
        return getattr(self.model, name)

    def _gate(self) -> None:
        if self.first:
            self.first = False
            self.entered.set()
            assert self.go.wait(60)

    def embed_images(self, pixels):
        self._gate()
        return self.model.embed_images(pixels)

    def embed_texts(self, tokens):
        self._gate()
        return self.model.embed_texts(tokens)


def _image_request(seed: int) -> dict:
    return {"model": "tiny-random", "images": [base64.b64encode(photo(seed)).decode()]}


def test_concurrent_requests_are_embedded_as_one_batch(tiny, serving):
    gated = Gated(tiny)
    service = serving(gated, max_batch=16, wait=0.005, streams=1)
    with ThreadPoolExecutor(9) as clients:
        first = clients.submit(service.request, "/embed", _image_request(0))
        assert gated.entered.wait(60)  # the model is busy with the first request
        rest = [clients.submit(service.request, "/", _image_request(i)) for i in range(1, 9)]

        def queued():
            """the other 8 requests wait for the model"""
            return service.service.batcher.waiting == 8

        eventually(queued)
        gated.go.set()
        answers = [first.result(), *(future.result() for future in rest)]
    assert all(status == 200 for status, _, _ in answers), answers
    assert dict(service.service.batcher.sizes) == {("image", 1): 1, ("image", 8): 1}
    # the batched vectors are the ones a lone request gets
    alone = service.request("/embed", _image_request(5))[2]["embeddings"][0]
    batched = answers[5][2]["embeddings"][0]
    assert float(np.dot(alone, batched)) > 0.9999
    status, _, metrics = service.request("/metrics")
    assert status == 200
    assert 'bikematch_batches_total{kind="image"} 3' in metrics
    assert 'bikematch_batch_items_total{kind="image"} 10' in metrics
    assert 'bikematch_requests_total{route="/embed",status="200"} 2' in metrics
    assert 'bikematch_request_seconds{route="/",quantile="0.95"}' in metrics


def test_a_lone_request_waits_for_no_batch(tiny, serving):
    """With nothing else on its way, a request runs at once: a batching window of an
    hour (beyond the request's 10 s timeout, which would answer 504) costs it nothing."""
    service = serving(tiny, wait=3600, timeout=10, streams=1)
    for body in (_image_request(1), {"texts": ["Gazelle Ultimate C380"]}):
        status, _, answer = service.request("/embed", body)
        assert status == 200, answer
    assert dict(service.service.batcher.sizes) == {("image", 1): 1, ("text", 1): 1}


def test_a_full_queue_answers_503_with_retry_after(tiny, serving):
    gated = Gated(tiny)
    service = serving(gated, max_queue=2)
    with ThreadPoolExecutor(1) as clients:
        busy = clients.submit(service.request, "/embed", {"texts": ["first"]})
        assert gated.entered.wait(60)
        status, headers, answer = service.request("/embed", {"texts": ["a", "b", "c"]})
        assert status == 503 and headers["Retry-After"] == "1", answer
        assert "busy" in answer["error"]
        gated.go.set()
        assert busy.result()[0] == 200
    assert service.request("/embed", {"texts": ["a", "b"]})[0] == 200


def test_bad_input_gets_its_4xx_and_the_service_keeps_serving(
    conn, database_url, tiny, serving, images
):
    service = serving(tiny, database_url, token="s3cret", max_body_bytes=8 * 1024 * 1024)
    not_an_image = b"<html>no photo here</html>"
    cases = [
        (service.upload("/search", {}, not_an_image), 400, "not an image"),
        (service.upload("/search", {}, b""), 400, "0 bytes"),
        (service.upload("/search", {}, b"\xff" * (50 * 1024 * 1024)), 413, "larger than 8 MB"),
        (
            service.request("/search", {"image_url": images.add("x.jpg", jpeg((1, 2, 3)))}),
            400,
            "private",
        ),
        (service.request("/search", {"image_url": "file:///etc/passwd"}), 400, "not an http"),
        (service.request("/search", b"{not json", "application/json"), 400, "not valid JSON"),
        (service.request("/search", {"text": "  "}), 400, "non-empty text"),
        (service.request("/search", {"text": "x", "k": 0}), 400, '"k" must be between'),
        (service.request("/search", {"text": "x", "image_url": "https://a/b"}), 400, "exactly one"),
        (service.request("/embed", {"model": "clip", "texts": ["x"]}), 400, "unknown model"),
        (service.request("/embed", {"texts": []}), 400, "non-empty list"),
        (service.request("/embed", {"images": ["%%%"]}), 400, "not valid base64"),
        (service.request("/embed", [1, 2]), 400, "JSON object"),
        (service.request("/embed", {"texts": ["x"]}, token="wrong"), 401, "bearer token"),
        (service.request("/nowhere", {"texts": ["x"]}), 404, "Not Found"),
    ]
    for (status, _, answer), expected_status, message in cases:
        assert status == expected_status, (message, status, answer)
        assert message in answer["error"], (message, answer)
    # still serving, health without the token
    status, _, health = service.request("/health", token="ignored")
    assert status == 200 and health == {
        "status": "ok",
        "model": "tiny-random",
        "device": "cpu",
        "dims": {"image": 32, "text": 32},
        "image_size": tiny.image_size,
        "database": True,
    }
    status, _, answer = service.request("/embed", {"texts": ["Gazelle"]})
    assert status == 200 and len(answer["embeddings"][0]) == 32


def test_the_serve_command_listens_and_stops_on_ctrl_c(tmp_path):
    process = subprocess.Popen(
        [BIKEMATCH, "serve", "--model", "tiny-random", "--port", "0", "--no-database"],
        stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=_env(),
    )  # fmt: skip
    try:
        line = process.stderr.readline()
        assert line.startswith("serving tiny-random on cpu at http://127.0.0.1:"), line
        url = line.split(" at ")[1].split()[0]
        with urllib.request.urlopen(url + "/health", timeout=60) as response:
            health = json.loads(response.read())
        assert health["database"] is False and health["status"] == "degraded"
        taken = subprocess.run(
            [BIKEMATCH, "serve", "--model", "tiny-random", "--no-database",
             "--port", url.rsplit(":", 1)[1]],
            capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=120,
        )  # fmt: skip
        assert taken.returncode == 2 and taken.stderr.startswith("error: cannot listen on")
        assert "Traceback" not in taken.stderr
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    assert not (tmp_path / ".bikematch").exists()  # no database started


def test_search_before_anything_is_embedded_says_so(conn, database_url, tiny, serving):
    """Over no listings at all too (`conn` empties the tables): the search's plan then
    need not run match_bikes, which would have said so."""

    class Unembedded:
        name = "never-embedded"

        def __getattr__(self, attribute):
            return getattr(tiny, attribute)

    with pytest.raises(NoVectors):  # asked of the database itself, whatever the plan
        nearest(database_url, "never-embedded", torch.zeros(64), "text", 5)
    service = serving(Unembedded(), database_url)
    status, _, answer = service.request("/search", {"text": "Gazelle"})
    assert status == 503 and answer["error"] == "no listing is embedded with never-embedded yet"
    assert service.request("/embed", {"model": "never-embedded", "texts": ["x"]})[0] == 200


def test_a_compiled_model_is_compiled_before_the_first_request(tiny, serving):
    """At start, on the threads requests run on: requests of any size compile nothing."""
    from torch._dynamo.utils import counters

    compiled = load_model("tiny-random", device="cpu", compile=True)
    service = serving(compiled, max_batch=8, streams=1)
    assert service.service.batcher.compile_seconds > 0
    before = counters["stats"]["unique_graphs"]
    for count in (1, 3):
        status, _, answer = service.request("/embed", {"texts": ["Gazelle C7"] * count})
        assert status == 200 and len(answer["embeddings"]) == count
    assert counters["stats"]["unique_graphs"] == before
