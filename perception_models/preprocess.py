"""Image preprocessing shared by the models: decode-safe RGB, resize, to uint8 pixels.

Per image (in the embedder's decode threads) only what differs per image is
done: RGB, resize, crop, and a (3, H, W) uint8 tensor. Normalisation to the
model's mean and std happens once per batch (`normalise_batch`, called by
`EmbeddingModel.embed_images`), in the model's own threads: a torch op per
image would start an OpenMP thread team in every decode thread, threads that
compete with the model's for the cores.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB: EXIF rotation applied; palette, CMYK, grey and alpha converted.

    Transparent areas become white, the usual product-photo background.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB") if image.mode != "RGB" else image


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) uint8 tensor of an RGB image (numpy only: no torch threads)."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1)))


def normalise_batch(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """(B, 3, H, W) float32 from uint8 pixels: to [0, 1], minus mean, over std."""
    mean = torch.tensor(mean, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    return pixels.float().sub_(mean * 255).div_(std * 255)


def squash(image: Image.Image, size: int, resample=Image.Resampling.BILINEAR):
    """Resize to size x size ignoring the aspect ratio (PE-Core's preprocessing)."""
    return to_tensor(to_rgb(image).resize((size, size), resample))


def resize_center_crop(image: Image.Image, size: int, resample):
    """Shortest side to `size`, then the centre size x size crop (CLIP's preprocessing)."""
    image = to_rgb(image)
    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize(
        (max(size, round(width * scale)), max(size, round(height * scale))), resample
    )
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    return to_tensor(resized.crop((left, top, left + size, top + size)))
