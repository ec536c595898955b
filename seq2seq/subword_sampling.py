"""Subword regularisation (Kudo 2018): each time a training sentence is batched, it is cut
into subwords by a segmentation sampled from the tokenizer instead of the single best one, so
the model sees many segmentations of the same text (`train.subword_alpha`).

The sample is drawn from the `train.subword_nbest` most likely segmentations of the unigram
model, segmentation x with probability proportional to P(x)^alpha (the paper's l-best
sampling). The draw uses a generator seeded by the batch's place in the data order (seed,
epoch, batch, rank), so a run is reproducible and a resumed run samples exactly what the
uninterrupted run would have.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import datasets

    from seq2seq.tokenizer import Tokenizer

Segmentations = list[list[int]]  # token ids, one list per sentence
SAMPLING_STREAM = 0x5E6  # keeps these draws apart from any other generator seeded by (seed, ...)


class SampledSegmentation:
    """Re-encodes rows of a text dataset (columns src, tgt) with sampled segmentations."""

    def __init__(
        self,
        text: datasets.Dataset,
        tokenizer: Tokenizer,
        alpha: float,
        nbest: int,
        max_length: int,
    ) -> None:
        self.text = text
        self.tokenizer = tokenizer
        self.alpha = alpha
        self.nbest = nbest
        self.max_length = max_length
        self.scores = {side: np.array(tokenizer.piece_scores(side)) for side in ("src", "tgt")}

    def encode(
        self, rows: np.ndarray, best: tuple[Segmentations, Segmentations], key: tuple[int, ...]
    ) -> tuple[Segmentations, Segmentations]:
        """Sampled (src, tgt) ids of dataset `rows`, drawn as seeded by `key`. A sample longer
        than data.max_length falls back to the `best` segmentation (which passed cleaning)."""
        rng = np.random.default_rng((SAMPLING_STREAM, *key))
        texts = self.text[rows.tolist()]
        src = self.within_limit(self.sample(texts["src"], "src", rng), best[0])
        tgt = self.within_limit(self.sample(texts["tgt"], "tgt", rng), best[1])
        return src, tgt

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
