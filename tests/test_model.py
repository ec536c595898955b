"""The Transformer as a whole: cached decoding, embedding tying, gradients, sizes."""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import pad_to, random_tokens, tiny_config, tiny_model

from seq2seq.constants import PAD_ID
from seq2seq.fast import Dropout
from seq2seq.loss import label_smoothed_cross_entropy
from seq2seq.model import Transformer, count_parameters
from seq2seq.sizes import parameter_count

ARCHITECTURES = [
    dict(norm="post", positions="sinusoidal"),
    dict(norm="pre", positions="sinusoidal"),
    dict(norm="pre", positions="learned", activation="gelu", tie_embeddings="none"),
]


def padded_batch():
    """Three sources of different lengths, right-padded, and their target prefixes."""
    sources = [random_tokens(1, n, seed=40 + n) for n in (7, 4, 6)]
    src = torch.cat([pad_to(s, 7) for s in sources])
    tgt = random_tokens(3, 8, seed=41)
    return src, src == PAD_ID, tgt


def decode_incrementally(model, src, src_pad_mask, tgt, reorder_at=None, index=None):
    """Logits from decode_step, one position at a time; optionally reorder the cache midway."""
    cache = model.init_cache(model.encode(src, src_pad_mask), src_pad_mask)
    steps = []
    for t in range(tgt.shape[1]):
        if t == reorder_at:
            cache.reorder(index)
            tgt = tgt[index]
            steps = [step[index] for step in steps]
        steps.append(model.decode_step(tgt[:, t], cache))
    return torch.stack(steps, dim=1)


@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda a: "-".join(a.values()))
def test_cached_decode_step_reproduces_full_forward(architecture):
    model = tiny_model(**architecture)
    src, src_pad_mask, tgt = padded_batch()
    with torch.no_grad():
        full = model(src, src_pad_mask, tgt)
        incremental = decode_incrementally(model, src, src_pad_mask, tgt)
    assert (incremental - full).abs().max().item() <= 1e-5


def test_cached_decoding_under_bf16_autocast_stays_close_to_the_full_forward():
    """One query per step against all of them at once, both rounded to bf16: the cached path
    may not drift from the full forward."""
    model = tiny_model()
    src, src_pad_mask, tgt = padded_batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full = model(src, src_pad_mask, tgt).float()
        incremental = decode_incrementally(model, src, src_pad_mask, tgt).float()
    assert (incremental - full).abs().max().item() <= 0.02 * full.abs().max().item()


@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda a: "-".join(a.values()))
def test_cache_reorder_moves_every_state_with_its_row(architecture):
    """Reorder like a beam search would: repeat, drop and permute rows midway through."""
    model = tiny_model(**architecture)
    src, src_pad_mask, tgt = padded_batch()
    index = torch.tensor([2, 0, 0, 1])
    with torch.no_grad():
        expected = model(src[index], src_pad_mask[index], tgt[index])
        incremental = decode_incrementally(model, src, src_pad_mask, tgt, reorder_at=3, index=index)
    assert (incremental - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda a: "-".join(a.values()))
def test_beams_sharing_cross_attention_state_decode_like_separate_rows(architecture):
    """Groups of k rows keep one cross-attention state per sentence for its k beams; the logits
    equal those of k independent copies, also after beams are reordered and a sentence is
    dropped."""
    model = tiny_model(**architecture)
    src, src_pad_mask, tgt = padded_batch()  # 3 sentences
    beam = 2
    rows = torch.arange(3).repeat_interleave(beam)
    tokens = random_tokens(6, 5, seed=44)
    reorders = {2: torch.tensor([1, 1, 2, 3, 4, 5]), 3: torch.tensor([0, 1, 4, 5])}
    grouped = model.init_cache(model.encode(src, src_pad_mask), src_pad_mask)
    grouped.reorder(rows, group_size=beam)  # each sentence's one row becomes its beams
    separate = model.init_cache(model.encode(src[rows], src_pad_mask[rows]), src_pad_mask[rows])
    with torch.no_grad():
        for step in range(5):
            if step in reorders:
                index = reorders[step]
                grouped.reorder(index)
                separate.reorder(index)
                tokens = tokens[index]
            expected = model.decode_step(tokens[:, step], separate)
            actual = model.decode_step(tokens[:, step], grouped)
            torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    assert grouped.groups == 2  # the middle sentence was dropped


