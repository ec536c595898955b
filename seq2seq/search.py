"""Search for translations with the cached decoder: greedy, beam search, sampling.

Every strategy runs the encoder once per batch and feeds only the newest token of each
hypothesis to `Transformer.decode_step`; cross-attention keys/values are computed once in
`init_cache`. The time loop is the only Python loop over positions. Finished sentences leave
the active batch: one `DecoderCache.reorder(index)` per step both follows the surviving beams
and drops finished rows. What a search needs of a model and its cache is typed in
`seq2seq.decoding`.

Beam search follows fairseq: at each step the 2 x beam best continuations of each sentence are
ranked; an eos among the first `beam` of them completes a hypothesis, the first `beam` non-eos
continuations form the next beam (so eos never starves the beam); a sentence is done when it
has `beam` finished hypotheses. Finished hypotheses are ranked by a length-normalised score:

    power: score / len ** alpha               (fairseq, Hugging Face, Marian, CTranslate2)
    gnmt:  score / ((5 + len) / 6) ** alpha   (Wu et al. 2016; OpenNMT-py)

where score is the sum of the token log-probabilities and len counts the output tokens
including eos. alpha = decode.length_penalty; alpha = 0 ranks by the plain sum (favouring short
outputs), larger alpha favours longer ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from seq2seq.config import DecodeConfig, LengthPenalty, SearchStrategy
from seq2seq.constants import BOS_ID, EOS_ID, PAD_ID
from seq2seq.decoding import CacheT, Seq2SeqModel
from seq2seq.fast import autocast_off
from seq2seq.fast.kernels import TopK, attention, row_topk


@dataclass
class Hypothesis:
    tokens: list[int]  # output ids, without bos and eos
    score: float  # length-normalised sum of log-probabilities (what hypotheses are ranked by)
    token_scores: list[float]  # log-probability of each output token, eos included


def length_penalty(length: int, cfg: DecodeConfig) -> float:
    """The divisor of a hypothesis score; `length` counts output tokens including eos."""
    if cfg.length_penalty_form == LengthPenalty.gnmt:
        return ((5.0 + length) / 6.0) ** cfg.length_penalty
    return float(length) ** cfg.length_penalty


def max_output_lengths(src_pad_mask: Tensor, cfg: DecodeConfig, max_positions: int) -> Tensor:
    """Per sentence, output tokens before eos: a * source length + b, capped so that bos and
    the tokens fed back (at most the limit) fit the model's positions. (batch,)"""
    src_lengths = (~src_pad_mask).sum(dim=1)
    limit = (cfg.max_len_a * src_lengths.float()).floor().long() + cfg.max_len_b
    return limit.clamp(min=1, max=max_positions - 1)


def constrain(logits: Tensor, step: int, at_limit: Tensor, cfg: DecodeConfig) -> Tensor:
    """Forbid pad/bos always, eos before min_len, and everything but eos at the length limit.
    logits: (rows, vocab) scores or log-probabilities, modified in place; at_limit: (rows,)."""
    logits[:, PAD_ID] = float("-inf")
    logits[:, BOS_ID] = float("-inf")
    limit = at_limit.nonzero().squeeze(1) if bool(at_limit.any()) else None  # usually none
    eos = None if limit is None else logits[limit, EOS_ID]  # a copy, before min_len acts
    if step < cfg.min_len:
        logits[:, EOS_ID] = float("-inf")
    if limit is not None and eos is not None:  # at the limit only eos, whatever min_len says
        logits[limit] = float("-inf")
        logits[limit, EOS_ID] = eos
    return logits


def ban_repeated_ngrams(logits: Tensor, prefixes: Tensor, n: int) -> None:
    """Forbid every token that would repeat an n-gram already in the row's prefix.
    prefixes: (rows, length) ids generated so far (bos first)."""
    length = prefixes.shape[1]
    if n == 0 or length < n:
        return
    for row, prefix in enumerate(prefixes.tolist()):
        tail = tuple(prefix[length - n + 1 :])
        for start in range(length - n + 1):
            if tuple(prefix[start : start + n - 1]) == tail:
                logits[row, prefix[start + n - 1]] = float("-inf")


def start(
    model: Seq2SeqModel[CacheT], src: Tensor, src_pad_mask: Tensor, cfg: DecodeConfig
) -> tuple[CacheT, Tensor]:
    """Encode once; return the cache and each sentence's output length limit."""
    cache = model.init_cache(model.encode(src, src_pad_mask), src_pad_mask)
    cache.attend = attention(cfg.kernels, src.device)
    return cache, max_output_lengths(src_pad_mask, cfg, model.cfg.max_positions)


