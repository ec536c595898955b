"""Prepare once, train many times: a corpus read, its tokenizer trained and every split encoded
into shards of subword ids (`shards.py`), so that training never touches text again.

    seq2seq-prepare recipe=<recipe> [data/tokenizer overrides] out=<dir>

    <dir>/manifest.json          what was prepared, from what; a split is in it only once its
                                 shards are complete
    <dir>/tokenizer.json, spm*   the tokenizer
    <dir>/train/, <dir>/valid/   the encoded shards of each split
    <dir>/valid.references.jsonl the validation targets (a JSON string a line), for BLEU

The corpus is read a pair at a time: once to check it, once to draw the tokenizer's training
sample (a reservoir sample with a fixed seed, so memory holds the sample and never the corpus,
and the same corpus gives the same tokenizer), once to encode it. Preparing again reuses what
is current: the manifest records what each part was made from (the files' paths, sizes and
modification times or the dataset's fingerprint, the languages, the tokenizer's settings and
hash, the shard size), and only what depends on a change is redone, without reading the corpus
when nothing changed. The manifest is rewritten after each part, so an interrupted preparation
keeps what it finished.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from seq2seq.config import Config, TokenizerConfig
from seq2seq.data import PairReader, pair_reader
from seq2seq.errors import UserError
from seq2seq.files import write_atomically
from seq2seq.shards import FILES, ShardWriter, id_dtype, shard_file
from seq2seq.tokenizer import SIDES, Tokenizer

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
REFERENCES = "valid.references.jsonl"
FORMAT_VERSION = 1
SPLITS = ("train", "valid")
ENCODE_CHUNK = 10_000  # pairs encoded at a time
SAMPLE_SEED = 0x5A3  # the tokenizer's sample depends on the corpus only, not on the run


# ---------------------------------------------------------------------------- the manifest


def read_manifest(directory: Path) -> dict | None:
    """The manifest of prepared data in `directory`, or None when there is none (or it is not
    one this version writes)."""
    path = directory / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(manifest, dict) or manifest.get("version") != FORMAT_VERSION:
        return None
    return manifest


def tokenizer_settings(cfg: TokenizerConfig) -> dict:
    """The settings that decide what the tokenizer learns (threads do not)."""
    settings = dataclasses.asdict(cfg)
    settings.pop("threads")
    settings["model_type"] = cfg.model_type.value
    return settings


def shards_intact(directory: Path, shards: list[dict]) -> bool:
    """Every shard's files exist with the size the manifest recorded (hashes are not read)."""
    for index, shard in enumerate(shards):
        paths = [shard_file(directory, index, part) for part in FILES]
        if not all(path.is_file() for path in paths):
            return False
        if sum(path.stat().st_size for path in paths) != shard["bytes"]:
            return False
    return True


# ---------------------------------------------------------------------------- the tokenizer


def open_unit(rng: random.Random) -> float:
    """A uniform draw from the open interval (0, 1)."""
    while True:
        value = rng.random()
        if value > 0.0:
            return value


def reservoir_sample(items: Iterable, size: int, seed: int) -> list:
    """`size` items drawn uniformly from `items` in one pass (Li's algorithm L: the items
    between two replacements are skipped, not drawn for)."""
    rng = random.Random(seed)
    iterator = iter(items)
    sample = list(itertools.islice(iterator, size))
    if len(sample) < size:
        return sample
    weight = math.exp(math.log(open_unit(rng)) / size)
    while True:
        skip = math.floor(math.log(open_unit(rng)) / math.log1p(-weight))
        item = next(itertools.islice(iterator, skip, None), None)
        if item is None:
            return sample
        sample[rng.randrange(size)] = item
        weight *= math.exp(math.log(open_unit(rng)) / size)


def train_tokenizer(cfg: Config, train: PairReader, directory: Path) -> Tokenizer:
    """A tokenizer trained on a sample of the training pairs, saved into `directory`."""
    pairs = tqdm(train, desc="sampling for the tokenizer", unit=" pairs", leave=False, disable=None)
    texts = ((pair["src"], pair["tgt"]) for pair in pairs)
    start = time.monotonic()
    pairs_wanted = cfg.tokenizer.sample_size // (2 if cfg.tokenizer.joint else 1)
    sample = reservoir_sample(texts, max(pairs_wanted, 1), SAMPLE_SEED)
    log.info("sampled %d pairs in %.1f s", len(sample), time.monotonic() - start)
    log.info(
        "training SentencePiece (%s, %d pieces) on %d sampled pairs",
        cfg.tokenizer.model_type.value,
        cfg.tokenizer.vocab_size,
        len(sample),
    )
    start = time.monotonic()
    sides: dict[str, Iterable[str]] = {
        side: [pair[k] for pair in sample] for k, side in enumerate(SIDES)
    }
    del sample
    tokenizer = Tokenizer.train(cfg.tokenizer, sides, directory)
    log.info("trained the tokenizer in %.1f s", time.monotonic() - start)
    return tokenizer


