"""Translate encoded sentences in length-sorted token-budget batches, returned in input order."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from seq2seq.batching import Batch, EncodedSplit, TokenBudgetSampler
from seq2seq.config import DecodeConfig, SearchStrategy
from seq2seq.errors import ConfigError
from seq2seq.model import Transformer
from seq2seq.search import Hypothesis, greedy_search
from seq2seq.tokenizer import Tokenizer


def search_function(cfg: DecodeConfig) -> Callable[..., list[Hypothesis]]:
    if cfg.strategy == SearchStrategy.greedy:
        return greedy_search
    raise ConfigError(f"decode.strategy={cfg.strategy.value} is not available yet; use greedy")


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
    search = search_function(cfg)
    model.eval()
    translations = [""] * len(encoded)
    for batch in source_batches(encoded, cfg.max_tokens):
        batch = batch.to(device)
        hypotheses = search(model, batch.src, batch.src_pad_mask, cfg)
        texts = tokenizer.decode([h.tokens for h in hypotheses], "tgt")
        for row_id, text in zip(batch.ids.tolist(), texts, strict=True):
            translations[row_id] = text
    return translations
