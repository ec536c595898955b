"""Parallel corpora: read, check and clean; test and validation sets through `datasets`.

Every source is read as pairs {"id" (the line number), "src", "tgt"} by a `PairReader`, which
checks it first (line counts, UTF-8, columns) and then streams it a pair at a time: preparing
(`prepare.py`) never holds a corpus in memory. `load_split` turns a split into a memory-mapped
`datasets.Dataset` instead, and `encode_split` adds `src_ids`/`tgt_ids` with `datasets.map`
under a fingerprint of the corpus and the tokenizer, so that evaluating a test set again reuses
its encoding. `cleaning_mask` says which training pairs are used.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from seq2seq import multi30k
from seq2seq.config import DataConfig, DataSource
from seq2seq.errors import UserError
from seq2seq.files import check_file, open_binary, read_lines
from seq2seq.tokenizer import Tokenizer

log = logging.getLogger(__name__)

ENCODING_VERSION = "1"  # bump when encode_batch changes, to invalidate cached encodings
TEXT_FEATURES = datasets.Features(
    {
        "id": datasets.Value("int64"),
        "src": datasets.Value("string"),
        "tgt": datasets.Value("string"),
    }
)
IDS_FEATURES = datasets.Features(
    {
        "id": datasets.Value("int64"),
        "src_ids": datasets.Sequence(datasets.Value("int32")),
        "tgt_ids": datasets.Sequence(datasets.Value("int32")),
    }
)


# ---------------------------------------------------------------------------- reading files


def count_lines(path: Path) -> int:
    """Number of lines in a (possibly gzipped) UTF-8 file; invalid UTF-8 is an error naming the
    line. Reads in 1 MiB blocks, so it is fast on large corpora."""
    check_file(path)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    lines, last = 0, b"\n"
    try:
        with open_binary(path) as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as error:
                    line = lines + block[: max(error.start, 0)].count(b"\n") + 1
                    raise UserError(f"{path}: invalid UTF-8 on line {line}") from None
                lines += block.count(b"\n")
                last = block[-1:]
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise UserError(
            f"{path}: invalid UTF-8 at the end of the file (line {lines + 1})"
        ) from None
    except (OSError, EOFError) as error:  # unreadable or truncated gzip
        raise UserError(f"cannot read {path}: {error}") from None
    return lines + (last != b"\n")


def normalize(text: str) -> str:
    """What every sentence goes through before tokenization: surrounding whitespace removed.
    (SentencePiece applies NFKC and collapses inner whitespace itself.)"""
    return text.strip()


def file_stamp(path: Path) -> str:
    """Size and modification time: part of the cache key, so an edited file is re-read."""
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def pair_lines_generator(src_path: str, tgt_path: str, stamp: str) -> Iterator[dict]:
    for i, (src, tgt) in enumerate(
        zip(read_lines(Path(src_path)), read_lines(Path(tgt_path)), strict=True)
    ):
        yield {"id": i, "src": normalize(src), "tgt": normalize(tgt)}


def tsv_generator(path: str, stamp: str) -> Iterator[dict]:
    for i, line in enumerate(read_lines(Path(path))):
        fields = next(csv.reader([line], delimiter="\t", quoting=csv.QUOTE_NONE))
        yield {"id": i, "src": normalize(fields[0]), "tgt": normalize(fields[1])}


def jsonl_generator(path: str, src_lang: str, tgt_lang: str, stamp: str) -> Iterator[dict]:
    for i, line in enumerate(read_lines(Path(path))):
        record = json.loads(line)
        pair = record.get("translation", record)
        yield {"id": i, "src": normalize(pair[src_lang]), "tgt": normalize(pair[tgt_lang])}


def from_generator(generator, cache_dir: str | None, **kwargs) -> datasets.Dataset:
    return datasets.Dataset.from_generator(
        generator, features=TEXT_FEATURES, gen_kwargs=kwargs, cache_dir=cache_dir
    )


def no_check() -> None:
    """The check of a source that needs none."""


@dataclass
class PairReader:
    """A source of pairs, read from the start each time it is iterated: a generator of
    {"id", "src", "tgt"} and its arguments. `stamp` names the files and their versions (and the
    languages read from them) without reading them; `check` reads them for the mistakes users
    make, once, before the first pairs are read."""

    generator: Callable[..., Iterator[dict]]
    kwargs: dict
    check: Callable[[], None] = no_check
    checked: bool = field(default=False, init=False)

    def __iter__(self) -> Iterator[dict]:
        self.checked_once()
        return self.generator(**self.kwargs)

    def checked_once(self) -> None:
        if not self.checked:
            self.check()
            self.checked = True

    @property
    def stamp(self) -> str:
        return self.kwargs["stamp"]

    def dataset(self, cache_dir: str | None) -> datasets.Dataset:
        self.checked_once()
        return from_generator(self.generator, cache_dir, **self.kwargs)


# ---------------------------------------------------------------------------- sources


def check_aligned(src_path: Path, tgt_path: Path) -> None:
    src_lines, tgt_lines = count_lines(src_path), count_lines(tgt_path)
    if src_lines != tgt_lines:
        raise UserError(
            f"{src_path} has {src_lines} lines but {tgt_path} has {tgt_lines}: "
            "parallel files must be line-aligned"
        )
    if src_lines == 0:
        raise UserError(f"{src_path} and {tgt_path} are empty")


def parallel_files_reader(src_path: Path, tgt_path: Path) -> PairReader:
    """A pair of line-aligned plain-text files (optionally .gz)."""
    check_file(src_path)
    check_file(tgt_path)
    return PairReader(
        pair_lines_generator,
        {
            "src_path": str(src_path),
            "tgt_path": str(tgt_path),
            "stamp": file_stamp(src_path) + file_stamp(tgt_path),
        },
        lambda: check_aligned(src_path, tgt_path),
    )


def check_tsv(path: Path) -> None:
    if count_lines(path) == 0:
        raise UserError(f"{path} is empty")
    for number, line in enumerate(read_lines(path), start=1):
        columns = line.count("\t") + 1
        if columns != 2:
            raise UserError(
                f"{path}: line {number} has {columns} tab-separated columns, "
                "expected 2 (source<TAB>target)"
            )


def check_jsonl(path: Path, src_lang: str, tgt_lang: str) -> None:
    if count_lines(path) == 0:
        raise UserError(f"{path} is empty")
    for number, line in enumerate(read_lines(path), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}: line {number} is not valid JSON ({error.msg})") from None
        pair = record.get("translation", record) if isinstance(record, dict) else {}
        for lang in (src_lang, tgt_lang):
            if not isinstance(pair, dict) or not isinstance(pair.get(lang), str):
                available = ", ".join(sorted(pair)) if isinstance(pair, dict) else "none"
                raise UserError(
                    f"{path}: line {number} has no '{lang}' text; languages there: {available}"
                )


def prefixed_file(prefix: str, lang: str) -> Path:
    """`prefix.lang`, or `prefix.lang.gz` when only that exists."""
    plain = Path(f"{prefix}.{lang}")
    gzipped = Path(f"{prefix}.{lang}.gz")
    return gzipped if gzipped.exists() and not plain.exists() else plain


def local_reader(cfg: DataConfig, spec: str) -> PairReader:
    """`spec` is a prefix (`corpus/train` -> corpus/train.en + corpus/train.de, optionally
    .gz, as fairseq's --trainpref), a pattern with `{lang}`, or a .tsv / .jsonl file."""
    path = Path(spec)
    kind = path.name.removesuffix(".gz").rsplit(".", 1)[-1]
    if kind in ("tsv", "jsonl"):
        check_file(path)
    if kind == "tsv":
        return PairReader(
            tsv_generator, {"path": spec, "stamp": file_stamp(path)}, lambda: check_tsv(path)
        )
    if kind == "jsonl":
        return PairReader(
            jsonl_generator,
            {
                "path": spec,
                "src_lang": cfg.src_lang,
                "tgt_lang": cfg.tgt_lang,
                "stamp": f"{file_stamp(path)}:{cfg.src_lang}>{cfg.tgt_lang}",
            },
            lambda: check_jsonl(path, cfg.src_lang, cfg.tgt_lang),
        )
    if "{lang}" in spec:
        src, tgt = (Path(spec.format(lang=lang)) for lang in (cfg.src_lang, cfg.tgt_lang))
    else:
        src, tgt = (prefixed_file(spec, lang) for lang in (cfg.src_lang, cfg.tgt_lang))
    return parallel_files_reader(src, tgt)


def multi30k_reader(cfg: DataConfig, split: str) -> PairReader:
    src = multi30k.multi30k_file(split, cfg.src_lang, cfg.root, cfg.cache_dir)
    tgt = multi30k.multi30k_file(split, cfg.tgt_lang, cfg.root, cfg.cache_dir)
    return parallel_files_reader(src, tgt)


def load_hub_split(cfg: DataConfig, split: str) -> datasets.Dataset:
    """A dataset with the `translation` schema, from the hub or a local dataset directory."""
    if not cfg.name:
        raise UserError("data.source=hub needs data.name (e.g. data.name=wmt/wmt14)")
    try:
        dataset = datasets.load_dataset(cfg.name, cfg.subset, split=split, cache_dir=cfg.cache_dir)
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as error:
        message = " ".join(str(error).split())
        raise UserError(
            f"cannot load dataset {cfg.name} ({cfg.subset}, split {split}): {message}"
        ) from None
    languages = translation_languages(dataset)
    for lang in (cfg.src_lang, cfg.tgt_lang):
        if lang not in languages:
            raise UserError(
                f"language '{lang}' is not in {cfg.name}; available: {', '.join(languages)}"
            )
    src, tgt = cfg.src_lang, cfg.tgt_lang

    def to_pairs(batch: dict, indices: list[int]) -> dict:
        return {
            "id": indices,
            "src": [normalize(t[src]) for t in batch["translation"]],
            "tgt": [normalize(t[tgt]) for t in batch["translation"]],
        }

    return dataset.map(
        to_pairs,
        batched=True,
        with_indices=True,
        features=TEXT_FEATURES,
        remove_columns=dataset.column_names,
        desc=f"reading {split}",
    )


def dataset_rows(dataset: datasets.Dataset, stamp: str) -> Iterator[dict]:
    yield from dataset


def streamed_rows(cfg: DataConfig, split: str, stamp: str) -> Iterator[dict]:
    """The pairs of a hub split read with `datasets`' streaming, never stored whole."""
    for i, row in enumerate(streamed_translations(cfg, split)):
        pair = row["translation"]
        yield {"id": i, "src": normalize(pair[cfg.src_lang]), "tgt": normalize(pair[cfg.tgt_lang])}


def check_streamed(cfg: DataConfig, split: str) -> None:
    """The split exists and holds both languages (read from its first row)."""
    try:
        first = next(streamed_translations(cfg, split), None)
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as error:
        message = " ".join(str(error).split())
        raise UserError(
            f"cannot stream dataset {cfg.name} ({cfg.subset}, split {split}): {message}"
        ) from None
    pair = (first or {}).get("translation")
    if not isinstance(pair, dict):
        raise UserError(f"{cfg.name} ({cfg.subset}, split {split}) has no 'translation' rows")
    for lang in (cfg.src_lang, cfg.tgt_lang):
        if lang not in pair:
            raise UserError(
                f"language '{lang}' is not in {cfg.name}; available: {', '.join(sorted(pair))}"
            )


def streamed_translations(cfg: DataConfig, split: str) -> Iterator[dict]:
    """The rows of a hub split, streamed."""
    dataset = datasets.load_dataset(
        cfg.name, cfg.subset, split=split, cache_dir=cfg.cache_dir, streaming=True
    )
    return iter(dataset)


def hub_reader(cfg: DataConfig, split: str) -> PairReader:
    """A hub split read (and cached) by `datasets`, then read row by row; with
    data.streaming, streamed instead (its stamp then names the dataset only: a changed
    dataset of the same name is not noticed)."""
    if not cfg.name:
        raise UserError("data.source=hub needs data.name (e.g. data.name=wmt/wmt14)")
    languages = f"{cfg.src_lang}>{cfg.tgt_lang}"
    if cfg.streaming:
        stamp = f"hub-stream:{cfg.name}:{cfg.subset}:{split}:{languages}"
        return PairReader(
            streamed_rows,
            {"cfg": cfg, "split": split, "stamp": stamp},
            lambda: check_streamed(cfg, split),
        )
    dataset = load_hub_split(cfg, split)
    stamp = f"hub:{cfg.name}:{cfg.subset}:{split}:{languages}:{dataset._fingerprint}"
    return PairReader(dataset_rows, {"dataset": dataset, "stamp": stamp})


def translation_languages(dataset: datasets.Dataset) -> list[str]:
    feature = dataset.features.get("translation")
    if isinstance(feature, datasets.Translation):
        return list(feature.languages)
    if isinstance(feature, dict):
        return sorted(feature)
    raise UserError(
        f"dataset has no 'translation' column (columns: {', '.join(dataset.column_names)})"
    )


def split_spec(cfg: DataConfig, split: str) -> str:
    """`train`/`valid`/`test` name the configured splits; any other name is used as it is."""
    return {"train": cfg.train, "valid": cfg.valid, "test": cfg.test}.get(split, split)


def pair_reader(cfg: DataConfig, split: str) -> PairReader:
    """The split's pairs, checked, to be read one at a time (in corpus order)."""
    spec = split_spec(cfg, split)
    if cfg.source == DataSource.multi30k:
        return multi30k_reader(cfg, spec)
    if cfg.source == DataSource.hub:
        return hub_reader(cfg, spec)
    return local_reader(cfg, spec)


def load_split(cfg: DataConfig, split: str) -> datasets.Dataset:
    """The split as a Dataset with columns id, src, tgt (in corpus order)."""
    if cfg.source == DataSource.hub:
        return load_hub_split(cfg, split_spec(cfg, split))
    return pair_reader(cfg, split).dataset(cfg.cache_dir)


# ---------------------------------------------------------------------------- encoding


def encode_batch(batch: dict, tokenizer: Tokenizer) -> dict:
    return {
        "id": batch["id"],
        "src_ids": tokenizer.encode(batch["src"], "src"),
        "tgt_ids": tokenizer.encode(batch["tgt"], "tgt"),
    }


def encode_split(
    dataset: datasets.Dataset, tokenizer: Tokenizer, num_proc: int = 1
) -> datasets.Dataset:
    """Columns id, src_ids, tgt_ids (subword ids without bos/eos), cached by fingerprint."""
    key = f"{dataset._fingerprint}:{tokenizer.fingerprint()}:{ENCODING_VERSION}"
    fingerprint = hashlib.sha256(key.encode()).hexdigest()[:32]
    return dataset.map(
        encode_batch,
        batched=True,
        batch_size=1000,
        fn_kwargs={"tokenizer": tokenizer},
        num_proc=num_proc if len(dataset) >= 10_000 * num_proc else None,
        remove_columns=dataset.column_names,
        features=IDS_FEATURES,
        new_fingerprint=fingerprint,
        desc="encoding",
    )


def cleaning_mask(
    src_len: np.ndarray, tgt_len: np.ndarray, cfg: DataConfig
) -> tuple[np.ndarray, dict[str, int]]:
    """Which pairs training keeps, and how many were left out for each reason: an empty or
    too short side, a too long side, or too unequal lengths (all in subword tokens)."""
    shorter, longer = np.minimum(src_len, tgt_len), np.maximum(src_len, tgt_len)
    too_short = shorter < cfg.min_length
    too_long = ~too_short & (longer > cfg.max_length)
    unequal = ~too_short & ~too_long & (longer > cfg.max_length_ratio * shorter)
    reasons = {
        "too_short": int(too_short.sum()),
        "too_long": int(too_long.sum()),
        "unequal": int(unequal.sum()),
    }
    return ~(too_short | too_long | unequal), reasons


def log_cleaning(kept: int, total: int, reasons: dict[str, int], cfg: DataConfig) -> None:
    """One log line with the counts; an error when nothing is left."""
    log.info(
        "cleaning: kept %d of %d pairs (empty or shorter than %d tokens: %d, longer than %d "
        "tokens: %d, length ratio above %g: %d)",
        kept,
        total,
        cfg.min_length,
        reasons["too_short"],
        cfg.max_length,
        reasons["too_long"],
        cfg.max_length_ratio,
        reasons["unequal"],
    )
    if not kept:
        raise UserError(
            "cleaning removed every training pair: check data.min_length, "
            "data.max_length and data.max_length_ratio"
        )
