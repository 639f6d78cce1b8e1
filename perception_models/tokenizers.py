"""Tokenisers: CLIP's BPE (through transformers) and a byte-level one for tiny models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from perception_models.weights import hub_file_dir

CLIP_TOKENIZER_REPO = "openai/clip-vit-base-patch32"
CLIP_TOKENIZER_FILES = [
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
]


def token_lengths(tokens: torch.Tensor) -> torch.Tensor:
    """Each row's length: up to its last token that is not padding (0, as the CLIP and
    byte tokenizers pad)."""
    positions = torch.arange(1, tokens.shape[1] + 1)
    return ((tokens != 0) * positions).amax(dim=1)


def trim_padding(tokens: torch.Tensor) -> torch.Tensor:
    """Drop the columns that are padding in every row.

    Safe for causal text towers that pool at the end-of-text token (PE-Core,
    CLIP): tokens never attend to later positions, so trailing padding cannot
    change any result, and short titles then cost a fraction of the context.
    Contiguous, as every batch is, so a compiled tower sees one layout.
    """
    used = int(token_lengths(tokens).max()) if tokens.numel() else 0
    return tokens[:, : max(used, 1)].contiguous()


class ClipTokenizer:
    """CLIP's BPE vocabulary (49,408 tokens), as PE-Core and CLIP use it.

    Truncates to the model's context keeping the end-of-text token last, and
    pads with 0, like the original SimpleTokenizer. The vocabulary comes from
    `path` (a directory with vocab.json and merges.txt; the setting
    BIKEMATCH_CLIP_TOKENIZER) or the hub repo openai/clip-vit-base-patch32.
    """

    def __init__(self, context_length: int, path: str | Path | None = None) -> None:
        from transformers import CLIPTokenizerFast

        if path is None:
            path = hub_file_dir(CLIP_TOKENIZER_REPO, CLIP_TOKENIZER_FILES, "the CLIP tokenizer")
        self.tokenizer = CLIPTokenizerFast.from_pretrained(str(path))
        self.context_length = context_length

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        encoded = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.context_length,
            padding="max_length",
            return_attention_mask=True,
            return_tensors="pt",
        )
        return encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, 0)


class ByteTokenizer:
    """UTF-8 bytes as tokens (for tiny random models): no vocabulary file needed.

    0 pads, 1-256 are bytes, 257 starts and 258 (the highest id) ends a text.
    """

    vocab_size = 259
    start, end = 257, 258

    def __init__(self, context_length: int) -> None:
        self.context_length = context_length

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.start, *(b + 1 for b in text.encode("utf-8"))][: self.context_length - 1]
            ids.append(self.end)
            tokens[row, : len(ids)] = torch.tensor(ids)
        return tokens
