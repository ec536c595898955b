"""Encoded corpora on disk: shards of subword ids in numpy files, memory-mapped when read.

A prepared split is a directory of shards. Shard `n` holds up to `data.shard_pairs` pairs in
corpus order, in five .npy files:

    n.line.npy      int64 (pairs,)           each pair's line number in the corpus
    n.src_len.npy   int32 (pairs,)           subword ids per source sentence
    n.tgt_len.npy   int32 (pairs,)
    n.src.npy       uint16 or int32 (ids,)   every source sentence's ids, end to end
    n.tgt.npy       uint16 or int32 (ids,)

Why numpy files: a memory-mapped .npy is read in place, so a batch copies only its own ids and
nothing has to fit in memory; reading needs nothing but numpy; and ids are stored as uint16
when the vocabulary has at most 65,536 pieces, half the disk and page cache of int32.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIDES = ("src", "tgt")
FILES = ("line", "src_len", "tgt_len", "src", "tgt")


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest dtype that holds every id of a vocabulary."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.int32)


def shard_file(directory: Path, index: int, part: str) -> Path:
    return directory / f"{index:05d}.{part}.npy"


def sha256_files(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------- writing


class ShardWriter:
    """Collects encoded pairs and writes a shard each time `shard_pairs` have arrived."""

    def __init__(self, directory: Path, shard_pairs: int, dtype: np.dtype) -> None:
        self.directory, self.shard_pairs, self.dtype = directory, shard_pairs, dtype
        directory.mkdir(parents=True, exist_ok=True)
        self.shards: list[dict] = []  # what each written shard holds: pairs, ids, sha256
        self.pending: list[tuple[list[int], list[list[int]], list[list[int]]]] = []
        self.pending_pairs = 0

    def add(self, lines: list[int], src: list[list[int]], tgt: list[list[int]]) -> None:
        """Encoded pairs in corpus order."""
        self.pending.append((lines, src, tgt))
        self.pending_pairs += len(lines)
        while self.pending_pairs >= self.shard_pairs:
            self.write(self.take(self.shard_pairs))

    def close(self) -> list[dict]:
        """Write what is left; returns the description of every shard."""
        if self.pending_pairs:
            self.write(self.take(self.pending_pairs))
        return self.shards

    def take(self, count: int) -> tuple[list[int], list[list[int]], list[list[int]]]:
        """The first `count` pending pairs."""
        lines: list[int] = []
        src: list[list[int]] = []
        tgt: list[list[int]] = []
        while len(lines) < count:
            chunk_lines, chunk_src, chunk_tgt = self.pending.pop(0)
            room = count - len(lines)
            lines += chunk_lines[:room]
            src += chunk_src[:room]
            tgt += chunk_tgt[:room]
            if room < len(chunk_lines):
                self.pending.insert(0, (chunk_lines[room:], chunk_src[room:], chunk_tgt[room:]))
        self.pending_pairs -= count
        return lines, src, tgt

    def write(self, pairs: tuple[list[int], list[list[int]], list[list[int]]]) -> None:
        lines, src, tgt = pairs
        index = len(self.shards)
        arrays = {"line": np.asarray(lines, dtype=np.int64)}
        for side, rows in zip(SIDES, (src, tgt), strict=True):
            arrays[f"{side}_len"] = np.fromiter(map(len, rows), dtype=np.int32, count=len(rows))
            arrays[side] = flatten(rows, int(arrays[f"{side}_len"].sum()), self.dtype)
        paths = [shard_file(self.directory, index, part) for part in FILES]
        for path, part in zip(paths, FILES, strict=True):
            np.save(path, arrays[part], allow_pickle=False)
        self.shards.append(
            {
                "pairs": len(lines),
                "src_ids": int(arrays["src_len"].sum()),
                "tgt_ids": int(arrays["tgt_len"].sum()),
                "bytes": sum(path.stat().st_size for path in paths),
                "sha256": sha256_files(paths),
            }
        )


def flatten(rows: list[list[int]], total: int, dtype: np.dtype) -> np.ndarray:
    """Every row's ids end to end."""
    return np.fromiter(itertools.chain.from_iterable(rows), dtype=dtype, count=total)


# ---------------------------------------------------------------------------- reading


@dataclass
class Shard:
    """One shard, memory-mapped: the ids of its pairs are read only when asked for."""

    lines: np.ndarray  # (pairs,) int64
    lengths: dict[str, np.ndarray]  # side -> (pairs,) int32
    offsets: dict[str, np.ndarray]  # side -> (pairs + 1,) int64: where each row's ids start
    ids: dict[str, np.ndarray]  # side -> memory-mapped ids, end to end

    @classmethod
    def open(cls, directory: Path, index: int) -> Shard:
        def load(part: str, mmap: bool = False) -> np.ndarray:
            return np.load(shard_file(directory, index, part), mmap_mode="r" if mmap else None)

        lengths = {side: load(f"{side}_len") for side in SIDES}
        offsets = {side: np.concatenate([[0], np.cumsum(lengths[side])]) for side in SIDES}
        ids = {side: load(side, mmap=True) for side in SIDES}
        return cls(load("line"), lengths, offsets, ids)

    def __len__(self) -> int:
        return len(self.lines)

    def ids_of(self, side: str, row: int) -> list[int]:
        """The ids of one sentence (row `row`, side src or tgt)."""
        offsets = self.offsets[side]
        return self.ids[side][offsets[row] : offsets[row + 1]].tolist()


def read_lengths(directory: Path, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(source, target) subword lengths of a shard's pairs, without opening its ids."""
    return tuple(np.load(shard_file(directory, index, f"{side}_len")) for side in SIDES)  # type: ignore[return-value]


def read_split(directory: Path, shard_count: int) -> dict[str, list]:
    """A whole (small) split in memory: {"id": line numbers, "src_ids": ..., "tgt_ids": ...}."""
    columns: dict[str, list] = {"id": [], "src_ids": [], "tgt_ids": []}
    for index in range(shard_count):
        shard = Shard.open(directory, index)
        columns["id"] += shard.lines.tolist()
        for side in SIDES:
            columns[f"{side}_ids"] += [shard.ids_of(side, row) for row in range(len(shard))]
    return columns
