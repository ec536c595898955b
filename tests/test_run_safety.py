"""A run directory stays whole whatever happens to it: two trainings at once, a killed run's
lock file, a missing meta.json, a metrics.jsonl cut short, a file given as run_dir, a device
this machine does not have. Each mistake is a one-line error that changes nothing."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, installed_script, run_command
from toy import toy_overrides

from seq2seq import checkpoint, constants
from seq2seq.errors import UserError

pytestmark = pytest.mark.slow
QUICK = {"train__valid_bleu": False, "train__test_at_end": False}


def wait_for(condition, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def line_count(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def start_training(corpus: Path, run_dir: Path, **extra: object) -> subprocess.Popen:
    """A training that runs until it is stopped."""
    overrides = toy_overrides(
        corpus, run_dir, train__max_steps=100000, train__validate_every=100000, **QUICK
    )
    overrides += [f"{key.replace('__', '.')}={value}" for key, value in extra.items()]
    return subprocess.Popen(
        [installed_script("seq2seq-train"), *overrides],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def files_of(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run directory (train.log and the lock aside) and its contents."""
    return {
        str(path.relative_to(run_dir)): path.read_bytes()
        for path in sorted(run_dir.rglob("*"))
        if path.is_file() and path.name not in ("train.log", constants.LOCK)
    }


