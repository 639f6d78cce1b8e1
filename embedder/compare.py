"""How closely two models, backends or precisions agree on the same listings: a hosted
backend against a local model, bf16 against float32."""

from __future__ import annotations

import asyncio

import numpy as np
import torch

from bikematch.core.database import connect
from embedder.decode import DecodeError, decode_image
from embedder.fetch import FetchError, ImageFetcher


class CompareError(ValueError):
    """Two models that cannot be compared here (the message says why)."""


def sample_listings(url, sample: int, fetch_settings, models) -> tuple[list[str], list[list]]:
    """Titles of up to `sample` listings with a readable image, and their images decoded
    for each model as the embedding job decodes them; CompareError where there is none."""
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
    titles, decoded = [], [[] for _ in models]
    for (title, _), data in zip(rows, images, strict=True):
        if isinstance(data, FetchError | BaseException):
            continue
        try:
            # as the embedding job decodes them (JPEGs at the model's draft scale)
            pixels = [decode_image(data, m.preprocess, m.image_size) for m in models]
        except DecodeError:
            continue
        for per_model, image in zip(decoded, pixels, strict=True):
            per_model.append(image)
        titles.append(title)
    if not titles:
        raise CompareError(f"none of the {len(rows)} sampled listings' images could be read")
    return titles, decoded


def compare_models(url, first, second, sample: int, fetch_settings) -> list[str]:
    """Lines reporting how far the two models' vectors agree on `sample` listings;
    CompareError where there is nothing to compare."""
    if (first.image_dims, first.text_dims) != (second.image_dims, second.text_dims):
        raise CompareError(
            f"{first.name} and {second.name} have different dimensions "
            f"({first.image_dims}/{first.text_dims} vs {second.image_dims}/{second.text_dims}): "
            "their vectors cannot be compared"
        )
    titles, (first_pixels, second_pixels) = sample_listings(
        url, sample, fetch_settings, (first, second)
    )
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


def check_precision(url, model, sample: int, fetch_settings) -> list[str]:
    """Whether bf16 autocast is good enough and faster for `model` on `sample` of the
    catalogue's listings: a line saying what was measured and which --dtype to use."""
    from perception_models.precision import measure_precision

    titles, (pixels,) = sample_listings(url, sample, fetch_settings, (model,))
    if len(titles) < 2:
        raise CompareError("fewer than 2 listings with a readable image to measure on")
    check = measure_precision(model, model.collate(pixels), model.tokenize(titles))
    return [f"{model.name}: {check.describe()}"]
