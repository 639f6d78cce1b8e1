"""Choosing the inference precision by measuring it on the listings being embedded.

bf16 autocast roughly halves the cost of a batch on CPUs with native bf16
(AVX-512 BF16, AMX), but whether its vectors are close enough to float32's
depends on the model's weights and on the photos: EfficientNet-Lite0's image
vectors agree at 0.9995 on one set of photos and 0.99 on another. So the job
does not guess: it embeds one real batch both ways and keeps bf16 only where
every vector agrees with float32 at cosine >= 0.999 and the batch was
clearly faster (on CPUs without native bf16 it is slower, and stays off).
The embedder stores the outcome per model and kind of machine
(`machine_description`), so later runs need not time both precisions again;
they still check a stored bf16 choice on a few of their own listings
(`recheck`), since agreement depends on the photos.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, replace
from datetime import datetime

import torch

from perception_models.base import EmbeddingModel

#: Lowest cosine between a listing's float32 and lower-precision vectors.
MIN_AGREEMENT = 0.999
#: Lower precision must make the batch at least this much faster.
MIN_SPEEDUP = 1.2
#: Fewer listings than this say too little about agreement or speed.
MIN_LISTINGS = 8
#: Listings of each run a stored lower-precision choice is checked on again.
RECHECK_LISTINGS = 4


@dataclass(frozen=True)
class PrecisionChoice:
    dtype: torch.dtype
    candidate: torch.dtype
    #: Lowest cosine between the candidate's vectors and float32's (image and text).
    agreement: float
    #: float32 seconds / candidate seconds for the same batch.
    speedup: float
    listings: int
    #: Why the candidate could not run at all (this CPU or torch build), if it could not.
    error: str | None = None
    #: When an earlier run measured it, for a choice read back from the database.
    measured_at: datetime | None = None
    #: Lowest cosine on this run's own listings when a stored choice was checked again.
    rechecked: float | None = None

    def describe(self) -> str:
        name = dtype_name(self.candidate)
        when = (
            f"as measured on this kind of machine on {self.measured_at:%Y-%m-%d}: "
            if self.measured_at
            else ""
        )
        if self.error:
            return f"precision float32 ({when}{name} failed: {self.error})"
        measured = (
            f"{when}{name} agreed with float32 at cosine >= {self.agreement:.5f} "
            f"on {self.listings} listings and ran {self.speedup:.1f}x as fast"
        )
        if self.rechecked is not None:
            measured += (
                f"; on {RECHECK_LISTINGS} listings of this run at cosine >= {self.rechecked:.5f}"
            )
        if self.dtype == self.candidate:
            return f"precision {name} autocast ({measured})"
        return f"precision float32 ({measured}; needs >= {MIN_AGREEMENT} and {MIN_SPEEDUP}x)"


def dtype_name(dtype: torch.dtype) -> str:
    """'bfloat16' for torch.bfloat16 (as printed and as stored in precision_choices)."""
    return str(dtype).removeprefix("torch.")


def machine_description(streams: int = 1, threads: int | None = None) -> str:
    """What a measured CPU speed-up depends on: the CPU model, the kernels torch picks for
    it (AVX2, AVX-512...), torch's version, and the model's threads: `streams` batches at
    once on `threads` threads each (None: torch's setting)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                cpu,
            )
    except OSError:  # not Linux
        pass
    threads = threads or torch.get_num_threads()
    layout = f"{threads} thread{'s' if threads > 1 else ''}"
    if streams > 1:
        layout = f"{streams} streams of {layout}"
    return f"{cpu}; {torch.backends.cpu.get_cpu_capability()}; torch {torch.__version__}; {layout}"


