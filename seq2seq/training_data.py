"""The data a training run needs: the corpus loaded, checked and cleaned, the run's tokenizer
(trained on first use, then loaded and verified), both splits encoded, and the model's vocabulary
sizes fitted to the tokenizer."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import datasets

from seq2seq import constants
from seq2seq.batching import EncodedSplit
from seq2seq.config import Config
from seq2seq.data import clean_training_rows, encode_split, iter_texts, load_split
from seq2seq.errors import ConfigError
from seq2seq.subword_sampling import SampledSegmentation
from seq2seq.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    train: EncodedSplit  # the rows kept by cleaning
    valid: EncodedSplit  # every row, corpus order
    valid_references: list[str]


def prepare_tokenizer(cfg: Config, run_dir: Path, train_text: datasets.Dataset) -> Tokenizer:
    """The run's tokenizer: loaded (and verified) if the run has one, else trained and saved."""
    if (run_dir / constants.TOKENIZER_MANIFEST).is_file():
        return Tokenizer.load(run_dir)
    log.info(
        "training SentencePiece (%s, %d pieces) on %d pairs",
        cfg.tokenizer.model_type.value,
        cfg.tokenizer.vocab_size,
        len(train_text),
    )
    texts: dict[str, Iterable[str]] = {
        side: iter_texts(train_text, side) for side in ("src", "tgt")
    }
    return Tokenizer.train(cfg.tokenizer, texts, run_dir)


def prepare_data(cfg: Config, run_dir: Path) -> tuple[Tokenizer, TrainingData]:
    train_text = load_split(cfg.data, "train")
    valid_text = load_split(cfg.data, "valid")
    tokenizer = prepare_tokenizer(cfg, run_dir, train_text)
    train = encode_split(train_text, tokenizer, cfg.data.num_proc)
    train_split = EncodedSplit.from_dataset(train, clean_training_rows(train, cfg.data))
    if cfg.train.subword_alpha > 0:
        log.info(
            "subword regularisation: every training batch samples its segmentations "
            "(alpha %g, from the %d best)",
            cfg.train.subword_alpha,
            cfg.train.subword_nbest,
        )
        train_split.sampling = SampledSegmentation(
            train_text,
            tokenizer,
            cfg.train.subword_alpha,
            cfg.train.subword_nbest,
            cfg.data.max_length,
        )
    valid = EncodedSplit.from_dataset(
        encode_split(valid_text, tokenizer, cfg.data.num_proc),
        max_length=cfg.model.max_positions - 1,
    )
    return tokenizer, TrainingData(train_split, valid, list(valid_text["tgt"]))


def fit_vocabulary(cfg: Config, tokenizer: Tokenizer) -> None:
    """The model's vocabulary sizes are the tokenizer's."""
    cfg.model.src_vocab_size = tokenizer.vocab_size("src")
    cfg.model.tgt_vocab_size = tokenizer.vocab_size("tgt")
    cfg.model.validate()
    if cfg.data.max_length + 1 > cfg.model.max_positions:
        raise ConfigError(
            f"data.max_length ({cfg.data.max_length}) + 1 must not exceed "
            f"model.max_positions ({cfg.model.max_positions})"
        )
