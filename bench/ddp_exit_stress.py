"""Run the two-process (gloo) training job many times in a row and count the runs that fail,
in particular those that abort at exit (SIGABRT, "terminate called ...") after training.

    python bench/ddp_exit_stress.py --runs 20 [--workdir /tmp/ddp-stress] [--steps 4]

Each run trains the toy task (tests/toy.py) in a fresh run directory with
`torchrun --standalone --nproc_per_node=2`. Prints one line per run and a summary; the exit
status is 1 if any run failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from toy import toy_overrides, write_toy_corpus  # noqa: E402

ABORT_SIGNS = ("terminate called", "SIGABRT", "Signal 6")


def script(name: str) -> str:
    """A console script installed next to this Python."""
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} is not installed")
    return path


def run_once(corpus: Path, run_dir: Path, steps: int) -> subprocess.CompletedProcess:
    overrides = toy_overrides(
        corpus,
        run_dir,
        train__max_steps=steps,
        train__validate_every=steps,
        train__valid_bleu=False,
        train__test_at_end=False,
    )
    return subprocess.run(
        [
            script("torchrun"),
            "--standalone",
            "--nproc_per_node=2",
            script("seq2seq-train"),
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ddp-stress-"))
    corpus = write_toy_corpus(workdir / "toy")
    aborts = failures = 0
    for number in range(1, args.runs + 1):
        run_dir = workdir / f"run{number}"
        shutil.rmtree(run_dir, ignore_errors=True)
        start = time.monotonic()
        result = run_once(corpus, run_dir, args.steps)
        aborted = any(sign in result.stderr for sign in ABORT_SIGNS)
        aborts += aborted
        failures += result.returncode != 0
        verdict = "abort" if aborted else ("ok" if result.returncode == 0 else "failed")
        print(
            f"run {number}/{args.runs}: exit {result.returncode}, {verdict}, "
            f"{time.monotonic() - start:.0f} s",
            flush=True,
        )
        if result.returncode != 0:
            print(result.stderr[-3000:], flush=True)
        shutil.rmtree(run_dir, ignore_errors=True)
    print(f"{args.runs} runs: {failures} failed, {aborts} aborted at exit", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
