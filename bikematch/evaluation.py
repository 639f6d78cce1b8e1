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
