"""Plot a run's training curve (train loss, validation BLEU) against wall-clock minutes.

    python bench/plot_training.py <run dir> docs/img/multi30k_en_de_curve.png

Needs matplotlib (a benchmark dependency only).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    run_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    valid = [r for r in records if r["kind"] == "valid"]
    figure, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot(
        [r["elapsed_s"] / 60 for r in train],
        [r["loss"] for r in train],
        color="tab:gray",
        linewidth=0.8,
        label="train loss (label-smoothed)",
    )
    loss_axis.set_xlabel("minutes of training (2 CPU threads)")
    loss_axis.set_ylabel("train loss")
    bleu_axis = loss_axis.twinx()
    bleu_axis.plot(
        [r["elapsed_s"] / 60 for r in valid],
        [r["bleu"] for r in valid],
        "o-",
        color="tab:blue",
        label="validation BLEU (greedy)",
    )
    bleu_axis.set_ylabel("validation BLEU")
    figure.legend(loc="center right", bbox_to_anchor=(0.88, 0.5))
    loss_axis.set_title(run_dir.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
