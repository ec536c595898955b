"""Decoder state for incremental decoding, kept in one explicit object (never on the modules).

Per decoder layer: the self-attention keys/values of every target position decoded so far (they
grow by one position per step) and the cross-attention keys/values of the encoder output
(computed once per source). `DecoderCache.reorder(index)` is the only way state moves between
rows: beam search calls it to follow surviving hypotheses and to drop finished sentences.

Rows come in groups of `group_size` consecutive rows that share one source (the beams of a
sentence). Cross-attention state is stored once per group, not once per row: the beams of a
sentence attend to the same encoder output, so beam search neither copies nor reorders it
while the sentence is alive (`Transformer.decode_step` attends with the group's beams as
queries).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

# (queries, keys, values, mask, causal) -> (batch, q_len, d_model), or None for inputs it does
# not take: an attention for the few queries of cached decoding (`seq2seq.fast.kernels`) that
# `MultiHeadAttention` tries before its own
Attend = Callable[[Tensor, Tensor, Tensor, Tensor | None, bool], Tensor | None]


@dataclass
class LayerCache:
    """One decoder layer's state. Tensors are (rows or groups, heads, len, d_head).

    Self-attention keys/values live in preallocated buffers (capacity >= len, grown by
    doubling) so that a step writes one position instead of copying the whole cache, and a
    reorder copies the filled part once into a second buffer that is then swapped in. They are
    stored in `self_dtype` when given (else as computed): `Transformer.init_cache` picks float32
    on CPU, where PyTorch's attention kernel is slower for a single bf16 query than for a
    float32 one (docs/benchmarks.md).
    """

    cross_keys: Tensor  # one per group
    cross_values: Tensor
    self_dtype: torch.dtype | None = None
    buffers: list[Tensor] = field(default_factory=list)  # keys, values, spare keys, spare values
    length: int = 0  # positions filled
    rows: int = 0  # rows in use (the first `rows` of each buffer)

    @property
    def self_keys(self) -> Tensor | None:
        return self.buffers[0][: self.rows, :, : self.length] if self.buffers else None

    @property
    def self_values(self) -> Tensor | None:
        return self.buffers[1][: self.rows, :, : self.length] if self.buffers else None

    def extend_self_attention(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Append the new positions' keys/values and return all of them."""
        new = keys.shape[2]
        if not self.buffers or self.length + new > self.buffers[0].shape[2]:
            self.grow(keys, self.length + new)
        end = self.length + new
        self.buffers[0][: self.rows, :, self.length : end] = keys
        self.buffers[1][: self.rows, :, self.length : end] = values
        self.length = end
        return self.buffers[0][: self.rows, :, :end], self.buffers[1][: self.rows, :, :end]

    def grow(self, like: Tensor, needed: int) -> None:
        rows, heads, _, d_head = like.shape
        capacity = max(needed, 2 * (self.buffers[0].shape[2] if self.buffers else 8))
        dtype = self.self_dtype or like.dtype
        grown = [like.new_empty(rows, heads, capacity, d_head, dtype=dtype) for _ in range(4)]
        for old, new in zip(self.buffers[:2], grown, strict=False):
            new[: self.rows, :, : self.length] = old[: self.rows, :, : self.length]
        self.buffers, self.rows = grown, rows

    def reorder(self, rows: Tensor, groups: Tensor | None) -> None:
        if groups is not None:
            self.cross_keys = self.cross_keys.index_select(0, groups)
            self.cross_values = self.cross_values.index_select(0, groups)
        if self.buffers:
            count, filled = len(rows), slice(0, self.length)
            if count > self.buffers[0].shape[0]:  # more rows than ever (repeating a row)
                self.grow_rows(count)
            keys, values, spare_keys, spare_values = self.buffers
            torch.index_select(
                keys[: self.rows, :, filled], 0, rows, out=spare_keys[:count, :, filled]
            )
            torch.index_select(
                values[: self.rows, :, filled], 0, rows, out=spare_values[:count, :, filled]
            )
            self.buffers = [spare_keys, spare_values, keys, values]
            self.rows = count

    def grow_rows(self, count: int) -> None:
        _, heads, capacity, d_head = self.buffers[0].shape
        grown = [self.buffers[0].new_empty(count, heads, capacity, d_head) for _ in range(4)]
        for old, new in zip(self.buffers[:2], grown, strict=False):
            new[: self.rows] = old[: self.rows]
        self.buffers = grown


@dataclass
class DecoderCache:
    """The whole decoder's state: one LayerCache per layer plus the source attention mask."""

    layers: list[LayerCache]
    src_attn_mask: Tensor | None  # (groups, 1, 1, src_len), True where attention is allowed
    group_size: int = 1  # consecutive rows sharing one source (the beam size in beam search)
    attend: Attend | None = None  # set by the search: the kernel of `seq2seq.fast.kernels`

    @property
    def steps(self) -> int:
        """Target positions decoded so far (the position offset of the next step)."""
        first = self.layers[0].self_keys
        return 0 if first is None else first.shape[2]

    @property
    def groups(self) -> int:
        return self.layers[0].cross_keys.shape[0]

    def reorder(self, index: Tensor, group_size: int | None = None) -> None:
        """Keep rows `index` (1-D, long) in that order: select, repeat or permute beams, drop
        finished sentences. The new rows come in groups of `group_size` (default: unchanged;
        beam search widens one row per sentence to its beams after the first step), each group
        from rows of one source."""
        new_size = group_size or self.group_size
        groups = index.view(-1, new_size)[:, 0] // self.group_size
        unchanged = len(groups) == self.groups and bool(
            (groups == torch.arange(self.groups, device=groups.device)).all()
        )
        for layer in self.layers:
            layer.reorder(index, None if unchanged else groups)
        if self.src_attn_mask is not None and not unchanged:
            self.src_attn_mask = self.src_attn_mask.index_select(0, groups)
        self.group_size = new_size
