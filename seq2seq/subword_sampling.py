"""Subword regularisation (Kudo 2018): each time a training sentence is batched, it is cut
into subwords by a segmentation sampled from the tokenizer instead of the single best one, so
the model sees many segmentations of the same text (`train.subword_alpha`).

The sample is drawn from the `train.subword_nbest` most likely segmentations of the unigram
model, segmentation x with probability proportional to P(x)^alpha (the paper's l-best
sampling). The draw uses a generator seeded by the batch's place in the data order (seed,
epoch, window, batch, rank), so a run is reproducible and a resumed run samples exactly what the
uninterrupted run would have.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from seq2seq.tokenizer import Tokenizer

Segmentations = list[list[int]]  # token ids, one list per sentence
SAMPLING_STREAM = 0x5E6  # keeps these draws apart from any other generator seeded by (seed, ...)


class SampledSegmentation:
    """Re-encodes encoded sentences with sampled segmentations of the same text."""

    def __init__(self, tokenizer: Tokenizer, alpha: float, nbest: int, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.alpha = alpha
        self.nbest = nbest
        self.max_length = max_length
        self.scores = {side: np.array(tokenizer.piece_scores(side)) for side in ("src", "tgt")}

    def encode(
        self, best: tuple[Segmentations, Segmentations], key: tuple[int, ...]
    ) -> tuple[Segmentations, Segmentations]:
        """Sampled (src, tgt) ids of the sentences encoded as `best`, drawn as seeded by `key`.
        The text is the best segmentation decoded (the tokenizer's normalised text). A sample
        longer than data.max_length falls back to the best segmentation (which passed
        cleaning)."""
        rng = np.random.default_rng((SAMPLING_STREAM, *key))
        sampled = []
        for side, ids in zip(("src", "tgt"), best, strict=True):
            texts = self.tokenizer.decode(ids, side)
            sampled.append(self.within_limit(self.sample(texts, side, rng), ids))
        return sampled[0], sampled[1]

    def within_limit(self, sampled: Segmentations, best: Segmentations) -> Segmentations:
        return [s if len(s) <= self.max_length else b for s, b in zip(sampled, best, strict=True)]

    def sample(self, texts: list[str], side: str, rng: np.random.Generator) -> Segmentations:
        """One segmentation per text, x drawn from the n best with probability ~ P(x)^alpha."""
        chosen = []
        for candidates in self.tokenizer.nbest(texts, side, self.nbest):
            log_p = np.array([self.scores[side][ids].sum() for ids in candidates]) * self.alpha
            weights = np.exp(log_p - log_p.max())
            chosen.append(candidates[rng.choice(len(candidates), p=weights / weights.sum())])
        return chosen
