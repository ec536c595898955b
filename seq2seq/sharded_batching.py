"""Training batches from prepared shards, in memory that does not grow with the corpus.

Each epoch, the shards are shuffled and taken a window at a time (`data.window_pairs` pairs'
worth of shards). Within a window, the pairs kept by cleaning are sorted by length and cut into
token-budget batches (`batching.token_budget_batches`), and the batches are shuffled; only the
window's lengths and the shards it reads are in memory. With several processes, each takes
every world_size-th batch of a window. The sampler's state (epoch, window, batch) resumes a run
on exactly the batches it would have seen.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from seq2seq.batching import Batch, bucketed_batches, check_sampler_arguments, collate
from seq2seq.config import DataConfig
from seq2seq.data import cleaning_mask, log_cleaning
from seq2seq.errors import ConfigError
from seq2seq.shards import Shard, read_lengths
from seq2seq.subword_sampling import SampledSegmentation

log = logging.getLogger(__name__)

# shard -> (global positions of its pairs in use, their source lengths, their target lengths)
WindowLengths = Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]]
WINDOW_ORDER, BATCH_ORDER = 0x51D, 0xBA7  # keep the two generators' streams apart
# what must be unchanged for a saved data order to resume exactly
RESUME_KEYS = ("seed", "max_tokens", "world_size", "shards", "pairs", "window_shards", "shuffle")


class WindowSampler:
    """Yields arrays of global pair positions, one per batch, for one rank; resumable."""

    def __init__(
        self,
        shard_count: int,
        pairs: int,
        lengths: WindowLengths,
        window_shards: int,
        max_tokens: int,
        seed: int = 0,
        shuffle: bool = True,
        world_size: int = 1,
        rank: int = 0,
    ) -> None:
        check_sampler_arguments(max_tokens, world_size, rank)
        self.shard_count, self.pairs = shard_count, pairs  # pairs in use, all shards
        self.lengths, self.window_shards = lengths, window_shards
        self.max_tokens, self.seed, self.shuffle = max_tokens, seed, shuffle
        self.world_size, self.rank = world_size, rank
        self.epoch = 0
        self.window = 0  # windows of the current epoch already finished
        self.position = 0  # batches of the current window already handed out

    def windows(self, epoch: int) -> list[np.ndarray]:
        """The shards of each window of `epoch`, in the order they are read."""
        rng = np.random.default_rng([WINDOW_ORDER, self.seed, epoch])
        order = rng.permutation(self.shard_count) if self.shuffle else np.arange(self.shard_count)
        return [order[i : i + self.window_shards] for i in range(0, len(order), self.window_shards)]

    def window_batches(self, epoch: int, shards: np.ndarray, window: int) -> list[np.ndarray]:
        """This rank's batches of one window: every world_size-th, the remainder dropped."""
        parts = [self.lengths(int(shard)) for shard in shards]
        positions = np.concatenate([p[0] for p in parts])
        src_len, tgt_len = (np.concatenate([p[k] for p in parts]) for k in (1, 2))
        rng = np.random.default_rng([BATCH_ORDER, self.seed, epoch, window])
        picked = bucketed_batches(src_len, tgt_len, self.max_tokens, rng if self.shuffle else None)
        batches = [positions[b] for b in picked]
        usable = len(batches) - len(batches) % self.world_size
        return batches[self.rank : usable : self.world_size]

    def __iter__(self) -> Iterator[np.ndarray]:
        """The rest of the current epoch; the epoch counter advances when it is exhausted."""
        windows = self.windows(self.epoch)
        handed_out = self.window > 0 or self.position > 0
        while self.window < len(windows):
            batches = self.window_batches(self.epoch, windows[self.window], self.window)
            while self.position < len(batches):
                self.position += 1
                handed_out = True
                yield batches[self.position - 1]
            self.window, self.position = self.window + 1, 0
        if not handed_out:
            raise ConfigError(
                f"no window of data.window_pairs holds {self.world_size} batches: "
                "lower train.max_tokens, raise data.window_pairs or use fewer processes"
            )
        self.epoch, self.window = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "window": self.window,
            "position": self.position,
            "seed": self.seed,
            "max_tokens": self.max_tokens,
            "world_size": self.world_size,
            "shards": self.shard_count,
            "pairs": self.pairs,
            "window_shards": self.window_shards,
            "shuffle": self.shuffle,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        if "window" not in state:  # saved by a version that batched the whole corpus at once
            started = int(state["position"]) > 0
            self.epoch, self.window, self.position = int(state["epoch"]) + started, 0, 0
            log.warning(
                "the run's data order was saved by an earlier seq2seq: training resumes at the "
                "start of epoch %d, not on the exact batch it stopped at",
                self.epoch,
            )
            return
        now = self.state_dict()
        for key in RESUME_KEYS:
            if state[key] != now[key]:
                raise ConfigError(
                    f"cannot resume the data order: {key} was {state[key]} when the run was "
                    f"saved and is {now[key]} now"
                )
        self.epoch, self.window = int(state["epoch"]), int(state["window"])
        self.position = int(state["position"])


