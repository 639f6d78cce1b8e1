"""`bikematch report`: one static HTML page of the clusters, for people, no server needed."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image

from bikematch.app.errors import UserError
from bikematch.core.database import connect

_QUERY = """
select
    clusters.cluster_id, clusters.name, clusters.shops, clusters.listings,
    clusters.min_price, clusters.max_price, clusters.price_spread, clusters.price_spread_pct,
    clusters.cheapest_shop, clusters.currency, clusters.usual_price_spread,
    offers.webshop, offers.name, offers.url, offers.image_url, offers.price, offers.currency,
    offers.similarity, offers.matched_via, offers.price_rank,
    offers.comparable_price, offers.comparable_currency, offers.availability,
    offers.score, matched.webshop, offers.price_outlier_reason
from bike_clusters as clusters
inner join bike_offers as offers on clusters.cluster_id = offers.cluster_id
left join scraped_bikes as matched on offers.matched_bike_id = matched.id
order by clusters.shops desc, clusters.price_spread desc nulls last, clusters.name,
    offers.price_rank nulls last, offers.webshop
"""

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { margin: 0 0 4px; } .meta { color: #666; margin-bottom: 16px; }
.controls button { margin-right: 8px; padding: 6px 12px; }
section.cluster { background: #fff; border: 1px solid #ddd; border-radius: 8px;
  margin: 12px 0; padding: 12px 16px; }
section.cluster h2 { font-size: 16px; margin: 0 0 4px; }
.facts { color: #555; margin-bottom: 8px; } .spread { font-weight: 600; color: #b00020; }
.offers { display: flex; flex-wrap: wrap; gap: 12px; }
.offer { width: 200px; border: 1px solid #eee; border-radius: 6px; padding: 8px; }
.offer img { width: 184px; height: 138px; object-fit: contain; background: #f4f4f4; }
.offer .shop { font-weight: 600; } .offer .price { font-size: 15px; }
.offer .stock, .offer .outlier { color: #b00020; }
.offer.cheapest { border-color: #2e7d32; box-shadow: 0 0 0 1px #2e7d32; }
.how { color: #777; font-size: 12px; }
"""

_SCRIPT = """
window.addEventListener('DOMContentLoaded', () => {
  const key = new URLSearchParams(location.search).get('sort');
  if (key) sortClusters(key);
});
function sortClusters(key) {
  const list = document.getElementById('clusters');
  const items = Array.from(list.querySelectorAll('section.cluster'));
  items.sort((a, b) => Number(b.dataset[key]) - Number(a.dataset[key]));
  items.forEach((item) => list.appendChild(item));
}
"""


def write_report(url: str, out_dir: Path, image_cache: Path | None = None) -> Path:
    """Write out_dir/index.html (and thumbnails); returns the page's path. A directory
    that cannot be written is a UserError (for `report` and the demo alike)."""
    try:
        return _write_report(url, Path(out_dir), image_cache)
    except OSError as exc:
        raise UserError(f"cannot write the report to {out_dir}: {exc.strerror or exc}") from exc


def _write_report(url: str, out_dir: Path, image_cache: Path | None) -> Path:
    thumbs = out_dir / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    with connect(url) as conn:
        rows = conn.execute(_QUERY).fetchall()
    clusters: dict = defaultdict(list)
    facts: dict = {}
    for row in rows:
        facts[row[0]] = row[1:11]
        clusters[row[0]].append(row[11:])
    multi = [cid for cid in facts if facts[cid][1] > 1]
    single = [cid for cid in facts if facts[cid][1] <= 1]
    sections = [_cluster_html(cid, facts[cid], clusters[cid], thumbs, image_cache) for cid in multi]
    unmatched = [
        _offer_html(offer, thumbs, image_cache, cheapest=False)
        for cid in single
        for offer in clusters[cid]
    ]
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>bikematch report</title><style>{_STYLE}</style><script>{_SCRIPT}</script></head>
<body>
<h1>bikematch report</h1>
<div class="meta">{len(facts)} products, {len(multi)} sold by more than one shop,
{sum(len(v) for v in clusters.values())} listings. Generated {generated}.</div>
<div class="controls">
  <button id="sort-spread" onclick="sortClusters('spread')">Sort by price spread</button>
  <button id="sort-size" onclick="sortClusters('size')">Sort by size</button>
</div>
<div id="clusters">{"".join(sections)}</div>
<h2 id="unmatched-title">Listings that matched nothing ({len(unmatched)})</h2>
<div id="unmatched" class="offers">{"".join(unmatched)}</div>
</body></html>
"""
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _cluster_html(cluster_id, facts, offers, thumbs: Path, image_cache) -> str:
    name, shops, listings, low, high, spread, spread_pct, cheapest, currency, usual = facts
    cards = "".join(
        _offer_html(offer, thumbs, image_cache, cheapest=offer[8] == 1) for offer in offers
    )
    spread_text = f"{currency or ''} {spread}" if spread is not None else "n/a"
    if any(offer[14] for offer in offers):
        usual_text = f"{currency or ''} {usual}" if usual is not None else "n/a"
        spread_text += f"; {usual_text} without the flagged prices"
    return f"""
