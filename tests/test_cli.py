"""The console scripts, run as a user runs them."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import RECIPES, run_command

from seq2seq.arguments import KEY_VALUE_COMMANDS


def run(*args: str) -> subprocess.CompletedProcess:
    return run_command(*args, timeout=120)


def test_info_builds_the_configured_model_and_prints_its_size():
    result = run("seq2seq-info", "model=tiny", "model.d_model=64")
    assert result.returncode == 0, result.stderr
    assert "d_model 64" in result.stdout
    assert "parameters:" in result.stdout


def test_info_default_is_the_small_model():
    result = run("seq2seq-info")
    assert result.returncode == 0, result.stderr
    assert "parameters: 7,577,600" in result.stdout


def test_invalid_combination_is_one_line_without_traceback():
    result = run("seq2seq-info", "model=tiny", "model.heads=3")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "model.heads" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX console scripts")
def test_unknown_key_fails_without_traceback():
    result = run("seq2seq-info", "model.dmodel=64")
    assert result.returncode != 0
    assert "dmodel" in result.stderr
    assert "Traceback" not in result.stderr


CONFIG_MISTAKES = [
    (["model.dmodel=64"], "unknown config key 'model.dmodel'; did you mean model.d_model"),
    (["trian.max_steps=3"], "unknown config key 'trian'; did you mean train?"),
    (["recipe=nope"], "unknown recipe 'nope'; available: "),
    (["model=huge"], "unknown model 'huge'; available: base, big, small, tiny"),
    (["train.max_steps=abc"], "train.max_steps=abc: Value 'abc'"),
    (["train.max_tokens=0"], "train.max_tokens must be at least 1, got 0"),
    (["train.max_tokens=-5"], "train.max_tokens must be at least 1, got -5"),
    (["decode.workers=0"], "decode.workers must be at least 1, got 0"),
    (["model=tiny", "model.heads=3"], "model.d_model (32) must be divisible by model.heads (3)"),
    (["train.precision=fp8"], "expected one of [fp32, bf16, fp16, auto]"),
]


@pytest.mark.parametrize("overrides, message", CONFIG_MISTAKES)
def test_config_mistakes_are_one_line_errors(overrides, message):
    result = run("seq2seq-train", *overrides)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "Traceback" not in result.stderr


def test_unknown_recipe_lists_every_recipe():
    result = run("seq2seq-train", "recipe=nope")
    for recipe in RECIPES:
        assert recipe in result.stderr


def test_cfg_job_prints_the_resolved_config_of_a_recipe():
    result = run("seq2seq-train", "recipe=wmt14_en_de", "optim.lr=7e-4", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "lr: 0.0007" in result.stdout
    assert "name: wmt/wmt14" in result.stdout
    assert "d_model: 512" in result.stdout


@pytest.mark.parametrize("command", sorted(KEY_VALUE_COMMANDS))
def test_key_value_commands_print_their_usage_on_help(command):
    result = run_command(command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: {command} ")
    assert all(key in result.stdout for key in KEY_VALUE_COMMANDS[command])
    if "precision" in KEY_VALUE_COMMANDS[command]:
        assert "[precision=fp32|bf16|fp16|auto]" in result.stdout


def test_cfg_job_with_a_misspelled_key_is_still_a_one_line_error():
    result = run("seq2seq-train", "recipe=multi30k_en_de", "model.dmodel=3", "--cfg", "job")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: unknown config key 'model.dmodel'; did you mean model.d_model or "
        "model.decoder_layers or model.pad_id?"
    )


def test_plot_usage_says_it_takes_run_or_runs():
    result = run_command("seq2seq-plot", "--help")
    assert result.stdout.strip() == (
        "usage: seq2seq-plot (run=<run dir> | runs=<dir>,<dir>,...) [out=<png file>]"
    )
