"""The properties of attention, tested directly on the model and on MultiHeadAttention."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import pad_to, random_tokens, tiny_model

from seq2seq.constants import PAD_ID
from seq2seq.layers import MultiHeadAttention, causal_mask, padding_to_attention_mask

ATOL = 1e-5


def test_causality_future_target_tokens_never_change_earlier_outputs():
    model = tiny_model()
    src = random_tokens(2, 7, seed=1)
    tgt = random_tokens(2, 9, seed=2)
    logits = model(src, None, tgt)
    for t in range(tgt.shape[1] - 1):
        changed = tgt.clone()
        changed[:, t + 1 :] = random_tokens(2, tgt.shape[1] - t - 1, seed=100 + t)
        changed_logits = model(src, None, changed)
        torch.testing.assert_close(
            changed_logits[:, : t + 1], logits[:, : t + 1], atol=ATOL, rtol=0
        )
        # The check has teeth: the changed positions themselves do change.
        assert not torch.allclose(changed_logits[:, t + 1 :], logits[:, t + 1 :], atol=ATOL)


def test_source_padding_never_changes_outputs_whatever_the_pad_positions_hold():
    model = tiny_model()
    src = random_tokens(1, 6, seed=3)
    tgt = random_tokens(1, 5, seed=4)
    reference = model(src, None, tgt)
    padded = pad_to(src, 11)
    mask = padded == PAD_ID
    torch.testing.assert_close(model(padded, mask, tgt), reference, atol=ATOL, rtol=0)
    # The mask, not the zero padding embedding, does the work: garbage under the mask is ignored.
    garbage = padded.clone()
    garbage[mask] = random_tokens(1, int(mask.sum()), seed=5)[0]
    torch.testing.assert_close(model(garbage, mask, tgt), reference, atol=ATOL, rtol=0)
    # ... and that garbage would change the outputs without the mask.
    assert not torch.allclose(model(garbage, None, tgt), reference, atol=ATOL)


def test_target_padding_never_changes_non_pad_outputs():
    model = tiny_model()
    src = random_tokens(2, 6, seed=6)
    tgt = random_tokens(2, 5, seed=7)
    reference = model(src, None, tgt)
    padded = model(src, None, pad_to(tgt, 9))
    torch.testing.assert_close(padded[:, :5], reference, atol=ATOL, rtol=0)


def test_padding_mask_is_allowed_where_not_padding():
    pad_mask = torch.tensor([[False, False, True]])
    allowed = padding_to_attention_mask(pad_mask)
    assert allowed.shape == (1, 1, 1, 3)
    assert allowed.flatten().tolist() == [True, True, False]


def test_encoder_attention_is_bidirectional():
    model = tiny_model()
    src = random_tokens(1, 6, seed=8)
    changed = src.clone()
    changed[0, -1] = 4 if src[0, -1] != 4 else 5
    first = model.encode(src, None)[:, 0]
    changed_first = model.encode(changed, None)[:, 0]
    assert (first - changed_first).abs().max() > 1e-3


def test_encoder_without_positions_is_permutation_equivariant():
    model = tiny_model(positions="none")
    src = random_tokens(2, 8, seed=9)
    permutation = torch.randperm(8, generator=torch.Generator().manual_seed(10))
    memory = model.encode(src, None)
    permuted_memory = model.encode(src[:, permutation], None)
    torch.testing.assert_close(permuted_memory, memory[:, permutation], atol=ATOL, rtol=0)


def test_encoder_with_positions_is_not_permutation_equivariant():
    model = tiny_model(positions="sinusoidal")
    src = random_tokens(1, 8, seed=9)
    permutation = torch.arange(7, -1, -1)
    permuted_memory = model.encode(src[:, permutation], None)
    assert not torch.allclose(permuted_memory, model.encode(src, None)[:, permutation], atol=1e-3)


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_batch_items_are_independent(norm):
    model = tiny_model(norm=norm)
    lengths = [(5, 4), (9, 7), (3, 2)]
    sources = [random_tokens(1, s, seed=20 + i) for i, (s, _) in enumerate(lengths)]
    targets = [random_tokens(1, t, seed=30 + i) for i, (_, t) in enumerate(lengths)]
    src = torch.cat([pad_to(s, 9) for s in sources])
    tgt = torch.cat([pad_to(t, 7) for t in targets])
    batch_logits = model(src, src == PAD_ID, tgt)
    for i, (source, target) in enumerate(zip(sources, targets, strict=True)):
        alone = model(source, None, target)
        length = target.shape[1]
        torch.testing.assert_close(batch_logits[i : i + 1, :length], alone, atol=ATOL, rtol=0)


def identity_attention(d_model: int, heads: int) -> MultiHeadAttention:
    attention = MultiHeadAttention(d_model, heads, dropout=0.0)
    with torch.no_grad():
        for projection in (attention.q_proj, attention.out_proj):
            projection.weight.copy_(torch.eye(d_model))
            projection.bias.zero_()
    return attention


def test_module_scales_scores_by_one_over_sqrt_d_head():
    """One-hot values make the attention output equal the attention probabilities, whose log
    differences are the scaled scores: we recover the scale the module really applies."""
    d_head, keys_len = 64, 16
    attention = identity_attention(d_head, heads=1)
    generator = torch.Generator().manual_seed(12)
    query = torch.randn(1, 1, d_head, generator=generator)
    keys = torch.randn(1, 1, keys_len, d_head, generator=generator)
    values = torch.eye(keys_len, d_head)[None, None]  # value j = one-hot(j)
    probabilities = attention(attention.project_q(query), keys, values)[0, 0, :keys_len]
    raw_scores = keys[0, 0] @ query[0, 0]
    log_ratio = probabilities.log() - probabilities.log()[0]
    scale = log_ratio[1:] / (raw_scores[1:] - raw_scores[0])
    torch.testing.assert_close(
        scale, torch.full_like(scale, 1 / math.sqrt(d_head)), atol=1e-4, rtol=0
    )


def reference_attention(
    attention: MultiHeadAttention,
    query: torch.Tensor,
    source: torch.Tensor,
    allowed: torch.Tensor | None,
) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V per head, written out with plain tensor operations."""
    heads, d_head = attention.heads, attention.d_head
    outputs = []
    for h in range(heads):
        rows = slice(h * d_head, (h + 1) * d_head)

        def project(x, linear, rows=rows):
            return x @ linear.weight[rows].T + linear.bias[rows]

        q = project(query, attention.q_proj)
        k = project(source, attention.k_proj)
        v = project(source, attention.v_proj)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d_head)  # (batch, q_len, k_len)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        outputs.append(torch.softmax(scores, dim=-1) @ v)
    return attention.out_proj(torch.cat(outputs, dim=-1))


