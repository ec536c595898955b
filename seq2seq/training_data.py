"""The data a training run needs, from one pipeline: corpus -> tokenizer -> encoded shards ->
batches.

With `data.prepared=<dir>`, the shards `seq2seq-prepare` wrote there are read. Otherwise the
corpus is prepared the same way into the run directory (`<run_dir>/data`) when the run starts,
and reused when it resumes. Either way, the run directory keeps a copy of the tokenizer, the
training split is read shard by shard (`sharded_batching.py`), and the small validation split
is held in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import datasets

from seq2seq import constants
from seq2seq.batching import EncodedSplit
from seq2seq.config import Config, DataConfig
from seq2seq.data import IDS_FEATURES
from seq2seq.errors import ConfigError, UserError
from seq2seq.prepare import open_prepared, prepare, read_manifest, read_references
from seq2seq.sharded_batching import ShardedSplit
from seq2seq.shards import read_split
from seq2seq.subword_sampling import SampledSegmentation
from seq2seq.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    train: ShardedSplit  # the pairs kept by cleaning
    valid: EncodedSplit  # every pair, corpus order
    valid_references: list[str]


def data_directory(cfg: Config, run_dir: Path) -> Path:
    """Where the run's prepared data is: data.prepared, else inside the run directory."""
    return Path(cfg.data.prepared) if cfg.data.prepared else run_dir / constants.PREPARED_DATA


def prepare_run_data(cfg: Config, run_dir: Path) -> None:
    """Before any process reads the data (rank 0 only): the corpus prepared into the run unless
    data.prepared names prepared data, the data checked against the config, and its tokenizer
    copied into the run directory (or, when resuming, checked to be the run's)."""
    run_tokenizer = (
        Tokenizer.load(run_dir) if (run_dir / constants.TOKENIZER_MANIFEST).is_file() else None
    )
    directory = data_directory(cfg, run_dir)
    if not cfg.data.prepared:
        prepare(cfg, directory, run_tokenizer)
    manifest = open_prepared(directory, cfg)
    if run_tokenizer is None:
        Tokenizer.load(directory).copy_to(run_dir)
    elif run_tokenizer.fingerprint() != manifest["tokenizer"]["fingerprint"]:
        raise UserError(
            f"the tokenizer of {run_dir} is not the one {directory} was encoded with: "
            "train a new run from it, or resume with the data the run was trained on"
        )


def open_training_data(cfg: Config, run_dir: Path) -> tuple[Tokenizer, TrainingData]:
    """The run's tokenizer and data, once `prepare_run_data` has run (in any process)."""
    directory = data_directory(cfg, run_dir)
    manifest = read_manifest(directory)
    if manifest is None:  # prepare_run_data checked it: only a concurrent change gets here
        raise UserError(f"the prepared data in {directory} disappeared while training started")
    tokenizer = Tokenizer.load(run_dir)
    train = training_split(directory, manifest, cfg.data)
    if cfg.train.subword_alpha > 0:
        log.info(
            "subword regularisation: every training batch samples its segmentations "
            "(alpha %g, from the %d best)",
            cfg.train.subword_alpha,
            cfg.train.subword_nbest,
        )
        train.sampling = SampledSegmentation(
            tokenizer, cfg.train.subword_alpha, cfg.train.subword_nbest, cfg.data.max_length
        )
    columns = read_split(directory / "valid", len(manifest["splits"]["valid"]["shards"]))
    valid = EncodedSplit.from_dataset(
        datasets.Dataset.from_dict(columns, features=IDS_FEATURES),
        max_length=cfg.model.max_positions - 1,
    )
    return tokenizer, TrainingData(train, valid, read_references(directory))


def training_split(directory: Path, manifest: dict, cfg: DataConfig) -> ShardedSplit:
    """The prepared training split in `directory` (whose manifest is given), cleaned as the
    config says."""
    shards = manifest["splits"]["train"]["shards"]
    pairs = [shard["pairs"] for shard in shards]
    return ShardedSplit(directory / "train", pairs, cfg, cfg.window_pairs)


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
