"""Parallel corpora through Hugging Face `datasets`: load, check, clean, encode and cache.

Every source becomes a `datasets.Dataset` with columns `id` (the line number), `src` and `tgt`,
stored as memory-mapped Arrow files, so a corpus of millions of pairs never has to fit in memory.
Encoding (`encode_split`) adds `src_ids`/`tgt_ids` with `datasets.map` (batched, multi-process)
under a fingerprint of the corpus and the tokenizer: a second run reuses the cached result.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np

from seq2seq import multi30k
from seq2seq.batching import token_lengths
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


# ---------------------------------------------------------------------------- sources


def load_parallel_files(src_path: Path, tgt_path: Path, cache_dir: str | None) -> datasets.Dataset:
    """A pair of line-aligned plain-text files (optionally .gz)."""
    src_lines, tgt_lines = count_lines(src_path), count_lines(tgt_path)
    if src_lines != tgt_lines:
        raise UserError(
            f"{src_path} has {src_lines} lines but {tgt_path} has {tgt_lines}: "
            "parallel files must be line-aligned"
        )
    if src_lines == 0:
        raise UserError(f"{src_path} and {tgt_path} are empty")
    return from_generator(
        pair_lines_generator,
        cache_dir,
        src_path=str(src_path),
        tgt_path=str(tgt_path),
        stamp=file_stamp(src_path) + file_stamp(tgt_path),
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


def load_local_split(cfg: DataConfig, spec: str) -> datasets.Dataset:
    """`spec` is a prefix (`corpus/train` -> corpus/train.en + corpus/train.de, optionally
    .gz, as fairseq's --trainpref), a pattern with `{lang}`, or a .tsv / .jsonl file."""
    path = Path(spec)
    kind = path.name.removesuffix(".gz").rsplit(".", 1)[-1]
    if kind == "tsv":
        check_tsv(path)
        return from_generator(tsv_generator, cfg.cache_dir, path=spec, stamp=file_stamp(path))
    if kind == "jsonl":
        check_jsonl(path, cfg.src_lang, cfg.tgt_lang)
        return from_generator(
            jsonl_generator,
            cfg.cache_dir,
            path=spec,
            src_lang=cfg.src_lang,
            tgt_lang=cfg.tgt_lang,
            stamp=file_stamp(path),
        )
    if "{lang}" in spec:
        src, tgt = (Path(spec.format(lang=lang)) for lang in (cfg.src_lang, cfg.tgt_lang))
    else:
        src, tgt = (prefixed_file(spec, lang) for lang in (cfg.src_lang, cfg.tgt_lang))
    return load_parallel_files(src, tgt, cfg.cache_dir)


def load_multi30k_split(cfg: DataConfig, split: str) -> datasets.Dataset:
    src = multi30k.multi30k_file(split, cfg.src_lang, cfg.root, cfg.cache_dir)
    tgt = multi30k.multi30k_file(split, cfg.tgt_lang, cfg.root, cfg.cache_dir)
    return load_parallel_files(src, tgt, cfg.cache_dir)


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


def load_split(cfg: DataConfig, split: str) -> datasets.Dataset:
    """The split as a Dataset with columns id, src, tgt (in corpus order)."""
    spec = split_spec(cfg, split)
    if cfg.source == DataSource.multi30k:
        return load_multi30k_split(cfg, spec)
    if cfg.source == DataSource.hub:
        return load_hub_split(cfg, spec)
    return load_local_split(cfg, spec)


def iter_texts(dataset: datasets.Dataset, column: str, batch_size: int = 10_000) -> Iterator[str]:
    """Stream one text column (e.g. to train the tokenizer) without materialising it."""
    for batch in dataset.iter(batch_size=batch_size):
        yield from batch[column]


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


def clean_training_rows(encoded: datasets.Dataset, cfg: DataConfig) -> np.ndarray:
    """Rows to train on: pairs with an empty or too long side, or too unequal lengths, are
    left out, and the counts are logged. (Rows are returned, not a filtered copy, so nothing
    is rewritten and lengths stay readable from the memory-mapped file.)"""
    src_len, tgt_len = token_lengths(encoded, "src_ids"), token_lengths(encoded, "tgt_ids")
    shorter, longer = np.minimum(src_len, tgt_len), np.maximum(src_len, tgt_len)
    too_short = shorter < cfg.min_length
    too_long = ~too_short & (longer > cfg.max_length)
    unequal = ~too_short & ~too_long & (longer > cfg.max_length_ratio * shorter)
    keep = ~(too_short | too_long | unequal)
    log.info(
        "cleaning: kept %d of %d pairs (empty or shorter than %d tokens: %d, longer than %d "
        "tokens: %d, length ratio above %g: %d)",
        keep.sum(),
        len(keep),
        cfg.min_length,
        too_short.sum(),
        cfg.max_length,
        too_long.sum(),
        cfg.max_length_ratio,
        unequal.sum(),
    )
    if not keep.any():
        raise UserError(
            "cleaning removed every training pair: check data.min_length, "
            "data.max_length and data.max_length_ratio"
        )
    return np.flatnonzero(keep)
