"""Sweeping the match threshold (and the image/text weight) against labelled pairs."""

from __future__ import annotations

from dataclasses import dataclass

from bikematch.database import connect
from bikematch.dbt import run_dbt
from bikematch.evaluation import evaluate_truth

_CLUSTER_MODELS = "+master_bikes"


@dataclass
class Setting:
    threshold: float
    image_weight: float | None
    precision: float
    recall: float
    f1: float


def calibrate(
    url, pairs, model: str, thresholds, weights, dbt_vars: dict, progress=None, complete=False
):
    """Cluster at each setting and score it; returns the settings, best F1 first."""
    results = []
    for weight in weights:
        for threshold in thresholds:
            settings = {**dbt_vars, "embedding_model": model, "match_threshold": threshold}
            if weight is not None:
                settings["image_weight"] = weight
            run_dbt(["run", "--select", _CLUSTER_MODELS], url, dbt_vars=settings, capture=True)
            with connect(url) as conn:
                scores = evaluate_truth(conn, pairs, model, worst=0, complete=complete).scores
            result = Setting(threshold, weight, scores.precision, scores.recall, scores.f1)
            results.append(result)
            if progress:
                progress(result)
    return sorted(results, key=lambda r: (-r.f1, -r.precision))


def has_images(url: str, model: str) -> bool:
    with connect(url) as conn:
        return conn.execute(
            "select exists (select from vector_storage where model = %s and not text_only)",
            (model,),
        ).fetchone()[0]
