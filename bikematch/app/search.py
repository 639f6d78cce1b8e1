"""Search listings by photo or text with a registered model, through match_bikes()."""

from __future__ import annotations

import asyncio
from pathlib import Path

import torch
from pgvector import HalfVector

from bikematch.app.clusters import dbt_project_vars
from bikematch.app.errors import UserError
from bikematch.core.database import connect
from embedder.decode import decode_image
from embedder.fetch import FetchSettings, ImageFetcher
from perception_models import combine


def query_embedding(model, image: bytes | None = None, text: str | None = None) -> torch.Tensor:
    """A combined [image, text] query with only the given half set (the other is zeros).

    `image` is a photo's bytes (`read_photo`), decoded as the embedder decodes a
    listing's, so a listing's own photo finds it at a cosine of about 1.
    """
    if image is not None:
        pixels = decode_image(image, model.preprocess, model.image_size)
        vector = model.embed_images(model.collate([pixels]))
        return torch.cat([vector, torch.zeros(1, model.text_dims)], dim=-1)[0]
    vector = model.embed_texts(model.tokenize([text]))
    return combine(None, vector, image_dims=model.image_dims)[0]


def read_photo(source: str, fetch: FetchSettings | None = None) -> bytes:
    """A query photo's bytes, from a file or an http(s) URL (fetched as the embedder
    fetches, with `fetch`'s settings), checked to be an image. Raises OSError,
    FetchError or DecodeError."""
    if source.startswith(("http://", "https://")):

        async def fetched() -> bytes:
            async with ImageFetcher(fetch or FetchSettings()) as fetcher:
                return await fetcher.fetch(source)

        data = asyncio.run(fetched())
    else:
        data = Path(source).read_bytes()
    decode_image(data, lambda image: None)
    return data


#: The image weight the stored embeddings were made with (the embedder's default).
STORED_IMAGE_WEIGHT = 0.5


def search_listings(url: str, model, *, image=None, text=None, count=10, threshold=0.0):
    """Nearest listings as (shop, name, price, currency, url, similarity, gone_since);
    `image`: a photo's bytes (`read_photo`), or `text`.

    A photo or a text fills one half of the query, so the combined cosine is
    that half's cosine times sqrt(its weight); the similarity returned is the
    half's own cosine (the threshold applies to it too). gone_since: when a listing
    its shop no longer lists was last seen (not seen within the clustering's
    `listing_grace_hours` of its shop's latest crawl), else None.
    """
    query = query_embedding(model, image=image, text=text)
    weight = STORED_IMAGE_WEIGHT if image is not None else 1 - STORED_IMAGE_WEIGHT
    scale = weight**0.5
    grace_hours = float(dbt_project_vars().get("listing_grace_hours", 36))
    with connect(url) as conn:
        rows = conn.execute(
            "select found.webshop, found.name, found.price, found.currency, found.url,"
            " found.similarity, case when listing.last_seen_at < latest.crawled_at"
            " - make_interval(secs => %s) then listing.last_seen_at end"
            " from match_bikes(%s, %s, %s, %s) as found"
            " inner join scraped_bikes as listing on found.bike_id = listing.id"
            " cross join lateral (select max(last_seen_at) as crawled_at from scraped_bikes"
            " where webshop = found.webshop) as latest"
            " order by found.similarity desc, found.webshop, found.url",
            (grace_hours * 3600, HalfVector(query.numpy()), threshold * scale, count, model.name),
        ).fetchall()
    return [(*row[:5], row[5] / scale, row[6]) for row in rows]


_NEAREST = """
    select found.webshop, found.name, found.price, found.currency, found.url,
        found.image_url, found.similarity, {cluster}
    from match_bikes(%(query)s, 0, %(candidates)s, %(model)s) as found
    inner join scraped_bikes as listing on found.bike_id = listing.id
    cross join lateral (
        select max(last_seen_at) as crawled_at from scraped_bikes
        where webshop = found.webshop
    ) as latest
    {join}
    where listing.last_seen_at >= latest.crawled_at - make_interval(secs => %(grace)s)
        and (%(shops)s::text[] is null or found.webshop = any(%(shops)s::text[]))
    order by found.similarity desc, found.webshop, found.url
    limit %(count)s
"""
#: With the marts built: each listing's cluster and the cluster's cheapest offer.
_NEAREST_CLUSTERED = _NEAREST.format(
    cluster="offer.cluster_id, cluster.cheapest_shop, cluster.cheapest_url,"
    " cluster.min_price, cluster.currency, cluster.shops",
    join="left join bike_offers as offer on found.bike_id = offer.bike_id"
    " left join bike_clusters as cluster on offer.cluster_id = cluster.cluster_id",
)
_NEAREST_UNCLUSTERED = _NEAREST.format(
    cluster="null::text, null::text, null::text, null::numeric, null::text, null::bigint",
    join="",
)


def nearest_on_sale(
    url: str,
    model_name: str,
    query: torch.Tensor,
    weight: float,
    count: int,
    shops: list[str] | None = None,
) -> list[dict]:
    """The `count` listings on sale nearest to a combined query that has one half set
    (`weight`: that half's weight in the stored vectors), optionally of some shops only,
    each with its cluster and the cluster's cheapest offer (the answer an app shows).

    "On sale": seen in its shop's latest crawl, within the clustering's
    `listing_grace_hours`. similarity is the query half's own cosine.
    """
    scale = weight**0.5
    grace_hours = float(dbt_project_vars().get("listing_grace_hours", 36))
    params = {
        "query": HalfVector(query.numpy()),
        # Gone listings and other shops' are dropped after the index search: ask for more.
        "candidates": min(max(count * 5, 50), 1000),
        "model": model_name,
        "grace": grace_hours * 3600,
        "shops": shops,
        "count": count,
    }
    with connect(url) as conn:
        clustered = conn.execute(
            "select to_regclass('bike_offers') is not null"
            " and to_regclass('bike_clusters') is not null"
        ).fetchone()[0]
        rows = conn.execute(
            _NEAREST_CLUSTERED if clustered else _NEAREST_UNCLUSTERED, params
        ).fetchall()

    def number(value):
        return None if value is None else float(value)

    return [
        {
            "shop": shop,
            "title": name,
            "price": number(price),
            "currency": currency,
            "url": listing_url,
            "image_url": image_url,
            "similarity": round(similarity / scale, 6),
            "cluster_id": None if cluster_id is None else str(cluster_id),
            "shops_in_cluster": cluster_shops,
            "cheapest": None
            if cheapest_shop is None
            else {
                "shop": cheapest_shop,
                "url": cheapest_url,
                "price": number(cheapest_price),
                "currency": cheapest_currency,
            },
        }
        for (
            shop,
            name,
            price,
            currency,
            listing_url,
            image_url,
            similarity,
            cluster_id,
            cheapest_shop,
            cheapest_url,
            cheapest_price,
            cheapest_currency,
            cluster_shops,
        ) in rows
    ]


def require_vectors(url: str, model_name: str) -> None:
    """A UserError, naming the models that have vectors, where this one has none (said
    before the model loads: its weights may not even be on this machine)."""
    with connect(url) as conn:
        models = [
            name
            for (name,) in conn.execute(
                "select name from embedding_models as model where exists"
                " (select from vector_storage as vector where vector.model = model.name)"
                " order by name"
            )
        ]
    if model_name not in models:
        have = f"vectors exist for {', '.join(models)}" if models else "no model has vectors yet"
        raise UserError(
            f"no vectors for model {model_name} ({have}): run `bikematch embed --model"
            f" {model_name}` first, or search with --model"
        )
