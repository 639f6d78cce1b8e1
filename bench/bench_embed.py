"""Embedding job benchmark: end-to-end listings/s next to model-only throughput.

Serves `--listings` distinct 640x480 JPEG product photos from a local
keep-alive HTTP server (bench/photo_server.py, its own process), runs the real job
(claim, fetch, decode, embed, COPY) into a throwaway embedded Postgres, and
compares with the model alone on the same batches already in memory, run as
the job runs it (the same streams of the same threads; `--streams`). The
ratio is what the pipeline loses to I/O and Python. Both figures are taken
after one warm-up batch through the model (a nightly job embeds thousands of
listings; the first batch's one-off set-up is not throughput).

clip-vit-b-32 and pe-core-l14-336 use random weights of their real shapes
(same cost as the real weights; no download). pipeline-ceiling is not a
model: PE-Core's input size and vector dims at almost no compute, so its
end-to-end figure is what this machine's pipeline delivers on its own, the
most a GPU could get out of it.

"model busy" is the share of the job's time spent in inference (by each of
the model's streams, on average): near 100%,
the model is the limit and what the ratio loses is CPU the model shares with
decoding, Postgres and the photo server on the same cores. "write wait" is
the share the job could claim no more work because earlier batches' writes
still ran (the database as the limit). The CPU columns say who used the
machine during the job (from /proc/stat and getrusage, per listing): this
process (model, decoding, fetching, the event loop), every other process but
the photo server ("others": Postgres, whose HNSW index maintenance is most
of it, and whatever else the machine runs), the photo server ("photos": a
shop's CDN would not be on these cores), and what was left idle.

`--dtype auto` (the default) is `bikematch embed`'s: float32 on CPU, bf16
autocast on CUDA; `--dtype bfloat16` is what `bikematch embed check-precision`
recommends where bf16 agrees and is faster.

Usage: python bench/bench_embed.py [--models ...] [--listings 512] [--device cpu]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_models import PIPELINE_CEILING, build  # noqa: E402
from bikematch.core.database import connect, start_embedded, stop_embedded  # noqa: E402
from bikematch.core.listings import Listing, store_listings  # noqa: E402
from bikematch.core.migrations import apply_migrations  # noqa: E402
from embedder.decode import decode_image  # noqa: E402
from embedder.fetch import FetchSettings  # noqa: E402
from embedder.job import (  # noqa: E402
    EmbedSettings,
    decode_workers,
    inference_pool,
    inference_streams,
    run_embedding,
)
from perception_models.allocator import keep_freed_memory  # noqa: E402
from perception_models.precision import dtype_name  # noqa: E402


def photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize((640, 480), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


class PhotoServer:
    """bench/photo_server.py over a directory, in its own process (as a shop's CDN would be)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __enter__(self) -> str:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("photo_server.py")), self.directory],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()  # "port 41234"
        match = re.fullmatch(r"port (\d+)\n", line)
        if not match:
            self.process.kill()
            raise RuntimeError(f"the photo server did not start: {line!r}")
        return f"http://127.0.0.1:{match.group(1)}"

    def __exit__(self, *exc) -> None:
        self.process.kill()
        self.process.wait()


@dataclass
class CpuUse:
    """CPU-seconds during one job (whole machine): this process, the photo server, all
    other processes (Postgres, and whatever else runs), idle."""

    this: float
    others: float
    photos: float
    idle: float

    @classmethod
    def measure(cls, photo_server: int, work, *args):
        """Runs `work(*args)`; returns its result and the machine's CPU use meanwhile (Linux);
        `photo_server`: the photo server's process id."""
        before_machine, before_this = _machine_cpu(), _this_cpu()
        before_photos = _process_cpu(photo_server)
        result = work(*args)
        (busy, idle), this = _machine_cpu(), _this_cpu() - before_this
        photos = _process_cpu(photo_server) - before_photos
        busy, idle = busy - before_machine[0], idle - before_machine[1]
        return result, cls(this, max(busy - this - photos, 0.0), photos, idle)


def _process_cpu(pid: int) -> float:
    """User + system CPU-seconds of a running process (its own threads)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()  # after "pid (name)"
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_cpu() -> tuple[float, float]:
    """(busy, idle) CPU-seconds of the whole machine since boot; steal counts as neither."""
    with open("/proc/stat") as stat:
        user, nice, system, idle, iowait, irq, softirq = map(int, stat.readline().split()[1:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, (idle + iowait) / tick


def _this_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def warm_up(model, photos: list[bytes], titles: list[str], batch: int) -> tuple:
    pixels = [model.preprocess(Image.open(io.BytesIO(data))) for data in photos[:batch]]
    stacked = torch.stack(pixels)
    tokens = model.tokenize(titles[:batch])
    model.embed_images(stacked), model.embed_texts(tokens)
    return stacked, tokens


def model_only(model, photos: list[bytes], titles: list[str], batch: int, streams, threads):
    """Listings/s for preprocess-free inference on in-memory batches, `streams` batches at
    once on `threads` threads each, as the job runs the model."""
    stacked, tokens = warm_up(model, photos, titles, batch)

    def one() -> None:
        model.embed_images(stacked)
        model.embed_texts(tokens)

    with inference_pool(streams, threads) as pool:
        for warming in [pool.submit(one) for _ in range(2 * streams)]:  # every thread
            warming.result()
        batches = -(-len(photos) // batch)
        started = time.perf_counter()
        for done in [pool.submit(one) for _ in range(batches)]:
            done.result()
        return batches * batch / (time.perf_counter() - started)


def decode_ms(model, photos: list[bytes]) -> float:
    """Milliseconds one thread takes to decode and preprocess a photo for `model`."""
    for data in photos[:8]:
        decode_image(data, model.preprocess, model.image_size)
    started = time.perf_counter()
    for data in photos:
        decode_image(data, model.preprocess, model.image_size)
    return (time.perf_counter() - started) * 1000 / len(photos)


def clear(url: str) -> None:
    """Drop the run's vectors, from the table and from its HNSW graph."""
    with connect(url, autocommit=True) as conn:
        conn.execute("delete from vector_storage")
        conn.execute("vacuum vector_storage")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["minilm-effnet-lite0", "clip-vit-b-32", "pe-core-l14-336", PIPELINE_CEILING],
        help=f"{PIPELINE_CEILING}: PE-Core's input size and dims at almost no compute, "
        "the pipeline's own limit",
    )
    parser.add_argument("--listings", type=int, default=512)
    parser.add_argument("--pe-core-listings", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, help="decode threads (default: as the job)")
    parser.add_argument(
        "--streams", type=int, help="batches the model embeds at once (default: as the job)"
    )
    parser.add_argument("--writers", type=int, help="writer connections (default: as the job)")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="as `embed` on CUDA: weights stored in --dtype, towers compiled (before timing)",
    )
    parser.add_argument(
        "--index",
        default="auto",
        choices=["auto", "keep", "rebuild"],
        help="the model's HNSW index during the job, as `embed --index`; the end-to-end "
        "figure includes a build after the load",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each measurement; medians are printed (a shared VM varies by +-10%%)",
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="auto: as `bikematch embed` (float32 on CPU, bf16 autocast on CUDA)",
    )
    args = parser.parse_args()
    keep_freed_memory()  # as the job does, before any thread starts

    root = Path(tempfile.mkdtemp(prefix="bikematch-bench-embed-"))
    url = start_embedded(root / "pgdata")
    try:
        with connect(url) as conn:
            apply_migrations(conn)
        count = max(args.listings, args.pe_core_listings)
        photos = [photo(i) for i in range(count)]
        titles = [f"E-bike model {i} 500Wh 2024 heren" for i in range(count)]
        (root / "photos").mkdir()
        for i, data in enumerate(photos):
            (root / "photos" / f"{i}.jpg").write_bytes(data)
        photo_server = PhotoServer(root / "photos")
        with photo_server as server:
            listings = [
                Listing(
                    webshop="bench.example",
                    url=f"/p/{i}",
                    name=titles[i],
                    image_url=f"{server}/{i}.jpg",
                )
                for i in range(count)
            ]
            with connect(url) as conn:
                store_listings(conn, listings)
            device = torch.device(args.device)
            streams, threads = inference_streams(args.streams, device)
            print(
                f"device {args.device}, torch threads {torch.get_num_threads()}, "
                f"model streams {streams} of {threads or torch.get_num_threads()} threads, "
                f"decode workers {decode_workers(args.workers, device)}, "
                f"batches of up to {args.batch_size} (fewer where they would not fill every stream)"
            )
            print(
                f"{'model':22} {'listings':>8} {'dtype':>9} {'model-only/s':>13} "
                f"{'end-to-end/s':>13} {'ratio':>6} {'model busy':>10} {'write wait':>10} "
                f"{'CPU ms/listing: this':>21} {'others':>6} {'photos':>6} {'idle':>5}"
            )
            # As `bikematch embed --dtype auto`: float32 on CPU, bf16 autocast on CUDA.
            if args.dtype == "auto":
                precision = torch.bfloat16 if device.type == "cuda" else torch.float32
            else:
                precision = getattr(torch, args.dtype)
            for name in args.models:
                model = build(name, args.device, precision)
                if args.compile:
                    model.cast_weights()
                    model.compile()
                n = args.pe_core_listings if name == "pe-core-l14-336" else args.listings
                batch = min(args.batch_size, max(1, n // streams))  # a batch per stream
                warm_up(model, photos, titles, batch)  # one-off kernel set-up is not throughput
                settings = EmbedSettings(
                    batch_size=batch,
                    limit=n,
                    workers=args.workers,
                    streams=args.streams,
                    writers=args.writers,
                    index_mode=args.index,
                    fetch=FetchSettings(allow_private=True, cache_dir=None),
                )
                alone, summaries, uses = [], [], []
                for _ in range(args.repeats):
                    summary, use = CpuUse.measure(
                        photo_server.process.pid, run_embedding, url, model, settings
                    )
                    assert summary.embedded == n, summary.lines()
                    summaries.append(summary)
                    uses.append(use)
                    # The model alone, in the precision the job ended with.
                    alone.append(model_only(model, photos[:n], titles[:n], batch, streams, threads))
                    clear(url)
                # The one-off compile is left out, as the model-only figure leaves out
                # its warm-up; a build of the index after the load is counted.
                rates = [
                    n
                    / (
                        summary.seconds
                        - (summary.compile_seconds or 0)
                        + (summary.index_seconds or 0)
                    )
                    for summary in summaries
                ]
                busy = statistics.median(summary.model_busy for summary in summaries)
                waited = statistics.median(summary.write_wait for summary in summaries)
                per_listing = [
                    statistics.median(getattr(use, part) for use in uses) * 1000 / n
                    for part in ("this", "others", "photos", "idle")
                ]
                dtype = dtype_name(model.dtype)
                print(
                    f"{name:22} {n:>8} {dtype:>9} {statistics.median(alone):>13.1f} "
                    f"{statistics.median(rates):>13.1f} "
                    f"{statistics.median(rates) / statistics.median(alone):>6.0%} {busy:>10.0%} "
                    f"{waited:>10.0%} "
                    f"{per_listing[0]:>21.1f} {per_listing[1]:>6.1f} {per_listing[2]:>6.1f} "
                    f"{per_listing[3]:>5.1f}",
                    flush=True,
                )
                if args.repeats > 1:
                    print(
                        "  runs: model-only "
                        + " ".join(f"{rate:.1f}" for rate in alone)
                        + "; end-to-end "
                        + " ".join(f"{rate:.1f}" for rate in rates)
                    )
                print(
                    f"  batches of {batch}; decoding: {decode_ms(model, photos[:n]):.2f} ms a photo"
                    " on one thread"
                )
                for used in sorted({s.precision for s in summaries if s.precision}):
                    print(f"  {used}")
                compiled = [s.compile_seconds for s in summaries if s.compile_seconds]
                if compiled:
                    print(f"  compiled in {statistics.median(compiled):.1f} s (left out)")
                built = [s.index_seconds for s in summaries if s.index_seconds is not None]
                if built:
                    print(
                        f"  index built after the load: {statistics.median(built):.1f} s"
                        f" of each run (median), {summaries[0].writers} writers"
                    )
    finally:
        stop_embedded(root / "pgdata")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
