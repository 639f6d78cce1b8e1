"""Sweeping the match threshold (and the image/text weight) against labelled pairs."""

from __future__ import annotations

from dataclasses import dataclass

from bikematch.app.clusters import ClusterSummary, build_clusters, build_matches, cluster_vars
from bikematch.app.evaluation import evaluate_truth
from bikematch.core.database import connect


@dataclass
class Setting:
    threshold: float
    image_weight: float | None
    precision: float
    recall: float
    f1: float


def calibrate(
    url, pairs, model: str, thresholds, weights, anchor_shop=None, progress=None, complete=False
) -> tuple[list[Setting], ClusterSummary]:
    """Cluster at each setting and score it, then build the clusters at the best one;
    returns the settings, best F1 first, and the final build's summary."""
    results = []
    for weight in weights:
        for threshold in thresholds:
            extra = {} if weight is None else {"image_weight": weight}
            build_matches(url, cluster_vars(model, anchor_shop, threshold, extra))
            with connect(url) as conn:
                scores = evaluate_truth(conn, pairs, model, worst=0, complete=complete).scores
            result = Setting(threshold, weight, scores.precision, scores.recall, scores.f1)
            results.append(result)
            if progress:
                progress(result)
    results.sort(key=lambda r: (-r.f1, -r.precision))
    best = results[0]
    extra = {} if best.image_weight is None else {"image_weight": best.image_weight}
    summary = build_clusters(url, cluster_vars(model, anchor_shop, best.threshold, extra))
    return results, summary
