"""Configuration mistakes: overrides checked against the schema, numeric ranges, model sizes."""

from __future__ import annotations

import re
import resource
import subprocess
import sys

import pytest
from helpers import RECIPES, assert_one_line_error, installed_script, run_command

from seq2seq import sizes
from seq2seq.config import (
    CONFIG_GROUPS,
    DataConfig,
    DecodeConfig,
    ModelConfig,
    OptimConfig,
    TokenizerConfig,
    TrainConfig,
    group_options,
)
from seq2seq.errors import ConfigError, UserError
from seq2seq.overrides import check_command_line, check_overrides
from seq2seq.translate import load_run_config

TYPO = (
    "unknown config key 'train.max_stpes'; did you mean train.max_steps or train.max_tokens "
    "or train.max_minutes?"
)
QUOTING = (
    "cannot read the value of 'run_dir=a'b': a value holding quotes, '=', brackets or "
    """parentheses must be quoted, as in run_dir="a'b" (in a shell: 'run_dir="a'"'"'b"')"""
)

# (overrides, -m given, the whole message)
OVERRIDE_MISTAKES = [
    (["+train.max_stpes=5"], False, TYPO),
    (["++train.max_stpes=5"], False, TYPO),
    (["~train.max_stpes"], False, TYPO),
    (["train.max_stpes=1,2"], True, TYPO),
    (["trian.max_steps=3"], False, "unknown config key 'trian'; did you mean train?"),
    (["recipe.x=1"], False, "unknown config key 'recipe.x'"),
    (
        ["+train.max_steps=5"],
        False,
        "cannot add '+train.max_steps=5': train.max_steps is already in the config; "
        "set it with train.max_steps=..., without '+'",
    ),
    (
        ["~train.max_steps"],
        False,
        "cannot delete train.max_steps: every key of the config has a value; "
        "set it with train.max_steps=...",
    ),
    (
        ["+model=tiny"],
        False,
        "cannot add '+model=tiny': choose a model with model=<name>, without '+'",
    ),
    (["model=huge"], False, "unknown model 'huge'; available: base, big, small, tiny"),
    (["model=tiny,huge"], True, "unknown model 'huge'; available: base, big, small, tiny"),
    (
        ["optim=fast"],
        False,
        "unknown optim 'fast': optim has no named options; set its keys instead, "
        "e.g. optim.optimizer=...",
    ),
    (
        ["train.max_steps=1,2"],
        False,
        "'train.max_steps=1,2' gives several values: add -m to run one job per value, "
        "or quote it to give one text value: train.max_steps='...'",
    ),
    (
        ["train.max_steps=abc"],
        False,
        "invalid config value train.max_steps=abc: Value 'abc' of type 'str' could not be "
        "converted to Integer",
    ),
    (
        ["train.max_steps=1,abc"],
        True,
        "invalid config value train.max_steps=abc: Value 'abc' of type 'str' could not be "
        "converted to Integer",
    ),
    (
        ["train.max_steps=1.5"],
        False,
        "invalid config value train.max_steps=1.5: Value '1.5' of type 'float' could not be "
        "converted to Integer",
    ),
    (
        ["train.valid_bleu=2"],
        False,
        "invalid config value train.valid_bleu=2: Value '2' of type 'int' could not be "
        "converted to Boolean",
    ),
    (
        ["train.max_steps=null"],
        False,
        "invalid config value train.max_steps=null: a value is needed, not null",
    ),
    (
        ["train.precision=fp8"],
        False,
        "invalid config value train.precision=fp8: Invalid value 'fp8', expected one of "
        "[fp32, bf16, fp16, auto]",
    ),
    (["run_dir=a'b"], False, QUOTING),
    (
        ["train.max_steps"],
        False,
        "'train.max_steps' is not an override; write key=value (or ~key to delete a key)",
    ),
    (["=5"], False, "'=5' has no key; write key=value, e.g. train.max_steps=1000"),
    (
        ["model=tiny", "model.heads=4,3"],
        True,
        "model.d_model (32) must be divisible by model.heads (3)",
    ),
    (["decode.max_len_a=1,nan"], True, "decode.max_len_a must be a finite number, got nan"),
    (["optim.lr=inf"], False, "optim.lr must be a finite number, got inf"),
]


@pytest.mark.parametrize(
    "overrides, multirun, message",
    OVERRIDE_MISTAKES,
    ids=[" ".join(case[0]) + (" -m" if case[1] else "") for case in OVERRIDE_MISTAKES],
)
def test_override_mistakes_have_their_own_one_line_message(overrides, multirun, message):
    with pytest.raises(UserError) as error:
        check_overrides(overrides, multirun=multirun)
    assert str(error.value) == message