@dataclass
class NextToken:
    """The model's distribution over the next token of each row."""

    log_probs: Tensor  # (rows, vocab) float32, forbidden tokens at -inf
    logits: Tensor  # (rows, vocab) in bf16/fp16 (`top` re-scores them); float32: = log_probs
    hidden: Tensor  # (rows, d_model) the decoder state the logits came from
    output_layer: torch.nn.Module  # hidden -> logits (its weight: (vocab, d_model))
    select: TopK  # (x, k) -> the k largest of each row and their indices (`seq2seq.fast.kernels`)

    def top(self, k: int) -> tuple[Tensor, Tensor]:
        """The k most probable tokens of each row (rows, k) and their log-probabilities.

        Under bf16/fp16 autocast the logits come out of the output layer rounded to 8 (or 11)
        bits: at a logit of 16 a bf16 step is 0.125, enough to reorder close hypotheses. The
        k chosen tokens are then re-scored exactly: their float32 logits z' replace the
        rounded ones z, and the normaliser is corrected with the same differences,
        log p'(t) = log p(t) + d_t - log(1 + sum_k p(k) (exp(d_k) - 1)),  d = z' - z.
        The other tokens keep their rounded logits (they only enter through the normaliser).
        """
        top_log_probs, top_tokens = self.select(self.log_probs, k)
        if self.logits.dtype == torch.float32:
            return top_log_probs, top_tokens
        weights = F.embedding(
            top_tokens, cast(Tensor, self.output_layer.weight).float()
        )  # (rows, k, d_model)
        with autocast_off(self.hidden.device.type):  # exact: float32
            exact = torch.linalg.vecdot(weights, self.hidden.float()[:, None, :])  # (rows, k)
        shift = exact - self.logits.gather(1, top_tokens).float()
        shift = shift.masked_fill(top_log_probs == float("-inf"), 0.0)  # forbidden stay so
        correction = torch.log1p((top_log_probs.exp() * shift.expm1()).sum(1, keepdim=True))
        return top_log_probs + shift - correction, top_tokens


@dataclass
class LogProbBuffer:
    """One float32 (rows, vocab) tensor that every step of a search reuses for its
    log-probabilities: a fresh tensor that size is memory the OS maps and zeroes anew at each
    step."""

    tensor: Tensor | None = None

    def holding(self, logits: Tensor) -> Tensor:
        """`logits` as float32: themselves if already float32, else converted into the buffer."""
        if logits.dtype == torch.float32:
            return logits
        rows = logits.shape[0]  # shrinks as sentences finish; grows once after the first step
        if self.tensor is None or self.tensor.shape[0] < rows:
            self.tensor = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
        return self.tensor[:rows].copy_(logits)


def next_token(
    model: Seq2SeqModel[CacheT],
    tokens: Tensor,
    cache: CacheT,
    step: int,
    at_limit: Tensor,
    cfg: DecodeConfig,
    buffer: LogProbBuffer,
    select: TopK,
) -> NextToken:
    """log p(token | source, prefix) for the position after `tokens[:, -1]`, forbidden tokens
    at -inf (`constrain`, `ban_repeated_ngrams`), in one fused log_softmax pass. Low-precision
    logits are converted to float32 first: on CPU, `log_softmax(bf16, dtype=float32)` takes a
    slower path than the two steps."""
    hidden = model.decode_step(tokens[:, -1], cache, project=False)
    logits = model.output_projection(hidden)
    log_probs = buffer.holding(logits)  # float32 logits are overwritten: `top` needs only bf16
    torch.log_softmax(log_probs, dim=-1, out=log_probs)  # in place: one (rows, vocab) less
    constrain(log_probs, step, at_limit, cfg)
    ban_repeated_ngrams(log_probs, tokens, cfg.no_repeat_ngram)
    return NextToken(log_probs, logits, hidden, model.output_projection, select)


# --------------------------------------------------------------------------- one path per input


