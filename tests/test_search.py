"""Search: beam results pinned with a scripted decoder, and equivalences on a real model."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from helpers import pad_to, random_tokens, tiny_model

from seq2seq.cache import Attend
from seq2seq.config import DecodeConfig, SearchStrategy
from seq2seq.constants import BOS_ID, EOS_ID, PAD_ID
from seq2seq.decoding import Seq2SeqModel
from seq2seq.fast.kernels import torch_topk
from seq2seq.layers import padding_to_attention_mask
from seq2seq.model import Transformer
from seq2seq.search import (
    Hypothesis,
    NextToken,
    beam_search,
    filter_distribution,
    greedy_search,
    length_penalty,
    sample_search,
    search,
)

A, B, C = 4, 5, 6  # ordinary tokens of the scripted vocabulary
VOCAB = 8
RARE = 1e-12  # probability of every token a script does not name


Script = Callable[[int, tuple[int, ...]], dict[int, float]]


class ScriptedCache:
    """Per row: which sentence it belongs to and the tokens fed so far."""

    def __init__(self, batch: int) -> None:
        self.sentences = list(range(batch))
        self.prefixes: list[list[int]] = [[] for _ in range(batch)]
        self.attend: Attend | None = None  # set by the search, unused

    def reorder(self, index: torch.Tensor, group_size: int | None = None) -> None:
        self.sentences = [self.sentences[i] for i in index.tolist()]
        self.prefixes = [list(self.prefixes[i]) for i in index.tolist()]


@dataclass
class ScriptedConfig:
    max_positions: int


class ScriptedModel:
    """A decoder whose next-token distribution is a fixed table: script(sentence, prefix)
    returns {token: probability} for the output prefix (bos excluded)."""

    def __init__(self, script: Script, max_positions: int = 64) -> None:
        self.script = script
        self.cfg = ScriptedConfig(max_positions)
        self.rows_per_step: list[int] = []
        self.encoded: list[torch.Size] = []  # the shape of each batch encoded
        self.output_projection = torch.nn.Identity()  # decode_step's "hidden" are the logits

    def encode(self, src: torch.Tensor, src_pad_mask: torch.Tensor) -> torch.Tensor:
        self.encoded.append(src.shape)
        return src

    def init_cache(self, memory: torch.Tensor, src_pad_mask: torch.Tensor) -> ScriptedCache:
        return ScriptedCache(memory.shape[0])

    def decode_step(
        self, tokens: torch.Tensor, cache: ScriptedCache, project: bool = True
    ) -> torch.Tensor:
        self.rows_per_step.append(len(tokens))
        logits = torch.full((len(tokens), VOCAB), math.log(RARE))
        for row, token in enumerate(tokens.tolist()):
            if token != BOS_ID:
                cache.prefixes[row].append(token)
            table = self.script(cache.sentences[row], tuple(cache.prefixes[row]))
            for token_id, probability in table.items():
                logits[row, token_id] = math.log(probability)
        return logits


def short_or_long(sentence, prefix):
    """[eos] has the higher total probability, [A, eos] the higher per-token probability."""
    return {(): {EOS_ID: 0.5, A: 0.5}, (A,): {EOS_ID: 0.7, B: 0.3}}.get(prefix, {EOS_ID: 0.9})


def run(script, beam=2, sentences=1, **decode):
    model = ScriptedModel(script)
    src = torch.full((sentences, 3), 7)
    cfg = DecodeConfig(strategy="beam", beam=beam, **decode)
    return model, beam_search(model, src, src == PAD_ID, cfg)


def test_without_length_penalty_the_higher_total_wins():
    _, [[best]] = run(short_or_long, length_penalty=0.0)
    assert best.tokens == []
    assert best.score == pytest.approx(math.log(0.5))


def test_length_penalty_favours_the_longer_hypothesis():
    _, [[best]] = run(short_or_long, length_penalty=1.0)
    assert best.tokens == [A]
    assert best.score == pytest.approx((math.log(0.5) + math.log(0.7)) / 2)


def test_gnmt_length_penalty_formula():
    cfg = DecodeConfig(length_penalty=0.6, length_penalty_form="gnmt")
    assert length_penalty(7, cfg) == pytest.approx(((5 + 7) / 6) ** 0.6)
    assert length_penalty(7, DecodeConfig(length_penalty=0.6)) == pytest.approx(7**0.6)


def test_nbest_lists_hypotheses_best_first_with_token_scores():
    _, [nbest] = run(short_or_long, nbest=2, length_penalty=1.0)
    assert [h.tokens for h in nbest] == [[A], []]
    assert nbest[0].token_scores == pytest.approx([math.log(0.5), math.log(0.7)])
    assert nbest[1].token_scores == pytest.approx([math.log(0.5)])
    assert nbest[0].score > nbest[1].score


def test_min_len_forbids_early_eos():
    _, [[best]] = run(short_or_long, min_len=2, length_penalty=1.0)
    assert len(best.tokens) >= 2
    assert best.tokens[:2] == [A, B]


def test_max_len_forces_eos():
    def loves_a(sentence, prefix):
        return {A: 0.99, EOS_ID: 0.01}

    _, [[best]] = run(loves_a, beam=1, max_len_a=0.0, max_len_b=2)
    assert best.tokens == [A, A]
    assert best.token_scores[-1] == pytest.approx(math.log(0.01))


def test_eos_outside_the_first_beam_candidates_does_not_finish_a_hypothesis():
    """With beam 1 only the single best candidate may end a hypothesis: eos at rank 2 at step 0
    must not produce the empty translation (fairseq's rule)."""

    def script(sentence, prefix):
        return {(): {A: 0.6, EOS_ID: 0.4}}.get(prefix, {EOS_ID: 0.95})

    _, [[best]] = run(script, beam=1, length_penalty=0.0)
    assert best.tokens == [A]


def test_a_sentence_is_done_when_it_has_beam_finished_hypotheses():
    """fairseq's stopping rule: [A] and [] finish first, so [A, A] is never completed."""

    def script(sentence, prefix):
        return {A: 0.99, EOS_ID: 0.01}

    _, [nbest] = run(script, beam=2, nbest=2, length_penalty=1.0)
    assert [h.tokens for h in nbest] == [[A], []]


def test_finished_sentences_leave_the_batch():
    def script(sentence, prefix):
        if sentence == 0:
            return {EOS_ID: 0.99}
        return {A: 0.9, C: 0.0999, EOS_ID: 1e-4} if len(prefix) < 4 else {EOS_ID: 0.99}

    model, results = run(script, beam=2, sentences=2, length_penalty=1.0)
    assert results[0][0].tokens == []
    assert results[1][0].tokens == [A, A, A, A]
    assert model.rows_per_step[:2] == [2, 4]  # one row per sentence, then 2 x beam 2
    assert max(model.rows_per_step[2:]) == 2  # sentence 0 is gone


def test_a_beam_wider_than_half_the_vocabulary_fills_up_with_rare_tokens():
    """beam 5 over 8 tokens (5 allowed): the first step, one row per sentence, has fewer
    than 2 x beam candidates; the rest are dead and never finish."""
    model, [nbest] = run(short_or_long, beam=5, nbest=5, length_penalty=1.0)
    assert [h.tokens for h in nbest[:2]] == [[A], []]
    assert sorted(h.tokens[0] for h in nbest[2:]) == [1, B, C]  # unk, B, C: all rare
    assert all(h.score == pytest.approx(math.log(RARE) / 2) for h in nbest[2:])
    assert model.rows_per_step[:2] == [1, 5]


def test_the_length_limit_grows_with_the_source():
    """max_len = a * source length + b output tokens before eos; the source length counts
    the eos the translator appends (here 3 and 6 positions, no padding in either)."""
    model = ScriptedModel(lambda sentence, prefix: {A: 0.6, B: 0.4})  # eos: RARE, never wanted
    src = torch.cat([pad_to(torch.full((1, 3), 7), 6), torch.full((1, 6), 7)])
    for strategy in ("greedy", "beam"):
        cfg = DecodeConfig(strategy=strategy, beam=2, max_len_a=1.5, max_len_b=1)
        found = search(model, src, src == PAD_ID, cfg)
        assert [len(nbest[0].tokens) for nbest in found] == [5, 10]  # 1.5 * 3 + 1, 1.5 * 6 + 1


def test_the_encoder_runs_once_per_batch():
    model = ScriptedModel(short_or_long)
    beam_search(
        model,
        torch.full((3, 4), 7),
        torch.zeros(3, 4, dtype=torch.bool),
        DecodeConfig(strategy="beam", beam=2),
    )
    assert model.encoded == [(3, 4)]


def test_no_repeat_ngram_blocks_repeats():
    def loves_a_then_b(sentence, prefix):
        return {A: 0.6, B: 0.3, C: 0.09, EOS_ID: 0.01} if len(prefix) < 6 else {EOS_ID: 0.99}

    _, [[plain]] = run(loves_a_then_b, beam=1)
    assert plain.tokens == [A] * 6
    _, [[blocked]] = run(loves_a_then_b, beam=1, no_repeat_ngram=2)
    bigrams = list(zip(blocked.tokens, blocked.tokens[1:], strict=False))
    assert len(bigrams) == len(set(bigrams))


# --------------------------------------------------------------------------- a real model


def batch_of(*lengths: int):
    sources = [random_tokens(1, n, seed=60 + n) for n in lengths]
    width = max(lengths)
    src = torch.cat([pad_to(s, width) for s in sources])
    return sources, src, src == PAD_ID


def test_beam_one_equals_greedy():
    model = tiny_model()
    _, src, mask = batch_of(5, 8, 3)
    greedy = greedy_search(model, src, mask, DecodeConfig(strategy="greedy"))
    beam = beam_search(model, src, mask, DecodeConfig(strategy="beam", beam=1))
    assert [g[0].tokens for g in greedy] == [b[0].tokens for b in beam]
    for g, b in zip(greedy, beam, strict=True):
        assert g[0].score == pytest.approx(b[0].score, abs=1e-5)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_a_batch_decodes_like_each_sentence_alone(strategy):
    model = tiny_model()
    sources, src, mask = batch_of(5, 8, 3, 6)
    cfg = DecodeConfig(strategy=strategy, beam=4, nbest=2 if strategy == "beam" else 1)
    together = search(model, src, mask, cfg)
    for source, hypotheses in zip(sources, together, strict=True):
        alone = search(model, source, source == PAD_ID, cfg)[0]
        assert [h.tokens for h in hypotheses] == [h.tokens for h in alone]
        assert [h.score for h in hypotheses] == pytest.approx([h.score for h in alone], abs=1e-4)


def test_cached_greedy_equals_recomputing_the_whole_prefix():
    model = tiny_model()
    _, src, mask = batch_of(6, 4)
    cfg = DecodeConfig(strategy="greedy", max_len_a=0.0, max_len_b=8)
    cached = [h[0].tokens for h in greedy_search(model, src, mask, cfg)]
    for i in range(src.shape[0]):  # uncached: the full forward pass at every step
        prefix = torch.tensor([[BOS_ID]])
        output: list[int] = []
        for _ in range(9):
            logits = model(src[i : i + 1], mask[i : i + 1], prefix)[0, -1]
            logits[[PAD_ID, BOS_ID]] = float("-inf")
            token = int(logits.argmax()) if len(output) < 8 else EOS_ID
            if token == EOS_ID:
                break
            output.append(token)
            prefix = torch.cat([prefix, torch.tensor([[token]])], dim=1)
        assert cached[i] == output


class RecomputingCache:
    """Each row's encoder output, source mask and target prefix: no keys or values."""

    def __init__(self, memory: torch.Tensor, src_pad_mask: torch.Tensor) -> None:
        self.memory, self.src_pad_mask = memory, src_pad_mask
        self.prefixes = torch.zeros(len(memory), 0, dtype=torch.long)
        self.attend: Attend | None = None  # set by the search, unused

    def reorder(self, index: torch.Tensor, group_size: int | None = None) -> None:
        self.memory, self.src_pad_mask = self.memory[index], self.src_pad_mask[index]
        self.prefixes = self.prefixes[index]


class Recomputing:
    """The model without its cache: every step runs the whole decoder over the whole prefix,
    which is what cached decoding must equal."""

    def __init__(self, model: Transformer) -> None:
        self.model, self.cfg = model, model.cfg
        self.output_projection = model.output_projection

    def encode(self, src: torch.Tensor, src_pad_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode(src, src_pad_mask)

    def init_cache(self, memory: torch.Tensor, src_pad_mask: torch.Tensor) -> RecomputingCache:
        return RecomputingCache(memory, src_pad_mask)

    def decode_step(
        self, tokens: torch.Tensor, cache: RecomputingCache, project: bool = True
    ) -> torch.Tensor:
        cache.prefixes = torch.cat([cache.prefixes, tokens[:, None]], dim=1)
        attn_mask = padding_to_attention_mask(cache.src_pad_mask)
        hidden = self.model.decoder(cache.prefixes, cache.memory, attn_mask)[:, -1]
        return self.output_projection(hidden) if project else hidden


def doubles_match_the_decoding_contract(script: Script, model: Transformer) -> None:
    """Never called: the type checker (`mypy`, which reads this file) proves that the test
    doubles have what `seq2seq.search` needs of a model and its cache."""
    scripted: Seq2SeqModel[ScriptedCache] = ScriptedModel(script)
    recomputing: Seq2SeqModel[RecomputingCache] = Recomputing(model)
    del scripted, recomputing


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_cached_beam_search_equals_recomputing_the_whole_prefix(length_penalty):
    model = tiny_model()
    _, src, mask = batch_of(6, 4, 9)
    cfg = DecodeConfig(strategy="beam", beam=3, nbest=3, length_penalty=length_penalty)
    cached = beam_search(model, src, mask, cfg)
    uncached = beam_search(Recomputing(model), src, mask, cfg)
    for a, b in zip(cached, uncached, strict=True):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)


def test_scores_are_the_sums_of_token_scores_normalised():
    model = tiny_model()
    _, src, mask = batch_of(5, 7)
    cfg = DecodeConfig(strategy="beam", beam=3, nbest=3, length_penalty=0.6)
    for nbest in beam_search(model, src, mask, cfg):
        assert len(nbest) == 3
        for h in nbest:
            assert isinstance(h, Hypothesis)
            assert len(h.token_scores) == len(h.tokens) + 1
            normaliser = length_penalty(len(h.tokens) + 1, cfg)
            assert h.score == pytest.approx(sum(h.token_scores) / normaliser, abs=1e-4)
        assert [h.score for h in nbest] == sorted((h.score for h in nbest), reverse=True)


def test_sampling_is_reproducible_from_its_seed():
    model = tiny_model()
    _, src, mask = batch_of(5, 7)
    cfg = DecodeConfig(strategy="sample", seed=3)
    first = [h[0].tokens for h in sample_search(model, src, mask, cfg)]
    assert first == [h[0].tokens for h in sample_search(model, src, mask, cfg)]
    others = {
        tuple(h[0].tokens)
        for seed in range(8)
        for h in sample_search(model, src, mask, DecodeConfig(strategy="sample", seed=seed))
    }
    assert len(others) > 1


def test_sampling_with_top_k_one_is_greedy():
    model = tiny_model()
    _, src, mask = batch_of(5, 7)
    greedy = [h[0].tokens for h in greedy_search(model, src, mask, DecodeConfig())]
    sampled = sample_search(model, src, mask, DecodeConfig(strategy="sample", top_k=1))
    assert [h[0].tokens for h in sampled] == greedy


def test_filter_distribution_keeps_top_k_and_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept_k = filter_distribution(logits, top_k=2, top_p=1.0)
    assert torch.isinf(kept_k).tolist() == [[False, False, True, True]]
    kept_p = filter_distribution(logits, top_k=0, top_p=0.75)
    assert torch.isinf(kept_p).tolist() == [[False, False, True, True]]
    kept_tiny = filter_distribution(logits, top_k=0, top_p=0.01)
    assert torch.isinf(kept_tiny).tolist() == [[False, True, True, True]]


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_max_len_is_capped_by_the_models_positions(strategy):
    model = ScriptedModel(lambda sentence, prefix: {A: 0.5, B: 0.5}, max_positions=5)
    src = torch.full((1, 3), 7)
    cfg = DecodeConfig(strategy=strategy, beam=2, max_len_a=0.0, max_len_b=100)
    [[best]] = search(model, src, src == PAD_ID, cfg)
    assert len(best.tokens) == 4  # bos + 4 tokens fill the 5 positions; then eos is forced
    assert best.token_scores[-1] == pytest.approx(math.log(RARE), rel=1e-3)


def test_sampling_temperature_sharpens_or_keeps_the_distribution():
    def a_or_b(sentence, prefix):
        return {A: 0.6, B: 0.4} if not prefix else {EOS_ID: 1.0}

    model = ScriptedModel(a_or_b)
    src = torch.full((400, 3), 7)

    def first_tokens(temperature: float) -> list[int]:
        cfg = DecodeConfig(strategy=SearchStrategy.sample, temperature=temperature, seed=1)
        return [h[0].tokens[0] for h in search(model, src, src == PAD_ID, cfg)]

    assert set(first_tokens(0.05)) == {A}  # (0.6 / 0.4) ** 20: B is practically never drawn
    share_of_a = first_tokens(1.0).count(A) / 400
    assert 0.52 < share_of_a < 0.68  # the model's own 0.6


def test_under_bf16_the_top_candidates_are_rescored_in_float32():
    torch.manual_seed(0)
    layer = torch.nn.Linear(32, 100, bias=False)
    hidden = torch.randn(4, 32) * 4  # logits of about 20: bf16 steps of 0.125
    with torch.no_grad():
        exact = torch.log_softmax(layer(hidden), dim=-1)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # as the search runs it
            logits = layer(hidden)
            assert logits.dtype == torch.bfloat16
            log_probs = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
            rescored, tokens = NextToken(log_probs, logits, hidden, layer, torch_topk).top(5)
    rounded_error = (log_probs.gather(1, tokens) - exact.gather(1, tokens)).abs().max()
    rescored_error = (rescored - exact.gather(1, tokens)).abs().max()
    assert rounded_error > 0.02, rounded_error
    assert rescored_error < 0.002, rescored_error


def test_at_the_length_limit_eos_is_allowed_even_before_min_len():
    _, [[best]] = run(short_or_long, beam=1, max_len_a=0.0, max_len_b=1, min_len=5)
    assert best.tokens == [A]  # min_len 5 cannot be met: the limit of 1 token wins
    assert best.token_scores[-1] == pytest.approx(math.log(0.7))
