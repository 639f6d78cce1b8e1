"""Text tower on real product titles: a batch whole, or in chunks sorted by length.

A batch of titles is padded to its longest, and a CPU computes the padding too. On a
CPU `embed_texts` runs a batch in chunks of `TEXT_CHUNK` titles of similar length,
each cut to its own longest (perception_models/base.py). This prints titles/s both
ways, over the titles of a labelled benchmark's shop (real titles of mixed lengths:
Walmart-Amazon's Amazon titles by default), in the order the file lists them.

Usage: python bench/bench_titles.py [--model minilm-effnet-lite0] [--titles 3000]
       [--batch 64] [--data ../shared/data/er-benchmarks/walmart-amazon/amazon.csv]
       [--separator '|']
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from perception_models import load_model  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "er-benchmarks" / "walmart-amazon" / "amazon.csv"


def read_titles(path: Path, separator: str, limit: int) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        rows = csv.reader(handle, delimiter=separator)
        header = next(rows)
        column = header.index("title")
        return [row[column] for row in rows][:limit]


def whole(model, tokens) -> torch.Tensor:
    """The batch as it comes: one call, padded to its longest title."""
    with torch.inference_mode(), model._autocast():
        return F.normalize(model._text_features(tokens).float(), dim=-1)


def rate(titles: list[str], batch: int, embed) -> float:
    started = time.perf_counter()
    for start in range(0, len(titles), batch):
        embed(titles[start : start + batch])
    return len(titles) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-effnet-lite0")
    parser.add_argument("--titles", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--separator", default="|", help="the CSV's separator (| or #)")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"error: no titles at {args.data} (--data names a labelled benchmark's CSV)")
    titles = read_titles(args.data, args.separator, args.titles)
    model = load_model(args.model, device="cpu")
    rate(titles[: args.batch], args.batch, lambda b: model.embed_texts(model.tokenize(b)))
    print(f"{len(titles)} titles of {args.data.name}, {args.model}, batches of {args.batch}:")
    whole_rate = rate(titles, args.batch, lambda b: whole(model, model.tokenize(b)))
    print(f"  whole batches: {whole_rate:.0f} titles/s")
    by_length = rate(titles, args.batch, lambda b: model.embed_texts(model.tokenize(b)))
    print(f"  by length (embed_texts): {by_length:.0f} titles/s")


if __name__ == "__main__":
    main()