@pytest.mark.parametrize(
    "overrides, multirun",
    [
        (["++train.max_steps=5", "~recipe", "train.max_steps='5'", "run_dir=null"], False),
        (["hydra.job.chdir=false", "train.max_steps=${train.log_every}"], False),
        (["model=tiny,small", "train.max_steps=range(1,4)", "optim.lr=interval(0.1,0.2)"], True),
    ],
)
def test_valid_overrides_pass(overrides, multirun):
    check_overrides(overrides, multirun=multirun)


def test_flags_of_hydra_are_not_overrides():
    check_command_line(["-m", "train.max_steps=1,2", "--cfg", "job", "--package", "train"])
    check_command_line(["-cn", "other", "whatever=1"])  # another config: not seq2seq's schema
    with pytest.raises(UserError, match="gives several values"):
        check_command_line(["train.max_steps=1,2", "--cfg", "job"])


def command(name: str, *args: str) -> subprocess.CompletedProcess:
    return run_command(name, *args, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize(
    "argument, message", [("+train.max_stpes=5", TYPO), ("run_dir=a'b", QUOTING)]
)
def test_a_command_prints_exactly_the_message_and_creates_nothing(
    argument, message, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    result = command("seq2seq-info", "model=tiny", argument)
    assert result.returncode == 2
    assert result.stderr == f"error: {message}\n"
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_multirun_with_a_misspelled_key_is_one_line_and_leaves_no_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = command("seq2seq-train", "-m", "model=tiny", "train.max_stpes=1,2")
    assert result.returncode == 2
    assert result.stderr == f"error: {TYPO}\n"
    assert list(tmp_path.iterdir()) == []  # no multirun/ and no runs/


# --------------------------------------------------------------------------- numeric ranges

# (dataclass, field, value, the whole message)
RANGE_MISTAKES = [
    (DecodeConfig, "max_len_a", float("inf"), "decode.max_len_a must be a finite number, got inf"),
    (DecodeConfig, "max_len_a", float("nan"), "decode.max_len_a must be a finite number, got nan"),
    (DecodeConfig, "max_len_a", -5.0, "decode.max_len_a must be >= 0, got -5.0"),
    (DecodeConfig, "max_len_b", -1, "decode.max_len_b must be >= 0, got -1"),
    (
        DecodeConfig,
        "temperature",
        float("nan"),
        "decode.temperature must be a finite number, got nan",
    ),
    (
        DecodeConfig,
        "temperature",
        float("inf"),
        "decode.temperature must be a finite number, got inf",
    ),
    (DecodeConfig, "temperature", 0.0, "decode.temperature must be positive, got 0.0"),
    (
        DecodeConfig,
        "length_penalty",
        float("nan"),
        "decode.length_penalty must be a finite number, got nan",
    ),
    (
        DecodeConfig,
        "length_penalty",
        float("-inf"),
        "decode.length_penalty must be a finite number, got -inf",
    ),
    (DecodeConfig, "top_p", float("nan"), "decode.top_p must be a finite number, got nan"),
    (DecodeConfig, "top_p", 0.0, "decode.top_p must be in (0, 1], got 0.0"),
    (DecodeConfig, "top_k", -1, "decode.top_k must be >= 0, got -1"),
    (DecodeConfig, "beam", 0, "decode.beam must be at least 1, got 0"),
    (DecodeConfig, "max_tokens", 0, "decode.max_tokens must be at least 1, got 0"),
    (DecodeConfig, "min_len", -1, "decode.min_len must be >= 0, got -1"),
    (OptimConfig, "lr", float("nan"), "optim.lr must be a finite number, got nan"),
    (OptimConfig, "lr", float("inf"), "optim.lr must be a finite number, got inf"),
    (OptimConfig, "lr", 0.0, "optim.lr must be positive, got 0.0"),
    (OptimConfig, "beta2", float("nan"), "optim.beta2 must be a finite number, got nan"),
    (OptimConfig, "eps", -1e-9, "optim.eps must be >= 0, got -1e-09"),
    (OptimConfig, "weight_decay", -0.1, "optim.weight_decay must be >= 0, got -0.1"),
    (
        OptimConfig,
        "weight_decay",
        float("inf"),
        "optim.weight_decay must be a finite number, got inf",
    ),
    (OptimConfig, "min_lr", -1.0, "optim.min_lr must be >= 0, got -1.0"),
    (OptimConfig, "min_lr", 1.0, "optim.min_lr=1.0 must not exceed optim.lr=0.0005"),
    (OptimConfig, "warmup_fraction", 1.0, "optim.warmup_fraction must be in [0, 1), got 1.0"),
    (OptimConfig, "cooldown", -0.1, "optim.cooldown must be in [0, 1), got -0.1"),
    (
        TrainConfig,
        "average_last",
        6,
        "train.average_last=6 must be between 0 and train.keep_last=5 (the checkpoints kept "
        "to average)",
    ),
    (
        TrainConfig,
        "label_smoothing",
        float("nan"),
        "train.label_smoothing must be a finite number, got nan",
    ),
    (TrainConfig, "clip_norm", float("inf"), "train.clip_norm must be a finite number, got inf"),
    (TrainConfig, "clip_norm", -1.0, "train.clip_norm must be >= 0, got -1.0"),
    (TrainConfig, "subword_alpha", -0.5, "train.subword_alpha must be >= 0, got -0.5"),
    (TrainConfig, "subword_nbest", 0, "train.subword_nbest must be at least 1, got 0"),
    (
        TrainConfig,
        "max_minutes",
        float("nan"),
        "train.max_minutes must be a finite number, got nan",
    ),
    (
        DataConfig,
        "max_length_ratio",
        float("nan"),
        "data.max_length_ratio must be a finite number, got nan",
    ),
    (DataConfig, "max_length_ratio", 0.5, "data.max_length_ratio must be >= 1, got 0.5"),
    (
        TokenizerConfig,
        "character_coverage",
        float("inf"),
        "tokenizer.character_coverage must be a finite number, got inf",
    ),
    (ModelConfig, "dropout", float("nan"), "model.dropout must be a finite number, got nan"),
    (ModelConfig, "attention_dropout", -0.1, "model.attention_dropout must be in [0, 1), got -0.1"),
]


@pytest.mark.parametrize(
    "schema, name, value, message",
    RANGE_MISTAKES,
    ids=[f"{case[0].__name__}.{case[1]}={case[2]}" for case in RANGE_MISTAKES],
)
def test_numeric_options_out_of_range_are_refused(schema, name, value, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        schema(**{name: value})


def test_a_maximum_output_length_of_zero_is_refused():
    with pytest.raises(ConfigError, match="decode.max_len_a and decode.max_len_b are both 0"):
        DecodeConfig(max_len_a=0.0, max_len_b=0)
    DecodeConfig(max_len_a=0.0, max_len_b=1)


def test_a_saved_config_with_an_infinite_value_is_refused(tmp_path):
    (tmp_path / "config.yaml").write_text("model:\n  d_model: 32\ndecode:\n  max_len_a: .inf\n")
    with pytest.raises(ConfigError, match="decode.max_len_a must be a finite number, got inf"):
        load_run_config(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "argument, message",
    [
        ("decode.max_len_a=inf", "decode.max_len_a must be a finite number, got inf"),
        ("decode.max_len_a=nan", "decode.max_len_a must be a finite number, got nan"),
        ("decode.max_len_a=-5", "decode.max_len_a must be >= 0, got -5.0"),
        ("decode.temperature=nan", "decode.temperature must be a finite number, got nan"),
        ("decode.temperature=inf", "decode.temperature must be a finite number, got inf"),
    ],
)
def test_translate_refuses_a_decoding_option_out_of_range(toy_run, argument, message):
    before = sorted(p.name for p in toy_run.iterdir())
    result = run_command(
        "seq2seq-translate", f"run={toy_run}", argument, "decode.strategy=sample", stdin="red dog\n"
    )
    assert_one_line_error(result, message)
    assert result.stdout == ""
    assert sorted(p.name for p in toy_run.iterdir()) == before


# --------------------------------------------------------------------------- model sizes


HUGE = ModelConfig(d_model=100_000, ffn_dim=1_000_000, encoder_layers=100)


def test_memory_is_read_from_meminfo(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    2000000 kB\n")
    monkeypatch.setattr(sizes, "MEMINFO", meminfo)
    assert sizes.available_memory() == 2_000_000 * 1024
    with pytest.raises(UserError, match="more than the 2.0 GB available"):
        sizes.check_fits_in_memory(HUGE)
    sizes.check_fits_in_memory(ModelConfig())


def test_unknown_memory_refuses_nothing(tmp_path, monkeypatch):
    def unreadable(name: str) -> int:
        raise OSError(name)

    monkeypatch.setattr(sizes, "MEMINFO", tmp_path / "missing")
    monkeypatch.setattr(sizes.os, "sysconf", unreadable)
    assert sizes.available_memory() is None
    sizes.check_fits_in_memory(HUGE)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")
def test_info_refuses_a_model_too_large_for_the_memory_without_allocating_it():
    def limit_memory() -> None:  # should the check fail, building fails at once, no OOM killer
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    result = subprocess.run(
        [
            installed_script("seq2seq-info"),
            *("model.d_model=100000", "model.ffn_dim=1000000", "model.encoder_layers=100"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_memory,
    )
    assert_one_line_error(
        result,
        "this model has 24,840,997,500,000 parameters: its weights alone need 99,364.0 GB of "
        "memory, more than the ",
    )
    assert result.stdout == ""


def test_the_options_of_a_group_are_its_files():
    assert group_options("model") == ["base", "big", "small", "tiny"]
    assert group_options("recipe") == sorted(RECIPES)
    assert all(group_options(group) == [] for group in CONFIG_GROUPS[2:])
