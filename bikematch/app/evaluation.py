"""Scoring a clustering against labelled truth: pairwise and B-cubed precision/recall."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    bcubed_precision: float
    bcubed_recall: float

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0


def score(predicted: Mapping[Hashable, Hashable], truth: Mapping[Hashable, Hashable]) -> Scores:
    """Compare cluster labels with true labels over the items both know."""
    items = [item for item in truth if item in predicted]

    def pairs(counter: Counter) -> int:
        return sum(n * (n - 1) // 2 for n in counter.values())

    by_cluster = Counter(predicted[i] for i in items)
    by_truth = Counter(truth[i] for i in items)
    both = Counter((predicted[i], truth[i]) for i in items)
    predicted_pairs, true_pairs, common = pairs(by_cluster), pairs(by_truth), pairs(both)
    bcubed_p = sum(both[(predicted[i], truth[i])] / by_cluster[predicted[i]] for i in items)
    bcubed_r = sum(both[(predicted[i], truth[i])] / by_truth[truth[i]] for i in items)
    n = len(items) or 1
    return Scores(
        precision=common / predicted_pairs if predicted_pairs else 1.0,
        recall=common / true_pairs if true_pairs else 1.0,
        bcubed_precision=bcubed_p / n,
        bcubed_recall=bcubed_r / n,
    )


@dataclass
class TruthReport:
    scores: Scores
    listed: int
    missing: int
    #: Listings scored: the labelled ones found, or with a complete truth all of their shops'.
    scored: int
    false_merges: list[tuple]
    misses: list[tuple]

    def as_json(self) -> dict:
        return {
            "precision": round(self.scores.precision, 6),
            "recall": round(self.scores.recall, 6),
            "f1": round(self.scores.f1, 6),
            "bcubed_precision": round(self.scores.bcubed_precision, 6),
            "bcubed_recall": round(self.scores.bcubed_recall, 6),
        }

    def lines(self) -> list[str]:
        s = self.scores
        out = [
            f"{self.listed} labelled listings ({self.missing} not found in the database)"
            + (
                f"; scored with all {self.scored} listings of their shops"
                if self.scored != self.listed - self.missing
                else ""
            ),
            f"pairwise precision {s.precision:.4f}, recall {s.recall:.4f}, F1 {s.f1:.4f}",
            f"B-cubed precision {s.bcubed_precision:.4f}, recall {s.bcubed_recall:.4f}",
        ]
        for title, rows in (
            ("worst false merges", self.false_merges),
            ("worst misses", self.misses),
        ):
            if rows:
                out.append(f"{title}:")
                out.extend(
                    f"  {similarity if similarity is None else f'{similarity:.3f}'}  "
                    f"{a!r}  <->  {b!r}"
                    for similarity, a, b in rows
                )
        return out


#: The column a truth of labelled listings names each listing's product by.
PRODUCT_COLUMNS = ("product_id", "product", "cluster_id", "cluster", "label", "group")


def read_truth(path) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """Pairs ((webshop_a, url_a), (webshop_b, url_b)) from a labelled CSV: either of
    pairs (webshop_a, url_a, webshop_b, url_b: every listed pair matches) or of
    listings labelled with their product (webshop, url, product_id: listings of one
    product match). A listing its product has alone is paired with itself: it is
    labelled, and matches nothing. Listed pairs are taken as they are (as the public
    benchmarks score them); a product's listings make every pair among them."""
    import csv
    from pathlib import Path

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 CSV file of labelled pairs") from None
    try:
        delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|#").delimiter
    except csv.Error:  # one column, say: the column check below names what is missing
        delimiter = ","
    rows = csv.DictReader(text.splitlines(), delimiter=delimiter)
    columns = set(rows.fieldnames or [])
    pair_columns = ("webshop_a", "url_a", "webshop_b", "url_b")
    product = next((name for name in PRODUCT_COLUMNS if name in columns), None)
    if set(pair_columns) <= columns:
        wanted = pair_columns
    elif {"webshop", "url"} <= columns and product:
        wanted = ("webshop", "url", product)
    else:
        raise ValueError(
            f"{path}: needs columns {', '.join(sorted(pair_columns))} (labelled pairs), or"
            " webshop, url and product_id (each listing labelled with its product)"
        )
    records = []
    for line, r in enumerate(rows, start=2):
        fields = [r[name] for name in wanted]
        if any(value is None for value in fields):
            raise ValueError(f"{path}: row {line} has fewer than the header's fields")
        records.append(fields)
    if wanted == pair_columns:
        return [((a_shop, a_url), (b_shop, b_url)) for a_shop, a_url, b_shop, b_url in records]
    groups: dict[str, list[tuple[str, str]]] = {}
    for shop, url, label in records:
        if label.strip():
            groups.setdefault(label.strip(), []).append((shop, url))
    pairs = []
    for listings in groups.values():
        pairs += [(a, b) for i, a in enumerate(listings) for b in listings[i + 1 :]]
        if len(listings) == 1:
            pairs.append((listings[0], listings[0]))
    return pairs


