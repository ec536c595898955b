"""Tiny deterministic models and batches shared by the tests."""

from __future__ import annotations

import gzip
import itertools
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import torch

from seq2seq.config import ModelConfig
from seq2seq.constants import PAD_ID
from seq2seq.model import Transformer

VOCAB = 50


def tiny_config(**overrides) -> ModelConfig:
    """A 2+2-layer model small enough for exact property tests; no dropout."""
    values: dict[str, Any] = dict(  # ModelConfig checks the values itself
        d_model=32,
        heads=4,
        encoder_layers=2,
        decoder_layers=2,
        ffn_dim=48,
        dropout=0.0,
        max_positions=64,
        src_vocab_size=VOCAB,
        tgt_vocab_size=VOCAB,
    )
    values.update(overrides)
    return ModelConfig(**values)


def tiny_model(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(tiny_config(**overrides)).eval()


def random_tokens(batch: int, length: int, seed: int) -> torch.Tensor:
    """Ids that are never special (4..VOCAB-1)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(4, VOCAB, (batch, length), generator=generator)


def pad_to(tokens: torch.Tensor, length: int) -> torch.Tensor:
    """Right-pad (batch, len) ids with PAD_ID to `length` positions."""
    padding = torch.full((tokens.shape[0], length - tokens.shape[1]), PAD_ID)
    return torch.cat([tokens, padding], dim=1)


def multi30k_root() -> Path | None:
    """The local Multi30k copy: $SEQ2SEQ_MULTI30K, else ../shared/data/multi30k next to the repo."""
    candidates = [
        os.environ.get("SEQ2SEQ_MULTI30K"),
        Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "train.en.gz").is_file():
            return Path(candidate)
    return None


def read_gz_lines(path: Path, limit: int | None = None) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        lines = (line.rstrip("\n") for line in stream)
        return list(itertools.islice(lines, limit))


def installed_script(name: str) -> str:
    """The path of a console script installed next to this Python (venv not activated too)."""
    path = shutil.which(name, path=sysconfig.get_path("scripts")) or shutil.which(name)
    assert path is not None, f"{name} is not installed"
    return path


def run_command(
    name: str, *args: str, stdin: str | bytes | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run an installed console script as a user would; text in and out unless stdin is bytes."""
    return subprocess.run(
        [installed_script(name), *args],
        input=stdin,
        capture_output=True,
        text=not isinstance(stdin, bytes),
        timeout=timeout,
    )


# Every recipe shipped in recipes/.
RECIPES = [
    "multi30k_en_de",
    "multi30k_en_fr",
    "iwslt14_de_en",
    "wmt14_en_de",
    "wmt14_en_de_big",
    "wmt14_en_fr",
    "wmt14_en_fr_big",
    "wmt16_en_ro",
]


def assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    """Exit status 2, no traceback, exactly one `error: ...` line, and it holds `message`."""
    stderr = result.stderr if isinstance(result.stderr, str) else result.stderr.decode()
    assert result.returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-2000:]
    assert message in errors[0], errors[0]


def compose_recipe(name: str, overrides: list[str] | None = None) -> Any:
    """A recipe's config as `seq2seq-train recipe=<name> [overrides]` composes it."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from seq2seq.config import register_configs

    register_configs()
    with initialize_config_module("seq2seq.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"recipe={name}", *(overrides or [])])
    return OmegaConf.to_object(cfg)