@pytest.fixture(scope="module")
def small_run(toy_corpus, tmp_path_factory) -> Path:
    """A run of 4 steps with checkpoints at steps 2 and 4."""
    run_dir = tmp_path_factory.mktemp("small") / "run"
    result = run_command(
        "seq2seq-train",
        *toy_overrides(toy_corpus, run_dir, train__max_steps=4, train__validate_every=2, **QUICK),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


@pytest.fixture
def run_copy(small_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(small_run, copy)
    return copy


# --------------------------------------------------------------------------- the run lock


def test_a_second_training_of_the_same_run_is_refused_naming_the_holder(toy_corpus, tmp_path):
    run_dir = tmp_path / "run"
    first = start_training(toy_corpus, run_dir)
    try:
        wait_for(lambda: line_count(run_dir / constants.METRICS) >= 2)
        assert (run_dir / constants.LOCK).read_text().strip() == str(first.pid)
        config = (run_dir / "config.yaml").read_bytes()
        second = run_command(
            "seq2seq-train", *toy_overrides(toy_corpus, run_dir, train__max_steps=3, **QUICK)
        )
        assert_one_line_error(second, f"{run_dir} is in use by another training (PID {first.pid})")
        assert first.poll() is None  # still training
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 2 and "Traceback" not in stderr, stderr[-2000:]
    step = int(stderr.split("interrupted at step ")[1].split(";")[0])
    assert checkpoint.latest_checkpoint(run_dir) == checkpoint.step_dir(run_dir, step)
    assert (run_dir / "config.yaml").read_bytes() == config
    assert torch.load(run_dir / constants.TRAIN_STATE, weights_only=True)["step"] == step
    assert (run_dir / "train.log").read_text().count("run directory:") == 1


def test_a_lock_file_left_by_a_killed_run_does_not_block_resuming(toy_corpus, tmp_path):
    run_dir = tmp_path / "run"
    killed = start_training(toy_corpus, run_dir, train__validate_every=3)
    try:
        wait_for(lambda: checkpoint.latest_checkpoint(run_dir) is not None)
    finally:
        killed.kill()
        killed.wait()
    assert (run_dir / constants.LOCK).read_text().strip() == str(killed.pid)
    step = int(checkpoint.latest_checkpoint(run_dir).name.split("_")[1])
    result = run_command("seq2seq-train", f"run_dir={run_dir}", f"train.max_steps={step + 1}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert torch.load(run_dir / constants.TRAIN_STATE, weights_only=True)["step"] == step + 1


# --------------------------------------------------------------------------- meta.json


def test_resuming_without_meta_json_writes_it_again_and_the_run_translates(run_copy):
    expected = json.loads((run_copy / constants.META).read_text())["tokenizer_sha256"]
    (run_copy / constants.META).unlink()
    result = run_command("seq2seq-train", f"run_dir={run_copy}", "train.max_steps=5")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{constants.META} was missing" in result.stderr
    meta = json.loads((run_copy / constants.META).read_text())
    assert meta["tokenizer_sha256"] == expected
    assert meta["format_version"] == checkpoint.FORMAT_VERSION
    translated = run_command("seq2seq-translate", f"run={run_copy}", stdin="red dog\n")
    assert translated.returncode == 0, translated.stderr[-2000:]
    assert len(translated.stdout.splitlines()) == 1


# --------------------------------------------------------------------------- metrics.jsonl

TORN = '{"kind": "train", "step": 5, "epo'


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_reading_metrics_skips_only_a_torn_last_line(tmp_path, caplog):
    path = tmp_path / constants.METRICS
    whole = [{"kind": "train", "step": 1, "loss": 2.5}, {"kind": "valid", "step": 1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in whole) + "\n" + TORN)
    assert checkpoint.read_metrics(path) == whole
    assert "cut short" in caplog.text
    path.write_text(json.dumps(whole[0]) + "\n" + TORN + "\n" + json.dumps(whole[1]) + "\n")
    with pytest.raises(UserError, match="line 2 is not a metrics record"):
        checkpoint.read_metrics(path)


def test_plot_skips_a_torn_last_metrics_line_with_a_warning(run_copy, tmp_path):
    pytest.importorskip("matplotlib")
    metrics = run_copy / constants.METRICS
    metrics.write_text(metrics.read_text() + TORN)
    before = metrics.read_bytes()
    out = tmp_path / "curves.png"
    result = run_command("seq2seq-plot", f"run={run_copy}", f"out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ignoring its last line, which was cut short" in result.stderr
    assert out.stat().st_size > 0
    assert metrics.read_bytes() == before


def test_resume_drops_a_torn_last_metrics_line(run_copy):
    metrics = run_copy / constants.METRICS
    metrics.write_text(metrics.read_text() + TORN)
    result = run_command("seq2seq-train", f"run_dir={run_copy}", "train.max_steps=6")
    assert result.returncode == 0, result.stderr[-2000:]
    train = [r["step"] for r in records(metrics) if r["kind"] == "train"]
    assert train == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("command", ["seq2seq-plot", "seq2seq-train"])
def test_a_malformed_metrics_line_before_the_last_is_one_line(run_copy, command):
    metrics = run_copy / constants.METRICS
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join([lines[0], "not json\n", *lines[1:]]))
    before = files_of(run_copy)
    arguments = {
        "seq2seq-plot": [f"run={run_copy}"],
        "seq2seq-train": [f"run_dir={run_copy}", "train.max_steps=6"],
    }
    result = run_command(command, *arguments[command])
    assert_one_line_error(result, f"{metrics}: line 2 is not a metrics record")
    assert files_of(run_copy) == before


# --------------------------------------------------------------------------- run_dir, devices


def test_a_run_dir_that_is_a_file_is_one_line(toy_corpus, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("keep me\n")
    result = run_command("seq2seq-train", *toy_overrides(toy_corpus, path, **QUICK))
    assert_one_line_error(result, f"run_dir={path} is a file, not a directory")
    assert path.read_text() == "keep me\n"


NO_MPS = pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")


@NO_MPS
@pytest.mark.parametrize(
    "device, message",
    [
        ("mps", "train.device=mps but MPS (Apple GPU) is not available; use train.device=cpu"),
        ("tpu", "unknown device 'tpu' (train.device); use auto, cpu, cuda, cuda:N or mps"),
        ("meta", "train.device=meta is not supported"),
    ],
)
def test_training_on_a_device_this_machine_lacks_is_one_line(toy_corpus, tmp_path, device, message):
    run_dir = tmp_path / "run"
    result = run_command(
        "seq2seq-train", *toy_overrides(toy_corpus, run_dir, train__device=device, **QUICK)
    )
    assert_one_line_error(result, message)
    assert not run_dir.exists()


@NO_MPS
def test_resuming_on_a_device_this_machine_lacks_changes_nothing(run_copy):
    before = files_of(run_copy)
    result = run_command("seq2seq-train", f"run_dir={run_copy}", "train.device=mps")
    assert_one_line_error(result, "train.device=mps but MPS (Apple GPU) is not available")
    assert files_of(run_copy) == before


@NO_MPS
@pytest.mark.parametrize(
    "command, device, message",
    [
        ("seq2seq-translate", "mps", "device=mps but MPS (Apple GPU) is not available"),
        ("seq2seq-translate", "tpu", "unknown device 'tpu' (device); use auto, cpu, cuda"),
        ("seq2seq-evaluate", "mps", "device=mps but MPS (Apple GPU) is not available"),
    ],
)
def test_decoding_on_a_device_this_machine_lacks_is_one_line(
    small_run, tmp_path, command, device, message
):
    arguments = ["split=test", f"out={tmp_path}"] if command == "seq2seq-evaluate" else []
    result = run_command(
        command, f"run={small_run}", *arguments, f"device={device}", stdin="red dog\n"
    )
    assert_one_line_error(result, message)
    assert list(tmp_path.iterdir()) == []
