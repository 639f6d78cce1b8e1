"""Image preprocessing shared by the models: decode-safe RGB, resize, to uint8 pixels.

Per image (in the embedder's decode threads) only what differs per image is
done: RGB, crop and resize, as a (3, H, W) uint8 tensor. The resize is
torch's antialiased uint8 kernel, which matches PIL's bilinear and bicubic
resampling to within one level, runs 2.5-4.5x faster than PIL's here, and
stays on the calling thread. Any other torch op per image would start an
OpenMP thread team in every decode thread, and those threads compete with
the model's for the cores. So normalisation to the model's mean and std
happens once per batch (`normalise_batch`, called by
`EmbeddingModel.embed_images`), in the model's own threads.
"""

from __future__ import annotations

import functools
import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image, ImageCms, ImageOps

#: PIL filters that torch's antialiased uint8 resize reproduces.
_TORCH_MODES = {Image.Resampling.BILINEAR: "bilinear", Image.Resampling.BICUBIC: "bicubic"}


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright sRGB: EXIF rotation applied; an embedded colour profile applied (the
    colours a browser shows); palette, CMYK, grey (8 or 16 bits) and alpha converted.

    Transparent areas become white, the usual product-photo background.
    """
    # exif_transpose would copy even an upright image
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16"):
        # 16-bit grey (PNG, TIFF): PIL's conversion would clip at 255, turning it white
        image = Image.fromarray((np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    image = in_srgb(image)
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB") if image.mode != "RGB" else image


def in_srgb(image: Image.Image) -> Image.Image:
    """`image` with its embedded ICC profile (Display P3, Adobe RGB, a CMYK press
    profile...) applied, converted to sRGB; as it was where it has none, an sRGB one, or
    one LittleCMS cannot use.

    Shops differ in whether they keep a photo's profile: the same photo is served in
    P3 with its profile by one and converted to sRGB by another's CDN. Read without
    the profile, the P3 copy's colours are off: on three photos, EfficientNet-Lite0's
    vectors of the P3 copies were at cosine 0.990-0.995 to the sRGB copies', and at
    0.9987-0.9992 with the profile applied.
    """
    profile = image.info.get("icc_profile")
    if not profile or image.mode not in _PROFILED_MODES:
        return image
    transform = _to_srgb(profile, image.mode)
    if transform is None:
        return image
    return ImageCms.applyTransform(image, transform)


#: The modes an embedded profile is applied in, and the mode each becomes.
_PROFILED_MODES = {"RGB": "RGB", "RGBA": "RGBA", "CMYK": "RGB", "L": "RGB"}


@functools.lru_cache(maxsize=32)
def _to_srgb(profile: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """The transform from `profile` to sRGB for `mode`; None where it is not needed (an
    sRGB profile: every level within one of itself) or cannot be built. Shops serve
    most photos with one of a few profiles, so transforms are kept; without LittleCMS's
    per-transform cache, as the decode threads share them."""
    output = _PROFILED_MODES[mode]
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        transform = ImageCms.buildTransform(
            source,
            _SRGB,
            mode,
            output,
            ImageCms.Intent.PERCEPTUAL,
            flags=ImageCms.Flags.NOCACHE,
        )
    except (OSError, ValueError, ImageCms.PyCMSError):  # corrupt, or not for this mode
        return None
    if mode == output:
        probe = Image.fromarray(_PROBE[:, :, : len(mode)].copy())
        applied = np.asarray(ImageCms.applyTransform(probe, transform), dtype=np.int16)
        if np.abs(applied - _PROBE[:, :, : len(mode)]).max() <= 1:
            return None
    return transform


_SRGB = ImageCms.createProfile("sRGB")
#: Colours across the RGB cube (and an alpha channel): where a profile leaves all of them
#: as they are, it is sRGB in effect.
_PROBE = np.stack(
    [*np.meshgrid(*[np.linspace(0, 255, 8, dtype=np.uint8)] * 3, indexing="ij")]
    + [np.full((8, 8, 8), 255, np.uint8)],
    axis=-1,
).reshape(16, 32, 4)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) uint8 tensor of an RGB image (numpy only: no torch threads)."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1)))


def resized(image: Image.Image, size: tuple[int, int], resample, box=None) -> torch.Tensor:
    """(3, height, width) uint8 pixels of the RGB `image`'s `box` (left, top, right, bottom;
    the whole image by default) resized to `size` (width, height), antialiased as PIL would.
    """
    mode = _TORCH_MODES.get(resample)
    if mode is None:
        return to_tensor(image.resize(size, resample, box=box))
    left, top, right, bottom = box or (0, 0, *image.size)
    # (1, 3, H, W) over the image's own (H, W, 3) bytes: the channels-last layout
    # that torch's vectorised uint8 kernel takes.
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None, :, top:bottom, left:right]
    width, height = size
    return F.interpolate(pixels, size=(height, width), mode=mode, antialias=True)[0]


def normalise_batch(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """(B, 3, H, W) contiguous float32 from uint8 pixels: to [0, 1], minus mean, over std."""
    mean = torch.tensor(mean, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    pixels = pixels.to(torch.float32, memory_format=torch.contiguous_format)
    return pixels.sub_(mean * 255).div_(std * 255)


def squash(image: Image.Image, size: int, resample=Image.Resampling.BILINEAR):
    """Resize to size x size ignoring the aspect ratio (PE-Core's preprocessing)."""
    return resized(to_rgb(image), (size, size), resample)


def resize_center_crop(image: Image.Image, size: int, resample):
    """Shortest side to `size`, then the centre size x size crop (CLIP's preprocessing):
    the centred square of the image, resized."""
    image = to_rgb(image)
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return resized(image, (size, size), resample, box=(left, top, left + side, top + side))
