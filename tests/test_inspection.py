"""Attention made visible: the weights `seq2seq-attention` draws are the ones the model uses."""

from __future__ import annotations

import pytest
import torch
from helpers import pad_to, random_tokens, tiny_model

from seq2seq.constants import EOS_ID, PAD_ID
from seq2seq.inspection import attention_maps
from seq2seq.layers import MultiHeadAttention, padding_to_attention_mask


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(batch, heads, len, d_head) -> (batch, len, heads * d_head)."""
    batch, heads, length, d_head = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * d_head)


@pytest.mark.parametrize("kind", ["bidirectional with padding", "causal", "cross"])
def test_written_out_weights_reproduce_the_sdpa_output(kind):
    torch.manual_seed(0)
    attention = MultiHeadAttention(16, 4, dropout=0.0).eval()
    query = torch.randn(2, 5, 16)
    source = torch.randn(2, 7, 16) if kind == "cross" else query
    queries, (keys, values) = attention.project_q(query), attention.project_kv(source)
    mask, causal = None, kind == "causal"
    if kind != "causal":
        pad = torch.zeros(2, source.shape[1], dtype=torch.bool)
        pad[1, -2:] = True
        mask = padding_to_attention_mask(pad)
    weights = attention.attention_weights(queries, keys, mask, causal)
    expected = attention(queries, keys, values, attn_mask=mask, causal=causal)
    torch.testing.assert_close(attention.out_proj(merge_heads(weights @ values)), expected)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    if mask is not None:
        assert weights[1, :, :, -2:].abs().sum() == 0  # padding gets no weight


def test_maps_have_the_shapes_and_structure_of_each_attention():
    model = tiny_model()
    source = [*random_tokens(1, 6, seed=1)[0].tolist(), EOS_ID]
    target = [*random_tokens(1, 4, seed=2)[0].tolist(), EOS_ID]
    maps = attention_maps(model, source, target)
    layers, heads = len(model.encoder.layers), model.cfg.heads
    assert maps.encoder.shape == (layers, heads, 7, 7)
    assert maps.decoder.shape == (layers, heads, 5, 5)
    assert maps.cross.shape == (layers, heads, 5, 7)
    for weights in (maps.encoder, maps.decoder, maps.cross):
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    above_diagonal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    assert maps.decoder[..., above_diagonal].abs().max() == 0  # causal
    assert maps.encoder[..., torch.ones(7, 7, dtype=torch.bool).triu(1)].min() > 0  # full


def test_maps_of_a_sentence_do_not_depend_on_padding_it_never_had():
    model = tiny_model()
    tokens = random_tokens(1, 6, seed=3)
    source = [*tokens[0].tolist(), EOS_ID]
    target = [*random_tokens(1, 3, seed=4)[0].tolist(), EOS_ID]
    maps = attention_maps(model, source, target)
    # the same sentence run padded inside a batch gives the same cross-attention rows
    src = pad_to(torch.tensor([source]), 9)
    captured = []
    layer = model.decoder.layers[0].cross_attn
    handle = layer.register_forward_hook(
        lambda m, args, kwargs, out: captured.append(
            m.attention_weights(args[0], args[1], kwargs.get("attn_mask"))
        ),
        with_kwargs=True,
    )
    with torch.no_grad():
        model(src, src == PAD_ID, torch.tensor([[2, *target[:-1]]]))
    handle.remove()
    torch.testing.assert_close(captured[0][0, :, :, :7], maps.cross[0])
