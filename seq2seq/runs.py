"""A training run from start to end: its directory (new, or an existing run resumed with the
command line's overrides), the lock that keeps a second training out, its log file, the
training, and the test of the best checkpoint at the end."""

from __future__ import annotations

import logging
import os
import sys
from datetime import datetime
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from seq2seq import checkpoint, constants
from seq2seq.config import Config
from seq2seq.devices import resolve_device
from seq2seq.distributed import Distributed, claim_run_dir, process_group
from seq2seq.fast.kernels import compiled
from seq2seq.files import write_atomically
from seq2seq.metrics_log import forget_metrics_after
from seq2seq.model import Transformer, count_parameters
from seq2seq.precision import describe_precision
from seq2seq.resume import resume_config
from seq2seq.tokenizer import Tokenizer
from seq2seq.trainer import Trainer
from seq2seq.training_data import fit_vocabulary, open_training_data, prepare_run_data

log = logging.getLogger("seq2seq")


def new_run_dir(recipe: str | None) -> Path:
    """runs/<recipe>/<timestamp>, where a run goes without `run_dir=`."""
    return Path("runs") / (recipe or "custom") / datetime.now().strftime("%Y%m%d-%H%M%S")


def setup_logging(run_dir: Path | None = None) -> None:
    """Log lines on stderr and, for the process that writes the run, in its train.log."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if run_dir is not None and int(os.environ.get("RANK", "0")) == 0:  # torchrun: rank 0 writes
        run_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(run_dir / constants.TRAIN_LOG))
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)


def train_run(config: Config, choices: dict[str, str], overrides: list[str]) -> None:
    """Train the run `config` describes (or resume the one in its run_dir), then test it.

    `choices`: the config groups the command selected (recipe, model), kept in meta.json;
    `overrides`: the command line's, applied on top of a resumed run's saved config."""
    from seq2seq.evaluate import evaluate_split

    run_dir = Path(config.run_dir) if config.run_dir else new_run_dir(choices.get("recipe"))
    if (run_dir / constants.CONFIG).is_file():
        config = resume_config(run_dir, overrides)
    config.run_dir = str(run_dir)
    resolve_device(config.train.device, "train.device")  # refused before anything is written
    with claim_run_dir(run_dir):
        setup_logging(run_dir)
        log.info("run directory: %s", run_dir)
        trainer = train(config, run_dir, choices)
        if trainer.world.is_main and config.train.test_at_end:
            checkpoint.load_weights(trainer.model, run_dir / constants.BEST_WEIGHTS)
            evaluate_split(
                trainer.model, trainer.tokenizer, config, "test", run_dir, trainer.device
            )


def save_config(cfg: Config, run_dir: Path) -> None:
    write_atomically(run_dir / constants.CONFIG, OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def train(cfg: Config, run_dir: Path, choices: dict[str, str] | None = None) -> Trainer:
    """Train (or resume) the run in `run_dir`; returns the finished trainer.

    `choices`: the config groups the command selected (recipe, model), kept in meta.json so that
    rerunning the same command resumes the run.
    """
    world = Distributed.from_environment()
    device = resolve_device(cfg.train.device, "train.device", world.local_rank)
    with process_group(world, device):
        return train_in_group(cfg, run_dir, choices, world, device)


def train_in_group(
    cfg: Config,
    run_dir: Path,
    choices: dict[str, str] | None,
    world: Distributed,
    device: torch.device,
) -> Trainer:
    """`train` in this process, once the processes of a torchrun job form a group."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    latest = checkpoint.latest_checkpoint(run_dir)
    resumed_step = checkpoint.step_of(latest) if latest is not None else 0
    if world.is_main:  # first: a malformed metrics.jsonl stops training before anything is written
        forget_metrics_after(run_dir / constants.METRICS, resumed_step)
        if latest is not None:  # resuming: the saved model's vocabularies must be the tokenizer's
            Tokenizer.load(run_dir).check_fits(cfg.model)
        prepare_run_data(cfg, run_dir)
    if world.world_size > 1:
        dist.barrier()  # rank 0 trained the tokenizer and wrote the shards
    tokenizer, data = open_training_data(cfg, run_dir)
    fit_vocabulary(cfg, tokenizer)
    torch.manual_seed(cfg.train.seed)
    model = Transformer(cfg.model).to(device)  # the same initial weights in every process
    torch.manual_seed(cfg.train.seed + world.rank)  # each process its own dropout stream
    trainer = Trainer(cfg, run_dir, model, tokenizer, data, device, world)
    log.info(describe_precision(cfg.train.precision, device))
    if latest is not None:
        checkpoint.load_weights(model, latest / constants.WEIGHTS)
        trainer.load_train_state(checkpoint.load_train_state(latest / constants.TRAIN_STATE))
        log.info("resuming from %s (step %d)", latest, trainer.step)
        if world.is_main and not (run_dir / constants.META).is_file():
            log.warning("%s was missing: written again for the run's tokenizer", constants.META)
            checkpoint.write_meta(run_dir, tokenizer.sha256())  # the run's choices are unknown
    elif world.is_main:
        checkpoint.write_meta(run_dir, tokenizer.sha256(), choices or {})
        log.info(
            "model: %s parameters; %s training pairs",
            f"{count_parameters(model):,}",
            f"{len(data.train):,}",
        )
    if world.is_main:
        save_config(cfg, run_dir)  # also records overrides given when resuming
        if cfg.train.valid_bleu:  # compiled now: not inside the time budget
            compiled(cfg.decode.kernels, device)
    trainer.fit()
    return trainer
