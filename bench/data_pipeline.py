"""Benchmark the data pipeline at WMT scale, and padding on Multi30k.

1. Writes a synthetic corpus of N sentence pairs (default 2M) as two plain-text files, built
   from Multi30k's word distributions (so lengths and vocabulary look like real text).
2. Times each stage, each in a fresh process: read the pairs -> train SentencePiece on a
   reservoir sample -> encode into shards (`seq2seq-prepare`'s work) -> clean and one pass of
   token-budget batching over the shards.
3. Reports peak RSS of each stage against the corpus size as text.
4. Reports the padding fraction of Multi30k training batches (4096-token budget).

    python bench/data_pipeline.py --multi30k <multi30k dir> --workdir /tmp/s2s-bench
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import platform
import resource
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from seq2seq.config import Config, DataConfig, TokenizerConfig
from seq2seq.data import pair_reader
from seq2seq.prepare import prepare, read_manifest, train_tokenizer
from seq2seq.sharded_batching import ShardedSplit
from seq2seq.tokenizer import Tokenizer
from seq2seq.training_data import training_split


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def words_of(path: Path) -> tuple[list[str], np.ndarray]:
    """Distinct words of a gzipped corpus and their frequencies (a unigram model)."""
    counts: dict[str, int] = {}
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        for line in stream:
            for word in line.split():
                counts[word] = counts.get(word, 0) + 1
    words = list(counts)
    freq = np.array([counts[w] for w in words], dtype=np.float64)
    return words, freq / freq.sum()


def write_synthetic_corpus(multi30k: Path, out: Path, pairs: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    vocab = {lang: words_of(multi30k / f"train.{lang}.gz") for lang in ("en", "de")}
    src_lengths = rng.integers(4, 40, pairs)
    tgt_lengths = np.clip(src_lengths + rng.integers(-3, 4, pairs), 1, None)
    for lang, lengths in (("en", src_lengths), ("de", tgt_lengths)):
        words, probabilities = vocab[lang]
        with open(out / f"train.{lang}", "w", encoding="utf-8") as stream:
            for start in range(0, pairs, 100_000):
                chunk = lengths[start : start + 100_000]
                ids = rng.choice(len(words), size=int(chunk.sum()), p=probabilities)
                ends = np.cumsum(chunk)
                lines = [
                    " ".join(words[i] for i in ids[e - n : e])
                    for n, e in zip(chunk, ends, strict=True)
                ]
                stream.write("\n".join(lines) + "\n")
    for lang in ("en", "de"):  # a validation split: the first 1,000 pairs
        with open(out / f"train.{lang}", encoding="utf-8") as stream:
            head = [next(stream) for _ in range(min(pairs, 1000))]
        (out / f"valid.{lang}").write_text("".join(head), encoding="utf-8")


def in_fresh_process(fn, *args):
    """Run one stage in a new (spawned) process: its time and its own peak RSS, no leftovers."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(measured, fn, *args).result()


def measured(fn, *args) -> dict:
    torch.set_num_threads(2)
    start = time.perf_counter()
    value = fn(*args)
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mb": round(peak_rss_mb()),
        "workers_peak_rss_mb": round(peak_rss_mb(resource.RUSAGE_CHILDREN)),
        "value": value,
    }


def stage_imports_only() -> None:
    """The baseline: peak RSS of a process that has only imported torch, datasets, seq2seq."""


def stage_read(cfg: Config) -> int:
    return sum(1 for _ in pair_reader(cfg.data, "train"))


def stage_tokenizer(cfg: Config, directory: Path) -> int:
    return train_tokenizer(cfg, pair_reader(cfg.data, "train"), directory).vocab_size("src")


def stage_encode(cfg: Config, tokenizer_dir: Path, directory: Path) -> int:
    manifest = prepare(cfg, directory, Tokenizer.load(tokenizer_dir))
    return manifest["splits"]["train"]["pairs"]


def stage_batching(cfg: Config, directory: Path, max_tokens: int) -> tuple[int, float]:
    manifest = read_manifest(directory)
    assert manifest is not None, f"nothing prepared in {directory}"
    return one_pass(training_split(directory, manifest, cfg.data), max_tokens)


def one_pass(split: ShardedSplit, max_tokens: int) -> tuple[int, float]:
    """Batches in one epoch and their padding fraction (source + target)."""
    batches, real, padded = 0, 0, 0
    for batch in split.batches(split.sampler(max_tokens, seed=0)):
        batches += 1
        real += batch.src_tokens + batch.tgt_tokens
        padded += batch.src.numel() + batch.tgt_in.numel()
    return batches, 1 - real / padded


def multi30k_padding(multi30k: Path, workdir: Path, max_tokens: int) -> dict:
    cfg = Config(
        data=DataConfig(root=str(multi30k), cache_dir=str(workdir / "cache-m30k")),
        tokenizer=TokenizerConfig(vocab_size=8000),
    )
    directory = workdir / "prepared-m30k"
    split = training_split(directory, prepare(cfg, directory), cfg.data)
    batches, padding = one_pass(split, max_tokens)
    return {"multi30k_batches": batches, "multi30k_padding_fraction": round(padding, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--multi30k", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=2_000_000)
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--sample-size", type=int, default=1_000_000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "pairs": args.pairs,
        "num_proc": args.num_proc,
        "torch_threads": 2,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }

    corpus = args.workdir / "corpus"
    corpus.mkdir(exist_ok=True)
    if not (corpus / "train.de").is_file():
        in_fresh_process(write_synthetic_corpus, args.multi30k, corpus, args.pairs)
    text_mb = sum((corpus / f"train.{lang}").stat().st_size for lang in ("en", "de")) / 2**20
    results["corpus_text_mb"] = round(text_mb)

    for stale in ("prepared", "prepared-m30k", "tokenizer"):  # time real work, not reuse
        shutil.rmtree(args.workdir / stale, ignore_errors=True)
    cfg = Config(
        data=DataConfig(
            source="files",
            train=str(corpus / "train.{lang}"),
            valid=str(corpus / "valid.{lang}"),
            num_proc=args.num_proc,
        ),
        tokenizer=TokenizerConfig(vocab_size=16000, sample_size=args.sample_size),
    )
    tokenizer_dir, prepared = args.workdir / "tokenizer", args.workdir / "prepared"
    stages = {
        "baseline (imports only)": (stage_imports_only,),
        "read (count lines, check UTF-8, stream pairs)": (stage_read, cfg),
        "train SentencePiece (reservoir sample)": (stage_tokenizer, cfg, tokenizer_dir),
        "encode into shards": (stage_encode, cfg, tokenizer_dir, prepared),
        "clean + one pass of batching": (stage_batching, cfg, prepared, args.max_tokens),
    }
    for name, (fn, *stage_args) in stages.items():
        results[name] = in_fresh_process(fn, *stage_args)
        print(name, results[name], flush=True)
    results["encode_pairs_per_s"] = round(args.pairs / results["encode into shards"]["seconds"])
    results.update(
        in_fresh_process(multi30k_padding, args.multi30k, args.workdir, args.max_tokens)["value"]
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
