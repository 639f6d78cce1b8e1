"""`bikematch serve`: the embedding and visual-search service an app calls.

One process loads the model once and answers over HTTP (aiohttp: the embedder's HTTP
client already, asyncio-native, with multipart uploads, middlewares and a test-friendly
runner, so the service adds no dependency):

- `POST /` or `/embed`: the hosted-backend contract `embed --remote` speaks
  (`{"model", "texts"|"images"}` -> `{"embeddings"}`; images are base64 image files);
- `POST /search`: a photo (multipart `image`, or `image_url`) or a `text`, `k`, optional
  `shop` filter -> the nearest listings on sale, each with its cluster's cheapest offer;
- `GET /health`, `GET /metrics` (Prometheus text format).

Requests are embedded together: `Batcher` lets the first queued item wait a few
milliseconds for requests already on their way (up to `max_batch`) and runs the model
on the whole batch in one worker thread, so under load the service runs at the model's
batch throughput, and a lone request at idle waits for nothing.
The queue is bounded: when it is full a request is answered 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import psycopg
import torch
from aiohttp import web

from bikematch.app.search import NoVectors, half_query, nearest
from bikematch.core.database import DatabaseError, connect
from embedder.decode import DecodeError, decode_image
from embedder.fetch import FetchError, FetchSettings, ImageFetcher
from embedder.job import inference_pool, inference_streams

log = logging.getLogger("bikematch.serve")

#: The most items one /embed request may carry, and the most results /search gives.
MAX_ITEMS = 256
MAX_K = 100


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    #: Bearer token every request but /health must carry; None: no token.
    token: str | None = None
    #: The most items the model embeds at once, and how long (seconds) the first queued
    #: item waits for others while requests are on their way (read, decoded).
    max_batch: int = 32
    wait: float = 0.005
    #: Items waiting to be embedded beyond which a request is refused (503).
    max_queue: int = 512
    #: Batches the model embeds at once; None: one per core on CPU, one on a GPU.
    streams: int | None = None
    #: Seconds a request may take before it is answered 504.
    timeout: float = 60.0
    #: The largest request body (an uploaded photo, a batch of images).
    max_body_bytes: int = 32 * 1024 * 1024
    fetch: FetchSettings = field(default_factory=FetchSettings)


class QueueFull(RuntimeError):
    pass


class Batcher:
    """Embeds the items concurrent requests queue, a batch at a time per stream.

    Items are ('image', preprocessed pixels) or ('text', a string). A batch is formed
    when a stream is free: whatever queued while every stream was busy joins the first
    item, up to `max_batch`, and while requests are on their way (`arrival`: being read
    and decoded) it waits up to `wait` seconds for them. With none on the way it runs at
    once: at idle a request costs one forward, not the wait besides. Streams as
    the embedder's (`embedder.job.inference_streams`): on CPU one per core, each
    running torch on its own core (a team of threads started from a thread other than
    the main one ran a forward 2.5x slower here); on a GPU one. `sizes` counts the
    batches the model saw by kind and size (what /metrics and the tests read).
    """

    def __init__(
        self, model, max_batch: int, wait: float, max_queue: int, streams: int | None = None
    ) -> None:
        self.model = model
        self.max_batch = max_batch
        self.wait = wait
        self.max_queue = max_queue
        self.streams, self._threads = inference_streams(streams, model.device)
        self.sizes: Counter[tuple[str, int]] = Counter()
        self.waiting = 0
        #: Requests read and decoded now, whose items will queue soon.
        self.arriving = 0
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._pool = contextlib.ExitStack()
        #: Seconds a compiled model took to compile at start; None for an eager one.
        self.compile_seconds: float | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = self._pool.enter_context(inference_pool(self.streams, self._threads))
        if getattr(self.model, "compiled", False):  # before the first request, on the
            # threads requests run on (a compiled graph is kept per torch thread count)
            loop = asyncio.get_running_loop()
            self.compile_seconds = await loop.run_in_executor(
                self._executor, self.model.warm_up, self.max_batch
            )
        self._free = asyncio.Semaphore(self.streams)
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._pool.close()

    @contextlib.contextmanager
    def arrival(self):
        """Marks a request on its way while it is read and decoded: a batch being formed
        waits for it (up to `wait`)."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1

    async def embed(self, kind: str, items: list) -> list[torch.Tensor]:
        """The unit vectors of `items` (all of one kind), in order; raises QueueFull."""
        if self.waiting + len(items) > self.max_queue:
            raise QueueFull(f"{self.waiting} items are waiting to be embedded")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self.waiting += len(items)
        for item, future in zip(items, futures, strict=True):
            self._queue.put_nowait((kind, item, future))
        return list(await asyncio.gather(*futures))

    async def _run(self) -> None:
        running = set()
        while True:
            await self._free.acquire()  # a stream is free
            batch = await self._collect()
            self.waiting -= len(batch)
            task = asyncio.create_task(self._forward_all(batch))
            running.add(task)
            task.add_done_callback(running.discard)

    async def _collect(self) -> list:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            if not self.arriving:  # nothing on its way: waiting would only delay
                break
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except TimeoutError:
                break
        return batch

    async def _forward_all(self, batch: list) -> None:
        try:
            for kind in ("image", "text"):
                group = [(item, future) for k, item, future in batch if k == kind]
                group = [(item, future) for item, future in group if not future.done()]
                if group:
                    await self._forward(kind, group)
        finally:
            self._free.release()

    async def _forward(self, kind: str, group: list) -> None:
        loop = asyncio.get_running_loop()
        items = [item for item, _ in group]
        self.sizes[(kind, len(items))] += 1
        try:
            vectors = await loop.run_in_executor(self._executor, self._embed, kind, items)
        except Exception as exc:  # the model failed: each request gets the error
            log.exception("embedding a batch of %d %ss failed", len(items), kind)
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), vector in zip(group, vectors, strict=True):
            if not future.done():  # its request may have timed out
                future.set_result(vector)

    def _embed(self, kind: str, items: list) -> torch.Tensor:
        model = self.model
        with torch.inference_mode():
            if kind == "image":
                return model.embed_images(model.collate(items))
            return model.embed_texts(model.tokenize(items))