<section class="cluster" data-spread="{float(spread or 0)}" data-size="{listings}"
  data-cluster="{cluster_id}">
  <h2>{escape(name or "")}</h2>
  <div class="facts">{shops} shops · {escape(currency or "")} {low} – {high} ·
    spread <span class="spread">{escape(spread_text)}</span>
    ({spread_pct or 0}%) · cheapest at {escape(cheapest or "-")}</div>
  <div class="offers">{cards}</div>
</section>"""


def _offer_html(offer, thumbs: Path, image_cache, cheapest: bool) -> str:
    shop, title, url, image_url, price, currency, similarity, matched_via, _rank = offer[:9]
    comparable_price, comparable_currency, availability, score, matched_shop, outlier = offer[9:]
    how = escape(_why(matched_via, similarity, score, matched_shop))
    source = _thumbnail(image_url, thumbs, image_cache) if _web_link(image_url) else ""
    image = (
        f'<img src="{escape(source)}" alt="{escape(title)}" onload="this.dataset.loaded=1">'
        if source
        else ""
    )
    price_text = f"{currency or ''} {price}" if price is not None else "price unknown"
    if price is not None and currency != comparable_currency:
        price_text += (
            f" (≈ {comparable_currency} {comparable_price})"
            if comparable_price is not None
            else " (no exchange rate: not compared)"
        )
    return f"""
<div class="offer{" cheapest" if cheapest else ""}">
  {image}
  <div class="shop">{escape(shop)}</div>
  <div class="title"><a href="{escape(_web_link(url))}">{escape(title)}</a></div>
  <div class="price">{escape(price_text)}</div>
  {'<div class="stock">out of stock</div>' if availability == "OutOfStock" else ""}
  {f'<div class="outlier">price flagged: {escape(outlier)}</div>' if outlier else ""}
  <div class="how">{how}</div>
</div>"""


def _why(matched_via: str, similarity, score, matched_shop) -> str:
    """Why the offer is in its cluster, in a few words."""
    if matched_via == "anchor":
        return "anchor shop's listing: seeds the product"
    if matched_via == "seed":
        return "seeds the product (no anchor listing matched)"
    if matched_via == "ambiguous":
        return (
            "alone: it fits two different products, leaves out what tells them apart,"
            " and its price is not clearly nearer to one (`bikematch link` places it)"
        )
    kind = matched_via.split("+")[0].split("-")[0]  # embedding+codes-price: embedding
    reasons = {
        "gtin": f"same GTIN as {matched_shop}'s listing",
        "link": f"linked by hand to {matched_shop}'s listing",
    }
    text = reasons.get(kind) or f"matched {matched_shop}'s listing"
    if score is not None:
        text += f" · score {score:.3f}"
    if similarity is not None:
        text += f" (similarity {similarity:.3f})"
    if matched_via != kind:
        text += f" · {matched_via}"
    return text


def _web_link(url: str | None) -> str:
    """The URL where it is an http(s) one; "" for the rest (javascript:, data:, junk):
    listings come from shops' pages and imported files, and a report is opened by people."""
    try:
        return url if url and urlsplit(url).scheme.lower() in ("http", "https") else ""
    except ValueError:
        return ""


def _thumbnail(image_url: str, thumbs: Path, image_cache: Path | None) -> str:
    """A local thumbnail when the image is in the embedder's cache, else the URL itself."""
    from embedder.decode import DecodeError, decode_image
    from embedder.fetch import cached_image

    data = cached_image(image_cache, image_url) if image_cache else None
    if data is None:
        return image_url
    name = hashlib.sha256(image_url.encode()).hexdigest()[:24] + ".jpg"
    target = thumbs / name
    if not target.exists():
        try:
            thumb = decode_image(data, _thumbnail_of, target_size=max(THUMBNAIL))
            thumb.save(target, format="JPEG", quality=80)
        except (DecodeError, OSError):  # not an image, or the thumbnail cannot be written
            return image_url
    return f"thumbs/{name}"


#: The largest a thumbnail gets (width, height): the offer card's image box at 2x.
THUMBNAIL = (368, 276)


def _thumbnail_of(image: Image.Image) -> Image.Image:
    """The photo upright, in sRGB, on white where transparent (as embedded), made small."""
    from perception_models.preprocess import to_rgb  # torch: only where thumbnails are made

    image = to_rgb(image)
    image.thumbnail(THUMBNAIL)
    return image
