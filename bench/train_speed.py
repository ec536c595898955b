"""Training throughput: seq2seq's trainer against Hugging Face MarianMTModel of the same size.

Same Multi30k batches (4096-token budget), same thread count, same optimizer family, the two
systems alternating in one run so machine noise hits both. Reports source+target tokens/s
(non-pad) per system and precision, and the ratio. Needs `pip install transformers` (a benchmark
dependency only).

    python bench/train_speed.py --multi30k <multi30k dir> --workdir /tmp/s2s-speed
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from seq2seq.config import (
    Config,
    DataConfig,
    ModelConfig,
    OptimConfig,
    Precision,
    TokenizerConfig,
    TrainConfig,
)
from seq2seq.constants import PAD_ID
from seq2seq.distributed import Distributed
from seq2seq.export import marian_config
from seq2seq.model import Transformer, count_parameters
from seq2seq.precision import autocast
from seq2seq.prepare import prepare
from seq2seq.tokenizer import Tokenizer
from seq2seq.trainer import Trainer
from seq2seq.training_data import TrainingData, training_split

SMALL = dict(
    d_model=256,
    heads=4,
    encoder_layers=3,
    decoder_layers=3,
    ffn_dim=1024,
    dropout=0.1,
    max_positions=512,
)


def multi30k_batches(
    multi30k: Path, workdir: Path, count: int
) -> tuple[TrainingData, list, Tokenizer]:
    """The first `count` training batches of Multi30k (8k joint pieces), prepared once."""
    config = Config(
        data=DataConfig(root=str(multi30k), cache_dir=str(workdir / "cache")),
        tokenizer=TokenizerConfig(vocab_size=8000),
    )
    directory = workdir / "prepared"
    split = training_split(directory, prepare(config, directory), config.data)
    batches = [
        b for _, b in zip(range(count), split.batches(split.sampler(4096, seed=1)), strict=False)
    ]
    return TrainingData(split, split, []), batches, Tokenizer.load(directory)  # no validation


def our_trainer(data: TrainingData, tokenizer: Tokenizer, precision: str) -> Trainer:
    """Our trainer of the `SMALL` model; its run directory (metrics only) is a new temporary one."""
    cfg = Config(
        model=ModelConfig(**SMALL, src_vocab_size=8000, tgt_vocab_size=8000),
        optim=OptimConfig(lr=5e-4, warmup_steps=1000),
        train=TrainConfig(precision=Precision(precision), max_tokens=4096),
    )
    torch.manual_seed(0)
    model = Transformer(cfg.model)
    run_dir = Path(tempfile.mkdtemp(prefix="s2s-train-speed-"))
    return Trainer(cfg, run_dir, model, tokenizer, data, torch.device("cpu"), Distributed())


def hf_model():
    """MarianMTModel of the same size, built from the exporter's configuration mapping."""
    from transformers import MarianMTModel

    torch.manual_seed(0)
    return MarianMTModel(
        marian_config(ModelConfig(**SMALL, src_vocab_size=8000, tgt_vocab_size=8000))
    )


def hf_step(model, optimizer, batch, precision: str) -> None:
    model.train()
    with autocast(Precision(precision), torch.device("cpu")):
        logits = model(
            input_ids=batch.src, attention_mask=~batch.src_pad_mask, decoder_input_ids=batch.tgt_in
        ).logits
    loss = F.cross_entropy(
        logits.float().view(-1, logits.shape[-1]),
        batch.tgt_out.view(-1),
        ignore_index=PAD_ID,
        label_smoothing=0.1,
        reduction="sum",
    )
    (loss / batch.tgt_tokens).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def tokens_per_second(step, batches) -> float:
    start, tokens = time.perf_counter(), 0
    for batch in batches:
        step(batch)
        tokens += batch.src_tokens + batch.tgt_tokens
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--multi30k", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12, help="steps per system per round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    data, batches, tokenizer = multi30k_batches(args.multi30k, args.workdir, args.steps + 2)
    results: dict = {
        "threads": args.threads,
        "machine": platform.machine(),
        "torch": torch.__version__,
        "batches": len(batches),
        "max_tokens": 4096,
    }
    for precision in ("fp32", "bf16"):
        ours = our_trainer(data, tokenizer, precision)
        hf = hf_model()
        hf_optimizer = torch.optim.AdamW(hf.parameters(), lr=5e-4, betas=(0.9, 0.98))
        results["parameters"] = {
            "seq2seq": count_parameters(ours.model),
            "hf_marian": sum(p.numel() for p in hf.parameters()),
        }
        systems = {
            "seq2seq": lambda b, t=ours: t.train_step([b]),
            "hf_marian": lambda b, m=hf, o=hf_optimizer, p=precision: hf_step(m, o, b, p),
        }
        for step in systems.values():  # warm-up
            for batch in batches[:2]:
                step(batch)
        speeds: dict[str, list[float]] = {name: [] for name in systems}
        for _ in range(args.rounds):
            for name, step in systems.items():
                speeds[name].append(tokens_per_second(step, batches[2:]))
        medians = {name: round(statistics.median(v)) for name, v in speeds.items()}
        results[precision] = {
            "tokens_per_s": medians,
            "all_rounds": speeds,
            "ratio": round(medians["seq2seq"] / medians["hf_marian"], 2),
        }
        print(precision, results[precision], flush=True)
    # the headline: our fast path (bf16) against HF's default (fp32)
    results["seq2seq_bf16_vs_hf_fp32"] = round(
        results["bf16"]["tokens_per_s"]["seq2seq"] / results["fp32"]["tokens_per_s"]["hf_marian"], 2
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
