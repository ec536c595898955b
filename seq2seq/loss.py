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


class ProjectedCrossEntropy(torch.autograd.Function):
    """Output projection + label-smoothed cross-entropy, a few hundred tokens at a time.

    The (tokens, V) logits are the largest tensor of a training step and every full pass over
    them is bound by memory bandwidth. Here each chunk's logits are made, reduced and dropped
    while they sit in cache: the forward keeps only the log-normaliser per token, and the
    backward recomputes the chunk's logits (one extra matmul) to form its gradient in place.
    """

    @staticmethod
    def forward(
        ctx, hidden: Tensor, weight: Tensor, target: Tensor, smoothing: float, chunk: int
    ) -> tuple[Tensor, Tensor]:
        # hidden: (tokens, d) of non-pad positions; weight: (V, d); target: (tokens,)
        dtype = compute_dtype(hidden)
        w = weight.to(dtype)
        lse = hidden.new_empty(hidden.shape[0], dtype=exact(hidden))
        loss = hidden.new_zeros((), dtype=exact(hidden))
        nll = hidden.new_zeros((), dtype=exact(hidden))
        for rows in chunks(hidden.shape[0], chunk):
            logits = (hidden[rows].to(dtype) @ w.t()).to(lse.dtype)  # (chunk, V)
            lse[rows] = chunk_lse = torch.logsumexp(logits, dim=-1)
            chunk_nll = chunk_lse - logits.gather(-1, target[rows, None]).squeeze(-1)
            uniform = chunk_lse - logits.mean(dim=-1)
            nll += chunk_nll.sum()
            loss += (1.0 - smoothing) * chunk_nll.sum() + smoothing * uniform.sum()
        ctx.save_for_backward(hidden, weight, target, lse)
        ctx.smoothing, ctx.chunk, ctx.dtype = smoothing, chunk, dtype
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    def backward(ctx, grad_loss: Tensor, grad_nll: Tensor):
        hidden, weight, target, lse = ctx.saved_tensors
        eps, dtype = ctx.smoothing, ctx.dtype
        w = weight.to(dtype)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=exact(weight))
        for rows in chunks(hidden.shape[0], ctx.chunk):
            h = hidden[rows].to(dtype)
            grad = (h @ w.t()).to(lse.dtype).sub_(lse[rows, None]).exp_()  # softmax
            grad.sub_(eps / grad.shape[-1])
            grad.scatter_add_(-1, target[rows, None], grad.new_full((grad.shape[0], 1), eps - 1))
            grad = grad.mul_(grad_loss).to(dtype)  # d loss / d logits, (chunk, V)
            grad_hidden[rows] = grad @ w
            grad_weight += grad.t() @ h
        return grad_hidden, grad_weight.to(weight.dtype), None, None, None


def exact(x: Tensor) -> torch.dtype:
    """float64 for float64 input, else float32: the dtype of softmax statistics and sums."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def compute_dtype(hidden: Tensor) -> torch.dtype:
    """The matmul dtype: autocast's when it is on for this device, else the input's."""
    if torch.is_autocast_enabled(hidden.device.type):
        return torch.get_autocast_dtype(hidden.device.type)
    return hidden.dtype


def chunks(total: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, total)) for start in range(0, total, size)]


def projected_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    smoothing: float,
    pad_id: int,
    chunk: int = 256,
) -> LossOutput:
    """`label_smoothed_cross_entropy(hidden @ weight.T, ...)` without materialising the logits.

    hidden: (..., d) decoder states; weight: (V, d) output projection; target: (...).
    """
    flat_target = target.reshape(-1)
    keep = flat_target != pad_id
    rows = keep.nonzero().squeeze(-1)
    flat_hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows)
    loss, nll = ProjectedCrossEntropy.apply(
        flat_hidden, weight, flat_target.index_select(0, rows), smoothing, chunk
    )
    return LossOutput(loss=loss, nll=nll, tokens=keep.sum())
