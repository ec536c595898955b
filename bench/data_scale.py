"""Data at scale: a synthetic corpus of millions of pairs prepared with `seq2seq-prepare` and
streamed by a training process, with the time and peak memory of each.

    python bench/data_scale.py --workdir <dir> --pairs 1000000 10000000 50000000

For each corpus size:
1. A synthetic parallel corpus is written once (two plain-text files, a validation split of
   the first 1,000 pairs). Source words are drawn from a Zipf distribution (exponent 1.1) over
   100,000 made-up words; sentence lengths follow a log-normal distribution (median 22 words,
   clipped to 1..150), close to WMT news text. The target is the source word for word through
   a fixed dictionary into another 100,000 made-up words, 2 words shorter to 2 words longer.
2. `seq2seq-prepare` runs on it as a user runs it (joint unigram 32k, 1M pairs sampled for
   the tokenizer). Its resident memory is polled every 0.2 s; the stages are told apart by the
   log lines it writes (sampling, tokenizer training, encoding).
3. A training process streams the prepared shards: every batch of one epoch (25,000-token
   batches, the paper's), with the model step skipped. Peak RSS, batches/s, tokens/s and the
   padding fraction.
With --multi30k, also the padding of Multi30k's 4,096-token training batches.

One JSON line per corpus size goes to <workdir>/scale.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ZIPF_EXPONENT, VOCABULARY, MEDIAN_WORDS = 1.1, 100_000, 22
CHUNK = 100_000  # pairs generated at a time
STAGES = (  # (a line of the log that starts the stage, the stage's name)
    ("", "check the corpus, sample it for the tokenizer"),
    ("sampled ", "train the tokenizer"),
    ("encoding train", "encode train"),
    ("encoding valid", "encode valid, write the manifest"),
)


# ---------------------------------------------------------------------------- the corpus


def made_up_words(rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` distinct lowercase words of 2 to 12 letters."""
    words: set[str] = set()
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    while len(words) < count:
        for length in rng.integers(2, 13, count):
            words.add("".join(rng.choice(letters, length)))
    return np.array(sorted(words)[:count], dtype=object)


def write_corpus(directory: Path, pairs: int, seed: int = 0) -> None:
    """train.{en,de} with `pairs` lines each, and valid.{en,de} (the first 1,000)."""
    rng = np.random.default_rng(seed)
    source_words, target_words = made_up_words(rng, VOCABULARY), made_up_words(rng, VOCABULARY)
    dictionary = rng.permutation(VOCABULARY)
    cdf = np.cumsum(1.0 / np.arange(1, VOCABULARY + 1) ** ZIPF_EXPONENT)
    cdf /= cdf[-1]
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "train.en", "w") as en, open(directory / "train.de", "w") as de:
        for start in range(0, pairs, CHUNK):
            count = min(CHUNK, pairs - start)
            lengths = np.clip(rng.lognormal(np.log(MEDIAN_WORDS), 0.5, count), 1, 150).astype(int)
            ids = np.searchsorted(cdf, rng.random(int(lengths.sum())))
            ends = np.cumsum(lengths)
            change = rng.integers(-2, 3, count)
            extra = np.searchsorted(cdf, rng.random(count * 2)).reshape(count, 2)
            src_lines, tgt_lines = [], []
            for n, end, delta, more in zip(lengths, ends, change, extra, strict=True):
                sentence = ids[end - n : end]
                target = list(dictionary[sentence[: max(1, n + min(delta, 0))]])
                target += list(dictionary[more[: max(delta, 0)]])
                src_lines.append(" ".join(source_words[sentence]))
                tgt_lines.append(" ".join(target_words[target]))
            en.write("\n".join(src_lines) + "\n")
            de.write("\n".join(tgt_lines) + "\n")
    for lang in ("en", "de"):
        with open(directory / f"train.{lang}") as stream:
            head = [next(stream) for _ in range(min(pairs, 1000))]
        (directory / f"valid.{lang}").write_text("".join(head))


# ---------------------------------------------------------------------------- measuring


