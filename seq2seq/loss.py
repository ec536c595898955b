"""Label-smoothed cross-entropy that ignores padding.

With logits z over a vocabulary of V, lse = log sum_v exp(z_v) and smoothing eps, each non-pad
target token y contributes

    nll  = lse - z_y                                   (= -log p_y)
    loss = (1 - eps) * nll + eps * (lse - mean_v z_v)  (= -sum_v q_v log p_v,
                                                          q = (1 - eps) one_hot(y) + eps / V)

the same smoothing as `torch.nn.functional.cross_entropy(label_smoothing=eps)`. Its gradient is
d loss / d z = softmax(z) - (1 - eps) one_hot(y) - eps / V. Written as one autograd function,
the forward and backward each make a single pass over the (tokens, V) logits; the obvious
composition of log_softmax, gather and mean makes several, and the output layer is the largest
tensor of the model.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class LossOutput(NamedTuple):
    loss: Tensor  # summed label-smoothed cross-entropy over non-pad tokens (what is optimised)
    nll: Tensor  # summed negative log-likelihood of the references (for perplexity)
    tokens: Tensor  # number of non-pad target tokens


class SmoothedCrossEntropy(torch.autograd.Function):
    """Summed loss (differentiable) and summed nll (not) over the tokens where `keep`."""

    @staticmethod
    def forward(
        ctx, logits: Tensor, target: Tensor, keep: Tensor, smoothing: float
    ) -> tuple[Tensor, Tensor]:
        # logits: (tokens, V) float32; target, keep: (tokens,)
        log_probs = torch.log_softmax(logits, dim=-1)  # z - lse, one fused pass
        nll = -log_probs.gather(-1, target[:, None]).squeeze(-1)
        uniform = -log_probs.mean(dim=-1)
        zero = log_probs.new_zeros(())
        loss = torch.where(keep, (1.0 - smoothing) * nll + smoothing * uniform, zero)
        ctx.save_for_backward(log_probs, target, keep)
        ctx.smoothing = smoothing
        nll_sum = torch.where(keep, nll, zero).sum()
        ctx.mark_non_differentiable(nll_sum)
        return loss.sum(), nll_sum

    @staticmethod
    def backward(ctx, grad_loss: Tensor, grad_nll: Tensor):
        log_probs, target, keep = ctx.saved_tensors
        eps = ctx.smoothing
        grad = log_probs.exp()  # softmax
        grad.sub_(eps / grad.shape[-1])
        grad.scatter_add_(-1, target[:, None], torch.full_like(log_probs[:, :1], eps - 1.0))
        grad.mul_(grad_loss)
        grad.masked_fill_(~keep[:, None], 0.0)  # padding: no gradient, even from inf/NaN logits
        return grad, None, None, None


def label_smoothed_cross_entropy(
    logits: Tensor, target: Tensor, smoothing: float, pad_id: int
) -> LossOutput:
    """logits: (..., V), target: (...). Computed in float32 (or float64) even under autocast."""
    flat_logits = logits.reshape(-1, logits.shape[-1])
    if flat_logits.dtype not in (torch.float32, torch.float64):
        flat_logits = flat_logits.float()
    flat_target = target.reshape(-1)
    keep = flat_target != pad_id
    loss, nll = SmoothedCrossEntropy.apply(flat_logits, flat_target, keep, smoothing)
    return LossOutput(loss=loss, nll=nll, tokens=keep.sum())