def reusable_tokenizer(directory: Path, recorded: dict | None, wanted: dict) -> Tokenizer | None:
    """The tokenizer in `directory`, if the manifest records it as trained with the wanted
    settings on the same training corpus and its files are intact."""
    if recorded is None or recorded.get("inputs") != wanted:
        return None
    try:
        tokenizer = Tokenizer.load(directory)
    except UserError:
        return None
    return tokenizer if tokenizer.fingerprint() == recorded["fingerprint"] else None


# ---------------------------------------------------------------------------- the splits


def chunks(pairs: Iterator[dict], size: int) -> Iterator[list[dict]]:
    while chunk := list(itertools.islice(pairs, size)):
        yield chunk


def encode_split(
    reader: PairReader, tokenizer: Tokenizer, directory: Path, shard_pairs: int, threads: int
) -> dict:
    """Every pair of `reader` encoded into shards in `directory`; returns the split's entry
    in the manifest."""
    if directory.exists():
        shutil.rmtree(directory)
    dtype = id_dtype(max(tokenizer.vocab_size(side) for side in SIDES))
    writer = ShardWriter(directory, shard_pairs, dtype)
    start = time.monotonic()
    progress = tqdm(desc=f"encoding {directory.name}", unit=" pairs", leave=False, disable=None)
    for chunk in chunks(iter(reader), ENCODE_CHUNK):
        writer.add(
            [pair["id"] for pair in chunk],
            tokenizer.encode([pair["src"] for pair in chunk], "src", threads),
            tokenizer.encode([pair["tgt"] for pair in chunk], "tgt", threads),
        )
        progress.update(len(chunk))
    progress.close()
    shards = writer.close()
    if not shards:
        raise UserError(f"{directory.name}: the corpus has no pairs")
    pairs, seconds = sum(shard["pairs"] for shard in shards), time.monotonic() - start
    log.info(
        "encoded %s: %d pairs in %.1f s (%d pairs/s)",
        directory.name,
        pairs,
        seconds,
        pairs / max(seconds, 1e-9),
    )
    return {
        "source": reader.stamp,
        "tokenizer": tokenizer.fingerprint(),
        "shard_pairs": shard_pairs,
        "pairs": pairs,
        "ids_dtype": dtype.name,
        "shards": shards,
    }


def write_references(reader: PairReader, path: Path) -> None:
    write_atomically(path, "".join(json.dumps(pair["tgt"]) + "\n" for pair in reader))


def read_references(directory: Path) -> list[str]:
    lines = (directory / REFERENCES).read_text(encoding="utf-8").split("\n")
    return [json.loads(line) for line in lines if line]


def why_encode_again(
    directory: Path, entry: dict | None, reader: PairReader, tokenizer: Tokenizer, shard_pairs: int
) -> str:
    """Why the split must be encoded again ("" when what is on disk is current)."""
    if entry is None:
        return "not prepared yet"
    if entry["source"] != reader.stamp:
        return "its corpus changed"
    if entry["tokenizer"] != tokenizer.fingerprint():
        return "the tokenizer changed"
    if entry.get("shard_pairs") != shard_pairs:
        return "data.shard_pairs changed"
    if not shards_intact(directory, entry["shards"]):
        return "shard files are missing or damaged"
    return ""


# ---------------------------------------------------------------------------- the whole


