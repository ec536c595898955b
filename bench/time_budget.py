"""Quality per CPU-minute: a recipe trained with several time budgets through `seq2seq-train`,
as a user runs it, and what each budget bought (steps, validation BLEU, test BLEU).

    python bench/time_budget.py --multi30k <multi30k dir> --minutes 10 \
        --workdir /tmp/s2s-budget --label quick [override ...]

Each budget is one `seq2seq-train recipe=<recipe> train.max_minutes=<m>` in its own process
(the overrides after the options are passed on), run one after the other into
<workdir>/<label>/<m>min; one JSON line per run is appended to <workdir>/results.jsonl and a
table row printed. `seq2seq-plot runs='<workdir>/*/*min'` draws test BLEU against the budget,
a line per label. Choose settings by the
validation BLEU; the test BLEU is the one to report, once per final setting.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path


def read_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def summary(run_dir: Path, minutes: float, seconds: float, label: str, overrides: list) -> dict:
    """What one run bought: its steps, last learning rate, validation and test scores."""
    records = read_records(run_dir)
    train = [r for r in records if r["kind"] == "train"]
    valid = [r for r in records if r["kind"] == "valid"]
    average = [r for r in records if r["kind"] == "valid_average"]
    results = json.loads((run_dir / "results.json").read_text())
    (test,) = results.values()
    best = max(valid, key=lambda r: r.get("bleu", -r["valid_nll"]))
    return {
        "label": label,
        "minutes": minutes,
        "overrides": overrides,
        "wall_seconds": round(seconds),
        "steps": valid[-1]["step"],
        "training_seconds": valid[-1]["elapsed_s"],
        "last_lr": train[-1]["lr"] if train else None,
        "best_valid_bleu": best.get("bleu"),
        "best_valid_step": best["step"],
        "average_valid_bleu": average[-1].get("bleu") if average else None,
        "test_bleu": round(test["bleu"]["score"], 2),
        "test_chrf": round(test["chrf"]["score"], 2),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--multi30k", required=True, help="directory of the Multi30k .gz files")
    parser.add_argument("--recipe", default="multi30k_en_de")
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--label", default="recipe")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    for minutes in args.minutes:
        run_dir = args.workdir / args.label / f"{minutes:g}min"  # seq2seq-plot: a line per label
        command = [
            "seq2seq-train",
            f"recipe={args.recipe}",
            f"data.root={args.multi30k}",
            f"data.cache_dir={args.workdir / 'cache'}",
            f"run_dir={run_dir}",
            f"train.max_minutes={minutes}",
            *args.overrides,
        ]
        start = time.monotonic()
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
            subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)
        row = summary(run_dir, minutes, time.monotonic() - start, args.label, args.overrides)
        with open(args.workdir / "results.jsonl", "a") as out:
            out.write(json.dumps(row) + "\n")
        print(
            f"{row['label']:>12} {minutes:>5g} min  {row['steps']:>6} steps  "
            f"valid {row['best_valid_bleu']}  average {row['average_valid_bleu']}  "
            f"test {row['test_bleu']}  (lr at the end {row['last_lr']})",
            flush=True,
        )


if __name__ == "__main__":
    main()
