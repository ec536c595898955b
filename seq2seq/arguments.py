"""The `key=value` arguments of the commands that do not compose a Hydra config
(`seq2seq-translate`, `-evaluate`, `-average`, `-export`, `-attention`, `-plot`)."""

from __future__ import annotations

import difflib
import glob
import sys
from dataclasses import fields
from pathlib import Path

import torch
from omegaconf import OmegaConf

from seq2seq.config import DecodeConfig, Precision, to_dataclass
from seq2seq.devices import DEVICES
from seq2seq.errors import UserError

# What each key=value command accepts, with its defaults ("" marks a required key).
AVERAGE_ARGS = {"run": "", "last": "5", "out": "-"}

TRANSLATE_ARGS = {
    "run": "",
    "input": "-",
    "output": "-",
    "checkpoint": "best",
    "device": "auto",
    "precision": "fp32",
    "threads": "0",
    "chunk": "5000",
}

EVALUATE_ARGS = {
    "run": "-",
    "split": "-",
    "src": "-",
    "ref": "-",
    "hyp": "-",
    "testset": "-",
    "langpair": "-",
    "out": "-",
    "checkpoint": "best",
    "device": "auto",
    "precision": "fp32",
    "threads": "0",
    "metrics": "bleu,chrf",
    "lowercase": "false",
}

EXPORT_ARGS = {
    "run": "",
    "to": "hf",
    "out": "",
    "checkpoint": "best",
    "quantization": "float32",
    "overwrite": "false",
}

ATTENTION_ARGS = {
    "run": "",
    "text": "-",
    "input": "-",
    "lines": "1",
    "out": "attention",
    "checkpoint": "best",
    "max_tokens": "50",
}

PLOT_ARGS = {"run": "-", "runs": "-", "out": "-"}  # one of run=, runs=
PLOT_USAGE = "usage: seq2seq-plot (run=<run dir> | runs=<dir>,<dir>,...) [out=<png file>]"

# The key=value commands and the arguments each accepts (the docs test checks every example).
KEY_VALUE_COMMANDS = {
    "seq2seq-average": AVERAGE_ARGS,
    "seq2seq-translate": TRANSLATE_ARGS,
    "seq2seq-evaluate": EVALUATE_ARGS,
    "seq2seq-export": EXPORT_ARGS,
    "seq2seq-attention": ATTENTION_ARGS,
    "seq2seq-plot": PLOT_ARGS,
}


TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes"), ("false", "0", "no")

# what a key accepts, where the usage line should say more than its default
CHOICES = {
    "precision": [p.value for p in Precision],
    "device": list(DEVICES),
    "checkpoint": ["best", "last", "average", "<file>"],
}


def usage(defaults: dict[str, str]) -> str:
    """`usage: seq2seq-x run=... [input=-] [precision=fp32|bf16|fp16|auto] ...`: required keys
    first, the default before any other choice."""
    required = [f"{key}=..." for key, value in defaults.items() if value == ""]
    optional = [f"[{key}={shown_value(key, value)}]" for key, value in defaults.items() if value]
    return " ".join([f"usage: {Path(sys.argv[0]).name}", *required, *optional])


def shown_value(key: str, default: str) -> str:
    """`default`, then the key's other choices: `fp32|bf16|fp16|auto`."""
    others = [choice for choice in CHOICES.get(key, []) if choice != default]
    return "|".join([default, *others])


def parse_key_values(
    argv: list[str], defaults: dict[str, str], usage_line: str = ""
) -> dict[str, str]:
    """`key=value` arguments; unknown keys are errors naming the accepted ones. A default of ""
    marks a required key. `usage_line` replaces the generated usage where it cannot say enough."""
    if any(arg in ("-h", "--help") for arg in argv):
        print(usage_line or usage(defaults))
        raise SystemExit(0)
    values = dict(defaults)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise UserError(
                f"unknown argument '{arg}'; {hint}accepted: "
                f"{', '.join(f'{k}=...' for k in defaults)}"
            )
        values[key] = value
    missing = [k for k, v in values.items() if v == ""]
    if missing:
        raise UserError(f"missing argument(s): {', '.join(f'{k}=...' for k in missing)}")
    return values


def parse_bool(args: dict[str, str], key: str) -> bool:
    value = args[key].lower()
    if value not in TRUE_WORDS + FALSE_WORDS:
        raise UserError(f"{key} must be true or false, got '{args[key]}'")
    return value in TRUE_WORDS


def positive_int(args: dict[str, str], key: str) -> int:
    value = args[key]
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"{key} must be a positive integer, got '{value}'")
    return int(value)


def set_threads(value: str) -> None:
    """`threads=N`: N torch threads; 0 keeps torch's default."""
    if not value.isdigit():
        raise UserError(f"threads must be a non-negative integer, got '{value}'")
    if int(value) > 0:
        torch.set_num_threads(int(value))


def split_decode_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """(other arguments, decode.* overrides)."""
    decode = [a for a in argv if a.startswith("decode.")]
    return [a for a in argv if not a.startswith("decode.")], decode


def with_decode_overrides(decode: DecodeConfig, overrides: list[str]) -> DecodeConfig:
    """The run's decoding settings with `decode.key=value` overrides, type-checked."""
    if not overrides:
        return decode
    check_decode_keys(overrides)
    try:
        merged = OmegaConf.merge(
            OmegaConf.structured(decode),
            OmegaConf.from_dotlist([o.removeprefix("decode.") for o in overrides]),
        )
        return to_dataclass(merged, DecodeConfig)
    except UserError:
        raise
    except Exception as error:
        key = getattr(error, "full_key", "") or ""
        first = str(error).strip().splitlines()[0]
        raise UserError(f"invalid decoding option decode.{key}: {first}") from None


def check_decode_keys(overrides: list[str]) -> None:
    """Every `decode.key=value` names a decoding setting; else a "did you mean" error."""
    known = [f"decode.{f.name}" for f in fields(DecodeConfig)]
    for override in overrides:
        key = override.partition("=")[0]
        if key not in known:
            close = difflib.get_close_matches(key, known, n=2)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise UserError(f"unknown decoding option '{key}'{hint}")


def run_list(value: str) -> list[Path]:
    """Run directories from a comma-separated list; an entry may be a pattern (runs/ours/*),
    of whose matches the directories are taken."""
    runs: list[Path] = []
    for entry in filter(None, (part.strip() for part in value.split(","))):
        if glob.has_magic(entry):
            matches = [Path(m) for m in sorted(glob.glob(entry)) if Path(m).is_dir()]
            if not matches:
                raise UserError(f"runs={value}: no directory matches {entry}")
            runs.extend(matches)
        elif not Path(entry).is_dir():
            raise UserError(f"runs={value}: run directory {entry} does not exist")
        else:
            runs.append(Path(entry))
    if not runs:
        raise UserError("runs= is empty: give run directories or patterns, comma-separated")
    return runs
