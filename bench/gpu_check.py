"""A check for a machine with a CUDA GPU: train, resume, decode in fp16 and bf16, against fp32 on
the CPU, through the commands users run.

    python bench/gpu_check.py --multi30k <multi30k dir> --workdir <dir> [--steps 400]

For each of fp16 and bf16 (bf16 only where the GPU computes it natively):
1. `seq2seq-train recipe=multi30k_en_de model=small train.device=cuda` for half the steps,
   then the same command resumed to the full number of steps (the log must say it resumed);
2. `seq2seq-evaluate` of test2016 on the GPU, and of the same weights on the CPU in fp32.
The CPU reference is the same run trained the same way in fp32 on the CPU. Checks: the run
resumed; its final validation loss is within 3% of the CPU reference's; the GPU's BLEU of the
same weights is within 1 point of the CPU's. Prints tokens/s per precision and a PASS/FAIL
line per check; the exit status is 1 when a check fails, 2 without a CUDA device.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch


def train(run_dir: Path, multi30k: Path, steps: int, device: str, precision: str) -> str:
    command = [
        "seq2seq-train",
        "recipe=multi30k_en_de",
        "model=small",  # the recipe sets its own shape: the small model's, explicitly
        "model.d_model=256",
        "model.encoder_layers=3",
        "model.decoder_layers=3",
        "model.ffn_dim=1024",
        f"data.root={multi30k}",
        f"run_dir={run_dir}",
        f"train.device={device}",
        f"train.precision={precision}",
        f"train.max_steps={steps}",
        f"train.validate_every={max(steps // 4, 1)}",
        "train.max_minutes=0",
        "train.test_at_end=false",
    ]
    return subprocess.run(command, capture_output=True, text=True, check=True).stderr


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_bleu(run_dir: Path, device: str, precision: str) -> float:
    """test2016 BLEU of the run's best weights, decoded on `device`."""
    out = run_dir / f"evaluated_{device}"
    command = [
        "seq2seq-evaluate",
        f"run={run_dir}",
        "split=test",
        f"device={device}",
        f"precision={precision}",
        f"out={out}",
    ]
    subprocess.run(command, capture_output=True, text=True, check=True)
    (result,) = json.loads((out / "results.json").read_text()).values()
    return float(result["bleu"]["score"])


def check(name: str, passed: bool, detail: str) -> bool:
    print(f"{'PASS' if passed else 'FAIL'}  {name}: {detail}", flush=True)
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--multi30k", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(
            "error: no CUDA device here (torch.cuda.is_available() is False): run this "
            "check on a machine with a GPU and a CUDA build of PyTorch",
            file=sys.stderr,
        )
        sys.exit(2)
    precisions = ["fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    reference = args.workdir / "cpu_fp32"  # trained in two sessions too: the same schedule
    train(reference, args.multi30k, args.steps // 2, "cpu", "fp32")
    train(reference, args.multi30k, args.steps, "cpu", "fp32")
    reference_loss = records(reference, "valid")[-1]["valid_nll"]
    passed = True
    for precision in precisions:
        run_dir = args.workdir / f"cuda_{precision}"
        train(run_dir, args.multi30k, args.steps // 2, "cuda", precision)
        log = train(run_dir, args.multi30k, args.steps, "cuda", precision)
        passed &= check(f"{precision} resumes", "resuming from" in log, f"{run_dir}")
        loss = records(run_dir, "valid")[-1]["valid_nll"]
        passed &= check(
            f"{precision} learns as fp32 on the CPU",
            abs(loss - reference_loss) <= 0.03 * reference_loss,
            f"validation nll {loss:.4f} against {reference_loss:.4f}",
        )
        gpu, cpu = test_bleu(run_dir, "cuda", precision), test_bleu(run_dir, "cpu", "fp32")
        passed &= check(
            f"{precision} decodes as the CPU", abs(gpu - cpu) <= 1.0, f"BLEU {gpu:.2f} / {cpu:.2f}"
        )
        speed = [r["tokens_per_s"] for r in records(run_dir, "train")]
        print(
            f"      {precision}: {max(speed):,} tokens/s at best, GPU "
            f"{torch.cuda.get_device_name()}",
            flush=True,
        )
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