def test_sdpa_path_equals_plain_softmax_attention_with_padding_mask():
    torch.manual_seed(13)
    attention = MultiHeadAttention(32, 4, dropout=0.0)
    query = torch.randn(2, 5, 32)
    source = torch.randn(2, 7, 32)
    pad_mask = torch.tensor([[False] * 7, [False] * 4 + [True] * 3])
    allowed = padding_to_attention_mask(pad_mask)
    out = attention(attention.project_q(query), *attention.project_kv(source), attn_mask=allowed)
    expected = reference_attention(attention, query, source, allowed[:, 0])
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("with_padding", [False, True])
def test_sdpa_path_equals_plain_softmax_attention_with_causal_mask(with_padding):
    torch.manual_seed(14)
    attention = MultiHeadAttention(32, 4, dropout=0.0)
    x = torch.randn(2, 6, 32)
    pad_mask = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    allowed = padding_to_attention_mask(pad_mask) if with_padding else None
    out = attention(*attention.project_qkv(x), attn_mask=allowed, causal=True)
    reference_mask = causal_mask(6, 6, x.device)[None]
    if with_padding:
        reference_mask = reference_mask & allowed[:, 0]
    expected = reference_attention(attention, x, x, reference_mask)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


def test_causal_mask_aligns_new_queries_with_the_last_keys():
    assert causal_mask(2, 4, torch.device("cpu")).tolist() == [
        [True, True, True, False],
        [True, True, True, True],
    ]


def test_last_queries_of_a_causal_sequence_match_the_full_computation():
    torch.manual_seed(15)
    attention = MultiHeadAttention(32, 4, dropout=0.0)
    x = torch.randn(1, 6, 32)
    queries, keys, values = attention.project_qkv(x)
    full = attention(queries, keys, values, causal=True)
    tail = attention(queries[:, :, 4:], keys, values, causal=True)
    torch.testing.assert_close(tail, full[:, 4:], atol=ATOL, rtol=0)
