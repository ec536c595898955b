"""Translation speed: seq2seq's beam search against Hugging Face `generate` on identical weights.

The run is exported to a `MarianMTModel` in memory (`seq2seq.export.to_marian`); both systems
translate Multi30k test_2016_flickr with beam 5, length penalty 1.0 and early stopping (a
sentence ends when it has 5 finished hypotheses: the rule of both), in the same length-sorted
batches of 64 sentences and, on a subset, one sentence at a time. Each system runs in a fresh
process that loads only what it needs, and the systems alternate (A B C A B C ...), so machine
noise hits all of them; separate processes also keep one library's idle worker threads (OpenMP
spin-waiting) from stealing the cores of another, which in one shared process slowed every
system five-fold at batch 1. Reports sentences/s, target tokens/s, BLEU (sacreBLEU), outputs
identical to ours in float32, and each system's peak memory (its process's, model included).
Needs `pip install transformers` (and `ctranslate2` for --ct2).

    python bench/decode_speed.py --run <run dir> --multi30k <multi30k dir>
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from seq2seq.batching import pad_rows
from seq2seq.config import DecodeConfig, Precision
from seq2seq.constants import EOS_ID, PAD_ID
from seq2seq.export import to_marian
from seq2seq.fast.workers import map_in_workers
from seq2seq.metrics import corpus_scores
from seq2seq.search import NextToken, search
from seq2seq.translate import Translator


def read_gz(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        return [line.rstrip("\n") for line in stream]


def batches_of(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


def ours(translator: Translator, sources: list[list[int]], batch: list[int]) -> list[list[int]]:
    src = pad_rows([sources[i] for i in batch], [], [EOS_ID])
    found = search(translator.model, src, src == PAD_ID, translator.decode)
    return [nbest[0].tokens for nbest in found]


def unrescored(translate):
    """`translate` with bf16 logits used as they are (the ablation of `NextToken.top`'s exact
    re-scoring): shows what the re-scoring buys in BLEU and costs in time."""

    def top(self: NextToken, k: int):
        return self.select(self.log_probs, k)

    def run(batch: list[int]) -> list[list[int]]:
        rescoring, NextToken.top = NextToken.top, top
        try:
            return translate(batch)
        finally:
            NextToken.top = rescoring

    return run


def theirs(
    marian, sources: list[list[int]], batch: list[int], cfg: DecodeConfig
) -> list[list[int]]:
    src = pad_rows([sources[i] for i in batch], [], [EOS_ID])
    longest = max(len(sources[i]) for i in batch)
    generated = marian.generate(
        input_ids=src,
        attention_mask=(src != PAD_ID).long(),
        num_beams=cfg.beam,
        length_penalty=cfg.length_penalty,
        early_stopping=True,
        do_sample=False,
        max_new_tokens=int(cfg.max_len_a * longest) + cfg.max_len_b + 1,
    )
    special = {PAD_ID, EOS_ID, 2}
    return [[t for t in row if t not in special] for row in generated.tolist()]


def ct2_translator(translator: Translator, quantization: str, workdir: Path, threads: int):
    """Our weights exported to CTranslate2 (`seq2seq.export_ct2`), loaded with `threads`."""
    import ctranslate2

    from seq2seq.export_ct2 import export_ct2

    out = workdir / f"ct2_{quantization}"
    export_ct2(translator.model, translator.tokenizer, out, quantization)
    return ctranslate2.Translator(str(out), device="cpu", intra_threads=threads, inter_threads=1)


def ct2(engine, translator: Translator, sources, batch: list[int], cfg: DecodeConfig):
    source, target = (translator.tokenizer.processors[side] for side in ("src", "tgt"))
    pieces = [[source.id_to_piece(t) for t in sources[i]] for i in batch]
    longest = max(len(sources[i]) for i in batch)
    found = engine.translate_batch(
        pieces,
        beam_size=cfg.beam,
        length_penalty=cfg.length_penalty,
        max_batch_size=len(batch),
        max_decoding_length=int(cfg.max_len_a * (longest + 1)) + cfg.max_len_b + 1,
    )
    return [[target.piece_to_id(p) for p in r.hypotheses[0]] for r in found]


def timed(translate_all, batches: list[list[int]]) -> tuple[float, dict[int, list[int]]]:
    """Seconds for translate_all(batches) (an iterable of each batch's outputs) and the outputs."""
    outputs: dict[int, list[int]] = {}
    start = time.perf_counter()
    for batch, found in zip(batches, translate_all(batches), strict=True):
        for i, tokens in zip(batch, found, strict=True):
            outputs[i] = tokens
    return time.perf_counter() - start, outputs


SYSTEMS = ["seq2seq", "seq2seq_bf16", "hf_generate"]
ABLATION = ["seq2seq_bf16_unrescored"]
CT2 = ["ct2_float32", "ct2_int8"]
WORKERS = ["seq2seq_bf16_workers", "hf_generate_workers"]


def build_system(name: str, translator: Translator, sources, args) -> Callable:
    """`name`'s translate_all(batches) -> each batch's output ids; only what that system needs
    is loaded. `*_workers` systems decode `--workers` batches at once."""
    translate = build_translate(name.removesuffix("_workers"), translator, sources, args)
    if name.endswith("_workers"):
        return lambda batches: map_in_workers(translate, batches, args.workers)
    return lambda batches: map(translate, batches)


def build_translate(name: str, translator: Translator, sources, args) -> Callable:
    """`name`'s translate(batch) -> output ids."""
    cfg = translator.decode
    if name == "seq2seq":
        return lambda b: ours(translator, sources, b)
    if name in ("seq2seq_bf16", "seq2seq_bf16_unrescored"):
        bf16 = Translator(translator.model, translator.tokenizer, cfg, "cpu", Precision.bf16)
        run = lambda b: ours(bf16, sources, b)  # noqa: E731
        return run if name == "seq2seq_bf16" else unrescored(run)
    if name == "hf_generate":
        marian = to_marian(translator.model)
        return lambda b: theirs(marian, sources, b, cfg)
    engine = ct2_translator(translator, name.removeprefix("ct2_"), args.workdir, args.threads)
    return lambda b: ct2(engine, translator, sources, b, cfg)


def setup(args):
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    cfg = DecodeConfig(strategy="beam", beam=5, length_penalty=1.0, max_len_a=1.2, max_len_b=10)
    translator = Translator.from_run(args.run, args.checkpoint, "cpu", cfg)
    sources = translator.tokenizer.encode(read_gz(args.multi30k / "test_2016_flickr.en.gz"), "src")
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    batches = {
        "batch_64": batches_of(order, 64),  # the same length-sorted batches for every system
        "batch_1": batches_of(list(range(args.single)), 1),
    }
    return translator, sources, batches


def one_system(args) -> None:
    """Child process: time one system on one batching, print seconds, outputs and peak RSS."""
    translator, sources, batches = setup(args)
    translate = build_system(args.only, translator, sources, args)
    timed(translate, batches[args.batching][:2])  # warm-up
    seconds, outputs = timed(translate, batches[args.batching])
    rss = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps({"seconds": seconds, "outputs": outputs, "peak_rss_mb": rss}))


