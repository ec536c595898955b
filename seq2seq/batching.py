"""Token-budget batches of similar-length sentences, with padding masks.

`TokenBudgetSampler` groups sentences of similar length and fills each batch up to `max_tokens`
counting padding; batch order is shuffled per epoch from a seed; its `state_dict()` lets training
resume mid-epoch on exactly the batches it would have seen; with several processes (DDP) each
rank takes a disjoint, equally long share. `collate` turns encoded rows into a `Batch`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.compute as pc
import torch
from torch import Tensor

from seq2seq.constants import BOS_ID, EOS_ID, PAD_ID
from seq2seq.errors import ConfigError

if TYPE_CHECKING:  # `datasets` (and pandas with it) is slow to import: translation needs neither
    import datasets

log = logging.getLogger(__name__)


def token_lengths(dataset: datasets.Dataset, column: str) -> np.ndarray:
    """Length of every id list in `column`, read from Arrow offsets (no Python lists). Meant for
    datasets without an indices mapping (after `select`, the column would be copied)."""
    values = dataset.with_format("arrow")[column]
    return pc.list_value_length(values).to_numpy(zero_copy_only=False).astype(np.int64)


@dataclass
class Batch:
    src: Tensor  # (batch, src_len): ids + eos, right-padded
    src_pad_mask: Tensor  # (batch, src_len): True at padding
    tgt_in: Tensor  # (batch, tgt_len): bos + ids, right-padded (decoder input)
    tgt_out: Tensor  # (batch, tgt_len): ids + eos, right-padded (what the decoder predicts)
    ids: Tensor  # (batch,): example ids (line numbers in the corpus)
    src_tokens: int  # non-pad source tokens
    tgt_tokens: int  # non-pad target tokens

    def __len__(self) -> int:
        return self.src.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def move(t: Tensor) -> Tensor:
            return t.to(device, non_blocking=non_blocking)

        return Batch(
            move(self.src),
            move(self.src_pad_mask),
            move(self.tgt_in),
            move(self.tgt_out),
            self.ids,
            self.src_tokens,
            self.tgt_tokens,
        )


def pad_rows(rows: Sequence[Sequence[int]], prefix: list[int], suffix: list[int]) -> Tensor:
    """(len(rows), longest + extras) long tensor of prefix + row + suffix, right-padded."""
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    extra = len(prefix) + len(suffix)
    out = np.full((len(rows), int(lengths.max(initial=0)) + extra), PAD_ID, dtype=np.int64)
    if prefix:
        out[:, : len(prefix)] = prefix
    flat = np.fromiter(
        (token for row in rows for token in row), dtype=np.int64, count=int(lengths.sum())
    )
    row_of_token = np.repeat(np.arange(len(rows)), lengths)
    column_of_token = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[row_of_token, column_of_token + len(prefix)] = flat
    for k, token in enumerate(suffix):
        out[np.arange(len(rows)), lengths + len(prefix) + k] = token
    return torch.from_numpy(out)


def collate(
    ids: Sequence[int], src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]]
) -> Batch:
    """Build a Batch: source = x + eos, target input = bos + y, target output = y + eos."""
    src = pad_rows(src_ids, [], [EOS_ID])
    return Batch(
        src=src,
        src_pad_mask=src == PAD_ID,
        tgt_in=pad_rows(tgt_ids, [BOS_ID], []),
        tgt_out=pad_rows(tgt_ids, [], [EOS_ID]),
        ids=torch.tensor(ids, dtype=torch.long),
        src_tokens=sum(len(row) + 1 for row in src_ids),
        tgt_tokens=sum(len(row) + 1 for row in tgt_ids),
    )


def token_budget_batches(order: np.ndarray, sizes: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Cut `order` (indices) into consecutive batches with len(batch) * max size <= max_tokens.

    `sizes` are padded lengths per example. A single example larger than the budget gets a
    batch of its own (reported by the caller), never dropped.
    """
    batches, start, total = [], 0, len(order)
    while start < total:
        window = sizes[order[start : start + max_tokens]]
        cost = np.arange(1, len(window) + 1) * np.maximum.accumulate(window)
        count = max(int(np.searchsorted(cost, max_tokens, side="right")), 1)
        batches.append(order[start : start + count])
        start += count
    return batches


def check_sampler_arguments(max_tokens: int, world_size: int, rank: int) -> None:
    if max_tokens <= 0:
        raise ConfigError(f"max_tokens must be positive, got {max_tokens}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")


def bucketed_batches(
    src_lengths: np.ndarray,
    tgt_lengths: np.ndarray,
    max_tokens: int,
    rng: np.random.Generator | None,
) -> list[np.ndarray]:
    """Indices sorted by source, then target length (ties in an order drawn from `rng`), cut
    into token-budget batches, the batches shuffled by `rng`; None: no shuffling at all."""
    count = len(src_lengths)
    tie_break = rng.permutation(count) if rng is not None else np.arange(count)
    order = np.lexsort((tie_break, tgt_lengths, src_lengths))
    sizes = np.maximum(src_lengths, tgt_lengths) + 1  # + eos on the source, bos/eos on the target
    batches = token_budget_batches(order, sizes, max_tokens)
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


