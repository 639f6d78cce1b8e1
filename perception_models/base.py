"""The interface every embedding model offers the embedder."""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from perception_models.preprocess import normalise_batch
from perception_models.tokenizers import token_lengths


class EmbeddingModel(ABC):
    """An image tower and a text tower, each returning L2-normalised float32 vectors on
    the CPU (where the job writes them from), whatever device the model runs on.

    `preprocess(image)` -> (3, H, W) uint8 tensor; `tokenize(titles)` -> a token batch;
    `embed_images(pixels)` (B, 3, H, W) -> (B, image_dims), from uint8 pixels
    (normalised there, with `pixel_mean` and `pixel_std`) or from float pixels
    already normalised; `embed_texts(tokens)` -> (B, text_dims).
    """

    name: str
    #: Per-channel mean and std of the model's input normalisation, on the [0, 1] scale.
    pixel_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    pixel_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_dims: int
    text_dims: int
    image_size: int
    context_length: int

    def __init__(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.device = torch.device(device)
        self.dtype = dtype
        #: The weights are stored in `dtype` (cast_weights), not only computed in it.
        self.weights_cast = False
        #: The towers run as torch.compile graphs (compile).
        self.compiled = False

    def networks(self) -> list[torch.nn.Module]:
        """The model's torch modules (its weights)."""
        return [value for value in vars(self).values() if isinstance(value, torch.nn.Module)]

    def cast_weights(self) -> None:
        """Store the weights in the model's dtype (bf16 or fp16): half the memory and
        memory traffic of float32. Autocast stays on, so the ops it keeps in float32
        (normalisations, softmax) still run there."""
        if self.dtype == torch.float32:
            return
        for network in self.networks():
            network.to(self.dtype)
        self.weights_cast = True

    def compile(self, **options) -> None:
        """Both towers as torch.compile graphs, with dynamic shapes: one graph serves
        every batch size and title length, so the compile is paid once (in `warm_up`),
        not again for a run's last, shorter batch. torch caches the compiled kernels
        on disk (TORCHINDUCTOR_CACHE_DIR), which later runs reuse."""
        self._image_features = torch.compile(self._image_features, dynamic=True, **options)
        self._text_features = torch.compile(self._text_features, dynamic=True, **options)
        self.compiled = True

    def uncompile(self) -> None:
        """Back to the eager towers (where compiling failed)."""
        vars(self).pop("_image_features", None)
        vars(self).pop("_text_features", None)
        self.compiled = False

    def warm_up(self, batch_size: int) -> float:
        """Embed one batch of grey images and short titles, so that the one-off work
        (compiling, kernel selection) is not done on the first real batch; the seconds
        it took."""
        started = time.perf_counter()
        # A batch of one too: compiled graphs treat a dimension of 1 apart (a service's
        # single requests), and would compile again on the first such batch.
        for size in sorted({batch_size, 1}, reverse=True):
            grey = torch.full((size, 3, self.image_size, self.image_size), 128, dtype=torch.uint8)
            self.embed_images(grey)
            self.embed_texts(self.tokenize(["e-bike 500 Wh"] * size))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - started

    def fitting_batch_size(self, limit: int = 512, share: float = 0.5) -> int:
        """On CUDA, the largest power of two up to `limit` whose batch fits in `share`
        of the free GPU memory, from what a batch of 8 took (warming the model up);
        elsewhere 32."""
        if self.device.type != "cuda":
            return 32
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        self.warm_up(8)
        per_item = (torch.cuda.max_memory_allocated(self.device) - before) / 8
        free, _ = torch.cuda.mem_get_info(self.device)
        return batch_for_memory(free * share, per_item, limit)

    @property
    def precision(self) -> str | None:
        """How the model computes, for a summary: None for plain float32."""
        parts = []
        if self.dtype != torch.float32:
            kind = "weights" if self.weights_cast else "autocast"
            parts.append(f"{str(self.dtype).removeprefix('torch.')} {kind}")
        if self.compiled:
            parts.append("compiled")
        return ", ".join(parts) or None

    @abstractmethod
    def preprocess(self, image: Image.Image) -> torch.Tensor: ...

    @abstractmethod
    def tokenize(self, texts: Sequence[str]): ...

    def collate(self, images: list) -> torch.Tensor:
        """A batch from preprocessed images (a tensor for local models)."""
        return torch.stack(images)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """The model's float input from a uint8 batch; float pixels are taken as normalised."""
        if pixels.dtype != torch.uint8:
            return pixels
        return normalise_batch(pixels, self.pixel_mean, self.pixel_std)

    @abstractmethod
    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _text_features(self, tokens) -> torch.Tensor: ...

    def _autocast(self):
        if self.dtype == torch.float32:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _input(self, tensor: torch.Tensor) -> torch.Tensor:
        """A compiled graph is kept per kind of input tensor, and one made outside
        inference mode (tokens, float pixels) is of another kind than one made inside
        it: a compiled model gets every input as made inside (a copy; a small one)."""
        if self.compiled and not tensor.is_inference():
            return tensor.clone()
        return tensor

    @torch.inference_mode()
    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        if not isinstance(pixels, torch.Tensor):  # a remote model's batch of encoded images
            return F.normalize(self._image_features(pixels).float(), dim=-1)
        with self._autocast():
            features = self._image_features(self._input(self.normalise(pixels.to(self.device))))
        return F.normalize(features.float(), dim=-1).cpu()

    @torch.inference_mode()
    def embed_texts(self, tokens) -> torch.Tensor:
        if isinstance(tokens, list):  # a remote model takes the titles themselves
            return F.normalize(self._text_features(tokens).float(), dim=-1)
        if self.device.type == "cpu" and not self.compiled and _rows(tokens) > TEXT_CHUNK:
            return self._embed_texts_by_length(tokens)
        if isinstance(tokens, dict):
            tokens = {key: self._input(value.to(self.device)) for key, value in tokens.items()}
        else:
            tokens = self._input(tokens.to(self.device))
        with self._autocast():
            features = self._text_features(tokens)
        return F.normalize(features.float(), dim=-1).cpu()

    def _embed_texts_by_length(self, tokens) -> torch.Tensor:
        """A batch's titles in chunks of similar length, each cut to its longest title.

        A batch is padded to its longest title, and a CPU computes the padding too:
        in chunks of TEXT_CHUNK titles sorted by length, each trimmed to its own
        longest, a batch of titles of mixed lengths costs about half (the embedder's
        text tower ran 1.9 times as fast over real product titles). On a GPU a
        large batch pays better, and a compiled tower keeps its shapes: both take
        the batch whole. Padding sits after the text, and no token attends to it
        (masked, or a causal tower), so each vector is the one the whole batch gives.
        """
        lengths = _lengths(tokens)
        order = torch.argsort(lengths, stable=True)
        features = torch.empty(len(order), self.text_dims)
        for start in range(0, len(order), TEXT_CHUNK):
            rows = order[start : start + TEXT_CHUNK]
            width = max(int(lengths[rows].max()), 1)
            if isinstance(tokens, dict):
                chunk = {key: value[rows, :width] for key, value in tokens.items()}
            else:
                chunk = tokens[rows, :width]
            with self._autocast():
                features[rows] = self._text_features(chunk).float()
        return F.normalize(features, dim=-1)


#: Titles per text-tower call on a CPU (embed_texts): 8 and 16 ran equally fast over
#: real product titles, 32 a fifth slower.
TEXT_CHUNK = 16


def _rows(tokens) -> int:
    return len(tokens["input_ids"] if isinstance(tokens, dict) else tokens)


def _lengths(tokens) -> torch.Tensor:
    """Each title's length in tokens: up to its last token that is not padding (for a
    transformers tokenizer's batch, that its attention mask leaves out)."""
    return token_lengths(tokens["attention_mask"] if isinstance(tokens, dict) else tokens)


def batch_for_memory(budget: float, per_item: float, limit: int = 512, least: int = 8) -> int:
    """The largest power of two from `least` up to `limit` whose items fit in `budget` bytes."""
    batch = limit
    while batch > least and batch * per_item > budget:
        batch //= 2
    return batch


def combine(
    image: torch.Tensor | None,
    text: torch.Tensor,
    image_weight: float = 0.5,
    image_dims: int | None = None,
) -> torch.Tensor:
    """The stored embedding: [sqrt(w) * image, sqrt(1 - w) * text], unit length.

    Both halves are unit vectors, so the cosine of two combined embeddings is
    w * image cosine + (1 - w) * text cosine: with w = 0.5 (each half divided
    by sqrt(2)) it is their mean, which the match threshold (0.96 for PE-Core) applies to.
    Without an image (text-only listings) the image half is `image_dims` zeros
    and the text half is the whole unit vector.
    """
    if not 0.0 <= image_weight <= 1.0:
        raise ValueError(f"image_weight must be within [0, 1], not {image_weight}")
    text = F.normalize(text.float(), dim=-1)
    if image is None:
        if image_dims is None:
            raise ValueError("a text-only embedding needs image_dims")
        return torch.cat([torch.zeros(text.shape[0], image_dims), text], dim=-1)
    image = F.normalize(image.float(), dim=-1)
    return torch.cat([math.sqrt(image_weight) * image, math.sqrt(1 - image_weight) * text], -1)
