"""Translate a data split with a trained model and score it with sacreBLEU."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from seq2seq.arguments import with_decode_overrides
from seq2seq.batching import EncodedSplit
from seq2seq.config import Config, DecodeConfig
from seq2seq.constants import RESULTS, hypotheses_file
from seq2seq.data import encode_split, load_split, split_spec
from seq2seq.errors import UserError
from seq2seq.files import make_directory, read_lines, write_atomically
from seq2seq.metrics import Score, corpus_scores, format_score
from seq2seq.model import Transformer
from seq2seq.outputs import progress_bar, warn_about_truncation
from seq2seq.tokenizer import Tokenizer
from seq2seq.translate import Translator, load_run_config, translate_encoded

log = logging.getLogger(__name__)


def write_lines_atomically(path: Path, lines: list[str]) -> None:
    write_atomically(path, "".join(f"{line}\n" for line in lines))


def read_results(path: Path) -> dict:
    """The entries of a results.json ({} when there is none); one that cannot be read is an
    error that leaves it as it is."""
    if not path.exists():
        return {}
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        problem = error.strerror
    except ValueError as error:  # not UTF-8, not JSON
        problem = f"not valid JSON ({error})"
    else:
        if isinstance(results, dict):
            return results
        problem = "not a JSON object"
    raise UserError(
        f"cannot add the scores to {path}: {problem}; fix or delete it (the scores were printed)"
    )


def record_results(out_dir: Path, key: str, value: dict) -> None:
    """Add `value` under `key` in out_dir/results.json (other entries are kept)."""
    path = out_dir / RESULTS
    results = read_results(path)
    results[key] = value
    write_atomically(path, json.dumps(results, indent=2) + "\n")


def report_scores(
    scores: dict[str, Score], out_dir: Path, key: str, entry: dict, prefix: str = ""
) -> dict[str, Score]:
    """Print the scores, then record them with `entry` under `key` in out_dir/results.json
    (printed first, so a results.json that cannot be updated loses nothing)."""
    for score in scores.values():
        print(f"{prefix}{format_score(score)}", flush=True)
    record_results(
        out_dir, key, {**entry, **{metric: score.to_dict() for metric, score in scores.items()}}
    )
    return scores


def decode_entry(decode: DecodeConfig) -> dict:
    """The decoding settings recorded with the scores of a translation."""
    return {
        "strategy": decode.strategy.value,
        "beam": decode.beam,
        "length_penalty": decode.length_penalty,
    }


def evaluate_split(
    model: Transformer,
    tokenizer: Tokenizer,
    cfg: Config,
    split: str,
    out_dir: Path,
    device: torch.device,
    metrics: tuple[str, ...] = ("bleu", "chrf"),
    lowercase: bool = False,
    name_scores: bool = True,
) -> dict[str, Score]:
    """Translate `split` of the run's data, write the hypotheses next to results.json, score
    them against the split's references; each printed score starts with the split's name
    when `name_scores`."""
    name = split_spec(cfg.data, split)
    text = load_split(cfg.data, split)
    encoded = EncodedSplit.from_dataset(encode_split(text, tokenizer, cfg.data.num_proc))
    hypotheses = translate_encoded(model, encoded, tokenizer, cfg.decode, device)
    hyp_path = out_dir / hypotheses_file(f"{Path(name).name}.{cfg.data.tgt_lang}")
    write_lines_atomically(hyp_path, hypotheses)
    scores = corpus_scores(hypotheses, list(text["tgt"]), metrics, lowercase)
    entry = {
        "hypotheses": hyp_path.name,
        "sentences": len(hypotheses),
        "decode": decode_entry(cfg.decode),
    }
    return report_scores(scores, out_dir, name, entry, f"{name}: " if name_scores else "")


def score_files(
    hyp_path: Path, ref_path: Path, metrics: tuple[str, ...], lowercase: bool, out_dir: Path
) -> dict[str, Score]:
    """Score an existing hypothesis file; results.json goes into `out_dir`."""
    hypotheses, references = list(read_lines(hyp_path)), list(read_lines(ref_path))
    if len(hypotheses) != len(references):
        raise UserError(
            f"{hyp_path} has {len(hypotheses)} lines but {ref_path} has "
            f"{len(references)}: hypotheses and references must be line-aligned"
        )
    make_directory(out_dir, "out")
    scores = corpus_scores(hypotheses, references, metrics, lowercase)
    entry = {
        "hypotheses": os.path.relpath(hyp_path, out_dir),  # from results.json
        "references": str(ref_path),
        "sentences": len(hypotheses),
    }
    return report_scores(scores, out_dir, hyp_path.name, entry)


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
    entry = {
        "hypotheses": hyp_path.name,
        "sentences": len(hypotheses),
        "references": len(references),
        "decode": decode_entry(translator.decode),
    }
    return report_scores(scores, hyp_path.parent, key, entry)


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
    return list(read_lines(source)), [list(read_lines(r)) for r in references]


def run_evaluation(
    args: dict[str, str], decode_overrides: list[str], metrics: tuple[str, ...], lowercase: bool
) -> dict[str, Score]:
    """`seq2seq-evaluate`'s job: score hyp= against ref=, or translate with run= (src=+ref=,
    split= or testset=+langpair=) and score; print the scores and record them in results.json.
    Arguments given as "-" are absent."""
    given = {k for k, v in args.items() if v != "-"}
    if {"hyp", "ref"} <= given and "run" not in given:
        hyp = Path(args["hyp"])
        out_dir = Path(args["out"]) if "out" in given else hyp.parent
        return score_files(hyp, Path(args["ref"]), metrics, lowercase, out_dir)
    if "run" not in given:
        raise UserError(
            "give hyp=<file> ref=<file>, or run=<run dir> with src=+ref=, split= "
            "or testset=+langpair="
        )
    run_dir = Path(args["run"])
    config = load_run_config(run_dir)
    config.decode = with_decode_overrides(config.decode, decode_overrides)
    translator = Translator.from_run(
        run_dir, args["checkpoint"], args["device"], config.decode, args["precision"]
    )
    out_dir = make_directory(Path(args["out"]) if "out" in given else run_dir, "out")
    if "split" in given:
        return evaluate_split(
            translator.model,
            translator.tokenizer,
            config,
            args["split"],
            out_dir,
            translator.device,
            metrics,
            lowercase,
            name_scores=False,
        )
    if {"src", "ref"} <= given:
        sources = list(read_lines(args["src"]))
        references = [list(read_lines(args["ref"]))]
        hyp_path = out_dir / hypotheses_file(Path(args["src"]).name)
        key = args["src"]
    elif {"testset", "langpair"} <= given:
        check_langpair(args["langpair"], config.data.src_lang, config.data.tgt_lang)
        sources, references = sacrebleu_test_set(args["testset"], args["langpair"])
        hyp_path = out_dir / hypotheses_file(
            f"{args['testset'].replace('/', '_')}.{args['langpair']}"
        )
        key = f"{args['testset']}:{args['langpair']}"
    else:
        raise UserError(
            "with run=, give src=<file> ref=<file>, split=<name> or testset=<name> "
            "langpair=<src-tgt>"
        )
    with progress_bar(translator):
        scores = translate_and_score(
            translator, sources, references, hyp_path, key, metrics, lowercase
        )
    warn_about_truncation(translator)
    return scores