def resident_mb(pid: int) -> float:
    """The process's resident memory now (0 once it has gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    lines = [line for line in status.splitlines() if line.startswith("VmRSS:")]
    return int(lines[0].split()[1]) / 1024 if lines else 0.0  # none once it is a zombie


def run_measured(command: list[str]) -> tuple[list[tuple[float, str]], list[tuple[float, float]]]:
    """Run `command`: its log lines and resident memory, each with the seconds since start."""
    start = time.monotonic()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    memory: list[tuple[float, float]] = []

    def poll() -> None:
        while process.poll() is None:
            memory.append((time.monotonic() - start, resident_mb(process.pid)))
            time.sleep(0.2)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    assert process.stderr is not None
    lines = [(time.monotonic() - start, line.rstrip()) for line in process.stderr]
    process.wait()
    poller.join()
    if process.returncode != 0:
        sys.exit("\n".join(line for _, line in lines[-20:]))
    return lines, memory


def stage_table(lines: list[tuple[float, str]], memory: list[tuple[float, float]]) -> dict:
    """Seconds and peak RSS of each stage, found by the log line that starts it."""
    starts = [(0.0, STAGES[0][1])]
    for marker, name in STAGES[1:]:
        found = [t for t, line in lines if marker in line]
        if found:
            starts.append((found[0], name))
    end = memory[-1][0] if memory else 0.0
    table = {}
    for (begin, name), (finish, _) in zip(starts, [*starts[1:], (end, "")], strict=True):
        peaks = [mb for t, mb in memory if begin <= t <= finish]
        table[name] = {
            "seconds": round(finish - begin, 1),
            "peak_rss_mb": round(max(peaks, default=0)),
        }
    return table


def prepare(corpus: Path, out: Path) -> dict:
    command = [
        "seq2seq-prepare",
        "data.source=files",
        f"data.train={corpus / 'train'}",
        f"data.valid={corpus / 'valid'}",
        "tokenizer.vocab_size=32000",
        "tokenizer.sample_size=1000000",
        f"out={out}",
    ]
    lines, memory = run_measured(command)
    return {
        "prepare_seconds": round(lines[-1][0], 1),
        "prepare_peak_rss_mb": round(max(mb for _, mb in memory)),
        "stages": stage_table(lines, memory),
        "disk_mb": round(sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20),
    }


def stream_batches(prepared: str, max_tokens: str) -> None:
    """(In its own process.) One epoch of training batches from the shards, model step skipped;
    prints a JSON line."""
    from seq2seq.config import DataConfig
    from seq2seq.prepare import read_manifest
    from seq2seq.training_data import training_split

    directory = Path(prepared)
    manifest = read_manifest(directory)
    assert manifest is not None, f"nothing prepared in {directory}"
    start = time.monotonic()
    split = training_split(directory, manifest, DataConfig())
    sampler = split.sampler(int(max_tokens), seed=1)
    batches = tokens = padded = 0
    for batch in split.batches(sampler):
        batches += 1
        tokens += batch.src_tokens + batch.tgt_tokens
        padded += batch.src.numel() + batch.tgt_in.numel()
    seconds = time.monotonic() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "stream_seconds": round(seconds, 1),
                "stream_batches_per_s": round(batches / seconds),
                "stream_tokens_per_s": round(tokens / seconds),
                "stream_peak_rss_mb": round(peak),
                "padding_fraction": round(1 - tokens / padded, 4),
                "pairs_in_use": len(split),
            }
        )
    )


def stream(out: Path, max_tokens: int) -> dict:
    command = [sys.executable, __file__, "--stream", str(out), str(max_tokens)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def multi30k_padding(multi30k: Path, workdir: Path) -> dict:
    """Multi30k prepared (8k joint pieces) and one epoch of 4,096-token batches streamed."""
    out = workdir / "prepared-multi30k"
    command = [
        "seq2seq-prepare",
        "recipe=multi30k_en_de",
        f"data.root={multi30k}",
        "tokenizer.vocab_size=8000",
        f"out={out}",
    ]
    subprocess.run(command, capture_output=True, check=True)
    return stream(out, 4096)


def main() -> None:
    if sys.argv[1:2] == ["--stream"]:
        stream_batches(*sys.argv[2:4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--pairs", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--max-tokens", type=int, default=25_000)
    parser.add_argument("--multi30k", type=Path, help="also: padding of Multi30k's batches")
    args = parser.parse_args()
    if args.multi30k:
        print(json.dumps({"multi30k": multi30k_padding(args.multi30k, args.workdir)}), flush=True)
    for pairs in args.pairs:
        corpus, out = args.workdir / f"corpus-{pairs}", args.workdir / f"prepared-{pairs}"
        if not (corpus / "valid.de").is_file():
            start = time.monotonic()
            write_corpus(corpus, pairs)
            print(f"wrote {pairs:,} pairs in {time.monotonic() - start:.0f} s", flush=True)
        if (out / "manifest.json").is_file():
            (out / "manifest.json").unlink()  # time the whole preparation, not a reuse
        row = {"pairs": pairs, **prepare(corpus, out)}
        row["prepare_pairs_per_s"] = round(pairs / row["prepare_seconds"])
        row["text_mb"] = round(sum(p.stat().st_size for p in corpus.glob("train.*")) / 2**20)
        row["disk_mb_per_million_pairs"] = round(row["disk_mb"] / (pairs / 1e6), 1)
        row.update(stream(out, args.max_tokens))
        row["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
        with open(args.workdir / "scale.jsonl", "a") as results:
            results.write(json.dumps(row) + "\n")
        print(json.dumps(row, indent=2), flush=True)


if __name__ == "__main__":
    main()