def test_widening_one_row_per_sentence_to_its_beams_after_a_step_decodes_like_separate_rows():
    """Beam search's first step: one row per sentence, then reorder(index, group_size=beam)
    repeats each row for its beams (and here drops the middle sentence)."""
    model = tiny_model()
    src, src_pad_mask, _ = padded_batch()  # 3 sentences
    beam = 3
    first = random_tokens(3, 1, seed=45)[:, 0]
    later = random_tokens(2 * beam, 3, seed=46)  # the kept sentences' beams
    kept = torch.tensor([0, 2]).repeat_interleave(beam)  # rows of the 3-row first step
    grouped = model.init_cache(model.encode(src, src_pad_mask), src_pad_mask)
    separate = model.init_cache(model.encode(src[kept], src_pad_mask[kept]), src_pad_mask[kept])
    with torch.no_grad():
        model.decode_step(first, grouped)
        model.decode_step(first[kept], separate)
        grouped.reorder(kept, group_size=beam)
        assert (grouped.groups, grouped.group_size) == (2, beam)
        for step in range(3):
            expected = model.decode_step(later[:, step], separate)
            actual = model.decode_step(later[:, step], grouped)
            torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_cache_grows_by_one_position_per_step_and_keeps_cross_attention_fixed():
    model = tiny_model()
    src, src_pad_mask, tgt = padded_batch()
    cache = model.init_cache(model.encode(src, src_pad_mask), src_pad_mask)
    cross_keys = cache.layers[0].cross_keys
    for t in range(3):
        assert cache.steps == t
        model.decode_step(tgt[:, t], cache)
    assert cache.layers[-1].self_keys.shape == (3, 4, 3, 8)  # (batch, heads, steps, d_head)
    assert cache.layers[0].cross_keys is cross_keys


def test_tie_all_shares_one_matrix_for_three_embeddings():
    model = tiny_model(tie_embeddings="all")
    encoder = model.encoder.embedder.embed_tokens.weight
    decoder = model.decoder.embedder.embed_tokens.weight
    assert encoder is decoder is model.output_projection.weight
    assert encoder.data_ptr() == model.output_projection.weight.data_ptr()


def test_tie_decoder_shares_decoder_input_and_output_only():
    model = tiny_model(tie_embeddings="decoder")
    decoder = model.decoder.embedder.embed_tokens.weight
    assert decoder.data_ptr() == model.output_projection.weight.data_ptr()
    assert model.encoder.embedder.embed_tokens.weight.data_ptr() != decoder.data_ptr()


def test_tie_none_keeps_three_matrices():
    model = tiny_model(tie_embeddings="none")
    pointers = {
        model.encoder.embedder.embed_tokens.weight.data_ptr(),
        model.decoder.embedder.embed_tokens.weight.data_ptr(),
        model.output_projection.weight.data_ptr(),
    }
    assert len(pointers) == 3


@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda a: "-".join(a.values()))
def test_every_parameter_receives_a_gradient(architecture):
    model = tiny_model(**architecture).train()
    src, src_pad_mask, tgt = padded_batch()
    logits = model(src, src_pad_mask, tgt)
    label_smoothed_cross_entropy(logits, tgt, smoothing=0.1, pad_id=PAD_ID).loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_padding_embedding_starts_at_zero():
    model = tiny_model()
    assert model.decoder.embedder.embed_tokens.weight[PAD_ID].abs().sum() == 0


@pytest.mark.parametrize(
    "norm, positions, tie",
    list(
        itertools.product(
            ["post", "pre"], ["sinusoidal", "learned", "none"], ["none", "decoder", "all"]
        )
    ),
)
def test_parameter_count_matches_the_closed_form(norm, positions, tie):
    """`seq2seq-info` counts from the config (seq2seq/sizes.py): the built model agrees."""
    cfg = tiny_config(
        decoder_layers=3,
        norm=norm,
        positions=positions,
        tie_embeddings=tie,
        src_vocab_size=30 if tie != "all" else 50,
    )
    assert parameter_count(cfg) == count_parameters(Transformer(cfg))


def test_positions_beyond_max_positions_are_a_clear_error():
    model = tiny_model(max_positions=8)
    with pytest.raises(ValueError, match="max_positions=8"):
        model.encode(random_tokens(1, 9, seed=1), None)


def test_dropout_is_active_in_training_and_off_in_eval():
    model = tiny_model(dropout=0.3)
    src, src_pad_mask, tgt = padded_batch()
    with torch.no_grad():
        eval_logits = model(src, src_pad_mask, tgt)
        torch.testing.assert_close(model(src, src_pad_mask, tgt), eval_logits)
        model.train()
        assert not torch.allclose(model(src, src_pad_mask, tgt), eval_logits)


def test_cpu_dropout_drops_p_and_keeps_the_expectation():
    dropout = Dropout(0.3).train()
    x = torch.ones(400, 500, requires_grad=True)
    y = dropout(x)
    dropped = (y == 0).float().mean().item()
    assert dropped == pytest.approx(0.3, abs=0.005)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # gradient = mask / (1 - p)


def test_cpu_dropout_follows_the_torch_seed_and_is_identity_when_off():
    dropout = Dropout(0.1).train()
    x = torch.randn(50, 60)
    torch.manual_seed(3)
    first = dropout(x)
    torch.manual_seed(3)
    torch.testing.assert_close(dropout(x), first)
    assert not torch.equal(dropout(x), first)
    assert dropout.eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    assert Dropout(1.0).train()(x).abs().sum() == 0
