"""How closely two models or backends agree on the same listings (a hosted backend
against a local model, say)."""

from __future__ import annotations

import asyncio

import numpy as np
import torch

from bikematch.core.database import connect
from embedder.decode import DecodeError, decode_image
from embedder.fetch import FetchError, ImageFetcher


class CompareError(ValueError):
    """Two models that cannot be compared here (the message says why)."""


def compare_models(url, first, second, sample: int, fetch_settings) -> list[str]:
    """Lines reporting how far the two models' vectors agree on `sample` listings;
    CompareError where there is nothing to compare."""
    if (first.image_dims, first.text_dims) != (second.image_dims, second.text_dims):
        raise CompareError(
            f"{first.name} and {second.name} have different dimensions "
            f"({first.image_dims}/{first.text_dims} vs {second.image_dims}/{second.text_dims}): "
            "their vectors cannot be compared"
        )
    with connect(url) as conn:
        rows = conn.execute(
            "select name, image_url from scraped_bikes where image_url is not null"
            " order by md5(id::text) limit %s",
            (sample,),
        ).fetchall()
    if not rows:
        raise CompareError("no listings with an image to compare on")

    async def fetch_all():
        async with ImageFetcher(fetch_settings) as fetcher:
            results = await asyncio.gather(
                *(fetcher.fetch(image) for _, image in rows), return_exceptions=True
            )
        return results

    images = asyncio.run(fetch_all())
    titles, first_pixels, second_pixels = [], [], []
    for (title, _), data in zip(rows, images, strict=True):
        if isinstance(data, FetchError | BaseException):
            continue
        try:
            # as the embedding job decodes them (JPEGs at the model's draft scale)
            pixels = [decode_image(data, m.preprocess, m.image_size) for m in (first, second)]
        except DecodeError:
            continue
        first_pixels.append(pixels[0])
        second_pixels.append(pixels[1])
        titles.append(title)
    if not titles:
        raise CompareError(f"none of the {len(rows)} sampled listings' images could be read")
    image_cos = _cosines(
        first.embed_images(first.collate(first_pixels)),
        second.embed_images(second.collate(second_pixels)),
    )
    text_cos = _cosines(
        first.embed_texts(first.tokenize(titles)), second.embed_texts(second.tokenize(titles))
    )
    lines = [f"{first.name} vs {second.name} on {len(titles)} listings:"]
    for kind, values in (("image", image_cos), ("text", text_cos)):
        lines.append(
            f"  {kind}: mean cosine {values.mean():.4f}, min {values.min():.4f}, "
            f"{(values > 0.95).mean():.0%} above 0.95"
        )
    return lines


def _cosines(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return (a * b).sum(dim=-1).numpy()