@torch.no_grad()
def single_path_search(
    model: Seq2SeqModel[CacheT],
    src: Tensor,
    src_pad_mask: Tensor,
    cfg: DecodeConfig,
    choose: Callable[[NextToken], tuple[Tensor, Tensor]],
) -> list[list[Hypothesis]]:
    """Extend one hypothesis per sentence with `choose(prediction) -> (tokens, log-probs)`
    until eos."""
    batch, device = src.shape[0], src.device
    cache, max_lengths = start(model, src, src_pad_mask, cfg)
    steps = int(max_lengths.max()) + 1  # + 1 for eos
    output = torch.full((batch, steps), EOS_ID, dtype=torch.long, device=device)
    token_scores = torch.zeros(batch, steps, device=device)
    active = torch.arange(batch, device=device)  # rows of the batch still decoding
    tokens = torch.full((batch, 1), BOS_ID, dtype=torch.long, device=device)
    buffer, select = LogProbBuffer(), row_topk(cfg.kernels, device)
    for step in range(steps):
        at_limit = step >= max_lengths[active]
        prediction = next_token(model, tokens, cache, step, at_limit, cfg, buffer, select)
        chosen, chosen_log_probs = choose(prediction)
        output[active, step] = chosen
        token_scores[active, step] = chosen_log_probs
        tokens = torch.cat([tokens, chosen[:, None]], dim=1)
        unfinished = chosen != EOS_ID
        if not unfinished.any():
            break
        if not unfinished.all():
            keep = unfinished.nonzero().squeeze(1)
            cache.reorder(keep)
            active, tokens = active[keep], tokens[keep]
    return [
        [finished_path(row, scores, cfg)]
        for row, scores in zip(output.tolist(), token_scores.tolist(), strict=True)
    ]


def finished_path(row: list[int], scores: list[float], cfg: DecodeConfig) -> Hypothesis:
    length = row.index(EOS_ID) + 1
    token_scores = scores[:length]
    return Hypothesis(
        row[: length - 1], sum(token_scores) / length_penalty(length, cfg), token_scores
    )


def greedy_search(
    model: Seq2SeqModel[CacheT], src: Tensor, src_pad_mask: Tensor, cfg: DecodeConfig
) -> list[list[Hypothesis]]:
    """The most probable token at every step."""

    def best(prediction: NextToken) -> tuple[Tensor, Tensor]:
        two = min(2, prediction.log_probs.shape[1])
        log_probs, tokens = prediction.top(two)  # the best two re-scored exactly under bf16
        best_log_prob, pick = log_probs.max(dim=1, keepdim=True)
        return tokens.gather(1, pick).squeeze(1), best_log_prob.squeeze(1)

    return single_path_search(model, src, src_pad_mask, cfg, best)


def sample_search(
    model: Seq2SeqModel[CacheT], src: Tensor, src_pad_mask: Tensor, cfg: DecodeConfig
) -> list[list[Hypothesis]]:
    """A token drawn at every step from the (temperature, top-k, top-p) filtered distribution,
    reproducible from decode.seed."""
    generator = torch.Generator(device=src.device).manual_seed(cfg.seed)

    def draw(prediction: NextToken) -> tuple[Tensor, Tensor]:
        log_probs = prediction.log_probs  # softmax(log p / T) = softmax(logits / T)
        filtered = filter_distribution(log_probs / cfg.temperature, cfg.top_k, cfg.top_p)
        drawn = torch.multinomial(filtered.softmax(dim=-1), 1, generator=generator)
        return drawn.squeeze(1), log_probs.gather(1, drawn).squeeze(1)

    return single_path_search(model, src, src_pad_mask, cfg, draw)