class Metrics:
    """Request counts and latencies per route, in Prometheus' text format."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.seconds: Counter[str] = Counter()
        self.recent: dict[str, deque] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests[(route, status)] += 1
        self.seconds[route] += seconds
        self.recent.setdefault(route, deque(maxlen=1000)).append(seconds)

    def text(self, batcher: Batcher) -> str:
        lines = [
            "# HELP bikematch_requests_total Requests answered, by route and status.",
            "# TYPE bikematch_requests_total counter",
        ]
        for (route, status), count in sorted(self.requests.items()):
            lines.append(f'bikematch_requests_total{{route="{route}",status="{status}"}} {count}')
        lines += [
            "# HELP bikematch_request_seconds Request latency (quantiles of the last 1000).",
            "# TYPE bikematch_request_seconds summary",
        ]
        for route, recent in sorted(self.recent.items()):
            ordered = sorted(recent)
            for quantile in (0.5, 0.95, 0.99):
                value = ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]
                lines.append(
                    f'bikematch_request_seconds{{route="{route}",quantile="{quantile}"}}'
                    f" {value:.6f}"
                )
            count = sum(n for (r, _), n in self.requests.items() if r == route)
            total = self.seconds[route]
            lines.append(f'bikematch_request_seconds_sum{{route="{route}"}} {total:.6f}')
            lines.append(f'bikematch_request_seconds_count{{route="{route}"}} {count}')
        lines += [
            "# HELP bikematch_batches_total Batches the model embedded, by kind.",
            "# TYPE bikematch_batches_total counter",
            "# HELP bikematch_batch_items_total Items the model embedded, by kind.",
            "# TYPE bikematch_batch_items_total counter",
        ]
        for kind in ("image", "text"):
            sizes = {size: n for (k, size), n in batcher.sizes.items() if k == kind}
            lines.append(f'bikematch_batches_total{{kind="{kind}"}} {sum(sizes.values())}')
            items = sum(size * n for size, n in sizes.items())
            lines.append(f'bikematch_batch_items_total{{kind="{kind}"}} {items}')
        lines += [
            "# HELP bikematch_queue_items Items waiting to be embedded.",
            "# TYPE bikematch_queue_items gauge",
            f"bikematch_queue_items {batcher.waiting}",
        ]
        return "\n".join(lines) + "\n"


def _error(status: int, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class BadRequest(ValueError):
    """Input the client can fix: answered 400 with the message."""


class Service:
    """The routes, over one loaded model and one database."""

    def __init__(self, model, database_url: str | None, options: ServeOptions) -> None:
        self.model = model
        self.database_url = database_url
        self.options = options
        self.batcher = Batcher(
            model, options.max_batch, options.wait, options.max_queue, options.streams
        )
        self.metrics = Metrics()
        self.fetcher: ImageFetcher | None = None
        self._resources = contextlib.AsyncExitStack()

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.options.max_body_bytes,
            middlewares=[self._measure, self._errors, self._authorise],
        )
        app.router.add_post("/", self.embed)
        app.router.add_post("/embed", self.embed)
        app.router.add_post("/search", self.search)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_text)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app) -> None:
        await self.batcher.start()
        self._resources.push_async_callback(self.batcher.stop)
        self.fetcher = await self._resources.enter_async_context(ImageFetcher(self.options.fetch))

    async def _stop(self, app) -> None:
        await self._resources.aclose()

    # -- middlewares ----------------------------------------------------------------

    @web.middleware
    async def _measure(self, request, handler):
        started = time.perf_counter()
        response = await handler(request)
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unknown"
        self.metrics.observe(name, response.status, time.perf_counter() - started)
        return response

    @web.middleware
    async def _errors(self, request, handler):
        """Every answer is JSON; nothing a client sends crashes the service."""
        try:
            return await handler(request)
        except BadRequest as exc:
            return _error(400, str(exc))
        except QueueFull:
            return _error(503, "the service is busy: try again shortly", {"Retry-After": "1"})
        except TimeoutError:
            return _error(504, f"not answered within {self.options.timeout:g} s")
        except web.HTTPRequestEntityTooLarge:
            limit = self.options.max_body_bytes
            return _error(413, f"the request is larger than {limit // (1024 * 1024)} MB")
        except web.HTTPException as exc:
            return _error(exc.status, exc.reason)
        except Exception:  # a bug: logged, answered, the service keeps serving
            log.exception("%s %s failed", request.method, request.path)
            return _error(500, "internal error (see the service's log)")

    @web.middleware
    async def _authorise(self, request, handler):
        token = self.options.token
        if token and request.path != "/health":
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return _error(401, "a valid bearer token is required")
        return await handler(request)

    # -- routes ---------------------------------------------------------------------

    async def health(self, request) -> web.Response:
        reachable = await asyncio.to_thread(self._database_reachable)
        return web.json_response(
            {
                "status": "ok" if reachable else "degraded",
                "model": self.model.name,
                "device": str(self.model.device),
                "dims": {"image": self.model.image_dims, "text": self.model.text_dims},
                "image_size": self.model.image_size,
                "database": reachable,
            }
        )

    async def metrics_text(self, request) -> web.Response:
        return web.Response(text=self.metrics.text(self.batcher), content_type="text/plain")

    async def embed(self, request) -> web.Response:
        with self.batcher.arrival():
            kind, items = await self._embed_items(request)
        vectors = await self._embed(kind, items)
        return web.json_response({"embeddings": [vector.tolist() for vector in vectors]})

    async def _embed_items(self, request) -> tuple[str, list]:
        """('text', titles) or ('image', decoded photos) of an /embed request."""
        payload = await _json(request)
        name = payload.get("model", self.model.name)
        if name != self.model.name:
            raise BadRequest(f"unknown model {name!r}: this service embeds with {self.model.name}")
        kinds = [kind for kind in ("texts", "images") if kind in payload]
        if len(kinds) != 1:
            raise BadRequest('give exactly one of "texts" and "images"')
        items = payload[kinds[0]]
        if not isinstance(items, list) or not items:
            raise BadRequest(f'"{kinds[0]}" must be a non-empty list')
        if len(items) > MAX_ITEMS:
            raise BadRequest(f"at most {MAX_ITEMS} items a request, got {len(items)}")
        if kinds[0] == "texts":
            return "text", [_text(item, f"texts[{i}]") for i, item in enumerate(items)]
        photos = [_base64(item, f"images[{i}]") for i, item in enumerate(items)]
        pixels = await asyncio.gather(
            *(self._pixels(photo, f"images[{i}]") for i, photo in enumerate(photos))
        )
        return "image", list(pixels)

    async def search(self, request) -> web.Response:
        with self.batcher.arrival():
            query = await self._search_query(request)
            if self.database_url is None:
                return _error(503, "this service has no database to search")
            kind = "text" if "text" in query else "image"
            if kind == "text":
                item = query["text"]
            else:
                item = await self._pixels(query["photo"], "the image")
        (vector,) = await self._embed(kind, [item])
        try:
            results = await asyncio.to_thread(
                nearest,
                self.database_url,
                self.model.name,
                half_query(self.model, vector, kind),
                kind,
                query["k"],
                shops=query["shops"],
            )
        except (NoVectors, psycopg.errors.NoDataFound):  # the model has no vectors
            return _error(503, f"no listing is embedded with {self.model.name} yet")
        except (DatabaseError, psycopg.OperationalError) as exc:
            return _error(503, f"the database cannot be reached: {exc}")
        for result in results:
            del result["gone_since"]  # all on sale
        return web.json_response(
            {
                "model": self.model.name,
                "query": kind,
                "results": results,
            }
        )

    # -- helpers --------------------------------------------------------------------

    async def _embed(self, kind: str, items: list) -> list[torch.Tensor]:
        return await asyncio.wait_for(self.batcher.embed(kind, items), self.options.timeout)

    async def _pixels(self, photo: bytes, what: str):
        model = self.model
        try:
            return await asyncio.to_thread(decode_image, photo, model.preprocess, model.image_size)
        except DecodeError as exc:
            raise BadRequest(f"{what} is not an image bikematch can read ({exc})") from exc

    async def _search_query(self, request) -> dict:
        """{'text'|'photo', 'k', 'shops'} from a multipart form or a JSON body."""
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            upload = form.get("image")
            fields = {key: form.getall(key) for key in set(form.keys()) if key != "image"}
            values = {key: vals[-1] for key, vals in fields.items()}
            shops = [str(shop) for shop in fields.get("shop", [])]
            photo = upload.file.read() if upload is not None and hasattr(upload, "file") else None
            if upload is not None and photo is None:
                raise BadRequest('"image" must be an uploaded file')
        else:
            values = await _json(request)
            shops = values.get("shops") or ([values["shop"]] if values.get("shop") else [])
            if not isinstance(shops, list) or not all(isinstance(s, str) for s in shops):
                raise BadRequest('"shops" must be a list of shop names')
            photo = _base64(values["image"], "image") if values.get("image") else None
        text, image_url = values.get("text"), values.get("image_url")
        given = [what for what in (text, image_url, photo) if what is not None]
        if len(given) != 1:
            raise BadRequest('give exactly one of "image", "image_url" and "text"')
        try:
            k = int(values.get("k", 10))
        except (TypeError, ValueError):
            raise BadRequest('"k" must be a whole number') from None
        if not 1 <= k <= MAX_K:
            raise BadRequest(f'"k" must be between 1 and {MAX_K}')
        query = {"k": k, "shops": shops or None}
        if text is not None:
            query["text"] = _text(text, '"text"')
        elif image_url is not None:
            query["photo"] = await self._fetch(str(image_url))
        else:
            if not photo:
                raise BadRequest("the image is empty (0 bytes)")
            query["photo"] = photo
        return query

    async def _fetch(self, url: str) -> bytes:
        if not url.startswith(("http://", "https://")):
            raise BadRequest(f"image_url {url!r} is not an http(s) URL")
        try:
            return await self.fetcher.fetch(url)
        except FetchError as exc:
            raise BadRequest(f"cannot fetch {url}: {exc}") from exc

    def _database_reachable(self) -> bool:
        if self.database_url is None:
            return False
        try:
            with connect(self.database_url) as conn:
                conn.execute("select 1")
            return True
        except (DatabaseError, psycopg.Error):  # unreachable, refused, a wrong password
            return False


async def _json(request) -> dict:
    try:
        payload = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise BadRequest("the body must be a JSON object")
    return payload


def _text(value, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{what} must be a non-empty text")
    return value


def _base64(value, what: str) -> bytes:
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a base64 string")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what} is not valid base64") from None
    if not data:
        raise BadRequest(f"{what} is empty (0 bytes)")
    return data


async def serve_forever(service: Service, options: ServeOptions, on_ready=None) -> None:
    """Serve until cancelled (Ctrl-C); `on_ready(port)` once listening."""
    runner = web.AppRunner(service.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, options.host, options.port)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else options.port
    if on_ready:
        on_ready(port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
