"""Corpus-level scores through sacreBLEU, always with their signatures.

Hypotheses are detokenised text and references are the untouched reference lines, so the
numbers are comparable with any other system scored by sacreBLEU with the same signature.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import cast

from sacrebleu.metrics import BLEU, CHRF, TER

from seq2seq.errors import UserError


@dataclass
class Score:
    name: str  # BLEU, chrF2, TER
    score: float
    signature: str
    text: str  # sacreBLEU's one-line report, e.g. "BLEU = 35.2 67.1/42.0/28.3/19.1 (BP = ...)"

    def to_dict(self) -> dict:
        return asdict(self)


def corpus_scores(
    hypotheses: list[str],
    references: list[str] | list[list[str]],
    metrics: tuple[str, ...] = ("bleu", "chrf"),
    lowercase: bool = False,
) -> dict[str, Score]:
    """BLEU (13a tokenisation, cased unless `lowercase`), chrF2 and optionally TER.

    references: one line per hypothesis, or several such lists (test sets with more than one
    reference translation). `lowercase` applies to BLEU only, like sacreBLEU's `-lc`."""
    one_set = not references or isinstance(references[0], str)
    reference_sets = cast(list[list[str]], [references] if one_set else references)
    for reference_set in reference_sets:
        if len(hypotheses) != len(reference_set):
            raise UserError(
                f"{len(hypotheses)} hypotheses but {len(reference_set)} references: "
                "they must be line-aligned"
            )
    scorers = {"bleu": BLEU(lowercase=lowercase), "chrf": CHRF(), "ter": TER()}
    scores = {}
    for name in metrics:
        scorer = scorers[name]
        result = scorer.corpus_score(hypotheses, reference_sets)
        signature = str(scorer.get_signature())
        scores[name] = Score(result.name, round(result.score, 2), signature, str(result))
    return scores


def format_score(score: Score) -> str:
    return f"{score.text}  [{score.signature}]"


METRICS = ("bleu", "chrf", "ter")


def parse_metrics(text: str) -> tuple[str, ...]:
    """`metrics=bleu,chrf` as ("bleu", "chrf"); an unknown name is a one-line error."""
    metrics = tuple(name.strip() for name in text.split(","))
    unknown = [name for name in metrics if name not in METRICS]
    if unknown:
        raise UserError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    return metrics
