"""Model-only throughput: images/s and texts/s per model and batch size.

PE-Core and CLIP run with random weights of their real shapes (no download),
which costs the same as the real weights. On a GPU, also prints PE-Core's
share of the bf16 peak (about 381 GFLOPs per 336 px image forward).

Usage: python bench/bench_models.py [--device cpu|cuda] [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from perception_models import load_model  # noqa: E402
from perception_models.allocator import keep_freed_memory  # noqa: E402
from perception_models.models import TINY_CONFIG, PECore  # noqa: E402
from perception_models.pe_core import PE_CORE_L14_336  # noqa: E402
from perception_models.tokenizers import ByteTokenizer  # noqa: E402

TITLE = "Gazelle Ultimate C380 HMB Elektrische Herenfiets 500Wh 2024 framemaat 57"
PE_CORE_GFLOPS_PER_IMAGE = 381


#: Not a model: PE-Core's input size and vector dims at almost no compute. In the
#: embedding bench it shows what the pipeline alone (fetch, decode at 336 px, COPY
#: into a 2,048-d HNSW index) delivers on this machine: the most a GPU could get.
PIPELINE_CEILING = "pipeline-ceiling"


def build(name: str, device: str, dtype: torch.dtype):
    if name == PIPELINE_CEILING:
        vision = dataclasses.replace(TINY_CONFIG.vision, image_size=336, patch_size=48)
        config = dataclasses.replace(
            TINY_CONFIG,
            vision=dataclasses.replace(vision, output_dim=PE_CORE_L14_336.vision.output_dim),
            text=dataclasses.replace(TINY_CONFIG.text, output_dim=PE_CORE_L14_336.text.output_dim),
        )
        return PECore(name, config, ByteTokenizer(config.text.context_length), device, dtype)
    if name == "pe-core-l14-336":
        tokenizer = ByteTokenizer(PE_CORE_L14_336.text.context_length)
        return PECore(name, PE_CORE_L14_336, tokenizer, device, dtype)
    if name == "clip-vit-b-32":
        return load_model(name, device, dtype, weights="random")
    return load_model(name, device, dtype)


def rate(function, items: int, seconds: float, synchronise) -> float:
    function()  # warm-up
    synchronise()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or done == 0:
        function()
        done += items
    synchronise()
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["tiny-random", "minilm-effnet-lite0", "clip-vit-b-32", "pe-core-l14-336"],
    )
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="as the job on CUDA: weights stored in --dtype, towers compiled (the first, "
        "untimed batch compiles)",
    )
    parser.add_argument(
        "--agreement",
        action="store_true",
        help="also the least cosine of each model's vectors (as run) with float32 eager ones "
        "of the same weights on the same device",
    )
    args = parser.parse_args()
    keep_freed_memory()  # as the job does, before any thread starts
    dtype = getattr(torch, args.dtype)
    cuda = args.device.startswith("cuda")
    synchronise = torch.cuda.synchronize if cuda else (lambda: None)
    print(
        f"device {args.device}, dtype {args.dtype}, torch threads {torch.get_num_threads()}"
        + (", weights in dtype, compiled" if args.compile else "")
    )
    print(f"{'model':22} {'batch':>5} {'images/s':>10} {'texts/s':>10}")
    for name in args.models:
        torch.manual_seed(0)  # random weights: the same for the agreement's reference
        model = build(name, args.device, dtype)
        if args.compile:
            model.cast_weights()
            model.compile()
        for batch in args.batch_sizes:
            images, texts = measure(model, batch, args.device, args.seconds, synchronise)
            line = f"{name:22} {batch:>5} {images:>10.1f} {texts:>10.1f}"
            if cuda and name == "pe-core-l14-336":
                peak = {"bfloat16": 989e12, "float16": 989e12}.get(args.dtype, 67e12)
                line += f"   {images * PE_CORE_GFLOPS_PER_IMAGE * 1e9 / peak:.0%} of peak"
            print(line, flush=True)
        if args.agreement:
            print(f"{name:22} agreement with float32: {agreement(model, name, args):.6f}")


def agreement(model, name: str, args) -> float:
    """The least cosine between the model's vectors and those of a float32 eager copy
    (random weights from the same seed, so the same weights in float32), over images
    and titles."""
    torch.manual_seed(0)  # as main() seeds before building the model measured
    reference = build(name, args.device, torch.float32)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (8, 3, model.image_size, model.image_size), generator=generator)
    pixels = pixels.to(torch.uint8)
    titles = [TITLE, "Stromer ST3 Pinion Sport 983Wh", "Sparta M8b heren 500 Wh 2024"] * 3
    tokens = model.tokenize(titles[:8])
    least = min(
        (model.embed_images(pixels) * reference.embed_images(pixels)).sum(-1).min().item(),
        (model.embed_texts(tokens) * reference.embed_texts(tokens)).sum(-1).min().item(),
    )
    return least


def measure(model, batch: int, device: str, seconds: float, synchronise) -> tuple[float, float]:
    pixels = torch.randn(batch, 3, model.image_size, model.image_size, device=device)
    tokens = model.tokenize([TITLE] * batch)
    images = rate(lambda: model.embed_images(pixels), batch, seconds, synchronise)
    texts = rate(lambda: model.embed_texts(tokens), batch, seconds, synchronise)
    return images, texts


if __name__ == "__main__":
    main()
