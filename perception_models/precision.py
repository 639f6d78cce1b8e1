"""Whether a lower inference precision is good enough for a model on these photos.

bf16 autocast roughly halves the cost of a batch on CPUs with native bf16 (AVX-512
BF16, AMX), but whether its vectors are close enough to float32's depends on the
model's weights and on the photos: EfficientNet-Lite0's image vectors agree at 0.9995
on one set of photos and 0.99 on another. `measure_precision` embeds one batch both
ways and says whether every vector agrees at cosine >= MIN_AGREEMENT and the batch
ran at least MIN_SPEEDUP times as fast; `bikematch embed check-precision` runs it on
the catalogue's own listings, and `--dtype` then says which precision a job uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from perception_models.base import EmbeddingModel

#: Lowest cosine between a listing's float32 and lower-precision vectors.
MIN_AGREEMENT = 0.999
#: Lower precision must make the batch at least this much faster.
MIN_SPEEDUP = 1.2


@dataclass(frozen=True)
class PrecisionCheck:
    candidate: torch.dtype
    #: Lowest cosine between the candidate's vectors and float32's (image and text).
    agreement: float
    #: float32 seconds / candidate seconds for the same batch.
    speedup: float
    listings: int
    #: Why the candidate could not run at all (this CPU or torch build), if it could not.
    error: str | None = None

    @property
    def worth_it(self) -> bool:
        return self.error is None and (
            self.agreement >= MIN_AGREEMENT and self.speedup >= MIN_SPEEDUP
        )

    def describe(self) -> str:
        name = dtype_name(self.candidate)
        if self.error:
            return f"{name} cannot run here ({self.error}): keep --dtype float32"
        measured = (
            f"{name} agreed with float32 at cosine >= {self.agreement:.5f} on "
            f"{self.listings} listings and ran {self.speedup:.1f}x as fast"
        )
        if self.worth_it:
            return f"{measured}: --dtype {name} is safe and faster here"
        return f"{measured}: keep --dtype float32 (needs >= {MIN_AGREEMENT} and {MIN_SPEEDUP}x)"


def dtype_name(dtype: torch.dtype) -> str:
    """'bfloat16' for torch.bfloat16."""
    return str(dtype).removeprefix("torch.")


def measure_precision(
    model: EmbeddingModel,
    pixels: torch.Tensor,
    tokens,
    candidate: torch.dtype = torch.bfloat16,
    clock: Callable[[], float] = time.perf_counter,
) -> PrecisionCheck:
    """Embed one batch in float32 and in `candidate` and compare; the model's dtype is
    left as it was.

    The batch goes in two halves, each in float32 and then in `candidate`, and each
    precision is timed by its faster half: the first half pays each precision's
    one-off set-up, and a stall that hits one half (a shared CPU) does not decide.
    Timings need no device synchronisation: meant for CPU inference.
    """
    if len(pixels) < 2:
        raise ValueError(f"the precision check needs at least 2 images, not {len(pixels)}")
    before = model.dtype
    full_runs, low_runs, error = [], [], None
    try:
        for image_rows, text_rows in zip(_halves(len(pixels)), _halves(_rows(tokens)), strict=True):
            part = pixels[image_rows], _take(tokens, text_rows)
            full_runs.append(_timed(model, torch.float32, clock, *part))
            if error is None:
                try:
                    low_runs.append(_timed(model, candidate, clock, *part))
                except RuntimeError as exc:  # an op without a kernel for the candidate here
                    error = _reason(exc)
    finally:
        model.dtype = before
    if error is not None:
        return PrecisionCheck(candidate, 0.0, 0.0, len(pixels), error)
    images = torch.cat([run[0] for run in full_runs])
    texts = torch.cat([run[1] for run in full_runs])
    low_images = torch.cat([run[0] for run in low_runs])
    low_texts = torch.cat([run[1] for run in low_runs])
    agreement = min(
        (images * low_images).sum(-1).min().item(), (texts * low_texts).sum(-1).min().item()
    )
    full = min(run[2] for run in full_runs)
    low = min(run[2] for run in low_runs)
    speedup = full / low if low > 0 else float("inf")
    return PrecisionCheck(candidate, agreement, speedup, len(pixels))


def _timed(model: EmbeddingModel, dtype: torch.dtype, clock, pixels, tokens):
    model.dtype = dtype
    started = clock()
    images, texts = model.embed_images(pixels), model.embed_texts(tokens)
    return images, texts, clock() - started


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
