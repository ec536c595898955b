"""Dropout with cheaper random masks on CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Dropout(nn.Module):
    """Dropout(x) = x * keep / (1 - p), keep ~ Bernoulli(1 - p) per element (as `nn.Dropout`).

    On CPU the mask is cheaper than `torch.bernoulli`'s: each 64-bit random integer gives four
    16-bit draws, each kept when it clears a threshold, so p is rounded to a multiple of 1/65536
    (the scale uses the rounded p, keeping the expectation exact). Other devices use
    `F.dropout`. Both draw from torch's generator, whose state checkpoints save.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        drop = round(self.p * 65536)  # of the 65536 values of a 16-bit draw, this many drop
        if drop == 0:
            return x
        if drop == 65536:
            return x * 0.0
        keep = keep_mask(x.numel(), threshold=drop - 32768).view(x.shape)
        return torch.mul(x, keep).mul_(65536 / (65536 - drop))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def keep_mask(count: int, threshold: int) -> Tensor:
    """`count` booleans, each True when a uniform int16 draw is >= threshold."""
    words = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    return words.view(torch.int16)[:count] >= threshold
