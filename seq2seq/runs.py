"""A training run from start to end: its directory (new, or an existing run resumed with the
command line's overrides), the lock that keeps a second training out, its log file, the
training, and the test of the best checkpoint at the end."""

from __future__ import annotations

import logging
import os
import sys
from datetime import datetime
from pathlib import Path

from seq2seq import checkpoint, constants
from seq2seq.config import Config
from seq2seq.devices import resolve_device
from seq2seq.distributed import claim_run_dir
from seq2seq.resume import resume_config

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
    from seq2seq.trainer import train

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
