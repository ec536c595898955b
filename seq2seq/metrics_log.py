"""What a run records while it trains: one JSON line per record in metrics.jsonl (read by
`seq2seq-plot` and resume), and the same numbers as TensorBoard scalars when it is installed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from seq2seq import checkpoint, constants
from seq2seq.files import write_atomically

log = logging.getLogger(__name__)


class MetricsLog:
    """metrics.jsonl of a run, written by the main process only (`enabled`)."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.path = run_dir / constants.METRICS
        self.enabled = enabled
        self.tensorboard = tensorboard_writer(run_dir) if enabled else None

    def write(self, record: dict) -> None:
        """One line {"kind": "train" | "valid" | "valid_average", "step": ..., ...}, and its
        scalars."""
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and key != "step":
                    self.tensorboard.add_scalar(f"{record['kind']}/{key}", value, record["step"])
            self.tensorboard.flush()


def forget_metrics_after(path: Path, step: int) -> None:
    """Drop records of steps after `step` (a killed session's, about to be redone) and a last
    line the kill cut short."""
    if not path.is_file():
        return
    text = path.read_text(errors="replace")
    kept = "".join(
        json.dumps(record) + "\n"
        for record in checkpoint.read_metrics(path)
        if record["step"] <= step
    )
    if kept != text:
        write_atomically(path, kept)


def tensorboard_writer(run_dir: Path):
    """A SummaryWriter into run_dir/tensorboard, or None without the tensorboard package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard is not installed: metrics go to metrics.jsonl only")
        return None
    return SummaryWriter(str(run_dir / constants.TENSORBOARD))
