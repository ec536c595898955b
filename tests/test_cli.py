"""The console scripts, run as a user runs them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig

import pytest


def run(*args: str) -> subprocess.CompletedProcess:
    script = shutil.which(args[0], path=sysconfig.get_path("scripts"))
    assert script is not None, f"{args[0]} is not installed"
    return subprocess.run([script, *args[1:]], capture_output=True, text=True, timeout=120)


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
