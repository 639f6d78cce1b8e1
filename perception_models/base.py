"""The interface every embedding model offers the embedder."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from perception_models.preprocess import normalise_batch


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

    @torch.inference_mode()
    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        if not isinstance(pixels, torch.Tensor):  # a remote model's batch of encoded images
            return F.normalize(self._image_features(pixels).float(), dim=-1)
        with self._autocast():
            features = self._image_features(self.normalise(pixels.to(self.device)))
        return F.normalize(features.float(), dim=-1).cpu()

    @torch.inference_mode()
    def embed_texts(self, tokens) -> torch.Tensor:
        if isinstance(tokens, list):  # a remote model takes the titles themselves
            return F.normalize(self._text_features(tokens).float(), dim=-1)
        if isinstance(tokens, dict):
            tokens = {key: value.to(self.device) for key, value in tokens.items()}
        else:
            tokens = tokens.to(self.device)
        with self._autocast():
            features = self._text_features(tokens)
        return F.normalize(features.float(), dim=-1).cpu()


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
