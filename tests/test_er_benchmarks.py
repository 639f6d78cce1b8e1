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

# threshold, then F1 floors for the labelled and the complete scoring
# (bench/er_benchmarks.py), a little under what docs/quality.md measured. The
# thresholds differ: Walmart-Amazon's second shop has 22,074 listings, a
# look-alike above 0.45 for nearly every Walmart listing without a match.
FLOORS = {
    "amazon-google": (0.45, 0.78, 0.65),  # measured 0.797 / 0.661
    "walmart-amazon": (0.85, 0.80, 0.64),  # measured 0.815 / 0.648
}


@pytest.mark.skipif(not DATA.exists(), reason=f"labelled benchmarks not found at {DATA}")
@pytest.mark.parametrize("name", sorted(FLOORS))
def test_end_to_end_f1_floor(name):
    from bench.er_benchmarks import run

    threshold, labelled, complete = FLOORS[name]
    scores = run(name, DATA / name, [threshold], {})[threshold]
    assert scores["labelled"]["f1"] >= labelled, scores
    assert scores["complete"]["f1"] >= complete, scores
