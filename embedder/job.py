"""The embedding job: a pipeline of bounded queues, read top to bottom.

    claim -> prepare (fetch, decode) -> embed -> write

- claim: a page of pending listings, on a connection of its own. Its row locks
  (`SKIP LOCKED`) last until that connection commits the batch's vectors, so
  embedders sharing a database never embed a listing twice, and a killed run
  leaves nothing half-written: the next run claims what is still pending.
- prepare: every image of the batch fetched at once, each decoded on a thread.
- embed: the model, on `streams` threads (on CPU one batch per core by default).
- write: vectors and failures by binary COPY on `writers` connections at once, commit,
  the connection freed.

The queues between the stages hold a batch ahead for each stream, and the
connections bound the batches in flight: when every one holds a batch still
being written, claiming waits (the summary counts that wait: a database that
cannot keep up). A large backlog is written without the model's HNSW index, which
is built once at the end (embedder/index.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np
import psycopg
import torch

from bikematch.core.database import connect, on_connection
from embedder import MAX_ATTEMPTS, index, store
from embedder.decode import DecodeError, decode_image
from embedder.fetch import FetchError, FetchSettings, ImageFetcher
from embedder.summary import EmbedSummary
from perception_models import EmbeddingModel, combine
from perception_models.allocator import keep_freed_memory

log = logging.getLogger(__name__)


@dataclass
class EmbedSettings:
    #: None: as many as free GPU memory holds on CUDA (up to 512), 32 elsewhere.
    batch_size: int | None = None
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
    fetch: FetchSettings = field(default_factory=FetchSettings)
    #: Connections writing vectors at once; None: `writer_connections` picks by device.
    writers: int | None = None
    #: The model's HNSW index during the run (index.INDEX_MODES): auto drops it for a
    #: large backlog and builds it at the end.
    index_mode: str = "auto"
    #: Parallel maintenance workers for that build; None: index.maintenance_workers().
    index_workers: int | None = None


@dataclass
class _Batch:
    """A page of work on its way through the stages; `slot` is its connection."""

    slot: int
    works: list[store.Work]
    #: Listings to embed, with their decoded image where it could be used.
    prepared: list[_Prepared] = field(default_factory=list)
    failures: list[store.Failure] = field(default_factory=list)
    embedded: list[store.Embedded] = field(default_factory=list)


@dataclass
class _Prepared:
    work: store.Work
    pixels: torch.Tensor | None = None
    image_bytes: bytes = b""
    #: Why its image could not be used, for a listing embedded from its title meanwhile.
    image_failure: store.Failure | None = None


_DONE = None  # a queue's last item: no batch follows


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


def writer_connections(requested: int | None, device: torch.device, streams: int) -> int:
    """Connections writing vectors at once: as requested, else one per stream on CPU (the
    cores are the model's) and 4 beside a GPU, whose batches come faster than one
    connection's COPY and upsert (docs/benchmarks.md, "Writing vectors")."""
    if requested:
        return requested
    return streams if device.type == "cpu" else 4


def inference_streams(requested: int | None, device: torch.device) -> tuple[int, int | None]:
    """Batches the model embeds at once, and torch's threads for each (None: as they are).

    On CPU, as requested, else one stream per core up to 4, the cores shared out
    among them: a team of threads on one batch waits at every op for its slowest
    member, and on cores shared with decoding and the database one of them is often
    off its core (docs/benchmarks.md). On a GPU, one stream.
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


def register(conn, model: EmbeddingModel, ensure_index: bool = True) -> None:
    """Register the model; with `ensure_index`, also make its HNSW index where missing."""
    function = "bikematch_register_model" if ensure_index else "bikematch_add_model"
    conn.execute(
        f"select {function}(%s, %s, %s)",  # noqa: S608 (one of two names)
        (model.name, model.image_dims, model.text_dims),
    )
    conn.commit()


def run_embedding(
    url: str,
    model: EmbeddingModel,
    settings: EmbedSettings,
    progress=None,
    clock: Callable[[], float] = time.monotonic,
    notice: Callable[[str], None] | None = None,
):
    """Embed everything pending for `model`, in the model's own precision; returns an
    EmbedSummary. `progress(done, failed, total)` is called after each batch; `clock`
    is what the time budget (settings.max_seconds) is measured on; `notice(line)` says
    what the job does besides embedding (building the index)."""
    if model.device.type == "cpu":
        # A process-wide setting, so the job (not the model) makes it: batches reuse
        # glibc's freed memory instead of page-faulting it in again.
        keep_freed_memory()
    job = _Job(url, model, settings, progress, clock, notice)
    try:
        return asyncio.run(job.run())
    finally:
        # Also after an error or Ctrl-C: the model is never left without its index.
        if job.index_dropped:
            if notice:
                notice(f"building the search index of {model.name} (the vectors are stored)")
            summary = job.summary
            summary.index_seconds = index.build(url, model.name, settings.index_workers)


class _Job:
    def __init__(self, url, model, settings, progress, clock, notice=None) -> None:
        self.url = url
        self.clock = clock
        self.model = model
        self.settings = settings
        self.progress = progress
        self.notice = notice or (lambda line: None)
        self.streams, self.threads = inference_streams(settings.streams, model.device)
        self.writers = writer_connections(settings.writers, model.device, self.streams)
        self.summary = EmbedSummary(model=model.name, streams=self.streams, writers=self.writers)
        self.summary.precision = getattr(model, "precision", None)
        self.decoders = ThreadPoolExecutor(
            decode_workers(settings.workers, model.device), thread_name_prefix="decode"
        )
        # Fast tokenizers refuse to be called from two threads at once.
        self.tokenizing = threading.Lock()
        #: One connection per batch in flight. Up to the model, the stages hold 2 * streams
        #: + 2 batches (claimed, being prepared, one waiting and one embedding a stream);
        #: the writers one each more. So claiming waits for a connection only where
        #: batches wait to be written: the database does not keep up.
        self.connections: list[psycopg.Connection] = []
        self.total = 0
        #: The model's index was dropped for this run's load: run_embedding builds it.
        self.index_dropped = False
        #: The job has ended (done, failed or interrupted) and closed its connections: a
        #: claim or write still on a thread must not open a new one, whose open claim
        #: would hold listings from the next run.
        self.stopped = False

    async def run(self) -> EmbedSummary:
        started = time.perf_counter()
        slots = 2 * self.streams + 2 + self.writers
        self.connections = [connect(self.url) for _ in range(slots)]
        try:
            self._count_and_plan(self.connections[0])
            async with ImageFetcher(self.settings.fetch) as fetcher:
                with inference_pool(self.streams, self.threads) as pool:
                    # On an inference thread: a compiled graph is kept per torch thread
                    # count, and those threads run the model with theirs.
                    await asyncio.get_running_loop().run_in_executor(pool, self._ready_model)
                    await self._stages(fetcher, pool)
                self.summary.cache_hits = fetcher.cache_hits
        finally:
            self.stopped = True
            for conn in self.connections:
                conn.close()
            self.decoders.shutdown()
        self.summary.seconds = time.perf_counter() - started
        return self.summary

    def _count_and_plan(self, conn) -> None:
        """The backlog, and whether it goes in without the model's index; the model
        registered, with its index made unless it is to be built after the load."""
        settings, name = self.settings, self.model.name
        self.total = store.count_pending(conn, name, settings.max_attempts, settings.reembed_before)
        if settings.limit is not None:
            self.total = min(self.total, settings.limit)
        plan = index.plan(settings.index_mode, self.total, index.stored_vectors(conn, name))
        register(conn, self.model, ensure_index=not plan.rebuild)  # commits
        self.summary.index = plan.reason
        if plan.rebuild:
            self.index_dropped = True  # before the drop: a failed drop still builds
            index.drop(self.url, name)

    def _ready_model(self) -> None:
        """The batch size (on CUDA from free GPU memory, unless given), and a compiled
        model compiled now, on a grey batch; where compiling fails, the job goes on
        without it. Neither costs anything where nothing is pending."""
        model, settings = self.model, self.settings
        if not self.total:
            self.settings = replace(settings, batch_size=settings.batch_size or 32)
            return
        if getattr(model, "compiled", False):
            try:
                self.summary.compile_seconds = model.warm_up(settings.batch_size or 8)
            except Exception as exc:  # a compiler torch cannot use here
                log.warning("compiling the model failed", exc_info=True)
                model.uncompile()
                self.summary.precision = model.precision
                # torch wraps what its compiler raised (BackendCompilerFailed)
                cause = getattr(exc, "inner_exception", None) or exc
                self.notice(f"compiling the model failed ({_described(cause)}); going on without")
        batch_size = settings.batch_size or _fitting_batch_size(model)
        self.settings = replace(settings, batch_size=batch_size)
        self.summary.batch_size = batch_size

    async def _stages(self, fetcher, pool) -> None:
        free = asyncio.Queue()  # connections not holding a batch
        for slot in range(len(self.connections)):
            free.put_nowait(slot)
        claimed = asyncio.Queue(maxsize=1)
        prepared = asyncio.Queue(maxsize=self.streams)
        embedded = asyncio.Queue()
        try:
            async with asyncio.TaskGroup() as stages:
                stages.create_task(self._claim(free, claimed))
                stages.create_task(self._prepare(claimed, prepared, fetcher))
                streams = [
                    stages.create_task(self._embed(prepared, embedded, pool))
                    for _ in range(self.streams)
                ]
                stages.create_task(self._after(streams, embedded, self.writers))
                for _ in range(self.writers):
                    stages.create_task(self._write(embedded, free))
        except* Exception as failed:  # the first stage's error, as it was raised
            raise failed.exceptions[0] from None

    # -- the stages -------------------------------------------------------------------

    async def _claim(self, free: asyncio.Queue, claimed: asyncio.Queue) -> None:
        """Pages of pending work in id order, each on a free connection, until none is
        left, the limit is reached or the time budget is spent."""
        after, count = uuid.UUID(int=0), 0
        budget, started = self.settings.max_seconds, self.clock()
        while self.settings.limit is None or count < self.settings.limit:
            if budget is not None and self.clock() - started >= budget:
                self.summary.left_for_later = max(0, self.total - count)
                break
            if free.empty():  # every connection holds a batch still being written
                waiting = time.perf_counter()
                slot = await free.get()
                self.summary.write_wait_seconds += time.perf_counter() - waiting
            else:
                slot = free.get_nowait()
            size = self.settings.batch_size
            if self.settings.limit is not None:
                size = min(size, self.settings.limit - count)
            page = await asyncio.to_thread(self._on_connection, slot, self._claim_page, after, size)
            if page is None:
                free.put_nowait(slot)
                break
            works, last = page
            if works:
                after = works[-1].bike_id
                count += len(works)
                await claimed.put(_Batch(slot, works))
            else:  # others did this page
                free.put_nowait(slot)
            if last:
                break
        await claimed.put(_DONE)

    async def _prepare(self, claimed: asyncio.Queue, prepared: asyncio.Queue, fetcher) -> None:
        """Each batch's images fetched at once and decoded on the decode threads."""
        while (batch := await claimed.get()) is not _DONE:
            results = await asyncio.gather(*(self._prepare_one(w, fetcher) for w in batch.works))
            batch.prepared = [r for r in results if isinstance(r, _Prepared)]
            batch.failures = [r for r in results if isinstance(r, store.Failure)]
            batch.failures += [p.image_failure for p in batch.prepared if p.image_failure]
            self.summary.skipped += sum(1 for r in results if r is None)
            await prepared.put(batch)
        for _ in range(self.streams):
            await prepared.put(_DONE)

    async def _embed(self, prepared: asyncio.Queue, embedded: asyncio.Queue, pool) -> None:
        """One stream: batches through the model, on an inference thread."""
        loop = asyncio.get_running_loop()
        while (batch := await prepared.get()) is not _DONE:
            started = time.perf_counter()
            await loop.run_in_executor(pool, self._embed_batch, batch)
            self.summary.model_seconds += time.perf_counter() - started
            await embedded.put(batch)

    @staticmethod
    async def _after(streams: list[asyncio.Task], embedded: asyncio.Queue, writers: int) -> None:
        """Once every stream is done, one end mark for each writer."""
        await asyncio.gather(*streams)
        for _ in range(writers):
            await embedded.put(_DONE)

    async def _write(self, embedded: asyncio.Queue, free: asyncio.Queue) -> None:
        """Vectors and failures into the database; the batch's connection freed."""
        while (batch := await embedded.get()) is not _DONE:
            await asyncio.to_thread(self._on_connection, batch.slot, self._write_batch, batch)
            free.put_nowait(batch.slot)
            failed = {failure.bike_id for failure in batch.failures}
            summary = self.summary
            summary.embedded += len(batch.embedded)
            summary.text_only += sum(1 for item in batch.embedded if item.image is None)
            summary.image_failed_text_only += sum(1 for e in batch.embedded if e.bike_id in failed)
            summary.failed.update(failure.stage for failure in batch.failures)
            if self.progress:
                self.progress(summary.embedded, summary.not_embedded, self.total)

    # -- the work of each stage (on threads) --------------------------------------------

    def _on_connection(self, slot: int, action, *args):
        """`action(conn, *args)` on connection `slot`, and once more on a new one if the
        database dropped it (on_connection). Claims and writes can be run again: the claim
        died with the connection (its transaction), and the write is an upsert."""
        before = self.connections[slot]
        result, now = on_connection(
            before, self.url, lambda conn: action(conn, *args), lambda: not self.stopped
        )
        if now is not before and self.stopped:  # reconnected as the job ended
            now.close()
        self.connections[slot] = now
        self.summary.reconnects += now is not before
        return result

    def _claim_page(self, conn, after: uuid.UUID, size: int):
        """The next page of pending work (possibly empty after re-checks) and whether it is
        the last (shorter than asked for); None at the end."""
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
            conn.rollback()  # the next claim moves past this page
        return kept, len(works) < size

    async def _prepare_one(self, work: store.Work, fetcher: ImageFetcher):
        """A listing ready to embed, the failure to record instead, or None to skip it."""
        if not work.image_url:
            return _Prepared(work) if self.settings.text_only else None
        try:
            data = await fetcher.fetch(work.image_url)
        except FetchError as exc:
            return self._image_failed(work, "fetch", exc)
        except Exception as exc:  # a defect here must not stop the whole job
            log.exception("fetching %s failed", work.image_url[:200])
            return self._image_failed(work, "fetch", _described(exc))
        loop = asyncio.get_running_loop()
        model = self.model
        try:
            pixels = await loop.run_in_executor(
                self.decoders, decode_image, data, model.preprocess, model.image_size
            )
        except DecodeError as exc:
            return self._image_failed(work, "decode", exc)
        except Exception as exc:  # as above
            log.exception("decoding %s failed", work.image_url[:200])
            return self._image_failed(work, "decode", _described(exc))
        return _Prepared(work, pixels, data)

    def _image_failed(self, work: store.Work, stage: str, error: Exception | str):
        """The failure to record; with text-only on, also the listing to embed from its
        title meanwhile (its image is retried on later runs, up to the cap)."""
        permanent = getattr(error, "permanent", False)
        failure = store.Failure(work.bike_id, stage, str(error), work.source_hash, permanent)
        return _Prepared(work, image_failure=failure) if self.settings.text_only else failure

    def _embed_batch(self, batch: _Batch) -> None:
        """The batch's vectors; where the model fails, every listing of it fails."""
        if not batch.prepared:
            return
        try:
            batch.embedded = self._vectors(batch.prepared)
        except Exception as exc:  # a model error must not stop the whole job
            log.exception("embedding a batch failed")
            reason = _described(exc)
            batch.failures += [
                store.Failure(p.work.bike_id, "embed", reason, p.work.source_hash)
                for p in batch.prepared
                if p.image_failure is None  # recorded already (its image failed)
            ]

    def _vectors(self, prepared: list[_Prepared]) -> list[store.Embedded]:
        model = self.model
        with self.tokenizing:
            tokens = model.tokenize([p.work.name for p in prepared])
        texts = model.embed_texts(tokens)
        with_image = [i for i, p in enumerate(prepared) if p.pixels is not None]
        images = {}
        if with_image:
            pixels = model.collate([prepared[i].pixels for i in with_image])
            images = dict(zip(with_image, model.embed_images(pixels), strict=True))
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
        return embedded

    def _write_batch(self, conn, batch: _Batch) -> None:
        store.write(
            conn, self.model.name, batch.embedded, batch.failures, self.settings.max_attempts
        )
        conn.commit()


def _fitting_batch_size(model) -> int:
    """The model's batch for free GPU memory; 32 for a model that cannot say (remote)."""
    fitting = getattr(model, "fitting_batch_size", None)
    return fitting() if fitting else 32


def _described(error: Exception) -> str:
    """An unexpected error, for a failure's message: its type and its first line."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
