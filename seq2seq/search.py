"""Search for translations with the cached decoder: greedy search.

The encoder runs once per batch; each step feeds only the newest token to
`Transformer.decode_step`; finished sentences leave the active batch through
`DecoderCache.reorder`, so late steps only pay for unfinished sentences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seq2seq.config import DecodeConfig
from seq2seq.constants import BOS_ID, EOS_ID
from seq2seq.model import Transformer


@dataclass
class Hypothesis:
    tokens: list[int]  # without bos and eos
    score: float  # sum of token log-probabilities (eos included)


def max_output_lengths(src_pad_mask: Tensor, cfg: DecodeConfig, max_positions: int) -> Tensor:
    """Per sentence: a * source length + b, capped by the model's positions. (batch,)"""
    src_lengths = (~src_pad_mask).sum(dim=1)
    limit = (cfg.max_len_a * src_lengths.float()).floor().long() + cfg.max_len_b
    return limit.clamp(min=1, max=max_positions - 1)


@torch.no_grad()
def greedy_search(
    model: Transformer, src: Tensor, src_pad_mask: Tensor, cfg: DecodeConfig
) -> list[Hypothesis]:
    """The most probable token at every step, until eos or the length limit. One per sentence."""
    batch, device = src.shape[0], src.device
    cache = model.init_cache(model.encode(src, src_pad_mask), src_pad_mask)
    max_lengths = max_output_lengths(src_pad_mask, cfg, model.cfg.max_positions)
    steps = int(max_lengths.max()) + 1  # + 1 for eos
    output = torch.full((batch, steps), EOS_ID, dtype=torch.long, device=device)
    scores = torch.zeros(batch, device=device)
    active = torch.arange(batch, device=device)  # rows of the batch still decoding
    tokens = torch.full((batch,), BOS_ID, dtype=torch.long, device=device)
    for step in range(steps):
        log_probs = torch.log_softmax(model.decode_step(tokens, cache).float(), dim=-1)
        if step < cfg.min_len:
            log_probs[:, EOS_ID] = float("-inf")
        out_of_room = step >= max_lengths[active]  # eos is the only choice left
        tokens = torch.where(out_of_room, EOS_ID, log_probs.argmax(dim=-1))
        output[active, step] = tokens
        scores[active] += log_probs.gather(1, tokens[:, None]).squeeze(1)
        unfinished = tokens != EOS_ID
        if not unfinished.any():
            break
        if not unfinished.all():
            keep = unfinished.nonzero().squeeze(1)
            cache.reorder(keep)
            active, tokens = active[keep], tokens[keep]
    return [
        Hypothesis(strip_eos(row), score)
        for row, score in zip(output.tolist(), scores.tolist(), strict=True)
    ]


def strip_eos(tokens: list[int]) -> list[int]:
    """The tokens before the first eos."""
    return tokens[: tokens.index(EOS_ID)] if EOS_ID in tokens else tokens
