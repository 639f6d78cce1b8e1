"""The embedding job: claim pending listings, fetch and decode images, embed, write.

Batches are pipelined: while the model embeds batch N (in a worker thread,
torch releases the GIL), the event loop claims batch N+1 and fetches and
decodes its images, and batch N-1 is written to the database. On CPU the
model embeds several batches at once, one per core by default, each on its
own thread (`inference_streams`). Each batch commits on its own connection,
so a crash loses at most the batches in flight, and the next run resumes
from what is still pending. Claims use
`FOR NO KEY UPDATE SKIP LOCKED`, so embedders on several machines sharing one
database never embed a listing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import psycopg
import torch

from bikematch.core.database import connect, on_connection
from embedder import MAX_ATTEMPTS, store
from embedder.decode import DecodeError, decode_image
from embedder.fetch import FetchError, FetchSettings, ImageFetcher
from perception_models import EmbeddingModel, combine
from perception_models.allocator import keep_freed_memory
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
    #: Batches the model embeds at once; None: `inference_streams` picks by device.
    streams: int | None = None
    #: Embed listings without an image, or whose image failed, from their title alone.
    text_only: bool = True
    max_attempts: int = MAX_ATTEMPTS
    #: Also embed again the listings whose vector was embedded before this time (after
    #: a release that changes how photos are read); None: only new and changed ones.
    reembed_before: datetime | None = None
    #: Claim no new work after this many seconds (the batches under way finish), so that
    #: a nightly job with a backlog still clusters within its time; the rest waits for the
    #: next run. None: until nothing is left.
    max_seconds: float | None = None
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
    #: Of `text_only`: listings whose image failed (counted in `failed` too), embedded
    #: from their title meanwhile.
    image_failed_text_only: int = 0
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
    #: Batches embedded at once (`model_seconds` adds up their times).
    streams: int = 1
    #: Listings still pending when the run stopped claiming at its time budget
    #: (EmbedSettings.max_seconds); None when it did not stop early.
    left_for_later: int | None = None
    #: Connections the database dropped during the run, each replaced by a new one.
    reconnects: int = 0

    @property
    def not_embedded(self) -> int:
        """Listings that failed and have no vector from this run."""
        return sum(self.failed.values()) - self.image_failed_text_only

    @property
    def rate(self) -> float:
        return (self.embedded + self.not_embedded) / self.seconds if self.seconds else 0.0

    @property
    def model_busy(self) -> float:
        """The share of the job's time the model's streams were embedding, on average."""
        return self.model_seconds / (self.seconds * self.streams) if self.seconds else 0.0

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
        meanwhile = (
            f", {self.image_failed_text_only} of them as their image failed"
            if self.image_failed_text_only
            else ""
        )
        if not (self.embedded or self.failed or self.skipped or self.reconnects):
            return [
                f"model {self.model}: embedded 0, nothing pending",
                *([self._stopped_early] if self.left_for_later is not None else []),
            ]
        return [
            f"model {self.model}: embedded {self.embedded} ({self.text_only} text-only"
            f"{meanwhile}), skipped {self.skipped}, failed {sum(self.failed.values())} ({failed})",
            f"{self.rate:.1f} listings/s over {self.seconds:.1f} s "
            f"({self._busy_subject} busy {self.model_busy:.0%} of it{waited}); "
            f"{self.cache_hits} images from the local cache",
            *([self.precision] if self.precision else []),
            *([self._stopped_early] if self.left_for_later is not None else []),
            *([self._reconnected] if self.reconnects else []),
        ]

    @property
    def _reconnected(self) -> str:
        times = "once" if self.reconnects == 1 else f"{self.reconnects} times"
        return f"the database dropped a connection {times}: reconnected, nothing lost"

    @property
    def _stopped_early(self) -> str:
        return (
            f"stopped at its time budget: about {self.left_for_later} listings left"
            " for the next run"
        )

    @property
    def _busy_subject(self) -> str:
        return f"the model's {self.streams} streams" if self.streams > 1 else "the model"


@dataclass
class _Prepared:
    work: store.Work
    pixels: torch.Tensor | None = None
    image_bytes: bytes = b""
    #: Why its image could not be used, for a listing embedded from its title meanwhile.
    image_failure: store.Failure | None = None


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


def inference_streams(requested: int | None, device: torch.device) -> tuple[int, int | None]:
    """Batches the model embeds at once, and torch's threads for each (None: as they are).

    On CPU, as requested, else one stream per core up to 4, the cores shared out
    among them. A team of threads on one batch waits at every op for its
    slowest member, and on cores shared with decoding and the database one of
    them is often off its core: on 2 cores, minilm-effnet-lite0 embeds 82.5
    listings/s end-to-end as 2 streams of 1 thread against 72.4 as 1 stream of
    2, which leaves 3 CPU-ms a listing idle (docs/benchmarks.md). On a GPU, one
    stream.
    """
    if device.type != "cpu":
        return requested or 1, None
    cores = torch.get_num_threads()
    streams = requested or min(cores, 4)
    return streams, max(1, cores // streams)


@contextlib.contextmanager
def inference_pool(streams: int, threads: int | None):
    """`streams` threads to run the model on, each running torch's ops on `threads` threads.

    torch's thread count is per thread, but setting it also sets the default for
    threads started later, so the process's count is restored on exit.
    """
    previous = torch.get_num_threads()
    pool = ThreadPoolExecutor(
        streams,
        thread_name_prefix="inference",
        initializer=None if threads is None else torch.set_num_threads,
        initargs=() if threads is None else (threads,),
    )
    try:
        yield pool
    finally:
        pool.shutdown()
        if threads is not None:
            torch.set_num_threads(previous)


def _described(error: Exception) -> str:
    """An unexpected error, for a failure's message: its type and its first line."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def input_hash(title: str, image: bytes, vector: np.ndarray) -> str:
    """What the stored vector is: the title and image bytes embedded, and the vector
    they gave. Clustering keys its neighbour searches on it (int_vector_neighbours), so
    a vector embedded again differently (--reembed-before after an upgrade, another
    --image-weight) is searched again even where title and image are the same."""
    digest = hashlib.sha256()
    digest.update(title.encode("utf-8"))
    digest.update(b"\x1f")
    digest.update(image)
    digest.update(b"\x1f")
    digest.update(np.ascontiguousarray(vector, dtype=np.float32).tobytes())
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
    if model.device.type == "cpu":
        # A process-wide setting, so the job (not the model) makes it: batches reuse
        # glibc's freed memory instead of page-faulting it in again.
        keep_freed_memory()
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
        self.streams, self.threads = inference_streams(settings.streams, model.device)
        self.summary.streams = self.streams
        # Fast tokenizers refuse to be called from two threads at once.
        self.tokenizing = threading.Lock()
        # Timings on CPU need no device synchronisation; CUDA keeps its autocast dtype.
        self.precision_pending = settings.choose_precision and model.device.type == "cpu"
        if self.precision_pending:
            model.dtype = torch.float32
        self.machine = machine_description(self.streams, self.threads)
        #: A stored lower-precision choice in use, to check on this run's first listings.
        self.recheck_pending = None
        #: perf_counter time after which no new work is claimed (settings.max_seconds).
        self.deadline: float | None = None
        #: One connection per batch in flight (set by run()); see _on_connection.
        self.connections: list[psycopg.Connection] = []

    async def run(self) -> EmbedSummary:
        started = time.perf_counter()
        budget = self.settings.max_seconds
        self.deadline = None if budget is None else started + budget
        # One connection per batch in flight: being prepared and being embedded (one
        # each per stream), being written.
        self.connections = connections = [connect(self.url) for _ in range(2 * self.streams + 1)]
        try:
            register(connections[0], self.model)
            if self.precision_pending and self.settings.precision_max_age is not None:
                self._use_stored_precision(connections[0])
            total = store.count_pending(
                connections[0],
                self.model.name,
                self.settings.max_attempts,
                self.settings.reembed_before,
            )
            connections[0].commit()
            if self.settings.limit is not None:
                total = min(total, self.settings.limit)
            async with ImageFetcher(self.settings.fetch) as fetcher:
                with inference_pool(self.streams, self.threads) as pool:
                    await self._pipeline(connections, fetcher, pool, total)
                self.summary.cache_hits = fetcher.cache_hits
        finally:
            for conn in self.connections:
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

    async def _pipeline(self, connections, fetcher, pool, total: int) -> None:
        after = uuid.UUID(int=0)
        streams = _Streams(self.streams)
        batches: list[asyncio.Task] = []
        embedded: list[asyncio.Event] = []
        claimed = 0
        self.claimed_all = False  # no batch left to claim

        def last(number: int) -> bool:
            return self.claimed_all and number == len(batches) - 1

        try:
            while self.settings.limit is None or claimed < self.settings.limit:
                number = len(batches)
                if number >= len(connections):
                    # Its connection holds that batch's claim until it is written.
                    waiting = time.perf_counter()
                    await batches[number - len(connections)]
                    self.summary.write_wait_seconds += time.perf_counter() - waiting
                if number >= 2 * self.streams:
                    # Prepare a batch ahead for each stream, not more (streams that
                    # started together finish together, and each wants its next batch).
                    await embedded[number - 2 * self.streams].wait()
                past_deadline = self.deadline is not None and time.perf_counter() >= self.deadline
                if past_deadline and not self.claimed_all:
                    self.summary.left_for_later = max(0, total - claimed)
                    break
                slot = number % len(connections)
                size = self.settings.batch_size
                if self.settings.limit is not None:
                    size = min(size, self.settings.limit - claimed)
                claim = functools.partial(self._claim, after=after, size=size)
                page = await asyncio.to_thread(self._on_connection, slot, claim)
                if page is None:
                    break
                works, last_page = page
                if works:
                    after = works[-1].bike_id
                claimed += len(works)
                # Known before this batch's task first runs, so it can take every stream.
                self.claimed_all = last_page
                prepared, failures = await self._prepare(works, fetcher)
                done = asyncio.Event()
                embedded.append(done)
                batches.append(
                    asyncio.create_task(
                        self._batch(
                            slot,
                            prepared,
                            failures,
                            total,
                            streams,
                            pool,
                            done,
                            functools.partial(last, number),
                        )
                    )
                )
            self.claimed_all = True  # at the limit, or no page left (nothing awaited since)
            await asyncio.gather(*batches)
        finally:
            for batch in batches:
                batch.cancel()

    async def _batch(self, slot, prepared, failures, total, streams, pool, done, last) -> None:
        """Embed (on a free stream), then write (on connection `slot`, which holds the
        batch's claim) while the next batches embed. `last()`: whether no batch will come
        after this one."""
        loop = asyncio.get_running_loop()
        try:
            # A batch that may measure or change the precision runs alone (on every
            # stream's threads): its timings and the precision other batches embed in
            # depend on it.
            async with streams.one(
                len(prepared),
                alone=lambda: self.precision_pending or self.recheck_pending,
                last=last,
            ) as taken:
                started = time.perf_counter()
                threads = self.threads * taken if self.threads else None
                embedded, failures, measured = await loop.run_in_executor(
                    pool, self._embed_safely, prepared, failures, threads
                )
                self.summary.model_seconds += (time.perf_counter() - started) * taken
        finally:
            done.set()
        write = functools.partial(
            self._write, embedded=embedded, failures=failures, measured=measured
        )
        await asyncio.to_thread(self._on_connection, slot, write)
        failed = {failure.bike_id for failure in failures}
        self.summary.embedded += len(embedded)
        self.summary.text_only += sum(1 for item in embedded if item.image is None)
        self.summary.image_failed_text_only += sum(1 for e in embedded if e.bike_id in failed)
        self.summary.failed.update(failure.stage for failure in failures)
        if self.progress:
            self.progress(self.summary.embedded, self.summary.not_embedded, total)

    def _on_connection(self, slot: int, action):
        """`action(conn)` on connection `slot`, and once more on a new one if the database
        dropped it (on_connection). Claims and writes can be run again: the claim died
        with the connection (its transaction), and the write is an upsert."""
        before = self.connections[slot]
        result, self.connections[slot] = on_connection(before, self.url, action)
        self.summary.reconnects += self.connections[slot] is not before
        return result

    def _claim(self, conn, after: uuid.UUID, size: int) -> tuple[list[store.Work], bool] | None:
        """The next page of pending work (possibly empty after re-checks), and whether it
        is the last (shorter than asked for); None at the end."""
        model, attempts, before = (
            self.model.name,
            self.settings.max_attempts,
            self.settings.reembed_before,
        )
        works = store.claim(conn, model, after, size, attempts, before)
        if not works:
            conn.rollback()
            return None
        # Locked now; drop any another embedder finished between our snapshot and the lock.
        still = store.still_pending(conn, model, attempts, [w.bike_id for w in works], before)
        kept = [w for w in works if w.bike_id in still]
        if not kept:
            conn.rollback()  # others did this page; the next claim moves past it
        return kept, len(works) < size

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
                return self._image_failed(work, "fetch", exc)
            except Exception as exc:  # a defect here must not stop the whole job
                log.exception("fetching %s failed", work.image_url[:200])
                return self._image_failed(work, "fetch", _described(exc))
            try:
                pixels = await loop.run_in_executor(
                    self.decoders, decode_image, data, self.model.preprocess, self.model.image_size
                )
            except DecodeError as exc:
                return self._image_failed(work, "decode", exc)
            except Exception as exc:  # as above
                log.exception("decoding %s failed", work.image_url[:200])
                return self._image_failed(work, "decode", _described(exc))
            return _Prepared(work, pixels, data)

        results = await asyncio.gather(*(one(work) for work in works))
        prepared = [r for r in results if isinstance(r, _Prepared)]
        failures = [r for r in results if isinstance(r, store.Failure)]
        failures += [p.image_failure for p in prepared if p.image_failure]
        self.summary.skipped += sum(1 for r in results if r is None)
        return prepared, failures

    def _image_failed(self, work: store.Work, stage: str, error: Exception | str):
        """The failure to record; with text-only on, also the listing to embed from its
        title meanwhile (its image is retried on later runs, up to the cap)."""
        failure = store.Failure(work.bike_id, stage, str(error), work.source_hash)
        return _Prepared(work, image_failure=failure) if self.settings.text_only else failure

    def _embed_safely(self, prepared: list[_Prepared], failures, threads=None):
        """The batch's vectors, its failures (every listing of it, if the model fails) and
        the precision it measured, if it did; on `threads` threads (None: the stream's)."""
        if not prepared:
            return [], failures, None
        if threads != self.threads:
            torch.set_num_threads(threads)
        try:
            embedded, measured = self._embed(prepared)
        except Exception as exc:  # a model error must not stop the whole job
            log.exception("embedding a batch failed")
            reason = _described(exc)
            failed = [
                store.Failure(p.work.bike_id, "embed", reason, p.work.source_hash)
                for p in prepared
                if p.image_failure is None  # recorded already (its image failed)
            ]
            return [], failures + failed, None
        finally:
            if threads != self.threads:
                torch.set_num_threads(self.threads)
        return embedded, failures, measured

    def _write(self, conn, embedded: list[store.Embedded], failures, measured=None) -> None:
        store.write(conn, self.model.name, embedded, failures)
        if measured is not None:
            store.save_precision(conn, self.model.name, self.machine, measured)
        conn.commit()

    def _embed(self, prepared: list[_Prepared]):
        """The batch's vectors, and the precision it measured (None if it measured none)."""
        model, measured = self.model, None
        with self.tokenizing:
            tokens = model.tokenize([p.work.name for p in prepared])
        with_image = [i for i, p in enumerate(prepared) if p.pixels is not None]
        pixels = model.collate([prepared[i].pixels for i in with_image]) if with_image else None
        if self.precision_pending and len(with_image) >= MIN_LISTINGS:
            choice, vectors, texts = choose_precision(model, pixels, tokens, _CANDIDATE)
            self.precision_pending = False
            measured = choice
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
                    measured = choice
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
            )[0].numpy()
            embedded.append(
                store.Embedded(
                    bike_id=item.work.bike_id,
                    image=None if image is None else image.numpy(),
                    text=texts[i].numpy(),
                    joined=joined,
                    input_hash=input_hash(item.work.name, item.image_bytes, joined),
                    source_hash=item.work.source_hash,
                )
            )
        return embedded, measured


