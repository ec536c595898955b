"""SentencePiece tokenizers: train from the training split, save with the run, load and check.

One joint model for both languages (the default, needed for `tie_embeddings: all`) or one model
per language. Special ids are fixed for every model: pad 0, unk 1, bos 2, eos 3. The model files
are saved with their SHA-256 in `tokenizer.json`, and loading verifies them, so a checkpoint can
never be paired with the wrong vocabulary silently.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import sentencepiece as spm

from seq2seq.checkpoint import read_json_object
from seq2seq.config import ModelConfig, TokenizerConfig
from seq2seq.constants import (
    BOS_ID,
    EOS_ID,
    JOINT_SPM,
    PAD_ID,
    TOKENIZER_MANIFEST,
    UNK_ID,
    side_spm,
)
from seq2seq.errors import DamagedFileError, UserError
from seq2seq.files import write_atomically

SIDES = ("src", "tgt")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_sentencepiece(sentences: Iterator[str], cfg: TokenizerConfig) -> bytes:
    """Train one SentencePiece model on `sentences`; returns the serialized model."""
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentences,
            model_writer=model,
            model_type=cfg.model_type.value,
            vocab_size=cfg.vocab_size,
            character_coverage=cfg.character_coverage,
            byte_fallback=cfg.byte_fallback,
            input_sentence_size=0,  # every sentence given: the caller's sample bounds them
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            pad_piece="<pad>",
            unk_piece="<unk>",
            bos_piece="<s>",
            eos_piece="</s>",
            num_threads=cfg.threads,
            minloglevel=2,
        )
    except RuntimeError as error:
        message = str(error).strip().splitlines()[-1].rsplit("] ", 1)[-1]
        hint = "(see tokenizer.vocab_size)"
        raise UserError(f"SentencePiece training failed: {message} {hint}") from None
    return model.getvalue()


def check_special_ids(processor: spm.SentencePieceProcessor, name: str) -> None:
    found = (processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id())
    if found != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
        raise UserError(
            f"{name} has special ids pad/unk/bos/eos = {found}; seq2seq needs "
            f"{(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}: retrain it with seq2seq"
        )


class Tokenizer:
    """Source and target SentencePiece processors (the same object when joint)."""

    def __init__(self, files: dict[str, Path]) -> None:
        """files: side ("src", "tgt") -> model file; joint when both name the same file."""
        self.files = files
        loaded: dict[Path, spm.SentencePieceProcessor] = {}
        for path in files.values():
            if path not in loaded:
                loaded[path] = spm.SentencePieceProcessor(model_file=str(path))
                check_special_ids(loaded[path], path.name)
        self.processors = {side: loaded[path] for side, path in files.items()}

    @property
    def joint(self) -> bool:
        return self.files["src"] == self.files["tgt"]

    def vocab_size(self, side: str) -> int:
        return self.processors[side].get_piece_size()

    def check_fits(self, cfg: ModelConfig) -> None:
        """The model's vocabularies must be the tokenizer's size (another tokenizer's ids would
        fall outside the embeddings, or the model's outside the tokenizer)."""
        for side, size in (("src", cfg.src_vocab_size), ("tgt", cfg.tgt_vocab_size)):
            if self.vocab_size(side) != size:
                raise UserError(
                    f"tokenizer file {self.files[side]} has {self.vocab_size(side)} pieces but "
                    f"the model's {side} vocabulary has {size}: it is not the tokenizer this "
                    "model was trained with"
                )

    def sha256(self) -> dict[str, str]:
        """File name -> SHA-256 of every model file."""
        return {path.name: sha256_file(path) for path in set(self.files.values())}

    def fingerprint(self) -> str:
        """One hash for the whole tokenizer (both sides), for cache keys."""
        hashes = self.sha256()
        parts = [f"{side}={hashes[self.files[side].name]}" for side in SIDES]
        return hashlib.sha256(";".join(parts).encode()).hexdigest()

    def encode(self, texts: list[str], side: str, threads: int | None = None) -> list[list[int]]:
        """Subword ids without bos/eos: the most likely segmentation (`threads` encoding
        threads; None: SentencePiece's default)."""
        return self.processors[side].encode(texts, num_threads=threads)

    def nbest(self, texts: list[str], side: str, size: int) -> list[list[list[int]]]:
        """The `size` most likely segmentations of each text, best first (unigram models)."""
        return self.processors[side].nbest_encode(texts, nbest_size=size)

    def piece_scores(self, side: str) -> list[float]:
        """Each piece's score: its log-probability in a unigram model."""
        processor = self.processors[side]
        return [processor.get_score(i) for i in range(processor.get_piece_size())]

    def decode(self, ids: Iterable[list[int]], side: str) -> list[str]:
        """Detokenised text; padding, bos and eos ids are dropped."""
        special = {PAD_ID, BOS_ID, EOS_ID}
        return self.processors[side].decode([[i for i in row if i not in special] for row in ids])

    def pieces(self, ids: list[int], side: str) -> list[str]:
        """The subword string of each id (for labelling pictures)."""
        return [self.processors[side].id_to_piece(i) for i in ids]

    def normalize(self, text: str, side: str) -> str:
        """The text as the tokenizer sees it (NFKC, whitespace collapsed): what decoding gives."""
        return self.processors[side].normalize(text).replace("\u2581", " ").strip()

    def save_manifest(self, directory: Path) -> None:
        manifest = {
            "joint": self.joint,
            "files": {side: self.files[side].name for side in SIDES},
            "sha256": self.sha256(),
        }
        write_atomically(directory / TOKENIZER_MANIFEST, json.dumps(manifest, indent=2).encode())

    def copy_to(self, directory: Path) -> Tokenizer:
        """The same tokenizer saved into `directory` (its files and manifest copied)."""
        directory.mkdir(parents=True, exist_ok=True)
        for path in set(self.files.values()):
            write_atomically(directory / path.name, path.read_bytes())
        copy = Tokenizer({side: directory / path.name for side, path in self.files.items()})
        copy.save_manifest(directory)
        return copy

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        """Load the tokenizer saved in `directory`, verifying every file's SHA-256."""
        directory = Path(directory)
        manifest_path = directory / TOKENIZER_MANIFEST
        if not manifest_path.is_file():
            raise UserError(f"no tokenizer in {directory}: {TOKENIZER_MANIFEST} is missing")
        manifest = read_manifest(manifest_path)
        for name, expected in manifest["sha256"].items():
            path = directory / name
            if not path.is_file():
                raise UserError(f"tokenizer file {path} is missing")
            if sha256_file(path) != expected:
                raise UserError(
                    f"tokenizer file {path} does not match the SHA-256 recorded in "
                    f"{manifest_path}: it is not the vocabulary this run was trained with"
                )
        return cls({side: directory / manifest["files"][side] for side in SIDES})

    @classmethod
    def train(
        cls, cfg: TokenizerConfig, texts: dict[str, Iterable[str]], directory: Path
    ) -> Tokenizer:
        """Train on the training texts of each side ("src", "tgt") and save into `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        if cfg.joint:
            path = directory / JOINT_SPM
            write_atomically(path, train_sentencepiece(chain_sides(texts), cfg))
            files = {side: path for side in SIDES}
        else:
            files = {}
            for side in SIDES:
                files[side] = directory / side_spm(side)
                write_atomically(files[side], train_sentencepiece(iter(texts[side]), cfg))
        tokenizer = cls(files)
        tokenizer.save_manifest(directory)
        return tokenizer


def read_manifest(path: Path) -> dict:
    """tokenizer.json: the model file of each side, every one with its SHA-256."""
    manifest = read_json_object(path)
    files, hashes = manifest.get("files"), manifest.get("sha256")
    if not isinstance(hashes, dict) or not hashes:
        raise DamagedFileError(path, "it has no sha256 (the SHA-256 of each tokenizer file)")
    if not isinstance(files, dict) or not all(
        isinstance(files.get(side), str) and files[side] in hashes for side in SIDES
    ):
        raise DamagedFileError(
            path, "its files must name the src and tgt model files, each with its sha256"
        )
    return manifest


def chain_sides(texts: dict[str, Iterable[str]]) -> Iterator[str]:
    for side in SIDES:
        yield from texts[side]
