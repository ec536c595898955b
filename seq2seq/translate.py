"""Translate encoded sentences in length-sorted token-budget batches, returned in input order."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from seq2seq.batching import Batch, EncodedSplit, TokenBudgetSampler
from seq2seq.config import DecodeConfig
from seq2seq.model import Transformer
from seq2seq.search import search
from seq2seq.tokenizer import Tokenizer


def source_batches(encoded: EncodedSplit, max_tokens: int) -> Iterator[Batch]:
    """Batches sorted by source length within a token budget that counts sources only."""
    sampler = TokenBudgetSampler(
        encoded.src_lengths, np.zeros_like(encoded.src_lengths), max_tokens, shuffle=False
    )
    return encoded.batches(sampler)


@torch.no_grad()
def translate_encoded(
    model: Transformer,
    encoded: EncodedSplit,
    tokenizer: Tokenizer,
    cfg: DecodeConfig,
    device: torch.device,
) -> list[str]:
    """Detokenised translations of every row, in the order of the rows' `id` (0..n-1, as in
    validation and test splits, which are never filtered)."""
    model.eval()
    translations = [""] * len(encoded)
    for batch in source_batches(encoded, cfg.max_tokens):
        batch = batch.to(device)
        best = [nbest[0] for nbest in search(model, batch.src, batch.src_pad_mask, cfg)]
        texts = tokenizer.decode([h.tokens for h in best], "tgt")
        for row_id, text in zip(batch.ids.tolist(), texts, strict=True):
            translations[row_id] = text
    return translations