def evaluate_truth(conn, pairs, model: str, worst: int = 10, complete: bool = False) -> TruthReport:
    """Score master_bikes against labelled pairs; cross-shop pairs only.

    Scored are the listings the pairs name, or with `complete` (the pairs are
    every match among their shops' listings, as in the public benchmarks) every
    listing of those shops: merging one that no pair names is then a false merge
    too, one a partial labelling could not see.
    """
    listed = sorted({key for pair in pairs for key in pair})
    scored = listed
    if complete:
        shops = sorted({shop for shop, _ in listed})
        scored = conn.execute(
            "select webshop, url from scraped_bikes where webshop = any(%s)", (shops,)
        ).fetchall()
    rows = conn.execute(
        """
        select listing.webshop, listing.url, listing.id, listing.name, master.cluster_id
        from unnest(%s::text[], %s::text[]) as wanted (webshop, url)
        inner join scraped_bikes as listing using (webshop, url)
        left join master_bikes as master on listing.id = master.bike_id
        """,
        ([k[0] for k in scored], [k[1] for k in scored]),
    ).fetchall()
    found = {(shop, url): (bike_id, name, cluster) for shop, url, bike_id, name, cluster in rows}
    # Listings never clustered (no vector) stand alone.
    cluster_of = {key: value[2] or ("alone", key) for key, value in found.items()}

    def ordered(a, b):
        return (a, b) if a <= b else (b, a)

    truth_pairs = {ordered(a, b) for a, b in pairs if a in found and b in found and a[0] != b[0]}
    members: dict = {}
    for key, cluster in cluster_of.items():
        members.setdefault(cluster, []).append(key)
    predicted_pairs = {
        ordered(a, b)
        for group in members.values()
        for i, a in enumerate(group)
        for b in group[i + 1 :]
        if a[0] != b[0]
    }
    common = len(truth_pairs & predicted_pairs)
    precision = common / len(predicted_pairs) if predicted_pairs else 1.0
    recall = common / len(truth_pairs) if truth_pairs else 1.0

    # B-cubed over the listed listings: truth clusters are the labelled pairs' components.
    parent = {key: key for key in found}

    def root(key):
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for a, b in truth_pairs:
        parent[root(a)] = root(b)
    bcubed = score(cluster_of, {key: root(key) for key in found})

    def with_similarity(keys_pairs):
        if not keys_pairs:
            return []
        left = [found[a][0] for a, _ in keys_pairs]
        right = [found[b][0] for _, b in keys_pairs]
        result = conn.execute(
            """
            select pair.position, 1 - (a.embedding <=> b.embedding)
            from unnest(%s::uuid[], %s::uuid[]) with ordinality as pair (a_id, b_id, position)
            left join vector_storage as a on a.bike_id = pair.a_id and a.model = %s
            left join vector_storage as b on b.bike_id = pair.b_id and b.model = %s
            """,
            (left, right, model, model),
        ).fetchall()
        similarity = {position: value for position, value in result}
        return [
            (similarity.get(i + 1), found[a][1], found[b][1]) for i, (a, b) in enumerate(keys_pairs)
        ]

    false_merges = sorted(
        with_similarity(sorted(predicted_pairs - truth_pairs)), key=lambda row: -(row[0] or 0)
    )[:worst]
    misses = sorted(
        with_similarity(sorted(truth_pairs - predicted_pairs)), key=lambda row: -(row[0] or 0)
    )[:worst]
    return TruthReport(
        scores=Scores(precision, recall, bcubed.bcubed_precision, bcubed.bcubed_recall),
        listed=len(listed),
        missing=sum(1 for key in listed if key not in found),
        scored=len(found),
        false_merges=false_merges,
        misses=misses,
    )
