"""The embedding job: claim pending listings, fetch and decode images, embed, write.

Batches are pipelined: while the model embeds batch N (in a worker thread,
torch releases the GIL), the event loop claims batch N+1 and fetches and
decodes its images, and batch N-1 is written to the database. Each batch
commits on its own connection, so a crash loses at most the batches in
flight, and the next run resumes from what is still pending. Claims use
`FOR NO KEY UPDATE SKIP LOCKED`, so embedders on several machines sharing one
database never embed a listing twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

import torch

from bikematch.database import connect
from embedder import store
from embedder.decode import DecodeError, decode_image
from embedder.fetch import FetchError, FetchSettings, ImageFetcher
from perception_models import EmbeddingModel, combine
from perception_models.precision import (
    MIN_LISTINGS,
    RECHECK_LISTINGS,
    choose_precision,
    machine_description,
    recheck,
)

log = logging.getLogger(__name__)

#: The lower precision `choose_precision` may pick on CPU.
_CANDIDATE = torch.bfloat16


@dataclass
class EmbedSettings:
    batch_size: int = 32
    limit: int | None = None
    #: Decode threads; None: `decode_workers` picks by device.
    workers: int | None = None
    text_only: bool = True
    max_attempts: int = 5
    image_weight: float = 0.5
    #: Local models on CPU: start in float32, switch to bf16 autocast if one batch shows it
    #: agrees and is faster (perception_models/precision.py). Ignored on CUDA.
    choose_precision: bool = False
    #: Use the choice an earlier run measured on this kind of machine while it is younger
    #: than this (stored in precision_choices); None: measure on every run.
    precision_max_age: timedelta | None = timedelta(days=30)
    fetch: FetchSettings = field(default_factory=FetchSettings)


@dataclass
class EmbedSummary:
    model: str
    embedded: int = 0
    text_only: int = 0
    skipped: int = 0
    failed: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    #: Time spent in inference: near `seconds` when the model, not I/O, is the limit.
    model_seconds: float = 0.0
    #: Time the job could claim no more work because earlier batches' writes still ran:
    #: a database that cannot keep up (index inserts, locks) rather than the model.
    write_wait_seconds: float = 0.0
    cache_hits: int = 0
    precision: str | None = None

    @property
    def rate(self) -> float:
        return (self.embedded + sum(self.failed.values())) / self.seconds if self.seconds else 0.0

    @property
    def model_busy(self) -> float:
        return self.model_seconds / self.seconds if self.seconds else 0.0

    @property
    def write_wait(self) -> float:
        return self.write_wait_seconds / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        failed = ", ".join(f"{stage} {n}" for stage, n in sorted(self.failed.items())) or "none"
        waited = (
            f", waiting for database writes {self.write_wait:.0%}"
            if self.write_wait >= 0.05
            else ""
        )
        return [
            f"model {self.model}: embedded {self.embedded} ({self.text_only} text-only), "
            f"skipped {self.skipped}, failed {sum(self.failed.values())} ({failed})",
            f"{self.rate:.1f} listings/s over {self.seconds:.1f} s "
            f"(the model busy {self.model_busy:.0%} of it{waited}); "
            f"{self.cache_hits} images from the local cache",
            *([self.precision] if self.precision else []),
        ]


@dataclass
class _Prepared:
    work: store.Work
    pixels: torch.Tensor | None = None
    image_bytes: bytes = b""


def decode_workers(requested: int | None, device: torch.device) -> int:
    """Threads decoding images: as requested, else 2 beside a CPU model (which needs the
    cores itself) and every core but one, up to 16, beside a GPU (one photo takes 2-4 ms
    to decode and resize, so 2 threads would cap a GPU at a few hundred listings/s)."""
    if requested:
        return requested
    if device.type == "cpu":
        return 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(2, min(16, (cores or 2) - 1))


def input_hash(title: str, image: bytes) -> str:
    """Hash of exactly what was embedded: the title and the image bytes."""
    digest = hashlib.sha256()
    digest.update(title.encode("utf-8"))
    digest.update(b"\x1f")
    digest.update(image)
    return digest.hexdigest()


def register(conn, model: EmbeddingModel) -> None:
    conn.execute(
        "select bikematch_register_model(%s, %s, %s)",
        (model.name, model.image_dims, model.text_dims),
    )
    conn.commit()


def run_embedding(url: str, model: EmbeddingModel, settings: EmbedSettings, progress=None):
    """Embed everything pending for `model`; returns an EmbedSummary.

    `progress(done, failed, total)` is called after each batch.
    """
    return asyncio.run(_Job(url, model, settings, progress).run())


class _Job:
    def __init__(self, url, model, settings, progress) -> None:
        self.url = url
        self.model = model
        self.settings = settings
        self.progress = progress
        self.summary = EmbedSummary(model=model.name)
        self.decoders = ThreadPoolExecutor(
            decode_workers(settings.workers, model.device), thread_name_prefix="decode"
        )
        # Timings on CPU need no device synchronisation; CUDA keeps its autocast dtype.
        self.precision_pending = settings.choose_precision and model.device.type == "cpu"
        if self.precision_pending:
            model.dtype = torch.float32
        self.machine = machine_description()
        #: A precision measured by this run, not yet stored (it goes with its batch's write).
        self.measured = None
        #: A stored lower-precision choice in use, to check on this run's first listings.
        self.recheck_pending = None

    async def run(self) -> EmbedSummary:
        started = time.perf_counter()
        # One connection per batch in flight: being prepared, embedded, written.
        connections = [connect(self.url) for _ in range(3)]
        try:
            register(connections[0], self.model)
            if self.precision_pending and self.settings.precision_max_age is not None:
                self._use_stored_precision(connections[0])
            total = store.count_pending(connections[0], self.model.name, self.settings.max_attempts)
            connections[0].commit()
            if self.settings.limit is not None:
                total = min(total, self.settings.limit)
            async with ImageFetcher(self.settings.fetch) as fetcher:
                await self._pipeline(connections, fetcher, total)
                self.summary.cache_hits = fetcher.cache_hits
        finally:
            for conn in connections:
                conn.close()
            self.decoders.shutdown()
        self.summary.seconds = time.perf_counter() - started
        if self.precision_pending and self.summary.embedded:
            self.summary.precision = (
                f"precision float32 (no batch had {MIN_LISTINGS} listings with images "
                "to measure bfloat16 on)"
            )
        return self.summary

    def _use_stored_precision(self, conn) -> None:
        stored = store.stored_precision(
            conn, self.model.name, self.machine, _CANDIDATE, self.settings.precision_max_age
        )
        if stored is not None:
            self.model.dtype = stored.dtype
            self.precision_pending = False
            if stored.dtype != torch.float32:
                self.recheck_pending = stored
            self.summary.precision = stored.describe()
            log.info(self.summary.precision)

    async def _pipeline(self, connections, fetcher, total: int) -> None:
        after = uuid.UUID(int=0)
        model_free = asyncio.Lock()
        batches: list[asyncio.Task] = []
        embedded: list[asyncio.Event] = []
        claimed = 0
        try:
            while self.settings.limit is None or claimed < self.settings.limit:
                number = len(batches)
                if number >= len(connections):
                    # Its connection holds that batch's claim until it is written.
                    waiting = time.perf_counter()
                    await batches[number - len(connections)]
                    self.summary.write_wait_seconds += time.perf_counter() - waiting
                if number >= 2:
                    # Prepare one batch ahead of the model, not more.
                    await embedded[number - 2].wait()
                conn = connections[number % len(connections)]
                size = self.settings.batch_size
                if self.settings.limit is not None:
                    size = min(size, self.settings.limit - claimed)
                works = await asyncio.to_thread(self._claim, conn, after, size)
                if works is None:
                    break
                if works:
                    after = works[-1].bike_id
                claimed += len(works)
                prepared, failures = await self._prepare(works, fetcher)
                done = asyncio.Event()
                embedded.append(done)
                batches.append(
                    asyncio.create_task(
                        self._batch(conn, prepared, failures, total, model_free, done)
                    )
                )
            await asyncio.gather(*batches)
        finally:
            for batch in batches:
                batch.cancel()

    async def _batch(self, conn, prepared, failures, total, model_free, done) -> None:
        """Embed (one batch at a time), then write while the next batch embeds."""
        try:
            async with model_free:
                started = time.perf_counter()
                embedded, failures = await asyncio.to_thread(self._embed_safely, prepared, failures)
                self.summary.model_seconds += time.perf_counter() - started
                measured, self.measured = self.measured, None
        finally:
            done.set()
        await asyncio.to_thread(self._write, conn, embedded, failures, measured)
        self.summary.embedded += len(embedded)
        self.summary.text_only += sum(1 for item in embedded if item.image is None)
        self.summary.failed.update(failure.stage for failure in failures)
        if self.progress:
            self.progress(self.summary.embedded, sum(self.summary.failed.values()), total)

    def _claim(self, conn, after: uuid.UUID, size: int) -> list[store.Work] | None:
        """The next page of pending work (possibly empty after re-checks), None at the end."""
        works = store.claim(conn, self.model.name, after, size, self.settings.max_attempts)
        if not works:
            conn.rollback()
            return None
        # Locked now; drop any another embedder finished between our snapshot and the lock.
        still = {
            row[0]
            for row in conn.execute(
                "select bike_id from bikematch_listings_to_embed(%s, %s) where bike_id = any(%s)",
                (self.model.name, self.settings.max_attempts, [w.bike_id for w in works]),
            )
        }
        kept = [w for w in works if w.bike_id in still]
        if not kept:
            conn.rollback()  # others did this page; the next claim moves past it
        return kept

    async def _prepare(self, works: list[store.Work], fetcher: ImageFetcher):
        loop = asyncio.get_running_loop()

        async def one(work: store.Work):
            if not work.image_url:
                if not self.settings.text_only:
                    return None
                return _Prepared(work)
            try:
                data = await fetcher.fetch(work.image_url)
            except FetchError as exc:
                return store.Failure(work.bike_id, "fetch", str(exc), work.source_hash)
            try:
                pixels = await loop.run_in_executor(
                    self.decoders, decode_image, data, self.model.preprocess, self.model.image_size
                )
            except DecodeError as exc:
                return store.Failure(work.bike_id, "decode", str(exc), work.source_hash)
            return _Prepared(work, pixels, data)

        results = await asyncio.gather(*(one(work) for work in works))
        prepared = [r for r in results if isinstance(r, _Prepared)]
        failures = [r for r in results if isinstance(r, store.Failure)]
        self.summary.skipped += sum(1 for r in results if r is None)
        return prepared, failures

    def _embed_safely(self, prepared: list[_Prepared], failures):
        """The batch's vectors, and its failures (every listing of it, if the model fails)."""
        if not prepared:
            return [], failures
        try:
            return self._embed(prepared), failures
        except Exception as exc:  # a model error must not stop the whole job
            log.exception("embedding a batch failed")
            return [], failures + [
                store.Failure(
                    p.work.bike_id, "embed", f"{type(exc).__name__}: {exc}", p.work.source_hash
                )
                for p in prepared
            ]

    def _write(self, conn, embedded: list[store.Embedded], failures, measured=None) -> None:
        store.write(conn, self.model.name, embedded, failures)
        if measured is not None:
            store.save_precision(conn, self.model.name, self.machine, measured)
        conn.commit()

    def _embed(self, prepared: list[_Prepared]) -> list[store.Embedded]:
        model = self.model
        tokens = model.tokenize([p.work.name for p in prepared])
        with_image = [i for i, p in enumerate(prepared) if p.pixels is not None]
        pixels = model.collate([prepared[i].pixels for i in with_image]) if with_image else None
        if self.precision_pending and len(with_image) >= MIN_LISTINGS:
            choice, vectors, texts = choose_precision(model, pixels, tokens, _CANDIDATE)
            self.precision_pending = False
            self.measured = choice
            self.summary.precision = choice.describe()
            log.info(self.summary.precision)
        else:
            texts = model.embed_texts(tokens)
            vectors = model.embed_images(pixels) if with_image else []
            if self.recheck_pending and len(with_image) >= RECHECK_LISTINGS:
                choice = recheck(model, self.recheck_pending, pixels, tokens, vectors, texts)
                self.recheck_pending = None
                self.summary.precision = choice.describe()
                log.info(self.summary.precision)
                if model.dtype == torch.float32:  # photos on which bf16 does not agree
                    self.measured = choice
                    texts, vectors = model.embed_texts(tokens), model.embed_images(pixels)
        images = dict(zip(with_image, vectors, strict=True))
        embedded = []
        for i, item in enumerate(prepared):
            image = images.get(i)
            joined = combine(
                None if image is None else image[None],
                texts[i][None],
                self.settings.image_weight,
                image_dims=model.image_dims,
            )[0]
            embedded.append(
                store.Embedded(
                    bike_id=item.work.bike_id,
                    image=None if image is None else image.numpy(),
                    text=texts[i].numpy(),
                    joined=joined.numpy(),
                    input_hash=input_hash(item.work.name, item.image_bytes),
                    source_hash=item.work.source_hash,
                )
            )
        return embedded
