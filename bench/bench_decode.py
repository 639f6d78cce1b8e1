"""Decoding benchmark: can the embedder's decode threads feed a GPU?

Decodes `--photos` distinct 640x480 JPEG product photos the way the job does
(`embedder.decode.decode_image` with the model's preprocessing: PE-Core's 336 px
squash by default) and prints:

- ms a photo on one thread;
- photos/s on 1, 2, ... up to this machine's cores threads (the job's decode pool);
- the share of a decode during which the thread holds Python's GIL: measured as how
  much a pure-Python counting thread slows down while one decode thread runs beside
  it on another core. Threads scale until that share of their work, done one at a
  time, fills one core: at most 1 / share photos in parallel, whatever the cores.

Usage: python bench/bench_decode.py [--photos 400] [--model pe-core-l14-336]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_embed import photo  # noqa: E402
from embedder.decode import decode_image  # noqa: E402
from perception_models import preprocess  # noqa: E402

SIZES = {"pe-core-l14-336": 336, "clip-vit-b-32": 224, "minilm-effnet-lite0": 224}


def squash(size: int):
    return lambda image: preprocess.squash(image, size)


def decode_rate(photos: list[bytes], size: int, threads: int) -> float:
    prepare = squash(size)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda data: decode_image(data, prepare, size), photos[:threads]))  # warm
        started = time.perf_counter()
        list(pool.map(lambda data: decode_image(data, prepare, size), photos))
        return len(photos) / (time.perf_counter() - started)


def count_for(seconds: float, stop: threading.Event | None = None) -> float:
    """Pure-Python loop iterations a second (it needs the GIL for every step)."""
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds and not (stop and stop.is_set()):
        for _ in range(1000):
            done += 1
    return done / (time.perf_counter() - started)


def gil_share(photos: list[bytes], size: int, seconds: float = 3.0) -> float:
    """The share of a decoding thread's time it holds the GIL, from how much it slows a
    counting thread on another core."""
    alone = count_for(seconds)
    stop = threading.Event()
    prepare = squash(size)

    def decode_forever():
        while not stop.is_set():
            for data in photos:
                decode_image(data, prepare, size)
                if stop.is_set():
                    return

    decoder = threading.Thread(target=decode_forever)
    decoder.start()
    try:
        beside = count_for(seconds)
    finally:
        stop.set()
        decoder.join()
    return max(0.0, 1 - beside / alone)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--model", default="pe-core-l14-336", choices=sorted(SIZES))
    args = parser.parse_args()
    size = SIZES[args.model]
    photos = [photo(i) for i in range(args.photos)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    one = decode_rate(photos, size, 1)
    print(f"{args.photos} photos of 640x480 to {size} px; {cores} cores")
    print(f"one thread: {1000 / one:.2f} ms a photo ({one:.0f} photos/s)")
    for threads in range(2, (cores or 1) + 1):
        rate = decode_rate(photos, size, threads)
        print(f"{threads} threads: {rate:.0f} photos/s ({rate / one:.2f}x)")
    if (cores or 1) >= 2:
        share = gil_share(photos, size)
        ceiling = f"{1 / share:.0f}" if share > 0.005 else "more than 200"
        print(
            f"GIL held {share:.1%} of a decode: threads scale up to about {ceiling} at once"
            f" ({one * (1 / share if share > 0.005 else 200):.0f} photos/s)"
        )


if __name__ == "__main__":
    main()
