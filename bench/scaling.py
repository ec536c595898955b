"""Time and memory against sentence length and beam size: where attention's quadratic term shows.

    python bench/scaling.py --out docs/img/scaling.png --json scaling.json

A small model (d_model 256, 3+3 layers, 4 heads, ffn 1024, vocabulary 8k; random weights: cost
does not depend on them), max_positions 1100, float32, 2 threads. Each point runs in a fresh
process, so its peak resident memory is its own:

- forward: one teacher-forced forward pass (no gradient) of 8 sentence pairs of L tokens each
  (source and target), L = 16 .. 1024;
- translate (length): beam 5, one sentence of L tokens, output forced to L tokens (min_len);
- translate (beam): 16 sentences of 32 tokens, output forced to 32 tokens, beam 1 .. 16.

The forward times are fitted as a*L + b*L^2: the linear term is the projections and feed-forward
blocks (per token), the quadratic term the attention score matrices (per pair of tokens).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from seq2seq.config import DecodeConfig, ModelConfig
from seq2seq.model import Transformer
from seq2seq.search import search

LENGTHS = [16, 32, 64, 128, 256, 512, 1024]
BEAMS = [1, 2, 4, 8, 16]
MODEL = dict(d_model=256, heads=4, encoder_layers=3, decoder_layers=3, ffn_dim=1024)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def point(kind: str, value: int, threads: int) -> dict:
    """Measure one point in this process."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = ModelConfig(
        **MODEL, dropout=0.0, max_positions=1100, src_vocab_size=8000, tgt_vocab_size=8000
    )
    model = Transformer(cfg).eval()
    baseline = peak_rss_mb()
    generator = torch.Generator().manual_seed(1)
    if kind == "forward":
        src = torch.randint(4, 8000, (8, value), generator=generator)
        tgt = torch.randint(4, 8000, (8, value), generator=generator)
        with torch.no_grad():
            seconds = timed(lambda: model(src, None, tgt), repeats=3)
    else:
        length, batch, beam = (value, 1, 5) if kind == "translate_length" else (32, 16, value)
        src = torch.randint(4, 8000, (batch, length), generator=generator)
        decode = DecodeConfig(beam=beam, max_len_a=1.0, max_len_b=0, min_len=length)
        seconds = timed(lambda: search(model, src, src == 0, decode), repeats=1)
    return {
        "kind": kind,
        "value": value,
        "seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "model_rss_mb": baseline,
    }


def measure(threads: int) -> list[dict]:
    plan = [("forward", n) for n in LENGTHS] + [("translate_length", n) for n in LENGTHS]
    plan += [("translate_beam", b) for b in BEAMS]
    results = []
    for kind, value in plan:
        output = subprocess.run(
            [sys.executable, __file__, "--point", kind, str(value), "--threads", str(threads)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        results.append(json.loads(output))
        print(results[-1], flush=True)
    return results


def fit_linear_quadratic(lengths: list[int], seconds: list[float]) -> tuple[float, float]:
    """Least squares of seconds = a * L + b * L^2."""
    x = torch.tensor([[n, n * n] for n in lengths], dtype=torch.float64)
    y = torch.tensor(seconds, dtype=torch.float64)[:, None]
    a, b = torch.linalg.lstsq(x, y).solution.squeeze(1).tolist()
    return a, b


def draw(results: list[dict], out: Path) -> None:
    from seq2seq.plots import pyplot, save

    plt = pyplot()
    figure, (forward, memory, beams) = plt.subplots(1, 3, figsize=(15, 4.2))
    rows = {
        kind: [r for r in results if r["kind"] == kind]
        for kind in ("forward", "translate_length", "translate_beam")
    }
    lengths = [r["value"] for r in rows["forward"]]
    seconds = [r["seconds"] for r in rows["forward"]]
    a, b = fit_linear_quadratic(lengths, seconds)
    forward.loglog(lengths, seconds, "o-", label="forward, 8 pairs (measured)")
    forward.loglog(lengths, [a * n for n in lengths], "--", label="linear term a*L (fit)")
    forward.loglog(lengths, [b * n * n for n in lengths], ":", label="quadratic term b*L^2 (fit)")
    forward.loglog(
        [r["value"] for r in rows["translate_length"]],
        [r["seconds"] for r in rows["translate_length"]],
        "s-",
        label="translate 1 sentence, beam 5",
    )
    forward.set_xlabel("sentence length L (tokens)")
    forward.set_ylabel("seconds")
    forward.legend(fontsize=7)
    for kind, label in (("forward", "forward"), ("translate_length", "translate, beam 5")):
        memory.plot(
            [r["value"] for r in rows[kind]],
            [r["peak_rss_mb"] - r["model_rss_mb"] for r in rows[kind]],
            "o-",
            label=label,
        )
    memory.set_xlabel("sentence length L (tokens)")
    memory.set_ylabel("peak memory above the model (MB)")
    memory.legend(fontsize=8)
    beams.plot(
        [r["value"] for r in rows["translate_beam"]],
        [r["seconds"] for r in rows["translate_beam"]],
        "o-",
    )
    beams.set_xlabel("beam size")
    beams.set_ylabel("seconds: 16 sentences of 32 tokens")
    for axis in (forward, memory, beams):
        axis.grid(alpha=0.3)
    save(figure, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("scaling.png"))
    parser.add_argument("--json", type=Path, default=Path("scaling.json"))
    parser.add_argument("--point", nargs=2, metavar=("KIND", "VALUE"))
    args = parser.parse_args()
    if args.point:
        print(json.dumps(point(args.point[0], int(args.point[1]), args.threads)))
        return
    results = measure(args.threads)
    lengths = [r["value"] for r in results if r["kind"] == "forward"]
    a, b = fit_linear_quadratic(lengths, [r["seconds"] for r in results if r["kind"] == "forward"])
    summary = {
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "fit_seconds": {
            "a_per_token": a,
            "b_per_token_pair": b,
            "length_where_quadratic_equals_linear": a / b if b > 0 else None,
        },
        "points": results,
    }
    args.json.write_text(json.dumps(summary, indent=2))
    draw(results, args.out)
    print(json.dumps(summary["fit_seconds"]))


if __name__ == "__main__":
    main()
