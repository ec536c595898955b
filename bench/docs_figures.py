"""Draw the figures of docs/concepts.md with the toolkit's own code.

    python bench/docs_figures.py --run <a trained Multi30k en-de run directory>

Writes docs/img/{positions,schedules,label_smoothing}.png from `seq2seq.plots`, and
docs/img/attention_{cross,decoder}.png from `seq2seq-attention` on the given run.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from seq2seq import plots

SENTENCE = "A man rides a bike down a hill."


def script(name: str) -> str:
    """A console script of this Python's environment (activated or not)."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "docs" / "img")
    args = parser.parse_args()
    print(plots.positions_figure(args.out / "positions.png"))
    print(plots.schedule_figure(args.out / "schedules.png"))
    print(plots.label_smoothing_figure(args.out / "label_smoothing.png"))
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [script("seq2seq-attention"), f"run={args.run}", f"text={SENTENCE}", f"out={scratch}"],
            check=True,
        )
        for kind in ("cross", "decoder"):
            target = args.out / f"attention_{kind}.png"
            shutil.copyfile(Path(scratch) / f"sentence1_{kind}.png", target)
            print(target)


if __name__ == "__main__":
    main()
