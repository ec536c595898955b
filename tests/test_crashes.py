"""Crashes lose nothing: kill -9 at random moments and inside every stage of a checkpoint
write, a full disk while saving, and a translation killed mid-file."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from helpers import installed_script
from toy import toy_overrides, write_toy_corpus

from seq2seq import checkpoint, constants

pytestmark = pytest.mark.slow
SETTINGS = {
    "train__max_steps": 16,
    "train__validate_every": 4,
    "train__keep_last": 2,
    "train__valid_bleu": False,
    "train__test_at_end": False,
}

# Runs seq2seq-train in this process after wrapping checkpoint.<function> so that its
# <call>-th call ends the process with SIGKILL, before or after doing its work. "rmtree_old"
# wraps shutil.rmtree and counts only the deletions of pruned checkpoints (.step_N.old).
KILL_INSIDE = """
import os, shutil, signal, sys
from seq2seq import checkpoint, cli
function, call, when = sys.argv[1], int(sys.argv[2]), sys.argv[3]
owner = shutil if function == "rmtree_old" else checkpoint
name = "rmtree" if function == "rmtree_old" else function
original, calls = getattr(owner, name), []
def wrapped(*args, **kwargs):
    counted = function != "rmtree_old" or (
        str(args[0]).endswith(".old") and os.path.exists(args[0]) and not kwargs
    )
    if counted:
        calls.append(1)
    if counted and len(calls) == call and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = original(*args, **kwargs)
    if counted and len(calls) == call and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return result
setattr(owner, name, wrapped)
sys.argv = ["seq2seq-train", *sys.argv[4:]]
cli.train_main()
"""

# Runs seq2seq-train with every file write of the <call>-th checkpoint failing as on a full disk.
DISK_FULL_AT = """
import errno, sys
from seq2seq import checkpoint, cli
call, calls, original = int(sys.argv[1]), [], checkpoint.save_checkpoint
def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")
def save(run_dir, step, model, state, keep_last):
    calls.append(1)
    if len(calls) == call:
        checkpoint.save_weights = full_disk
    return original(run_dir, step, model, state, keep_last)
checkpoint.save_checkpoint = save
sys.argv = ["seq2seq-train", *sys.argv[2:]]
cli.train_main()
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_toy_corpus(tmp_path_factory.mktemp("toy"))


def train_command(corpus: Path, run_dir: Path) -> list[str]:
    return toy_overrides(corpus, run_dir, **SETTINGS)


def train(corpus: Path, run_dir: Path) -> None:
    """Run (or, rerunning the same command, resume) the toy training to its end."""
    result = subprocess.run(
        [installed_script("seq2seq-train"), *train_command(corpus, run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory) -> dict[str, torch.Tensor]:
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    train(corpus, run_dir)
    return safetensors.torch.load_file(str(run_dir / constants.WEIGHTS))


def assert_readable(run_dir: Path) -> None:
    """Every checkpoint the run directory offers loads; so do the top-level files."""
    for step in checkpoint.step_dirs(run_dir):
        safetensors.torch.load_file(str(step / constants.WEIGHTS))
        checkpoint.load_train_state(step / constants.TRAIN_STATE)
    for name in (constants.WEIGHTS, constants.BEST_WEIGHTS):
        if (run_dir / name).exists():
            safetensors.torch.load_file(str(run_dir / name))
    if (run_dir / constants.TRAIN_STATE).exists():
        checkpoint.load_train_state(run_dir / constants.TRAIN_STATE)


def assert_same_weights(expected: dict, run_dir: Path) -> None:
    resumed = safetensors.torch.load_file(str(run_dir / constants.WEIGHTS))
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name


# (function, which call, before/after). Checkpoints are saved at steps 4, 8, 12, 16; each save
# links the top-level weights and train state (link_or_copy), and marks the best (a third link)
# when validation improved.
STAGES = [
    ("save_weights", 2, "after"),  # weights of step 8 written, its train state not yet
    ("fsync", 7, "after"),  # step 8's temporary directory complete, not yet renamed
    ("link_or_copy", 3, "before"),  # step 4 in place and linked, best not yet marked
    ("link_or_copy", 4, "before"),  # step 8 in place, top-level files still at step 4
    ("link_or_copy", 5, "before"),  # top-level weights at step 8, train state still at step 4
    ("remove_directory", 1, "before"),  # step 12 saved, step 4 not yet pruned
    ("rmtree_old", 1, "before"),  # step 4 renamed away for pruning, not yet deleted
]


@pytest.mark.parametrize("function, call, when", STAGES, ids=lambda v: str(v))
def test_a_kill_inside_a_checkpoint_write_loses_nothing(
    corpus, uninterrupted, tmp_path, function, call, when
):
    run_dir = tmp_path / "run"
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILL_INSIDE,
            function,
            str(call),
            when,
            *train_command(corpus, run_dir),
        ],
        cwd=tmp_path,  # not the repository: `-c` would import its seq2seq/, not the installed one
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert_readable(run_dir)
    assert checkpoint.latest_checkpoint(run_dir) is not None
    train(corpus, run_dir)  # the same command resumes
    assert_same_weights(uninterrupted, run_dir)
    assert not list((run_dir / constants.CHECKPOINTS).glob(".*"))  # no temporary left behind


def test_kills_at_random_moments_then_resuming_reach_the_same_weights(
    corpus, uninterrupted, tmp_path
):
    run_dir = tmp_path / "run"
    moments = random.Random(7).sample([0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5], 5)
    for delay in moments:
        process = subprocess.Popen(
            [installed_script("seq2seq-train"), *train_command(corpus, run_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert_readable(run_dir)
    train(corpus, run_dir)
    assert_same_weights(uninterrupted, run_dir)


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_last_checkpoint(corpus, tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", DISK_FULL_AT, "2", *train_command(corpus, run_dir)],
        cwd=tmp_path,  # not the repository: `-c` would import its seq2seq/, not the installed one
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "cannot save the checkpoint of step 8" in message
    assert "No space left on device" in message
    assert "the checkpoint of step 4 is intact" in message
    assert [p.name for p in checkpoint.step_dirs(run_dir)] == ["step_00000004"]
    assert not list((run_dir / constants.CHECKPOINTS).glob(".*"))  # the partial write is gone
    assert_readable(run_dir)


def test_an_unwritable_run_directory_is_one_line(corpus, tmp_path):
    run_dir = tmp_path / "run"
    train(corpus, run_dir)
    (run_dir / constants.CHECKPOINTS).rename(tmp_path / "moved")
    (run_dir / constants.CHECKPOINTS).write_text("not a directory")  # mkdir fails, even as root
    result = subprocess.run(
        [installed_script("seq2seq-train"), *train_command(corpus, run_dir), "train.max_steps=20"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "cannot save the checkpoint of step" in result.stderr.strip().splitlines()[-1]


def test_translate_killed_mid_file_leaves_no_output_under_the_final_name(toy_run, tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("the red dog runs near the big house\n" * 200_000)
    output = tmp_path / "output.txt"
    process = subprocess.Popen(
        [
            installed_script("seq2seq-translate"),
            f"run={toy_run}",
            f"input={source}",
            f"output={output}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    temporary = output.with_name(f".{output.name}.tmp")
    deadline = time.monotonic() + 120
    while not (temporary.exists() and temporary.stat().st_size > 0):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not output.exists()
