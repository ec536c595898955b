"""Translation speed: seq2seq's beam search against Hugging Face `generate` on identical weights.

The run is exported to a `MarianMTModel` in memory (`seq2seq.export.to_marian`); both systems
translate Multi30k test_2016_flickr with beam 5, length penalty 1.0 and early stopping (a
sentence ends when it has 5 finished hypotheses: the rule of both), in the same length-sorted
batches of 64 sentences and, on a subset, one sentence at a time. The systems alternate in one
process, so machine noise hits both. Reports sentences/s, target tokens/s and BLEU (sacreBLEU)
of each, and each system's peak memory (measured in a fresh process per system). Needs
`pip install transformers` (and `ctranslate2` for --ct2).

    python bench/decode_speed.py --run <run dir> --multi30k ../shared/data/multi30k
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
from pathlib import Path

import torch

from seq2seq.batching import pad_rows
from seq2seq.config import DecodeConfig, Precision
from seq2seq.constants import EOS_ID, PAD_ID
from seq2seq.export import to_marian
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
    with translator.autocast():
        found = search(translator.model, src, src == PAD_ID, translator.decode)
    return [nbest[0].tokens for nbest in found]


def unrescored(translate):
    """`translate` with bf16 logits used as they are (the ablation of `NextToken.top`'s exact
    re-scoring): shows what the re-scoring buys in BLEU and costs in time."""

    def top(self: NextToken, k: int):
        return self.log_probs.topk(k, dim=1)

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


def timed(translate, batches: list[list[int]]) -> tuple[float, dict[int, list[int]]]:
    outputs: dict[int, list[int]] = {}
    start = time.perf_counter()
    for batch in batches:
        for i, tokens in zip(batch, translate(batch), strict=True):
            outputs[i] = tokens
    return time.perf_counter() - start, outputs


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
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/s2s-decode-bench"))
    parser.add_argument("--only", help=argparse.SUPPRESS)  # one system, for its peak RSS
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    cfg = DecodeConfig(strategy="beam", beam=5, length_penalty=1.0, max_len_a=1.2, max_len_b=10)
    translator = Translator.from_run(args.run, args.checkpoint, "cpu", cfg)
    bf16 = Translator(translator.model, translator.tokenizer, cfg, "cpu", Precision.bf16)
    marian = to_marian(translator.model)
    source_lines = read_gz(args.multi30k / "test_2016_flickr.en.gz")
    references = read_gz(args.multi30k / "test_2016_flickr.de.gz")
    sources = translator.tokenizer.encode(source_lines, "src")
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    systems = {
        "seq2seq": lambda b: ours(translator, sources, b),
        "seq2seq_bf16": lambda b: ours(bf16, sources, b),
        "hf_generate": lambda b: theirs(marian, sources, b, cfg),
    }
    if args.ablation:
        systems["seq2seq_bf16_unrescored"] = unrescored(systems["seq2seq_bf16"])
    if args.ct2:
        for quantization in ("float32", "int8"):
            engine = ct2_translator(translator, quantization, args.workdir, args.threads)
            systems[f"ct2_{quantization}"] = lambda b, e=engine: ct2(e, translator, sources, b, cfg)
    if args.only:  # a fresh process translating once with one system: its own peak memory
        timed(systems[args.only], batches_of(order, 64))
        print(round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
        return
    results: dict = {
        "machine": platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "sentences": len(sources),
        "beam": cfg.beam,
    }
    for label, batches in (
        ("batch_64", batches_of(order, 64)),
        ("batch_1", batches_of(list(range(args.single)), 1)),
    ):
        times: dict[str, list[float]] = {name: [] for name in systems}
        outputs: dict[str, dict[int, list[int]]] = {}
        for translate in systems.values():  # warm-up
            timed(translate, batches[:2])
        for _ in range(args.rounds):
            for name, translate in systems.items():
                seconds, outputs[name] = timed(translate, batches)
                times[name].append(seconds)
        count = sum(len(b) for b in batches)
        report = {}
        for name in systems:
            seconds = statistics.median(times[name])
            tokens = sum(len(t) + 1 for t in outputs[name].values())
            report[name] = {
                "sentences_per_s": round(count / seconds, 1),
                "target_tokens_per_s": round(tokens / seconds),
                "seconds": [round(t, 2) for t in times[name]],
            }
            if label == "batch_64":
                texts = translator.tokenizer.decode(
                    [outputs[name][i] for i in range(len(sources))], "tgt"
                )
                report[name]["bleu"] = corpus_scores(texts, references, ("bleu",))["bleu"].score
        for name in [n for n in systems if n != "hf_generate"]:
            report[name]["speedup_vs_hf"] = round(
                report[name]["sentences_per_s"] / report["hf_generate"]["sentences_per_s"], 2
            )
        for name in systems:  # outputs token for token equal to seq2seq in float32
            same = sum(outputs[name][i] == outputs["seq2seq"][i] for i in outputs["seq2seq"])
            report[name]["same_as_seq2seq_fp32"] = f"{same}/{count}"
        results[label] = report
        print(label, json.dumps(report), flush=True)
    results["peak_rss_mb"] = {name: peak_rss_mb(name) for name in systems}
    print(json.dumps(results, indent=2))


def peak_rss_mb(system: str) -> int:
    """Peak resident memory of a process that loads the model and translates the test set at
    batch 64 with `system` alone (every system's process loads the same model and data)."""
    command = [sys.executable, *sys.argv, "--only", system]
    return int(
        subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[-1]
    )


if __name__ == "__main__":
    main()
