"""Transformer building blocks: attention, feed-forward, positions, encoder and decoder layers.

Each class implements one equation of "Attention Is All You Need" (Vaswani et al., 2017);
`docs/architecture.md` puts them side by side. Tensors are batch-first throughout.

Speed-ups live in `seq2seq.fast` and enter this file at one seam, the import of `seq2seq.fast`
below: `Dropout` (the paper's dropout, cheaper masks on CPU) and `autocast_off`. Cached
decoding may also hand `MultiHeadAttention` a faster attention (`DecoderCache.attend`); the
code here is the reference that each speed-up is tested against.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seq2seq.cache import Attend, DecoderCache
from seq2seq.config import Activation, ModelConfig, NormPlacement
from seq2seq.fast import Dropout, autocast_off  # the seam (see the module docstring)


def padding_to_attention_mask(pad_mask: Tensor | None) -> Tensor | None:
    """(batch, key_len) True at padding -> (batch, 1, 1, key_len) True where attention is allowed.

    The result broadcasts over heads and query positions, in the boolean convention of
    `scaled_dot_product_attention` (True = this key takes part).
    """
    if pad_mask is None:
        return None
    return ~pad_mask[:, None, None, :]


def causal_mask(query_len: int, key_len: int, device: torch.device) -> Tensor:
    """(query_len, key_len) True where query i may see key j: j <= i + (key_len - query_len).

    Queries are the last `query_len` positions of the key sequence (bottom-right aligned), which
    covers teacher forcing (query_len == key_len) and cached decoding (query_len < key_len).
    """
    return torch.ones(query_len, key_len, dtype=torch.bool, device=device).tril(key_len - query_len)


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,
    head_i = Attention(Q W^Q_i, K W^K_i, V W^V_i).

    One module serves encoder self-attention, decoder masked self-attention and cross-attention.
    The caller computes Q W^Q, K W^K and V W^V first (`project_qkv` for self-attention;
    `project_q` and `project_kv` for cross-attention, so that a cache can keep the keys/values)
    and calls the module with them; the module computes the heads and W^O.
    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_head)) V is computed by
    `torch.nn.functional.scaled_dot_product_attention`, whose default scale is 1 / sqrt(d_head).
    """

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.d_head = d_model // heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        # [W^Q; W^K; W^V] in one product for self-attention: set by `fast.inference.inference_copy`
        # (training keeps the three, which checkpoints and exports name)
        self.qkv_proj: nn.Module | None = None

    def split_heads(self, x: Tensor) -> Tensor:
        """(batch, len, d_model) -> (batch, heads, len, d_head)."""
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.d_head).transpose(1, 2)

    def merge_heads(self, x: Tensor) -> Tensor:
        """(batch, heads, len, d_head) -> (batch, len, d_model): the heads side by side."""
        batch, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(batch, length, self.heads * self.d_head)

    def project_q(self, x: Tensor) -> Tensor:
        """Queries of `x` (batch, len, d_model): (batch, heads, len, d_head)."""
        return self.split_heads(self.q_proj(x))

    def project_kv(self, source: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of `source` (batch, len, d_model), each (batch, heads, len, d_head)."""
        return self.split_heads(self.k_proj(source)), self.split_heads(self.v_proj(source))

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values of `x` (batch, len, d_model) for self-attention, each
        (batch, heads, len, d_head)."""
        if self.qkv_proj is None:
            return self.project_q(x), *self.project_kv(x)
        q, k, v = self.qkv_proj(x).chunk(3, dim=-1)
        return self.split_heads(q), self.split_heads(k), self.split_heads(v)

    def forward(
        self,
        queries: Tensor,
        keys: Tensor,
        values: Tensor,
        attn_mask: Tensor | None = None,
        causal: bool = False,
        attend: Attend | None = None,
    ) -> Tensor:
        """Concat(head_1, ..., head_h) W^O: (batch, q_len, d_model), from projected queries
        (batch, heads, q_len, d_head) and keys/values (batch, heads, k_len, d_head).

        attn_mask: boolean, True where attention is allowed, broadcastable to
        (batch, heads, q_len, k_len). causal: hide keys after each query's own position.
        attend: cached decoding's attention (`DecoderCache.attend`, from `seq2seq.fast`), tried
        outside training: (queries, keys, values, attn_mask, causal) -> (batch, q_len, d_model),
        or None for inputs it does not take, which `attention` computes.
        """
        if attend is not None and not self.training:
            out = attend(queries, keys, values, attn_mask, causal)
            if out is not None:
                return self.out_proj(out)
        heads = self.attention(queries, keys, values, attn_mask, causal)
        return self.out_proj(self.merge_heads(heads))

    def attention(
        self, q: Tensor, keys: Tensor, values: Tensor, attn_mask: Tensor | None, causal: bool
    ) -> Tensor:
        """Attention(Q, K, V) of every head at once: (batch, heads, q_len, d_head)."""
        q_len, k_len = q.shape[2], keys.shape[2]
        is_causal = False
        if causal and q_len > 1:  # a single newest query may see every cached key
            if attn_mask is None and q_len == k_len:
                is_causal = True  # SDPA's fused causal path
            else:
                mask = causal_mask(q_len, k_len, q.device)
                attn_mask = mask if attn_mask is None else attn_mask & mask
        dropout = self.dropout if self.training else 0.0
        if keys.dtype == q.dtype:
            return F.scaled_dot_product_attention(
                q, keys, values, attn_mask=attn_mask, dropout_p=dropout, is_causal=is_causal
            )
        with autocast_off(q.device.type):  # a float32 cache (`LayerCache`): attend in its dtype
            return F.scaled_dot_product_attention(
                q.to(keys.dtype), keys, values, attn_mask, dropout, is_causal
            )

    def attention_weights(
        self,
        queries: Tensor,
        keys: Tensor,
        attn_mask: Tensor | None = None,
        causal: bool = False,
    ) -> Tensor:
        """softmax(Q K^T / sqrt(d_head)) written out: (batch, heads, q_len, k_len), each row a
        distribution over the keys, from the arguments `forward` takes. `forward` gets the same
        weights from SDPA without storing them; this is for looking at them
        (`seq2seq-attention`)."""
        scores = queries @ keys.transpose(-2, -1) / self.d_head**0.5
        if causal:
            mask = causal_mask(queries.shape[2], keys.shape[2], queries.device)
            attn_mask = mask if attn_mask is None else attn_mask & mask
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        return scores.softmax(dim=-1)


ACTIVATIONS: dict[Activation, Callable[[Tensor], Tensor]] = {
    Activation.relu: F.relu,
    Activation.gelu: F.gelu,
}


class FeedForward(nn.Module):
    """FFN(x) = act(x W_1 + b_1) W_2 + b_2, applied to each position separately."""

    def __init__(self, d_model: int, ffn_dim: int, activation: Activation, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.activation = ACTIVATIONS[activation]
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(self.activation(self.fc1(x))))


class SinusoidalPositions(nn.Module):
    """PE(pos, i) = sin(pos / 10000^(2i/d)), PE(pos, d/2 + i) = cos(pos / 10000^(2i/d)).

    The paper interleaves sin and cos; like tensor2tensor, fairseq and Marian we put the sines in
    the first half and the cosines in the second (the same functions, permuted dimensions). The
    table is a non-persistent buffer: it is not a parameter and not saved in checkpoints.
    """

    def __init__(self, max_positions: int, d_model: int) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_positions, d_model), persistent=False)

    table: Tensor  # (max_positions, d_model), a buffer

    def forward(self, length: int, offset: int = 0) -> Tensor:
        """Encodings of positions offset..offset+length-1: (length, d_model)."""
        check_position_range(length, offset, self.table.shape[0])
        return self.table[offset : offset + length]


