"""Label-smoothed cross-entropy that ignores padding."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class LossOutput(NamedTuple):
    loss: Tensor  # summed label-smoothed cross-entropy over non-pad tokens (what is optimised)
    nll: Tensor  # summed negative log-likelihood of the references (for perplexity)
    tokens: Tensor  # number of non-pad target tokens


def label_smoothed_cross_entropy(
    logits: Tensor, target: Tensor, smoothing: float, pad_id: int
) -> LossOutput:
    """Cross-entropy against q = (1 - eps) * one_hot(y) + eps / V, summed over non-pad tokens.

    Per token: loss = (1 - eps) * (-log p_y) + eps * mean_v(-log p_v), the same smoothing as
    `torch.nn.functional.cross_entropy(label_smoothing=eps)`. logits: (..., V); target: (...).
    Log-probabilities are computed in float32 even under autocast.
    """
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    keep = target != pad_id
    nll = -log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    uniform = -log_probs.mean(dim=-1)
    loss = (1.0 - smoothing) * nll + smoothing * uniform
    zero = torch.zeros((), dtype=loss.dtype, device=loss.device)
    return LossOutput(
        loss=torch.where(keep, loss, zero).sum(),
        nll=torch.where(keep, nll, zero).sum(),
        tokens=keep.sum(),
    )
