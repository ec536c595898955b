"""Attention weights of a trained model on one sentence pair, for looking at them.

`attention_maps` runs the model once with teacher forcing on (source, translation) and records,
through forward hooks, what each attention module was given; the weights are then recomputed
with `MultiHeadAttention.attention_weights`. Training and decoding never pay for this.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seq2seq.constants import BOS_ID
from seq2seq.layers import MultiHeadAttention
from seq2seq.model import Transformer


@dataclass
class AttentionMaps:
    """Weights of one sentence pair, each (layers, heads, query_len, key_len)."""

    encoder: Tensor  # source x source, bidirectional
    decoder: Tensor  # target x target, causal: zero above the diagonal
    cross: Tensor  # target x source


@torch.no_grad()
def attention_maps(model: Transformer, source: list[int], target: list[int]) -> AttentionMaps:
    """source: source ids (with eos); target: target ids (with eos). Query row i of the decoder
    maps is the position that predicts target[i] (its input is bos + target[:i])."""
    was_training = model.training
    model.eval()
    recorded: dict[str, list[Tensor]] = {"encoder": [], "decoder": [], "cross": []}
    handles = []
    for kind, modules in (
        ("encoder", [layer.self_attn for layer in model.encoder.layers]),
        ("decoder", [layer.self_attn for layer in model.decoder.layers]),
        ("cross", [layer.cross_attn for layer in model.decoder.layers]),
    ):
        for module in modules:
            handles.append(module.register_forward_hook(recorder(recorded[kind]), with_kwargs=True))
    try:
        src = torch.tensor([source])
        tgt_in = torch.tensor([[BOS_ID, *target[:-1]]])
        model(src, None, tgt_in)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return AttentionMaps(**{kind: torch.stack(maps) for kind, maps in recorded.items()})


def recorder(into: list[Tensor]):
    """A forward hook that stores the module's attention weights for the (single) sentence."""

    def hook(module: MultiHeadAttention, args: tuple, kwargs: dict, output: Tensor) -> None:
        query, keys, _values = args
        weights = module.attention_weights(
            query, keys, kwargs.get("attn_mask"), kwargs.get("causal", False)
        )
        into.append(weights[0].float())  # (heads, q_len, k_len)

    return hook