def in_child(system: str, batching: str) -> dict:
    command = [sys.executable, *sys.argv, "--only", system, "--batching", batching]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    found = json.loads(result.stdout.splitlines()[-1])
    found["outputs"] = {int(i): tokens for i, tokens in found["outputs"].items()}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--multi30k", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--single", type=int, default=150, help="sentences decoded one by one")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--ct2", action="store_true", help="also CTranslate2 float32 and int8")
    parser.add_argument(
        "--ablation", action="store_true", help="also bf16 without the exact re-scoring"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="above 1: also ours and HF's with N workers"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/s2s-decode-bench"))
    parser.add_argument("--only", help=argparse.SUPPRESS)  # child process: this system
    parser.add_argument("--batching", help=argparse.SUPPRESS)  # child process: batch_64/batch_1
    args = parser.parse_args()
    if args.only:
        one_system(args)
        return
    translator, _, batches = setup(args)
    references = read_gz(args.multi30k / "test_2016_flickr.de.gz")
    systems = SYSTEMS + (ABLATION if args.ablation else []) + (CT2 if args.ct2 else [])
    systems += WORKERS if args.workers > 1 else []
    results: dict = {
        "machine": platform.machine(),
        "threads": args.threads,
        "workers": args.workers,
        "torch": torch.__version__,
        "sentences": len(references),
        "beam": translator.decode.beam,
    }
    for label in ("batch_64", "batch_1"):
        runs: dict[str, list[dict]] = {name: [] for name in systems}
        for _ in range(args.rounds):  # alternating: A B C A B C, each in a fresh process
            for name in systems:
                runs[name].append(in_child(name, label))
        results[label] = report(runs, batches[label], translator, references, label)
        print(label, json.dumps(results[label]), flush=True)
    print(json.dumps(results, indent=2))


def report(runs, batches, translator, references, label) -> dict:
    count = sum(len(b) for b in batches)
    fp32 = runs["seq2seq"][-1]["outputs"]
    found = {}
    for name, measured in runs.items():
        seconds = statistics.median(r["seconds"] for r in measured)
        outputs = measured[-1]["outputs"]
        found[name] = {
            "sentences_per_s": round(count / seconds, 1),
            "target_tokens_per_s": round(sum(len(t) + 1 for t in outputs.values()) / seconds),
            "seconds": [round(r["seconds"], 2) for r in measured],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in measured),
            "same_as_seq2seq_fp32": f"{sum(outputs[i] == fp32[i] for i in fp32)}/{count}",
        }
        if label == "batch_64":
            texts = translator.tokenizer.decode([outputs[i] for i in range(count)], "tgt")
            found[name]["bleu"] = corpus_scores(texts, references, ("bleu",))["bleu"].score
    for name in found:
        ratio = found[name]["sentences_per_s"] / found["hf_generate"]["sentences_per_s"]
        found[name]["speedup_vs_hf"] = round(ratio, 2)
    return found


if __name__ == "__main__":
    main()