def choose_precision(
    model: EmbeddingModel,
    pixels: torch.Tensor,
    tokens,
    candidate: torch.dtype = torch.bfloat16,
) -> tuple[PrecisionChoice, torch.Tensor, torch.Tensor]:
    """Embed one batch in float32 and in `candidate`; leave `model.dtype` at the winner.

    The batch goes in two halves, each in float32 and then in `candidate`, and
    each precision is timed by its faster half: the first half pays each
    precision's one-off set-up, and a stall that hits one half (a shared CPU)
    does not decide. Returns the choice and the batch's float32 image and text
    vectors, which are its result either way (the trial costs one extra
    batch, no more). Meant for CPU inference, where timings need no device
    synchronisation.
    """
    if len(pixels) < 2:
        raise ValueError(f"the precision trial needs at least 2 images, not {len(pixels)}")
    full_runs, low_runs, error = [], [], None
    for image_rows, text_rows in zip(_halves(len(pixels)), _halves(_rows(tokens)), strict=True):
        part = pixels[image_rows], _take(tokens, text_rows)
        full_runs.append(_timed(model, torch.float32, *part))
        if error is None:
            try:
                low_runs.append(_timed(model, candidate, *part))
            except RuntimeError as exc:  # an op without a kernel for the candidate here
                error = _reason(exc)
    images = torch.cat([run[0] for run in full_runs])
    texts = torch.cat([run[1] for run in full_runs])
    if error is not None:
        model.dtype = torch.float32
        choice = PrecisionChoice(torch.float32, candidate, 0.0, 0.0, len(pixels), error)
        return choice, images, texts

    low_images = torch.cat([run[0] for run in low_runs])
    low_texts = torch.cat([run[1] for run in low_runs])
    agreement = _lowest_cosine(images, low_images, texts, low_texts)
    full = min(run[2] for run in full_runs)
    low = min(run[2] for run in low_runs)
    speedup = full / low if low > 0 else float("inf")
    keep = agreement >= MIN_AGREEMENT and speedup >= MIN_SPEEDUP
    model.dtype = candidate if keep else torch.float32
    choice = PrecisionChoice(model.dtype, candidate, agreement, speedup, len(pixels))
    return choice, images, texts


def recheck(
    model: EmbeddingModel, stored: PrecisionChoice, pixels, tokens, images, texts
) -> PrecisionChoice:
    """Check a stored lower-precision choice on this run's first listings.

    `images` and `texts` are the batch's vectors in `stored.dtype`; its first
    RECHECK_LISTINGS images and titles are embedded in float32 too. Returns
    the choice with the agreement found; where it falls under MIN_AGREEMENT,
    a float32 choice (the model is left in float32, and the caller must embed
    the batch again). Costs a few float32 listings a run, not a batch.
    """
    rows = slice(0, RECHECK_LISTINGS)
    full_images, full_texts, _ = _timed(model, torch.float32, pixels[rows], _take(tokens, rows))
    lowest = _lowest_cosine(full_images, images[rows], full_texts, texts[rows])
    if lowest >= MIN_AGREEMENT:
        model.dtype = stored.dtype
        return replace(stored, rechecked=lowest)
    return PrecisionChoice(
        torch.float32, stored.candidate, lowest, stored.speedup, min(len(pixels), RECHECK_LISTINGS)
    )


def _lowest_cosine(images, other_images, texts, other_texts) -> float:
    """The lowest cosine between the two precisions' vectors, image or text (all unit)."""
    return min(
        (images * other_images).sum(-1).min().item(), (texts * other_texts).sum(-1).min().item()
    )


def _timed(model: EmbeddingModel, dtype: torch.dtype, pixels, tokens):
    model.dtype = dtype
    started = time.perf_counter()
    images, texts = model.embed_images(pixels), model.embed_texts(tokens)
    return images, texts, time.perf_counter() - started


def _halves(count: int) -> tuple[slice, slice]:
    return slice(0, count // 2), slice(count // 2, count)


def _rows(tokens) -> int:
    """How many titles a token batch holds (a tensor, or a dict of tensors)."""
    return len(next(iter(tokens.values())) if isinstance(tokens, dict) else tokens)


def _take(tokens, rows: slice):
    if isinstance(tokens, dict):
        return {key: value[rows] for key, value in tokens.items()}
    return tokens[rows]


def _reason(exc: Exception) -> str:
    """The first line of an error (torch's run on for pages), or its type if it says nothing."""
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
