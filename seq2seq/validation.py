"""Validation during training: the loss (and perplexity) of the validation split under teacher
forcing, and BLEU/chrF of its decoded translations; `stop_value` is what early stopping and
the best checkpoint compare."""

from __future__ import annotations

import dataclasses
import math

import torch

from seq2seq.config import Config, DecodeConfig, SearchStrategy, StopMetric
from seq2seq.constants import PAD_ID
from seq2seq.loss import projected_cross_entropy
from seq2seq.metrics import corpus_scores
from seq2seq.model import Transformer
from seq2seq.precision import autocast
from seq2seq.tokenizer import Tokenizer
from seq2seq.training_data import TrainingData
from seq2seq.translate import translate_encoded


@torch.no_grad()
def validate(
    model: Transformer, data: TrainingData, tokenizer: Tokenizer, cfg: Config, device: torch.device
) -> dict:
    """{"valid_nll", "valid_ppl"} and, with train.valid_bleu, {"bleu", "chrf"}."""
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64)  # nll, tokens
    with autocast(cfg.train.precision, device):
        sampler = data.valid.sampler(cfg.train.max_tokens, shuffle=False)
        for batch in data.valid.batches(sampler):
            batch = batch.to(device)
            hidden = model(batch.src, batch.src_pad_mask, batch.tgt_in, project=False)
            weight = model.output_projection.weight
            out = projected_cross_entropy(hidden, weight, batch.tgt_out, 0.0, PAD_ID)
            totals += torch.tensor([out.nll.item(), out.tokens.item()], dtype=torch.float64)
        nll = float(totals[0] / totals[1])
        result = {"valid_nll": round(nll, 4), "valid_ppl": round(math.exp(nll), 2)}
        if cfg.train.valid_bleu:
            decoding = validation_decoding(cfg)
            hypotheses = translate_encoded(model, data.valid, tokenizer, decoding, device)
            scores = corpus_scores(hypotheses, data.valid_references)
            result.update(bleu=scores["bleu"].score, chrf=scores["chrf"].score)
    return result


def validation_decoding(cfg: Config) -> DecodeConfig:
    """decode.* with the validation beam: greedy unless train.valid_beam > 1."""
    beam = cfg.train.valid_beam
    strategy = SearchStrategy.beam if beam > 1 else SearchStrategy.greedy
    return dataclasses.replace(cfg.decode, strategy=strategy, beam=beam, nbest=1)


def stop_value(result: dict, stop_metric: StopMetric) -> float:
    """The validation's score for early stopping; higher is better."""
    if stop_metric == StopMetric.bleu and "bleu" in result:
        return result["bleu"]
    return -result["valid_nll"]
