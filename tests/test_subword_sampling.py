"""Subword regularisation: sampled segmentations spell the same text, vary between epochs, are
seeded by the batch's place in the data order (so resuming samples the same), and respect the
length limit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from toy import write_toy_corpus

from seq2seq.batching import Batch
from seq2seq.config import Config, DataConfig, SubwordModel, TokenizerConfig, TrainConfig
from seq2seq.constants import PAD_ID
from seq2seq.errors import ConfigError
from seq2seq.prepare import prepare
from seq2seq.sharded_batching import ShardedSplit
from seq2seq.subword_sampling import SampledSegmentation
from seq2seq.tokenizer import Tokenizer
from seq2seq.training_data import training_split

MAX_TOKENS = 300


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, dict]:
    """The toy corpus (1,500 training pairs) prepared into three shards."""
    root = tmp_path_factory.mktemp("toy")
    corpus = write_toy_corpus(root / "corpus", {"train": 1500, "valid": 20})
    config = Config(
        data=DataConfig(
            source="files",
            train=str(corpus / "train"),
            valid=str(corpus / "valid"),
            shard_pairs=500,
        ),
        tokenizer=TokenizerConfig(vocab_size=64, byte_fallback=False),
    )
    return root / "prepared", prepare(config, root / "prepared")


@pytest.fixture(scope="module")
def tokenizer(prepared) -> Tokenizer:
    return Tokenizer.load(prepared[0])


def plain_split(prepared) -> ShardedSplit:
    """The training split without sampling (positions are line numbers: one corpus)."""
    return training_split(*prepared, DataConfig(window_pairs=1000))


def sampled_split(prepared, tokenizer, alpha: float = 0.3, max_length: int = 250) -> ShardedSplit:
    """The training split (cleaned with the default limits: the same pairs whatever
    `max_length`) whose batches sample segmentations no longer than `max_length`."""
    split = plain_split(prepared)
    split.sampling = SampledSegmentation(tokenizer, alpha, 8, max_length)
    return split


def batches(split: ShardedSplit, count: int, state: dict | None = None) -> list[Batch]:
    """The next `count` training batches of a fresh sampler (resumed from `state` if given)."""
    sampler = split.sampler(MAX_TOKENS, seed=3)
    if state is not None:
        sampler.load_state_dict(state)
    stream = (batch for _ in range(100) for batch in split.batches(sampler))
    return [next(stream) for _ in range(count)]


def segmentations(batches: list[Batch]) -> dict[int, tuple[int, ...]]:
    """Sentence id -> its source ids, as batched."""
    return {
        int(i): tuple(row[~pad].tolist())
        for batch in batches
        for i, row, pad in zip(batch.ids, batch.src, batch.src_pad_mask, strict=True)
    }


def same(a: Batch, b: Batch) -> bool:
    return torch.equal(a.src, b.src) and torch.equal(a.tgt_out, b.tgt_out)


def test_sampled_batches_spell_the_same_text_in_other_pieces(prepared, tokenizer):
    plain = plain_split(prepared)
    changed = 0
    for batch in batches(sampled_split(prepared, tokenizer), 10):
        best = plain.batch(batch.ids.numpy())
        for side in ("src", "tgt_out"):
            sampled_ids, best_ids = getattr(batch, side).tolist(), getattr(best, side).tolist()
            lang = "src" if side == "src" else "tgt"
            assert tokenizer.decode(sampled_ids, lang) == tokenizer.decode(best_ids, lang)
            changed += sum(s != b for s, b in zip(sampled_ids, best_ids, strict=True))
    assert changed > 100


def test_the_same_place_in_the_data_order_samples_the_same_segmentation(prepared, tokenizer):
    split = sampled_split(prepared, tokenizer)
    sampler = split.sampler(MAX_TOKENS, seed=3)
    per_epoch = sum(1 for _ in split.sampler(MAX_TOKENS, seed=3))
    first = batches(split, per_epoch + 8)
    again = batches(sampled_split(prepared, tokenizer), per_epoch + 8)
    assert all(same(a, b) for a, b in zip(first, again, strict=True))

    state = sampler.state_dict()
    resumed = batches(split, 8, state={**state, "epoch": 1, "window": 0, "position": 0})
    assert all(same(a, b) for a, b in zip(first[per_epoch:], resumed, strict=True))
    mid_epoch = batches(split, 8, state={**state, "epoch": 0, "window": 0, "position": 5})
    assert all(same(a, b) for a, b in zip(first[5:13], mid_epoch, strict=True))

    # the next epoch re-segments: the same sentences, other pieces
    epoch0, epoch1 = (segmentations(part) for part in (first[:per_epoch], first[per_epoch:]))
    differ = sum(epoch0[i] != pieces for i, pieces in epoch1.items())
    assert differ >= len(epoch1) // 10


def test_every_part_of_the_key_changes_the_sample(prepared, tokenizer):
    split = sampled_split(prepared, tokenizer)
    positions = np.arange(40)
    key = (3, 0, 0, 1, 0)  # seed, epoch, window, batch, rank
    assert same(split.batch(positions, key), split.batch(positions, key))
    for other in (
        (4, 0, 0, 1, 0),
        (3, 1, 0, 1, 0),
        (3, 0, 1, 1, 0),
        (3, 0, 0, 2, 0),
        (3, 0, 0, 1, 1),
    ):
        assert not same(split.batch(positions, key), split.batch(positions, other)), other


def unpadded(batch: Batch, side: str, row: int) -> torch.Tensor:
    ids, pad = (batch.src, batch.src_pad_mask) if side == "src" else (batch.tgt_out, None)
    return ids[row][~pad[row]] if pad is not None else ids[row][ids[row] != PAD_ID]


@pytest.mark.parametrize("side", ["src", "tgt"])
def test_a_sample_longer_than_the_length_limit_keeps_the_best_segmentation(
    prepared, tokenizer, side
):
    plain = plain_split(prepared)
    (free,) = batches(sampled_split(prepared, tokenizer, alpha=0.1, max_length=10**6), 1)
    best = plain.batch(free.ids.numpy())
    rows = range(len(free))
    resampled = [
        len(unpadded(free, side, r))
        for r in rows
        if not torch.equal(unpadded(free, side, r), unpadded(best, side, r))
    ]
    limit = max(resampled) - 2  # the longest resampled row (+ eos) is too long
    (limited,) = batches(sampled_split(prepared, tokenizer, alpha=0.1, max_length=limit), 1)
    fallbacks = 0
    for r in rows:
        free_ids, limited_ids, best_ids = (unpadded(b, side, r) for b in (free, limited, best))
        if len(free_ids) - 1 > limit:
            fallbacks += not torch.equal(free_ids, best_ids)  # rows where the fallback shows
            assert torch.equal(limited_ids, best_ids)
        else:
            assert torch.equal(limited_ids, free_ids)
    assert fallbacks > 0


def test_sampling_needs_a_unigram_tokenizer():
    with pytest.raises(ConfigError, match=r"set tokenizer.model_type=unigram"):
        Config(
            tokenizer=TokenizerConfig(model_type=SubwordModel.bpe),
            train=TrainConfig(subword_alpha=0.5),
        )
