"""Token-budget batches: padding masks, the budget, shuffling, resume, DDP shards."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from seq2seq.batching import EncodedSplit, TokenBudgetSampler, collate, token_budget_batches
from seq2seq.constants import BOS_ID, EOS_ID, PAD_ID


def random_lengths(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    src = rng.integers(1, 60, n)
    return src, np.clip(src + rng.integers(-5, 6, n), 1, None)


def flatten(batches) -> list[int]:
    return [int(i) for batch in batches for i in batch]


def test_collate_builds_sources_targets_and_masks():
    batch = collate([7, 9], [[10, 11, 12], [13]], [[20], [21, 22]])
    assert batch.src.tolist() == [[10, 11, 12, EOS_ID], [13, EOS_ID, PAD_ID, PAD_ID]]
    assert batch.src_pad_mask.tolist() == [[False] * 4, [False, False, True, True]]
    assert batch.tgt_in.tolist() == [[BOS_ID, 20, PAD_ID], [BOS_ID, 21, 22]]
    assert batch.tgt_out.tolist() == [[20, EOS_ID, PAD_ID], [21, 22, EOS_ID]]
    assert batch.ids.tolist() == [7, 9]
    assert (batch.src_tokens, batch.tgt_tokens) == (6, 5)
    assert len(batch) == 2


def test_collate_handles_empty_sentences():
    batch = collate([0], [[]], [[]])
    assert batch.src.tolist() == [[EOS_ID]]
    assert batch.tgt_in.tolist() == [[BOS_ID]] and batch.tgt_out.tolist() == [[EOS_ID]]


def test_every_batch_fits_the_budget_counting_padding_and_every_sentence_appears_once():
    src, tgt = random_lengths(5000)
    sampler = TokenBudgetSampler(src, tgt, max_tokens=600, seed=1)
    batches = list(sampler)
    sizes = np.maximum(src, tgt) + 1
    for batch in batches:
        assert len(batch) * sizes[batch].max() <= 600
    assert sorted(flatten(batches)) == list(range(5000))


def test_batches_are_filled_not_just_valid():
    sizes = np.full(100, 10)
    batches = token_budget_batches(np.arange(100), sizes, max_tokens=95)
    assert [len(b) for b in batches] == [9] * 11 + [1]


def test_similar_lengths_are_grouped_so_padding_is_small():
    src, tgt = random_lengths(5000)
    batches = list(TokenBudgetSampler(src, tgt, max_tokens=2000, seed=1))
    real = sum(int(src[b].sum() + tgt[b].sum()) for b in batches)
    padded = sum(len(b) * int(src[b].max() + tgt[b].max()) for b in batches)
    assert 1 - real / padded < 0.10


def test_oversized_sentence_gets_its_own_batch_and_is_reported(caplog):
    src = np.array([5, 500, 6, 7])
    with caplog.at_level(logging.WARNING, logger="seq2seq.batching"):
        sampler = TokenBudgetSampler(src, src, max_tokens=100, seed=0)
    assert "1 sentence(s) longer than max_tokens=100" in caplog.text
    batches = list(sampler)
    assert [1] in [b.tolist() for b in batches]
    assert sorted(flatten(batches)) == [0, 1, 2, 3]


def test_order_is_shuffled_per_epoch_and_reproducible_from_the_seed():
    src, tgt = random_lengths(2000)
    sampler = TokenBudgetSampler(src, tgt, max_tokens=500, seed=3)
    epoch0, epoch1 = list(sampler), list(sampler)
    assert sampler.epoch == 2
    assert flatten(epoch0) != flatten(epoch1)
    again = TokenBudgetSampler(src, tgt, max_tokens=500, seed=3)
    assert flatten(list(again)) == flatten(epoch0)
    other_seed = TokenBudgetSampler(src, tgt, max_tokens=500, seed=4)
    assert flatten(list(other_seed)) != flatten(epoch0)


def test_without_shuffle_batches_follow_length_order():
    src = np.array([9, 1, 5, 3])
    batches = list(TokenBudgetSampler(src, src, max_tokens=10, shuffle=False))
    assert flatten(batches) == [1, 3, 2, 0]


@pytest.mark.parametrize("stop_at", [0, 1, 17, 40])
def test_resume_mid_epoch_sees_exactly_the_remaining_batches(stop_at):
    src, tgt = random_lengths(3000)
    reference = TokenBudgetSampler(src, tgt, max_tokens=700, seed=5)
    expected = [b.tolist() for b in list(reference) + list(reference)]  # two epochs

    interrupted = TokenBudgetSampler(src, tgt, max_tokens=700, seed=5)
    seen = []
    for batch in interrupted:
        seen.append(batch.tolist())
        if len(seen) == stop_at:
            break
    state = interrupted.state_dict()

    resumed = TokenBudgetSampler(src, tgt, max_tokens=700, seed=5)
    resumed.load_state_dict(state)
    seen += [b.tolist() for b in resumed]  # rest of the epoch
    seen += [b.tolist() for b in resumed]  # the next epoch
    assert seen[: len(expected)] == expected


def test_resume_refuses_a_different_batch_setup():
    src, tgt = random_lengths(100)
    state = TokenBudgetSampler(src, tgt, max_tokens=300, seed=5).state_dict()
    with pytest.raises(ValueError, match="max_tokens was 300"):
        TokenBudgetSampler(src, tgt, max_tokens=400, seed=5).load_state_dict(state)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_ddp_shards_are_disjoint_and_equally_long(world_size):
    src, tgt = random_lengths(4000)
    shards = [
        list(TokenBudgetSampler(src, tgt, max_tokens=800, seed=6, world_size=world_size, rank=rank))
        for rank in range(world_size)
    ]
    assert len({len(shard) for shard in shards}) == 1
    seen = [set(flatten(shard)) for shard in shards]
    assert sum(len(s) for s in seen) == len(set().union(*seen))  # disjoint
    total = len(list(TokenBudgetSampler(src, tgt, max_tokens=800, seed=6)))
    assert len(shards[0]) == total // world_size  # only the remainder is dropped


def test_non_positive_budget_is_a_clear_error():
    with pytest.raises(ValueError, match="max_tokens must be positive"):
        TokenBudgetSampler(np.array([1]), np.array([1]), max_tokens=0)


def test_encoded_split_batches_map_positions_to_the_rows_in_use():
    import datasets

    dataset = datasets.Dataset.from_dict(
        {
            "id": [0, 1, 2, 3],
            "src_ids": [[4, 5], [6], [7, 8, 9], [9]],
            "tgt_ids": [[10], [11], [12], [13, 14]],
        }
    )
    split = EncodedSplit.from_dataset(dataset, rows=np.array([0, 2, 3]))  # row 1 cleaned away
    assert split.src_lengths.tolist() == [2, 3, 1]
    assert split.tgt_lengths.tolist() == [1, 1, 2]
    batches = list(split.batches(split.sampler(100, shuffle=False)))
    assert len(batches) == 1
    assert batches[0].ids.tolist() == [3, 0, 2]  # sorted by source length
    assert batches[0].src[2].tolist() == [7, 8, 9, EOS_ID]