class TokenBudgetSampler:
    """Yields arrays of example indices, one per batch, for one rank; resumable mid-epoch."""

    def __init__(
        self,
        src_lengths: np.ndarray,
        tgt_lengths: np.ndarray,
        max_tokens: int,
        seed: int = 0,
        shuffle: bool = True,
        world_size: int = 1,
        rank: int = 0,
    ) -> None:
        check_sampler_arguments(max_tokens, world_size, rank)
        self.src_lengths = np.asarray(src_lengths)
        self.tgt_lengths = np.asarray(tgt_lengths)
        # +1: eos on the source, bos/eos on the target
        self.sizes = np.maximum(self.src_lengths, self.tgt_lengths) + 1
        self.max_tokens = max_tokens
        self.seed = seed
        self.shuffle = shuffle
        self.world_size = world_size
        self.rank = rank
        self.epoch = 0
        self.position = 0  # batches of the current epoch already handed out
        oversized = int((self.sizes > max_tokens).sum())
        if oversized:
            log.warning(
                "%d sentence(s) longer than max_tokens=%d get a batch of their own",
                oversized,
                max_tokens,
            )

    def all_batches(self, epoch: int) -> list[np.ndarray]:
        """Every rank's batches of `epoch`, in the order they are handed out."""
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        return bucketed_batches(self.src_lengths, self.tgt_lengths, self.max_tokens, rng)

    def rank_batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's share: every world_size-th batch, trailing remainder dropped."""
        batches = self.all_batches(epoch)
        usable = len(batches) - len(batches) % self.world_size
        if usable == 0:
            raise ConfigError(
                f"{len(batches)} batches cannot be shared by {self.world_size} "
                "processes: lower max_tokens or use fewer processes"
            )
        return batches[self.rank : usable : self.world_size]

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        return len(self.rank_batches(self.epoch))

    def __iter__(self) -> Iterator[np.ndarray]:
        """The rest of the current epoch; the epoch counter advances when it is exhausted."""
        batches = self.rank_batches(self.epoch)
        while self.position < len(batches):
            self.position += 1
            yield batches[self.position - 1]
        self.epoch += 1
        self.position = 0

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "max_tokens": self.max_tokens,
            "world_size": self.world_size,
            "sentences": len(self.sizes),
            "shuffle": self.shuffle,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        now = self.state_dict()
        for key in ("seed", "max_tokens", "world_size", "sentences", "shuffle"):
            if key in state and state[key] != now[key]:
                raise ConfigError(
                    f"cannot resume the data order: {key} was {state[key]} when the run was "
                    f"saved and is {now[key]} now"
                )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


@dataclass
class EncodedSplit:
    """An encoded split (columns id, src_ids, tgt_ids), the rows in use and their lengths.

    The sampler works on positions 0..len-1 of `rows`; `batch` maps them to dataset rows.
    """

    dataset: datasets.Dataset
    rows: np.ndarray  # dataset rows in use (all of them, or those kept by cleaning)
    src_lengths: np.ndarray  # subword tokens, per row in use (after truncation)
    tgt_lengths: np.ndarray
    max_length: int | None = None  # longer sides are truncated (unfiltered validation data)

    @classmethod
    def from_dataset(
        cls,
        dataset: datasets.Dataset,
        rows: np.ndarray | None = None,
        max_length: int | None = None,
    ) -> EncodedSplit:
        rows = np.arange(len(dataset)) if rows is None else np.asarray(rows)
        src, tgt = (token_lengths(dataset, column)[rows] for column in ("src_ids", "tgt_ids"))
        if max_length is not None:
            src, tgt = np.minimum(src, max_length), np.minimum(tgt, max_length)
        return cls(dataset, rows, src, tgt, max_length)

    def __len__(self) -> int:
        return len(self.rows)

    def sampler(self, max_tokens: int, **kwargs) -> TokenBudgetSampler:
        return TokenBudgetSampler(self.src_lengths, self.tgt_lengths, max_tokens, **kwargs)

    def batch(self, positions: np.ndarray) -> Batch:
        """The examples at `positions`."""
        rows = self.rows[positions]
        encoded = self.dataset[rows.tolist()]
        src, tgt = encoded["src_ids"], encoded["tgt_ids"]
        if self.max_length is not None:
            src = [ids[: self.max_length] for ids in src]
            tgt = [ids[: self.max_length] for ids in tgt]
        return collate(encoded["id"], src, tgt)

    def batches(self, sampler: TokenBudgetSampler) -> Iterator[Batch]:
        """Batches in the sampler's order (resumable through the sampler's state)."""
        for positions in sampler:
            yield self.batch(positions)
