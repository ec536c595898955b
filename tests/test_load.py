"""Load: a 100,000-line file translates line for line, in memory that does not grow with it."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import installed_script
from toy import WORDS

pytestmark = pytest.mark.slow

# Runs one command and prints the peak resident memory (KiB) of that command alone.
PEAK_RSS_OF = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


def write_lines(path: Path, count: int) -> list[str]:
    rng = random.Random(count)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 8))) for _ in range(count)]
    path.write_text("".join(line + "\n" for line in lines))
    return lines


def translate_peak_kib(run_dir: Path, source: Path, output: Path) -> int:
    command = [
        installed_script("seq2seq-translate"),
        f"run={run_dir}",
        f"input={source}",
        f"output={output}",
        "decode.strategy=greedy",
        "threads=1",
    ]
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_OF, *command], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return int(result.stdout.split()[-1])


def test_a_100k_line_file_translates_in_order_in_constant_memory(toy_run, tmp_path):
    small, large = tmp_path / "10k.txt", tmp_path / "100k.txt"
    write_lines(small, 10_000)
    lines = write_lines(large, 100_000)
    small_peak = translate_peak_kib(toy_run, small, tmp_path / "10k.out")
    large_peak = translate_peak_kib(toy_run, large, tmp_path / "100k.out")
    outputs = (tmp_path / "100k.out").read_text().split("\n")
    assert outputs[-1] == "" and len(outputs) - 1 == 100_000  # every line, newline-terminated
    empty_inputs = [i for i, line in enumerate(lines) if not line]
    assert empty_inputs and all(outputs[i] == "" for i in empty_inputs)  # in place
    translated = sum(1 for i, line in enumerate(lines) if line and outputs[i])
    assert translated > 0.9 * (len(lines) - len(empty_inputs))  # the model does translate
    # the same lines translated alone give the same outputs: order is kept
    sample = tmp_path / "sample.txt"
    picked = random.Random(0).sample(range(100_000), 20)
    sample.write_text("".join(lines[i] + "\n" for i in picked))
    translate_peak_kib(toy_run, sample, tmp_path / "sample.out")
    assert (tmp_path / "sample.out").read_text().split("\n")[:-1] == [outputs[i] for i in picked]
    # streaming: 90,000 more lines may not cost memory (holding them would take > 40 MB)
    assert large_peak - small_peak < 20 * 1024, (small_peak, large_peak)
