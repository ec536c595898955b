"""`Translator`: load a run, batch sentences by length within a token budget, search,
detokenise, and return the translations in input order.

    translator = Translator.from_run("runs/multi30k_en_de/20261122-010203")
    translator.translate(["A man rides a bike.", "Two dogs play in the snow."])
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seq2seq import checkpoint, constants
from seq2seq.arguments import with_decode_overrides
from seq2seq.batching import EncodedSplit, pad_rows, token_budget_batches
from seq2seq.config import Config, DecodeConfig, Precision, load_saved_config, to_dataclass
from seq2seq.constants import EOS_ID, PAD_ID
from seq2seq.devices import resolve_device
from seq2seq.errors import UserError
from seq2seq.fast.inference import inference_copy
from seq2seq.fast.kernels import compiled
from seq2seq.fast.workers import map_in_workers
from seq2seq.model import Transformer
from seq2seq.precision import LOW_PRECISION_DTYPES, parse_precision
from seq2seq.search import Hypothesis, search
from seq2seq.tokenizer import Tokenizer

log = logging.getLogger(__name__)


# Every character `str.splitlines` ends a line at: \n \r \v \f \x1c-\x1e \x85 \u2028 \u2029
LINE_BREAK = re.compile(r"\s*[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]\s*")


def one_line(text: str) -> str:
    """`text` on one line: each line break (byte fallback can decode to \\n, \\r, U+2028, ...)
    and the whitespace around it become one space; a text that had one is stripped."""
    joined, breaks = LINE_BREAK.subn(" ", text)
    return joined.strip() if breaks else text


def detokenise(tokenizer: Tokenizer, hypotheses: list[list[int]]) -> list[str]:
    """The target text of each list of ids, on one line (`one_line`): one output line each."""
    return [one_line(text) for text in tokenizer.decode(hypotheses, "tgt")]


@dataclass
class Translation:
    text: str  # the best hypothesis, detokenised ("" for an empty input line)
    nbest: list[tuple[float, str]]  # (score, text) of the n best hypotheses, best first


def load_run_config(run_dir: Path) -> Config:
    path = run_dir / constants.CONFIG
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory: {constants.CONFIG} is missing")
    return to_dataclass(load_saved_config(path), Config)


def run_decoding(run_dir: Path, overrides: list[str]) -> DecodeConfig | None:
    """The run's decode.* settings with `decode.key=value` overrides; None when `run_dir` has
    no config (loading the run then says what is wrong)."""
    if not (run_dir / constants.CONFIG).is_file():
        return None
    return with_decode_overrides(load_run_config(run_dir).decode, overrides)


def weights_path(run_dir: Path, which: str) -> Path:
    """`best`, `last`, `average` or a path to a .safetensors file."""
    named = {
        "best": constants.BEST_WEIGHTS,
        "last": constants.WEIGHTS,
        "average": constants.AVERAGE_WEIGHTS,
    }
    return run_dir / named[which] if which in named else Path(which)


class Translator:
    """A model, its tokenizer and decoding settings, ready to translate text."""

    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer,
        decode: DecodeConfig,
        device: torch.device | str = "cpu",
        precision: str | Precision = Precision.fp32,
    ) -> None:
        self.device = torch.device(device)
        self.precision = parse_precision(precision, self.device)
        model = model.to(self.device).eval()
        low = LOW_PRECISION_DTYPES.get(self.precision)
        self.model = model if low is None else inference_copy(model, low)
        self.tokenizer = tokenizer
        self.decode = decode
        self.workers = decode.workers if self.device.type == "cpu" else 1  # batches at once
        if self.workers < decode.workers:
            log.info("decode.workers is for CPU: on %s batches are decoded one at a time", device)
        compiled(decode.kernels, self.device)  # kernels to compile: now, not in a batch
        self.max_source_tokens = model.cfg.max_positions - 1  # room for eos
        self.truncated = 0  # input lines cut to the model's maximum length so far
        self.progress: Callable[[int], object] | None = None  # told each batch's sentences

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        checkpoint_name: str = "best",
        device: str = "auto",
        decode: DecodeConfig | None = None,
        precision: str = "fp32",
    ) -> Translator:
        """Load a run directory (its config, tokenizer and the chosen weights)."""
        run_dir, torch_device = Path(run_dir), resolve_device(device)
        if not run_dir.is_dir():
            raise UserError(f"run directory {run_dir} does not exist")
        meta = checkpoint.read_meta(run_dir)
        config = load_run_config(run_dir)
        tokenizer = Tokenizer.load(run_dir)
        if meta.get("tokenizer_sha256") and tokenizer.sha256() != meta["tokenizer_sha256"]:
            raise UserError(
                f"the tokenizer in {run_dir} is not the one this model was trained "
                "with (SHA-256 differs from meta.json)"
            )
        tokenizer.check_fits(config.model)
        model = Transformer(config.model)
        checkpoint.load_weights(model, weights_path(run_dir, checkpoint_name))
        return cls(model, tokenizer, decode or config.decode, torch_device, precision)

    # ------------------------------------------------------------------ text

    def translate(self, sentences: list[str]) -> list[str]:
        """One translation per sentence, in order."""
        return [t.text for t in self.translate_full(sentences)]

    def translate_full(self, sentences: list[str]) -> list[Translation]:
        """Translations with their n-best lists; an empty line translates to ""."""
        sources = self.encode_sources(sentences)
        filled = [i for i, ids in enumerate(sources) if ids]
        results = [Translation("", []) for _ in sentences]
        hypotheses = self.search_ids([sources[i] for i in filled])
        for i, nbest in zip(filled, hypotheses, strict=True):
            texts = detokenise(self.tokenizer, [h.tokens for h in nbest])
            results[i] = Translation(
                texts[0], [(h.score, t) for h, t in zip(nbest, texts, strict=True)]
            )
        return results

    def translate_stream(
        self, lines: Iterable[str], chunk_size: int = 5000
    ) -> Iterator[Translation]:
        """Translate an iterable of lines chunk by chunk, in constant memory."""
        chunk: list[str] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) == chunk_size:
                yield from self.translate_full(chunk)
                chunk = []
        if chunk:
            yield from self.translate_full(chunk)

    def encode_sources(self, sentences: list[str]) -> list[list[int]]:
        """Subword ids of each sentence (surrounding whitespace removed)."""
        return self.tokenizer.encode([s.strip() for s in sentences], "src")

    # ------------------------------------------------------------------ ids

    @torch.no_grad()
    def search_ids(self, sources: list[list[int]]) -> list[list[Hypothesis]]:
        """n-best lists for each source (ids without eos), in input order. Sentences are
        sorted by length and cut into batches of at most decode.max_tokens source tokens."""
        if not sources:
            return []
        sources = [self.fit_positions(ids) for ids in sources]
        sizes = np.array([len(ids) + 1 for ids in sources])
        order = np.argsort(sizes, kind="stable")
        batches = [b.tolist() for b in token_budget_batches(order, sizes, self.decode.max_tokens)]
        found = self.search_batches([[sources[i] for i in batch] for batch in batches])
        results: list[list[Hypothesis]] = [[] for _ in sources]
        for batch, nbests in zip(batches, found, strict=True):
            for i, nbest in zip(batch, nbests, strict=True):
                results[i] = nbest
        return results

    def search_batches(self, batches: list[list[list[int]]]) -> list[list[list[Hypothesis]]]:
        """n-best lists for each batch of sources (ids without eos), in order.

        On CPU `decode.workers` batches are decoded at once, each by its own thread with its
        share of the torch threads (`seq2seq.fast.workers`): a decoding step is many small
        operations, which two cores run faster side by side (one batch each) than together
        (half of each operation each). Results do not depend on it: every sentence is decoded
        independently of its batch.
        """

        def decode(batch: list[list[int]]) -> list[list[Hypothesis]]:
            src = pad_rows(batch, [], [EOS_ID]).to(self.device)
            found = search(self.model, src, src == PAD_ID, self.decode)
            if self.progress is not None:
                self.progress(len(batch))
            return found

        workers = min(self.workers, len(batches))
        if workers <= 1:
            return [decode(batch) for batch in batches]
        return map_in_workers(decode, batches, workers)

    def fit_positions(self, ids: list[int]) -> list[int]:
        """Truncate a source longer than the model's positions (counted in `truncated`)."""
        if len(ids) <= self.max_source_tokens:
            return ids
        self.truncated += 1
        return ids[: self.max_source_tokens]


def translate_encoded(
    model: Transformer,
    encoded: EncodedSplit,
    tokenizer: Tokenizer,
    cfg: DecodeConfig,
    device: torch.device,
) -> list[str]:
    """Translations of an encoded validation/test split, in the order of its `id` column."""
    rows = encoded.dataset[encoded.rows.tolist()]
    translator = Translator(model, tokenizer, cfg, device)
    best = translator.search_ids(rows["src_ids"])
    texts = detokenise(tokenizer, [nbest[0].tokens for nbest in best])
    translations = [""] * len(texts)
    for row_id, text, ids in zip(rows["id"], texts, rows["src_ids"], strict=True):
        translations[row_id] = text if ids else ""
    return translations