class _Streams:
    """The model's streams. A batch takes one, or all of them to run alone; the run's
    last batch also takes those that are free or soon will be, as no other batch is
    left to use them."""

    #: The last batch waits for a busy stream that frees within this share of the
    #: batch's time on one stream: on twice the threads it still finishes sooner.
    SOON = 0.4

    def __init__(self, count: int) -> None:
        self.count = count
        self.free = asyncio.Semaphore(count)
        # One batch at a time gathers streams, so two cannot each hold some and wait.
        self.gathering = asyncio.Lock()
        #: The batches embedding now: when each started, its listings and streams.
        self.running: dict[int, tuple[float, int, int]] = {}
        #: Seconds a listing took on one stream, in the latest batch that ran on one.
        self.pace: float | None = None

    @contextlib.asynccontextmanager
    async def one(self, listings: int, alone, last):
        """Streams for a batch of `listings`: one; every stream while `alone()` holds once
        it has one; and with `last()`, those free now or soon. Yields how many it took."""
        taken, batch = 0, object()
        try:
            async with self.gathering:
                await self.free.acquire()
                taken = 1
                while taken < self.count and (alone() or (last() and self._frees_soon(listings))):
                    await self.free.acquire()
                    taken += 1
            started = time.perf_counter()
            self.running[id(batch)] = started, listings, taken
            yield taken
            if taken == 1 and listings:
                self.pace = (time.perf_counter() - started) / listings
        finally:
            self.running.pop(id(batch), None)
            for _ in range(taken):
                self.free.release()

    def _frees_soon(self, listings: int) -> bool:
        """Whether a stream is free, or one will be within SOON of this batch's time on one
        stream (by the pace so far)."""
        if not self.free.locked():
            return True
        if self.pace is None or not self.running:
            return False
        soonest = min(
            started + self.pace * count / taken for started, count, taken in self.running.values()
        )
        return soonest - time.perf_counter() <= self.SOON * self.pace * listings