class ShardedSplit:
    """A prepared training split: its shards, the pairs cleaning keeps, and their batches."""

    def __init__(
        self, directory: Path, shard_pairs: list[int], cfg: DataConfig, window_pairs: int
    ) -> None:
        self.directory, self.cfg = directory, cfg
        self.bases = np.concatenate([[0], np.cumsum(shard_pairs)])  # first position per shard
        largest = max(shard_pairs)
        self.window_shards = max(1, window_pairs // largest)
        self.open_shards: OrderedDict[int, Shard] = OrderedDict()  # the window's, at most
        self.sampling: SampledSegmentation | None = None  # re-segments batches when set
        self.kept = self.count_kept()

    def count_kept(self) -> int:
        """Pairs in use after cleaning, read shard by shard; logs the counts."""
        kept, reasons = 0, {"too_short": 0, "too_long": 0, "unequal": 0}
        for shard in range(len(self.bases) - 1):
            keep, why = cleaning_mask(*read_lengths(self.directory, shard), self.cfg)
            kept += int(keep.sum())
            reasons = {key: reasons[key] + why[key] for key in reasons}
        log_cleaning(kept, int(self.bases[-1]), reasons, self.cfg)
        return kept

    def __len__(self) -> int:
        return self.kept

    @property
    def shard_count(self) -> int:
        return len(self.bases) - 1

    def lengths(self, shard: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(global positions, source lengths, target lengths) of a shard's kept pairs."""
        src_len, tgt_len = read_lengths(self.directory, shard)
        keep, _ = cleaning_mask(src_len, tgt_len, self.cfg)
        rows = np.flatnonzero(keep)
        return self.bases[shard] + rows, src_len[rows], tgt_len[rows]

    def sampler(self, max_tokens: int, **kwargs) -> WindowSampler:
        return WindowSampler(
            self.shard_count, self.kept, self.lengths, self.window_shards, max_tokens, **kwargs
        )

    def shard(self, index: int) -> Shard:
        """Shard `index`, opened; the least recently used is closed beyond a window's worth."""
        if index not in self.open_shards:
            self.open_shards[index] = Shard.open(self.directory, index)
            while len(self.open_shards) > self.window_shards:
                self.open_shards.popitem(last=False)
        self.open_shards.move_to_end(index)
        return self.open_shards[index]

    def batch(self, positions: np.ndarray, sampling_key: tuple[int, ...] | None = None) -> Batch:
        """The pairs at global `positions`, in that order; with `sampling` and a key,
        re-segmented as seeded by the key."""
        shards = np.searchsorted(self.bases, positions, side="right") - 1
        lines: list[int] = []
        src: list[list[int]] = []
        tgt: list[list[int]] = []
        for index, position in zip(shards.tolist(), positions.tolist(), strict=True):
            shard, row = self.shard(index), position - int(self.bases[index])
            lines.append(int(shard.lines[row]))
            src.append(shard.ids_of("src", row))
            tgt.append(shard.ids_of("tgt", row))
        if self.sampling is not None and sampling_key is not None:
            src, tgt = self.sampling.encode((src, tgt), sampling_key)
        return collate(lines, src, tgt)

    def batches(self, sampler: WindowSampler) -> Iterator[Batch]:
        """Batches in the sampler's order (resumable through the sampler's state); a batch's
        sampled segmentation is keyed by its place in that order."""
        for positions in sampler:
            key = (sampler.seed, sampler.epoch, sampler.window, sampler.position, sampler.rank)
            yield self.batch(positions, key)