def sinusoidal_table(max_positions: int, d_model: int) -> Tensor:
    """The (max_positions, d_model) table of sinusoidal position encodings."""
    half = d_model // 2
    positions = torch.arange(max_positions, dtype=torch.float64)[:, None]
    frequencies = torch.pow(10000.0, -2.0 * torch.arange(half, dtype=torch.float64) / d_model)
    angles = positions * frequencies  # (max_positions, half)
    table = torch.zeros(max_positions, d_model, dtype=torch.float64)
    table[:, :half] = torch.sin(angles)
    table[:, half : 2 * half] = torch.cos(angles)  # an odd d_model leaves the last column 0
    return table.float()


class LearnedPositions(nn.Module):
    """One trained vector per position."""

    def __init__(self, max_positions: int, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_positions, d_model))
        nn.init.normal_(self.weight, std=d_model**-0.5)

    def forward(self, length: int, offset: int = 0) -> Tensor:
        check_position_range(length, offset, self.weight.shape[0])
        return self.weight[offset : offset + length]


def check_position_range(length: int, offset: int, max_positions: int) -> None:
    if offset + length > max_positions:
        raise ValueError(
            f"sequence of {offset + length} positions exceeds model.max_positions="
            f"{max_positions}; shorten the input or train with a larger model.max_positions"
        )


