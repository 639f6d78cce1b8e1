"""Search listings by photo or text with a registered model, through match_bikes()."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import torch
from pgvector import HalfVector
from PIL import Image

from bikematch.database import connect
from perception_models import combine


def query_embedding(model, image: str | None = None, text: str | None = None) -> torch.Tensor:
    """A combined [image, text] query with only the given half set (the other is zeros)."""
    if image is not None:
        picture = Image.open(io.BytesIO(_read_image(image)))
        vector = model.embed_images(model.collate([model.preprocess(picture)]))
        return torch.cat([vector, torch.zeros(1, model.text_dims)], dim=-1)[0]
    vector = model.embed_texts(model.tokenize([text]))
    return combine(None, vector, image_dims=model.image_dims)[0]


def _read_image(source: str) -> bytes:
    if source.startswith(("http://", "https://")):
        from embedder.fetch import FetchSettings, ImageFetcher

        async def fetch() -> bytes:
            async with ImageFetcher(FetchSettings(cache_dir=None)) as fetcher:
                return await fetcher.fetch(source)

        return asyncio.run(fetch())
    return Path(source).read_bytes()


#: The image weight the stored embeddings were made with (the embedder's default).
STORED_IMAGE_WEIGHT = 0.5


def search_listings(url: str, model, *, image=None, text=None, count=10, threshold=0.0):
    """Nearest listings as (shop, name, price, currency, url, similarity).

    A photo or a text fills one half of the query, so the combined cosine is
    that half's cosine times sqrt(its weight); the similarity returned is the
    half's own cosine (the threshold applies to it too).
    """
    query = query_embedding(model, image=image, text=text)
    weight = STORED_IMAGE_WEIGHT if image is not None else 1 - STORED_IMAGE_WEIGHT
    scale = weight**0.5
    with connect(url) as conn:
        rows = conn.execute(
            "select webshop, name, price, currency, url, similarity"
            " from match_bikes(%s, %s, %s, %s)",
            (HalfVector(query.numpy()), threshold * scale, count, model.name),
        ).fetchall()
    return [(*row[:5], row[5] / scale) for row in rows]
