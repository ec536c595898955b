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
from seq2seq.errors import UserError
from seq2seq.metrics import Score, corpus_scores, format_score
from seq2seq.model import Transformer
from seq2seq.tokenizer import Tokenizer
from seq2seq.translate import Translator, translate_encoded

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
    metrics: tuple[str, ...] = ("bleu", "chrf"),
    lowercase: bool = False,
    verbose: bool = True,
) -> dict[str, Score]:
    """Translate `split` of the run's data, write the hypotheses next to results.json, score
    them against the split's references."""
    name = split_spec(cfg.data, split)
    text = load_split(cfg.data, split)
    encoded = EncodedSplit.from_dataset(encode_split(text, tokenizer, cfg.data.num_proc))
    hypotheses = translate_encoded(model, encoded, tokenizer, cfg.decode, device)
    hyp_path = out_dir / f"hyp.{Path(name).name}.{cfg.data.tgt_lang}.txt"
    write_lines_atomically(hyp_path, hypotheses)
    scores = corpus_scores(hypotheses, list(text["tgt"]), metrics, lowercase)
    record_results(
        out_dir,
        name,
        {
            "hypotheses": hyp_path.name,
            "sentences": len(hypotheses),
            "decode": {
                "strategy": cfg.decode.strategy.value,
                "beam": cfg.decode.beam,
                "length_penalty": cfg.decode.length_penalty,
            },
            **{metric: score.to_dict() for metric, score in scores.items()},
        },
    )
    if verbose:
        for score in scores.values():
            print(f"{name}: {format_score(score)}")
    return scores


def read_text_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file (newlines removed); invalid UTF-8 names the line."""
    if not path.is_file():
        raise UserError(
            f"file not found: {path}" if not path.exists() else f"{path} is a directory, not a file"
        )
    lines = []
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream, start=1):
            try:
                lines.append(raw.decode("utf-8").rstrip("\r\n"))
            except UnicodeDecodeError:
                raise UserError(f"{path}: invalid UTF-8 on line {number}") from None
    return lines


def score_files(
    hyp_path: Path, ref_path: Path, metrics: tuple[str, ...], lowercase: bool, out_dir: Path
) -> dict[str, Score]:
    """Score an existing hypothesis file; results.json goes into `out_dir`."""
    hypotheses, references = read_text_lines(hyp_path), read_text_lines(ref_path)
    if len(hypotheses) != len(references):
        raise UserError(
            f"{hyp_path} has {len(hypotheses)} lines but {ref_path} has "
            f"{len(references)}: hypotheses and references must be line-aligned"
        )
    scores = corpus_scores(hypotheses, references, metrics, lowercase)
    out_dir.mkdir(parents=True, exist_ok=True)
    record_results(
        out_dir,
        hyp_path.name,
        {
            "hypotheses": os.path.relpath(hyp_path, out_dir),  # from results.json
            "references": str(ref_path),
            "sentences": len(hypotheses),
            **{metric: score.to_dict() for metric, score in scores.items()},
        },
    )
    return scores


def translate_and_score(
    translator: Translator,
    sources: list[str],
    references: list[list[str]],
    hyp_path: Path,
    key: str,
    metrics: tuple[str, ...],
    lowercase: bool,
) -> dict[str, Score]:
    """Translate `sources`, write the hypotheses to `hyp_path`, score against `references`
    (one or more reference translations of every source line)."""
    for reference_set in references:
        if len(sources) != len(reference_set):
            raise UserError(
                f"{len(sources)} source lines but {len(reference_set)} references: "
                "they must be line-aligned"
            )
    hypotheses = translator.translate(sources)
    write_lines_atomically(hyp_path, hypotheses)
    scores = corpus_scores(hypotheses, references, metrics, lowercase)
    decode = translator.decode
    record_results(
        hyp_path.parent,
        key,
        {
            "hypotheses": hyp_path.name,
            "sentences": len(hypotheses),
            "references": len(references),
            "decode": {
                "strategy": decode.strategy.value,
                "beam": decode.beam,
                "length_penalty": decode.length_penalty,
            },
            **{metric: score.to_dict() for metric, score in scores.items()},
        },
    )
    return scores


def check_langpair(langpair: str, src_lang: str, tgt_lang: str) -> None:
    """A sacreBLEU language pair must be the run's translation direction."""
    if langpair != f"{src_lang}-{tgt_lang}":
        raise UserError(
            f"langpair={langpair} does not match the run, which translates {src_lang} to "
            f"{tgt_lang}: use langpair={src_lang}-{tgt_lang}"
        )


def sacrebleu_test_set(testset: str, langpair: str) -> tuple[list[str], list[list[str]]]:
    """Source lines and every reference translation of one of sacreBLEU's test sets
    (downloaded by sacreBLEU; some sets have two or more references)."""
    from sacrebleu.utils import get_reference_files, get_source_file

    try:
        source = get_source_file(testset, langpair)
        references = get_reference_files(testset, langpair)
    except Exception as error:  # unknown set, unknown pair, no network: sacreBLEU's message
        message = " ".join(str(error).split()) or type(error).__name__
        raise UserError(f"cannot get sacreBLEU test set {testset} {langpair}: {message}") from None
    except SystemExit:  # sacreBLEU exits on a bad checksum or an SSL error, after logging why
        raise UserError(
            f"cannot get sacreBLEU test set {testset} {langpair}: sacreBLEU could not download "
            "or verify it (its message is above)"
        ) from None
    return read_text_lines(Path(source)), [read_text_lines(Path(r)) for r in references]