class SublayerConnection(nn.Module):
    """The residual connection around one sublayer, with its LayerNorm placed post or pre.

    post (the paper's): x = LayerNorm(x + Dropout(sublayer(x)))
    pre:                x = x + Dropout(sublayer(LayerNorm(x)))
    """

    def __init__(self, d_model: int, norm: NormPlacement, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pre_norm = norm == NormPlacement.pre
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        if self.pre_norm:
            return x + self.dropout(sublayer(self.norm(x)))
        return self.norm(x + self.dropout(sublayer(x)))


class EncoderLayer(nn.Module):
    """Bidirectional self-attention, then the feed-forward block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.self_attn_block = SublayerConnection(cfg.d_model, cfg.norm, cfg.dropout)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation, cfg.activation_dropout)
        self.ffn_block = SublayerConnection(cfg.d_model, cfg.norm, cfg.dropout)

    def forward(self, x: Tensor, src_attn_mask: Tensor | None) -> Tensor:
        """x: (batch, src_len, d_model); src_attn_mask: (batch, 1, 1, src_len) or None."""

        def self_attention(h: Tensor) -> Tensor:
            return self.self_attn(*self.self_attn.project_qkv(h), attn_mask=src_attn_mask)

        x = self.self_attn_block(x, self_attention)
        return self.ffn_block(x, self.ffn)


class DecoderLayer(nn.Module):
    """Masked (causal) self-attention, cross-attention over the encoder output, feed-forward."""

    def __init__(self, cfg: ModelConfig, index: int = 0) -> None:
        super().__init__()
        self.index = index  # its place in the stack, which picks its state in a `DecoderCache`
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.self_attn_block = SublayerConnection(cfg.d_model, cfg.norm, cfg.dropout)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.cross_attn_block = SublayerConnection(cfg.d_model, cfg.norm, cfg.dropout)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation, cfg.activation_dropout)
        self.ffn_block = SublayerConnection(cfg.d_model, cfg.norm, cfg.dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None,
        src_attn_mask: Tensor | None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        """x: (rows, tgt_len, d_model).

        Teacher forcing (no cache): `x` is the whole target prefix, `memory` the encoder output
        (rows, src_len, d_model) and `src_attn_mask` its (rows, 1, 1, src_len) mask or None.
        Cached decoding: `x` holds the new positions only, and the rest comes from `cache`
        (`memory` and `src_attn_mask` are None): this layer's keys/values, the source mask, the
        attention to use and the group size: consecutive groups of `cache.group_size` rows (the
        beams of a sentence) share one source, whose keys/values the cache holds once.
        """
        if cache is None:
            state, attend, group_size = None, None, 1
        else:
            state, attend, group_size = cache.layers[self.index], cache.attend, cache.group_size
            src_attn_mask = cache.src_attn_mask

        def self_attention(h: Tensor) -> Tensor:
            queries, keys, values = self.self_attn.project_qkv(h)
            if state is not None:
                keys, values = state.extend_self_attention(keys, values)
            return self.self_attn(queries, keys, values, causal=True, attend=attend)

        def cross_attention(h: Tensor) -> Tensor:
            if state is None:
                assert memory is not None, "cross-attention needs the encoder's output"
                keys, values = self.cross_attn.project_kv(memory)
            else:
                keys, values = state.cross_keys, state.cross_values
            rows, length, width = h.shape
            # a group's rows become query positions of one source: (groups, group * len, d)
            grouped = h.reshape(rows // group_size, group_size * length, width)
            queries = self.cross_attn.project_q(grouped)
            out = self.cross_attn(queries, keys, values, attn_mask=src_attn_mask, attend=attend)
            return out.reshape(rows, length, width)

        x = self.self_attn_block(x, self_attention)
        x = self.cross_attn_block(x, cross_attention)
        return self.ffn_block(x, self.ffn)
