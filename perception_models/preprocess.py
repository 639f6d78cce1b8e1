"""Image preprocessing shared by the models: decode-safe RGB, resize, normalise."""

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


def normalise(image: Image.Image, mean, std) -> torch.Tensor:
    """(3, H, W) float32 tensor from an RGB image: to [0, 1], minus mean, over std."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (tensor - mean) / std


def squash(image: Image.Image, size: int, mean, std, resample=Image.Resampling.BILINEAR):
    """Resize to size x size ignoring the aspect ratio (PE-Core's preprocessing)."""
    return normalise(to_rgb(image).resize((size, size), resample), mean, std)


def resize_center_crop(image: Image.Image, size: int, mean, std, resample):
    """Shortest side to `size`, then the centre size x size crop (CLIP's preprocessing)."""
    image = to_rgb(image)
    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize(
        (max(size, round(width * scale)), max(size, round(height * scale))), resample
    )
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    return normalise(resized.crop((left, top, left + size, top + size)), mean, std)