def prepare(cfg: Config, directory: Path, tokenizer: Tokenizer | None = None) -> dict:
    """Prepare the training and validation splits of `cfg` into `directory`; returns the
    manifest. What is already there and current is reused. `tokenizer`: encode with this one
    (a resumed run's) instead of training or reusing one."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "src_lang": cfg.data.src_lang,
        "tgt_lang": cfg.data.tgt_lang,
        "tokenizer": None,
        "splits": {},
    }
    old = read_manifest(directory)
    if old is not None and (old["src_lang"], old["tgt_lang"]) == (
        cfg.data.src_lang,
        cfg.data.tgt_lang,
    ):
        manifest.update(tokenizer=old["tokenizer"], splits=old["splits"])
    readers = {split: pair_reader(cfg.data, split) for split in SPLITS}
    tokenizer = current_tokenizer(cfg, directory, manifest, readers["train"], tokenizer)
    for split, reader in readers.items():
        entry = manifest["splits"].get(split)
        reason = why_encode_again(directory / split, entry, reader, tokenizer, cfg.data.shard_pairs)
        if not reason and split == "valid" and not (directory / REFERENCES).is_file():
            reason = "its references are missing"
        if not reason:
            log.info("reusing the encoded %s split (%d pairs)", split, entry["pairs"])
            continue
        log.info("encoding %s (%s)", split, reason)
        manifest["splits"].pop(split, None)
        write_manifest(directory, manifest)  # no longer current while it is encoded
        if split == "valid":
            write_references(reader, directory / REFERENCES)
        entry = encode_split(
            reader, tokenizer, directory / split, cfg.data.shard_pairs, cfg.data.num_proc
        )
        manifest["splits"][split] = entry
        write_manifest(directory, manifest)
    return manifest


def current_tokenizer(
    cfg: Config, directory: Path, manifest: dict, train: PairReader, given: Tokenizer | None
) -> Tokenizer:
    """The tokenizer to encode with: `given` (copied into `directory`), the one in `directory`
    if it was trained with the wanted settings on the same corpus, else a new one; the
    manifest records it."""
    wanted = {"settings": tokenizer_settings(cfg.tokenizer), "trained_on": train.stamp}
    recorded = manifest["tokenizer"]
    reusable = None if given is not None else reusable_tokenizer(directory, recorded, wanted)
    inputs: dict | None
    if given is not None:
        tokenizer, inputs = given, None  # given, not trained here
        if not same_tokenizer(directory, given):
            tokenizer = given.copy_to(directory)
    elif reusable is not None:
        log.info("reusing the tokenizer in %s", directory)
        tokenizer, inputs = reusable, wanted
    else:
        manifest["tokenizer"] = None
        write_manifest(directory, manifest)  # its files are about to change
        tokenizer, inputs = train_tokenizer(cfg, train, directory), wanted
    manifest["tokenizer"] = {"inputs": inputs, "fingerprint": tokenizer.fingerprint()}
    if recorded != manifest["tokenizer"]:
        write_manifest(directory, manifest)
    return tokenizer


def write_manifest(directory: Path, manifest: dict) -> None:
    write_atomically(directory / MANIFEST, json.dumps(manifest, indent=2))


def same_tokenizer(directory: Path, tokenizer: Tokenizer) -> bool:
    """Whether `directory` holds `tokenizer`, intact."""
    try:
        return Tokenizer.load(directory).fingerprint() == tokenizer.fingerprint()
    except UserError:
        return False


def describe(manifest: dict, directory: Path) -> str:
    """One line per split: pairs, shards, ids and bytes on disk."""
    lines = []
    for split, entry in manifest["splits"].items():
        shards = entry["shards"]
        ids = sum(shard["src_ids"] + shard["tgt_ids"] for shard in shards)
        size = sum(shard["bytes"] for shard in shards)
        lines.append(
            f"{split}: {entry['pairs']:,} pairs in {len(shards)} shard(s), {ids:,} ids, "
            f"{size / 1e6:.1f} MB in {directory / split}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- reading it back


def open_prepared(directory: Path, cfg: Config) -> dict:
    """The manifest of the prepared data in `directory`, checked against the config: a one-line
    error for data that is missing, incomplete, damaged, or prepared for other languages or
    another tokenizer."""
    manifest = read_manifest(directory)
    if manifest is None:
        raise UserError(
            f"{directory} holds no prepared data ({MANIFEST} is missing): "
            f"prepare it with seq2seq-prepare recipe=<recipe> out={directory}"
        )
    if manifest["tokenizer"] is None or set(manifest["splits"]) != set(SPLITS):
        raise UserError(
            f"{directory} holds data whose preparation did not finish: run "
            f"seq2seq-prepare recipe=<recipe> out={directory} again"
        )
    languages = (manifest["src_lang"], manifest["tgt_lang"])
    if languages != (cfg.data.src_lang, cfg.data.tgt_lang):
        raise UserError(
            f"{directory} holds {'-'.join(languages)} but the config asks for "
            f"{cfg.data.src_lang}-{cfg.data.tgt_lang}"
        )
    inputs = manifest["tokenizer"]["inputs"]
    prepared_with = inputs["settings"] if inputs else {}  # None: a resumed run's tokenizer
    for key, value in tokenizer_settings(cfg.tokenizer).items():
        if key in prepared_with and prepared_with[key] != value:
            raise UserError(
                f"tokenizer.{key} is {value} but {directory} was encoded with "
                f"{prepared_with[key]}: drop the override or prepare again"
            )
    for split, entry in manifest["splits"].items():
        if not shards_intact(directory / split, entry["shards"]):
            raise UserError(
                f"{directory / split} has missing or damaged shard files: prepare again with "
                f"seq2seq-prepare recipe=<recipe> out={directory}"
            )
    return manifest
