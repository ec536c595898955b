"""Translate a data split with a trained model and score it with sacreBLEU."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from seq2seq.batching import EncodedSplit
from seq2seq.config import Config
from seq2seq.data import encode_split, load_split, split_spec
from seq2seq.metrics import Score, corpus_scores, format_score
from seq2seq.model import Transformer
from seq2seq.tokenizer import Tokenizer
from seq2seq.translate import translate_encoded

log = logging.getLogger(__name__)
RESULTS = "results.json"


def write_lines_atomically(path: Path, lines: list[str]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    os.replace(temporary, path)


def record_results(out_dir: Path, key: str, value: dict) -> None:
    """Add `value` under `key` in out_dir/results.json (other entries are kept)."""
    path = out_dir / RESULTS
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[key] = value
    temporary = path.with_name(f".{RESULTS}.tmp")
    temporary.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(temporary, path)


def evaluate_split(
    model: Transformer,
    tokenizer: Tokenizer,
    cfg: Config,
    split: str,
    out_dir: Path,
    device: torch.device,
) -> dict[str, Score]:
    """Translate `split`, write the hypotheses next to results.json, return BLEU and chrF."""
    name = split_spec(cfg.data, split)
    text = load_split(cfg.data, split)
    encoded = EncodedSplit.from_dataset(encode_split(text, tokenizer, cfg.data.num_proc))
    hypotheses = translate_encoded(model, encoded, tokenizer, cfg.decode, device)
    hyp_path = out_dir / f"hyp.{Path(name).name}.{cfg.data.tgt_lang}.txt"
    write_lines_atomically(hyp_path, hypotheses)
    scores = corpus_scores(hypotheses, list(text["tgt"]))
    record_results(
        out_dir,
        name,
        {
            "hypotheses": hyp_path.name,
            "sentences": len(hypotheses),
            "decode": {"strategy": cfg.decode.strategy.value, "beam": cfg.decode.beam},
            **{metric: score.to_dict() for metric, score in scores.items()},
        },
    )
    for score in scores.values():
        print(f"{name}: {format_score(score)}")
    return scores
