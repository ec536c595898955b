"""A toy translation task on disk, and the overrides that train a tiny model on it in seconds."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = [
    "red",
    "blue",
    "green",
    "dog",
    "cat",
    "house",
    "tree",
    "runs",
    "sits",
    "big",
    "small",
    "the",
    "a",
    "on",
    "under",
    "near",
    "bird",
    "car",
    "man",
    "woman",
]


def toy_pair(rng: random.Random) -> tuple[str, str]:
    """Source: random words; target: the same words reversed and capitalised."""
    words = [rng.choice(WORDS) for _ in range(rng.randint(2, 9))]
    return " ".join(words), " ".join(w.capitalize() for w in reversed(words))


def write_toy_corpus(directory: Path, sizes: dict[str, int] | None = None) -> Path:
    """Files <split>.en / <split>.de for train, valid and test."""
    rng = random.Random(0)
    directory.mkdir(parents=True, exist_ok=True)
    for split, count in (sizes or {"train": 600, "valid": 40, "test": 40}).items():
        pairs = [toy_pair(rng) for _ in range(count)]
        for lang, side in (("en", 0), ("de", 1)):
            (directory / f"{split}.{lang}").write_text("".join(p[side] + "\n" for p in pairs))
    return directory


def toy_overrides(corpus: Path, run_dir: Path, **extra: object) -> list[str]:
    """Command-line overrides for a tiny model on the toy corpus (a few steps per second)."""
    values: dict[str, object] = {
        "model": "tiny",
        "model.dropout": 0.1,
        "data.source": "files",
        "data.train": corpus / "train",
        "data.valid": corpus / "valid",
        "data.test": corpus / "test",
        "data.cache_dir": corpus / "cache",
        "data.num_proc": 1,
        "tokenizer.vocab_size": 64,
        "tokenizer.byte_fallback": False,
        "train.max_tokens": 400,
        "train.threads": 1,
        "train.log_every": 1,
        "optim.warmup_steps": 5,
        "optim.lr": 0.003,
        "run_dir": run_dir,
    }
    values.update({key.replace("__", "."): value for key, value in extra.items()})
    return [f"{key}={value}" for key, value in values.items()]
