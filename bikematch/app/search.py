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


def half_query(model, vector: torch.Tensor, kind: str) -> torch.Tensor:
    """The combined [image, text] query with only `kind`'s half ('image' or 'text') set
    to `vector` (one unit vector), the other half zeros."""
    if kind == "image":
        return torch.cat([vector, torch.zeros(model.text_dims)])
    return torch.cat([torch.zeros(model.image_dims), vector])


def query_embedding(model, image: bytes | None = None, text: str | None = None) -> torch.Tensor:
    """A combined [image, text] query with only the given half set (the other is zeros).

    `image` is a photo's bytes (`read_photo`), decoded as the embedder decodes a
    listing's, so a listing's own photo finds it at a cosine of about 1.
    """
    if image is not None:
        pixels = decode_image(image, model.preprocess, model.image_size)
        return half_query(model, model.embed_images(model.collate([pixels]))[0], "image")
    return half_query(model, model.embed_texts(model.tokenize([text]))[0], "text")


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


def half_weight(kind: str) -> float:
    """The weight of `kind`'s half ('image' or 'text') in the stored vectors."""
    return STORED_IMAGE_WEIGHT if kind == "image" else 1 - STORED_IMAGE_WEIGHT


def search_listings(url: str, model, *, image=None, text=None, count=10, threshold=0.0):
    """Nearest listings (`nearest` rows, gone ones too) to a photo's bytes (`read_photo`)
    or a text."""
    query = query_embedding(model, image=image, text=text)
    kind = "image" if image is not None else "text"
    return nearest(url, model.name, query, kind, count, threshold=threshold, on_sale_only=False)


_NEAREST = """
    select found.webshop, found.name, found.price, found.currency, found.url,
        found.image_url, found.similarity,
        case when listing.last_seen_at < latest.crawled_at - make_interval(secs => %(grace)s)
            then listing.last_seen_at end as gone_since,
        {cluster}
    from match_bikes(%(query)s, %(threshold)s, %(candidates)s, %(model)s) as found
    inner join scraped_bikes as listing on found.bike_id = listing.id
    cross join lateral (
        select max(last_seen_at) as crawled_at from scraped_bikes
        where webshop = found.webshop
    ) as latest
    {join}
    where (not %(on_sale_only)s
            or listing.last_seen_at >= latest.crawled_at - make_interval(secs => %(grace)s))
        and (%(shops)s::text[] is null or found.webshop = any(%(shops)s::text[]))
    order by found.similarity desc, found.webshop, found.url
    limit %(count)s
"""
#: With the marts built: each listing's cluster and the cluster's cheapest offer.
_NEAREST_CLUSTERED = _NEAREST.format(
    cluster="offer.cluster_id, cluster.cheapest_shop, cluster.cheapest_url,"
    " cluster.min_price, cluster.currency as cheapest_currency, cluster.shops",
    join="left join bike_offers as offer on found.bike_id = offer.bike_id"
    " left join bike_clusters as cluster on offer.cluster_id = cluster.cluster_id",
)
_NEAREST_UNCLUSTERED = _NEAREST.format(
    cluster="null::text, null::text, null::text, null::numeric, null::text, null::bigint",
    join="",
)


class NoVectors(LookupError):
    """Nothing was ever embedded with the model searched with."""


def nearest(
    url: str,
    model_name: str,
    query: torch.Tensor,
    kind: str,
    count: int,
    *,
    threshold: float = 0.0,
    shops: list[str] | None = None,
    on_sale_only: bool = True,
) -> list[dict]:
    """The `count` listings nearest to a combined query with only `kind`'s half set
    (`half_query`), optionally of some shops only, each with its cluster and the
    cluster's cheapest offer (the answer an app shows).

    A photo or a text fills one half of the query, so the combined cosine is that
    half's cosine times sqrt(its weight); `similarity` is the half's own cosine (the
    threshold applies to it too). On sale: seen within the clustering's
    `listing_grace_hours` of its shop's latest crawl; `gone_since` is when a listing
    that is not was last seen (with `on_sale_only`, those are left out). Raises
    NoVectors for a model nothing was embedded with (asked first: match_bikes says so
    too, but only where the plan runs it, which over no listings it need not).
    """
    scale = half_weight(kind) ** 0.5
    grace_hours = float(dbt_project_vars().get("listing_grace_hours", 36))
    params = {
        "query": HalfVector(query.numpy()),
        "threshold": threshold * scale,
        # Gone listings and other shops' are dropped after the index search: ask for more.
        "candidates": min(max(count * 5, 50), 1000),
        "model": model_name,
        "grace": grace_hours * 3600,
        "on_sale_only": on_sale_only,
        "shops": shops,
        "count": count,
    }
    with connect(url) as conn:
        registered, clustered = conn.execute(
            "select exists (select from embedding_models where name = %s),"
            " to_regclass('bike_offers') is not null"
            " and to_regclass('bike_clusters') is not null",
            (model_name,),
        ).fetchone()
        if not registered:
            raise NoVectors(model_name)
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
            "gone_since": gone_since,
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
            gone_since,
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
