"""What a time budget buys a peer: Hugging Face MarianMTModel of the recipe's size, trained on
the same Multi30k batches for N minutes with the usual Transformer recipe, then scored on
test2016; and the curve of test BLEU against the budget, ours beside it.

    python bench/peer_budget.py --multi30k <multi30k dir> --workdir <dir> \
        --minutes 5 10 20 40 60 [--ours '<time_budget workdir>/<label>/*min']

Each budget trains in its own process, one after the other; one JSON line per budget is
appended to <workdir>/peer_results.jsonl. The peer's recipe is the conventional one for a
fixed number of steps (fairseq's and Marian's Transformer settings): dropout 0.1, Adam (0.9,
0.98), lr 5e-4, linear warm-up over 1,000 steps then inverse square root, label smoothing 0.1,
gradient clipping 1.0, the same whatever the budget. Its budget counts training steps only;
ours also counts the validations made along the way. Our runs come from bench/time_budget.py
and are read from their run directories by `seq2seq-plot`'s own code. Needs
`pip install ".[hf]"` (transformers).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sacrebleu
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from seq2seq import plots
from seq2seq.arguments import run_list
from seq2seq.batching import pad_rows
from seq2seq.config import Config, DataConfig, ModelConfig, TokenizerConfig
from seq2seq.constants import BOS_ID, EOS_ID, PAD_ID
from seq2seq.data import load_split
from seq2seq.export import marian_config
from seq2seq.prepare import prepare
from seq2seq.sharded_batching import ShardedSplit
from seq2seq.tokenizer import Tokenizer
from seq2seq.training_data import training_split

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "multi30k_en_de.yaml"
WARMUP, LR, DROPOUT = 1000, 5e-4, 0.1
RESULTS = "peer_results.jsonl"


def recipe() -> dict:
    return OmegaConf.to_container(OmegaConf.load(RECIPE))  # type: ignore[return-value]


def prepared_recipe_data(cfg: Config, workdir: Path) -> tuple[ShardedSplit, Tokenizer]:
    """The recipe's training split and joint tokenizer, prepared once into the workdir."""
    directory = workdir / "prepared"
    split = training_split(directory, prepare(cfg, directory), cfg.data)
    return split, Tokenizer.load(directory)


def marian_model(settings: dict, vocab_size: int) -> torch.nn.Module:
    """MarianMTModel of the recipe's size (its own architecture: post-norm)."""
    from transformers import MarianMTModel

    keys = ("d_model", "heads", "ffn_dim", "encoder_layers", "decoder_layers")
    shape = {key: settings["model"][key] for key in keys}
    torch.manual_seed(1)
    cfg = ModelConfig(
        **shape, dropout=DROPOUT, src_vocab_size=vocab_size, tgt_vocab_size=vocab_size
    )
    return MarianMTModel(marian_config(cfg))


def inverse_sqrt(step: int) -> float:
    return min(step / WARMUP, (WARMUP / max(step, 1)) ** 0.5)


def train_for(model: torch.nn.Module, split: ShardedSplit, max_tokens: int, minutes: float) -> int:
    """Steps of the conventional recipe until the budget ends; returns the steps made."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, betas=(0.9, 0.98), eps=1e-9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, inverse_sqrt)
    sampler = split.sampler(max_tokens, seed=1)
    model.train()
    deadline, step = time.monotonic() + 60 * minutes, 0
    while time.monotonic() < deadline:
        for batch in split.batches(sampler):
            logits = model(
                input_ids=batch.src,
                attention_mask=~batch.src_pad_mask,
                decoder_input_ids=batch.tgt_in,
            ).logits
            loss = F.cross_entropy(
                logits.view(-1, logits.shape[-1]),
                batch.tgt_out.view(-1),
                ignore_index=PAD_ID,
                label_smoothing=0.1,
                reduction="sum",
            )
            (loss / batch.tgt_tokens).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if time.monotonic() >= deadline:
                break
    return step


@torch.inference_mode()
def translate(model: Any, tokenizer: Tokenizer, sources: list[str]) -> list[str]:
    """Beam 5 with `generate`, batches of 64 sentences of similar length."""
    model.eval()
    ids = tokenizer.encode(sources, "src")
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: dict[int, list[int]] = {}
    for start in range(0, len(order), 64):
        batch = order[start : start + 64]
        src = pad_rows([ids[i] for i in batch], [], [EOS_ID])
        generated = model.generate(
            input_ids=src,
            attention_mask=(src != PAD_ID).long(),
            num_beams=5,
            early_stopping=True,
            max_new_tokens=int(1.2 * src.shape[1]) + 10,
        )
        for i, row in zip(batch, generated.tolist(), strict=True):
            out[i] = [t for t in row if t not in (PAD_ID, EOS_ID, BOS_ID)]
    return tokenizer.decode([out[i] for i in range(len(ids))], "tgt")


def one_budget(multi30k: Path, workdir: Path, minutes: float, threads: int) -> dict:
    torch.set_num_threads(threads)
    settings = recipe()
    cfg = Config(
        data=DataConfig(root=str(multi30k), cache_dir=str(workdir / "cache")),
        tokenizer=TokenizerConfig(vocab_size=settings["tokenizer"]["vocab_size"]),
    )
    split, tokenizer = prepared_recipe_data(cfg, workdir)
    model = marian_model(settings, tokenizer.vocab_size("tgt"))
    steps = train_for(model, split, settings["train"]["max_tokens"], minutes)
    test = load_split(cfg.data, "test_2016_flickr")
    hypotheses = translate(model, tokenizer, list(test["src"]))
    bleu = sacrebleu.corpus_bleu(hypotheses, [list(test["tgt"])])
    return {"system": "hf_marian", "minutes": minutes, "steps": steps, "test_bleu": bleu.score}


def curve(workdir: Path, ours: list[Path]) -> Path:
    """Our runs (a line per folder) and the peer's budgets in one figure."""
    lines = (workdir / RESULTS).read_text().splitlines()
    peer = sorted((r["minutes"], r["test_bleu"]) for r in map(json.loads, lines))
    series = plots.budget_series(ours)
    series["Hugging Face Marian, conventional recipe"] = peer
    return plots.budget_curve(series, workdir / plots.BUDGET_CURVE, "Multi30k en-de test2016")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--multi30k", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--minutes", type=float, nargs="*", default=[5, 10, 20, 40, 60])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ours", default="", help="our run directories, as seq2seq-plot runs=")
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)  # a child: one budget
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    ours = run_list(args.ours) if args.ours else []  # a mistake shows before hours of training
    if args.one is not None:
        print(json.dumps(one_budget(args.multi30k, args.workdir, args.one, args.threads)))
        return
    for minutes in args.minutes:
        child = [sys.executable, __file__, "--one", str(minutes), "--threads", str(args.threads)]
        paths = ["--multi30k", str(args.multi30k), "--workdir", str(args.workdir)]
        result = subprocess.run(child + paths, stdout=subprocess.PIPE, text=True, check=True)
        row = result.stdout.strip().splitlines()[-1]
        with open(args.workdir / RESULTS, "a") as out:
            out.write(row + "\n")
        print(row, flush=True)
    print(f"wrote {curve(args.workdir, ours)}")


if __name__ == "__main__":
    main()
