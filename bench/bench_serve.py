"""`bikematch serve` under load: requests/s and latency with 1, 8 and 32 concurrent
clients, next to the model's own batch throughput on the same machine.

The service runs as `bikematch serve --no-database` in its own process; the clients are
threads of this one, each sending one photo (a 640x480 JPEG, base64 in the embedding
contract's JSON) or one title per request, as an app's users would.

Usage: python bench/bench_serve.py [--model minilm-effnet-lite0] [--max-batch N]
           [--clients 1,8,32] [--seconds 10] [--device cpu] [--batch-sizes 4,8,16,32]
           [--compile | --no-compile]

The service starts as `python -m bikematch serve`, so the benchmark runs where
bikematch is importable (PYTHONPATH) without its console script, as on a GPU machine.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embedder.decode import decode_image  # noqa: E402
from embedder.job import inference_pool, inference_streams  # noqa: E402
from perception_models import load_model  # noqa: E402
from perception_models.allocator import keep_freed_memory  # noqa: E402

TITLE = "Gazelle Ultimate C380 HMB Elektrische Herenfiets 500Wh 2024 framemaat 57"


def photo() -> bytes:
    """A 640x480 product-photo-like JPEG (smooth colour areas, about 60 KB), as in
    bench_embed.py."""
    rng = np.random.default_rng(7)
    base = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize((640, 480), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def model_only(
    name: str, device: str, batches: list[int], seconds: float, compile_model: bool | None
) -> tuple[dict[int, float], float]:
    """({batch size: images/s of in-memory batches of it, run on the streams the service
    runs the model on}, seconds of one image's forward on one stream). The model is
    loaded once, as the service loads it (compiled where `compile_model` or, unset, its
    default says)."""
    if device != "cuda":
        keep_freed_memory()  # as the service does (bikematch.app.pipeline)
    model = load_model(name, device=device, compile=compile_model)
    pixels = decode_image(photo(), model.preprocess, model.image_size)
    single = model.collate([pixels])

    def forward(inputs) -> float:
        with torch.inference_mode():
            started = time.perf_counter()
            model.embed_images(inputs)
            return time.perf_counter() - started

    rates = {}
    streams, threads = inference_streams(None, model.device)
    with inference_pool(streams, threads) as pool:
        for batch in batches:
            batched = model.collate([pixels] * batch)
            for warming in [pool.submit(forward, batched) for _ in range(2 * streams)]:
                warming.result()
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                for running in [pool.submit(forward, batched) for _ in range(streams)]:
                    running.result()
                done += streams * batch
            rates[batch] = done / (time.perf_counter() - started)
        one = statistics.median(pool.submit(forward, single).result() for _ in range(20))
    return rates, one


def start_service(args) -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable,
        "-m",
        "bikematch",
        "serve",
        "--no-database",
        "--port",
        "0",
        "--model",
        args.model,
        "--device",
        args.device,
        *(["--max-batch", str(args.max_batch)] if args.max_batch else []),
        *([] if args.compile is None else ["--compile" if args.compile else "--no-compile"]),
        "--wait-ms",
        str(args.wait_ms),
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    found = re.search(r" at (http://\S+)", line)
    if not found:
        process.kill()
        raise SystemExit(f"the service did not start: {line}{process.stderr.read()}")
    return process, found.group(1)


def post(url: str, body: bytes) -> float:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
    return time.perf_counter() - started


def load(url: str, body: bytes, clients: int, seconds: float) -> tuple[float, float, float]:
    """(requests/s, p50, p95 latency in s) with `clients` sending back to back."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client() -> None:
        while time.perf_counter() < stop:
            took = post(url, body)
            with lock:
                latencies.append(took)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return len(ordered) / elapsed, ordered[len(ordered) // 2], ordered[int(0.95 * len(ordered))]


def batches(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=60) as response:
        text = response.read().decode()
    counts = dict(re.findall(r'bikematch_(batch\w*_total)\{kind="image"\} (\d+)', text))
    return {key: float(value) for key, value in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-effnet-lite0")
    parser.add_argument("--max-batch", type=int, default=None, help="[the service's default]")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--wait-ms", type=float, default=5.0)
    parser.add_argument(
        "--batch-sizes", default=None, help="model-only batch sizes [4,8,16,32; on cuda 32,64,128]"
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the model as torch.compile graphs, in both [the service's default: on CUDA]",
    )
    args = parser.parse_args()

    # The model's best: its throughput at the batch size that suits it best here (on
    # CPU, small batches on one core each beat large ones).
    sizes = args.batch_sizes or ("32,64,128" if args.device == "cuda" else "4,8,16,32")
    rates, forward = model_only(
        args.model, args.device, [int(n) for n in sizes.split(",")], args.seconds / 2, args.compile
    )
    rate = max(rates.values())
    print(
        f"model {args.model} on {args.device}: model-only images/s by batch size "
        + ", ".join(f"{batch}: {value:.1f}" for batch, value in rates.items())
        + f"; one image's forward {forward * 1000:.1f} ms"
    )
    process, url = start_service(args)
    try:
        image_body = json.dumps(
            {"model": args.model, "images": [base64.b64encode(photo()).decode()]}
        ).encode()
        text_body = json.dumps({"model": args.model, "texts": [TITLE]}).encode()
        post(url + "/embed", image_body)  # warm-up
        idle = sorted(post(url + "/embed", image_body) for _ in range(20))
        p50, p95 = idle[10], idle[19]
        print(
            f"idle, one image a request: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms"
            f" ({p95 / forward:.2f}x one forward)"
        )
        print("clients  kind   requests/s  p50 ms  p95 ms  mean batch  share of model-only")
        for clients in (int(n) for n in args.clients.split(",")):
            before = batches(url)
            per_second, p50, p95 = load(url + "/embed", image_body, clients, args.seconds)
            after = batches(url)
            made = after["batches_total"] - before["batches_total"]
            mean = (after["batch_items_total"] - before["batch_items_total"]) / max(made, 1)
            print(
                f"{clients:>7}  image  {per_second:>10.1f}  {p50 * 1000:>6.1f}  "
                f"{p95 * 1000:>6.1f}  {mean:>10.1f}  {per_second / rate:>6.0%}"
            )
        per_second, p50, p95 = load(url + "/embed", text_body, 32, args.seconds)
        print(f"{32:>7}  text   {per_second:>10.1f}  {p50 * 1000:>6.1f}  {p95 * 1000:>6.1f}")
    finally:
        process.terminate()
        process.wait(60)


if __name__ == "__main__":
    main()