def filter_distribution(logits: Tensor, top_k: int, top_p: float) -> Tensor:
    """Keep the top_k most probable tokens and the smallest set holding top_p of the
    probability (the most probable token always survives); the rest get -inf."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        before = sorted_logits.softmax(dim=-1).cumsum(dim=-1) - sorted_logits.softmax(dim=-1)
        drop_sorted = before >= top_p  # probability mass before this token already >= top_p
        drop = drop_sorted.scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


# --------------------------------------------------------------------------- beam search


@torch.no_grad()
def beam_search(
    model: Seq2SeqModel[CacheT], src: Tensor, src_pad_mask: Tensor, cfg: DecodeConfig
) -> list[list[Hypothesis]]:
    """The `decode.nbest` best hypotheses of each sentence, best first.

    All beams of a sentence start identical, so the first step decodes one row per sentence
    and its 2 x beam best tokens seed the beams; from then on sentence i owns rows
    i * beam .. i * beam + beam - 1."""
    batch, beam, device = src.shape[0], cfg.beam, src.device
    cache, max_lengths = start(model, src, src_pad_mask, cfg)
    sentences = torch.arange(batch, device=device)  # batch index of each active sentence
    tokens = torch.full((batch, 1), BOS_ID, dtype=torch.long, device=device)
    token_scores = torch.zeros(batch, 0, device=device)  # (rows, step)
    scores = torch.zeros(batch, 1, device=device)  # (active, width) cumulative log-probabilities
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    buffer, select = LogProbBuffer(), row_topk(cfg.kernels, device)
    for step in range(int(max_lengths.max()) + 1):
        active, width = scores.shape  # width: rows per sentence (1, then beam)
        at_limit = (step >= max_lengths[sentences]).repeat_interleave(width)
        prediction = next_token(model, tokens, cache, step, at_limit, cfg, buffer, select)
        # a sentence's best 2 * beam continuations are among each beam's best 2 * beam tokens
        k = min(2 * beam, prediction.log_probs.shape[-1])
        top_log_probs, top_tokens = prediction.top(k)  # (active * width, k)
        candidates = (scores.view(-1, 1) + top_log_probs).view(active, width * k)
        padded = candidates.shape[1] < 2 * beam  # a vocabulary below 2 x beam, first step
        if padded:
            candidates = F.pad(candidates, (0, 2 * beam - width * k), value=float("-inf"))
        cand_scores, cand_ids = select(candidates, 2 * beam)  # (active, 2 * beam)
        if padded:  # the padding: dead (-inf) copies of a real candidate
            cand_ids = cand_ids.clamp(max=width * k - 1)
        cand_beams = cand_ids // k
        cand_tokens = top_tokens.view(active, width * k).gather(1, cand_ids)
        is_eos = (cand_tokens == EOS_ID) & (cand_scores > float("-inf"))
        finish_hypotheses(
            finished,
            is_eos[:, :beam],
            cand_scores,
            cand_beams,
            sentences,
            tokens,
            token_scores,
            scores,
            cfg,
        )
        done = torch.tensor([len(finished[s]) >= beam for s in sentences.tolist()], device=device)
        if done.all():
            break
        # the first `beam` candidates that are not eos continue
        rank = torch.arange(2 * beam, device=device) + is_eos.long() * 2 * beam
        chosen = rank.topk(beam, dim=1, largest=False).indices  # (active, beam)
        next_beams, next_tokens = cand_beams.gather(1, chosen), cand_tokens.gather(1, chosen)
        next_scores = cand_scores.gather(1, chosen)
        step_scores = next_scores - scores.gather(1, next_beams)
        keep = ~done
        origin = (torch.arange(active, device=device)[:, None] * width + next_beams)[keep]
        origin = origin.view(-1)  # rows of surviving sentences' beams, in their new order
        cache.reorder(origin, group_size=beam)
        tokens = torch.cat([tokens[origin], next_tokens[keep].view(-1, 1)], dim=1)
        token_scores = torch.cat([token_scores[origin], step_scores[keep].view(-1, 1)], dim=1)
        scores, sentences = next_scores[keep], sentences[keep]
    # (a sentence can only end without hypotheses if its scores were NaN: return it empty)
    return [
        sorted(hyps, key=lambda h: h.score, reverse=True)[: cfg.nbest]
        or [Hypothesis([], float("-inf"), [])]
        for hyps in finished
    ]


def finish_hypotheses(
    finished: list[list[Hypothesis]],
    eos_candidates: Tensor,
    cand_scores: Tensor,
    cand_beams: Tensor,
    sentences: Tensor,
    tokens: Tensor,
    token_scores: Tensor,
    scores: Tensor,
    cfg: DecodeConfig,
) -> None:
    """Record the eos candidates among each sentence's first `beam`, best first, until the
    sentence has `beam` finished hypotheses."""
    beam, width = cfg.beam, scores.shape[1]
    for i, j in eos_candidates.nonzero().tolist():  # row-major: best first per sentence
        sentence = int(sentences[i])
        if len(finished[sentence]) >= beam:
            continue
        source_beam = int(cand_beams[i, j])
        row = i * width + source_beam
        total = float(cand_scores[i, j])
        per_token = token_scores[row].tolist() + [total - float(scores[i, source_beam])]
        output = tokens[row, 1:].tolist()  # without bos
        finished[sentence].append(
            Hypothesis(output, total / length_penalty(len(output) + 1, cfg), per_token)
        )


SEARCHES: dict[SearchStrategy, Callable[..., list[list[Hypothesis]]]] = {
    SearchStrategy.greedy: greedy_search,
    SearchStrategy.beam: beam_search,
    SearchStrategy.sample: sample_search,
}


@torch.no_grad()
def search(
    model: Seq2SeqModel[CacheT], src: Tensor, src_pad_mask: Tensor, cfg: DecodeConfig
) -> list[list[Hypothesis]]:
    """Hypotheses for each sentence of the batch (n-best lists, best first)."""
    return SEARCHES[cfg.strategy](model, src, src_pad_mask, cfg)
