"""Floors under end-to-end F1 on the real labelled benchmarks, so regressions fail CI.

The data lives beside the checkout (../shared/data/er-benchmarks) and is not
part of the project; without it these tests skip, saying so. Each runs the
whole pipeline in its own embedded Postgres: import, text-only embedding with
minilm-effnet-lite0, dbt clustering, evaluation (bench/er_benchmarks.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "er-benchmarks"

# threshold, F1 floors for the labelled and the complete scoring
# (bench/er_benchmarks.py) a little under what was measured, and how thinly the second
# shop is sampled. The thresholds differ: Walmart-Amazon's second shop has 22,074
# listings, a look-alike above 0.45 for nearly every Walmart listing without a match.
# Its test keeps the Amazon listings the truth names and every 4th of the others
# (6,172 of 22,074; 2 minutes less of the suite): fewer look-alikes, so higher scores
# than the whole benchmark's (docs/quality.md: 0.834 / 0.668), which the bench measures.
FLOORS = {
    "amazon-google": (0.45, 0.78, 0.65, 1),  # measured 0.793 / 0.661
    "walmart-amazon": (0.85, 0.83, 0.75, 4),  # measured 0.851 / 0.769
}


@pytest.mark.skipif(not DATA.exists(), reason=f"labelled benchmarks not found at {DATA}")
@pytest.mark.parametrize("name", sorted(FLOORS))
def test_end_to_end_f1_floor(name):
    from bench.er_benchmarks import run

    threshold, labelled, complete, thin = FLOORS[name]
    scores = run(name, DATA / name, [threshold], {}, thin)[threshold]
    assert scores["labelled"]["f1"] >= labelled, scores
    assert scores["complete"]["f1"] >= complete, scores
