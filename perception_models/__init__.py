"""Vision-language models that turn a listing's image and title into vectors.

model = load_model("minilm-effnet-lite0", device="cpu")
pixels = torch.stack([model.preprocess(image) for image in images])
image_vectors = model.embed_images(pixels)
text_vectors = model.embed_texts(model.tokenize(titles))
stored = combine(image_vectors, text_vectors)   # [image, text] / sqrt(2)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from perception_models.base import EmbeddingModel, combine
from perception_models.weights import WeightsNotFound

__all__ = [
    "MODELS",
    "DeviceUnavailable",
    "EmbeddingModel",
    "ModelFiles",
    "ModelSpec",
    "WeightsNotFound",
    "combine",
    "load_model",
]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    loader: Callable[..., EmbeddingModel]
    #: Cosine similarity at which two listings match, and where the number comes from.
    default_threshold: float
    threshold_source: str


@dataclass(frozen=True)
class ModelFiles:
    """Local copies of model files; None: from the Hugging Face hub (or its cache)."""

    pe_core_weights: Path | None = None
    clip_weights: Path | None = None
    #: A directory with CLIP's vocab.json and merges.txt.
    clip_tokenizer: Path | None = None


def _pe_core(device, dtype, weights, files: ModelFiles):
    from perception_models.models import load_pe_core

    return load_pe_core(device, dtype, weights or files.pe_core_weights, files.clip_tokenizer)


def _clip(device, dtype, weights, files: ModelFiles):
    from perception_models.models import ClipB32

    return ClipB32(device, dtype, weights or files.clip_weights, random_weights=weights == "random")


def _minilm(device, dtype, weights, files: ModelFiles):
    from perception_models.models import MiniLMEffNetLite0

    return MiniLMEffNetLite0(device, dtype, weights)


def _tiny(device, dtype, weights, files: ModelFiles):
    from perception_models.models import load_tiny_random

    return load_tiny_random(device, dtype, weights)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "pe-core-l14-336",
            "Meta PE-Core-L14-336 CLIP: 1024-d image and text, 336 px (the default)",
            _pe_core,
            0.96,
            "the starting point of the matching design; `bikematch calibrate` tunes it",
        ),
        ModelSpec(
            "clip-vit-b-32",
            "OpenAI CLIP ViT-B/32 via transformers: 512-d image and text",
            _clip,
            0.90,
            "not yet calibrated on labelled data",
        ),
        ModelSpec(
            "minilm-effnet-lite0",
            "offline: all-MiniLM-L6-v2 text (384-d) + EfficientNet-Lite0 image (1280-d)",
            _minilm,
            0.70,
            "best F1 on the demo catalogue (images and titles; docs/quality.md)",
        ),
        ModelSpec(
            "tiny-random",
            "random weights, PE-Core architecture, 32-d: for fast tests only",
            _tiny,
            0.99,
            "meaningless (random weights)",
        ),
    )
}


class DeviceUnavailable(RuntimeError):
    """The device asked for is not one torch can use on this machine."""


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA (a CPU build)"
        raise DeviceUnavailable(
            f"device {device!r}: torch sees no CUDA GPU here (torch {torch.__version__}, "
            f"built with {build}); use --device cpu or auto"
        )
    return resolved


def load_model(
    name: str,
    device: str = "auto",
    dtype: torch.dtype | None = None,
    weights: str | None = None,
    files: ModelFiles | None = None,
    compile: bool | None = None,
) -> EmbeddingModel:
    """Load a registered model. `weights`: a local path (or "random" for clip-vit-b-32);
    `files`: local copies of every model's files (the settings' BIKEMATCH_* paths).

    dtype defaults to float32 on CPU and, on CUDA, bfloat16 (float16 on a GPU
    without it), the weights stored in it; on CPU a lower dtype runs under autocast
    over float32 weights. `compile` (default: on CUDA) runs both towers as
    torch.compile graphs. Returned vectors are always float32 and L2-normalised.
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    resolved = resolve_device(device)
    cuda = resolved.type == "cuda"
    if dtype is None:
        dtype = (
            (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
            if cuda
            else torch.float32
        )
    model = MODELS[name].loader(resolved, dtype, weights, files or ModelFiles())
    if cuda:
        model.cast_weights()
    if cuda if compile is None else compile:
        model.compile()
    return model
