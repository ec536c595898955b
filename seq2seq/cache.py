"""Decoder state for incremental decoding, kept in one explicit object (never on the modules).

Per decoder layer: the self-attention keys/values of every target position decoded so far (they
grow by one position per step) and the cross-attention keys/values of the encoder output
(computed once per source). `DecoderCache.reorder(index)` is the only way state moves between
batch rows: beam search calls it to follow surviving hypotheses and to drop finished sentences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class LayerCache:
    """One decoder layer's state. Tensors are (batch, heads, len, d_head)."""

    cross_keys: Tensor
    cross_values: Tensor
    self_keys: Tensor | None = None
    self_values: Tensor | None = None

    def extend_self_attention(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Append the new positions' keys/values and return all of them."""
        if self.self_keys is not None:
            keys = torch.cat([self.self_keys, keys], dim=2)
            values = torch.cat([self.self_values, values], dim=2)
        self.self_keys, self.self_values = keys, values
        return keys, values

    def reorder(self, index: Tensor) -> None:
        self.cross_keys = self.cross_keys.index_select(0, index)
        self.cross_values = self.cross_values.index_select(0, index)
        if self.self_keys is not None:
            self.self_keys = self.self_keys.index_select(0, index)
            self.self_values = self.self_values.index_select(0, index)


@dataclass
class DecoderCache:
    """The whole decoder's state: one LayerCache per layer plus the source attention mask."""

    layers: list[LayerCache]
    src_attn_mask: Tensor | None  # (batch, 1, 1, src_len), True where attention is allowed

    @property
    def steps(self) -> int:
        """Target positions decoded so far (the position offset of the next step)."""
        first = self.layers[0].self_keys
        return 0 if first is None else first.shape[2]

    @property
    def batch_size(self) -> int:
        return self.layers[0].cross_keys.shape[0]

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (1-D, long) in that order: select, repeat or permute beams."""
        for layer in self.layers:
            layer.reorder(index)
        if self.src_attn_mask is not None:
            self.src_attn_mask = self.src_attn_mask.index_select(0, index)
