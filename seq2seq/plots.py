"""Figures drawn by the toolkit: attention heatmaps (with an HTML page), training curves, and the
concept figures of the docs (positional encodings, learning-rate schedules, label smoothing).

matplotlib is optional (`pip install "seq2seq[plot]"`); it is imported only when drawing.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import torch
from torch import Tensor

from seq2seq import checkpoint, constants
from seq2seq.config import OptimConfig, Schedule, load_saved_config
from seq2seq.errors import UserError
from seq2seq.inspection import AttentionMaps
from seq2seq.layers import sinusoidal_table
from seq2seq.optim import learning_rate


def pyplot():
    """matplotlib.pyplot on a file-only backend, or a one-line error saying how to get it."""
    try:
        import matplotlib
    except ImportError:
        raise UserError('drawing needs matplotlib: pip install "seq2seq[plot]"') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------- attention


def heatmaps(
    maps: Tensor, rows: list[str], columns: list[str], titles: list[str], path: Path, grid: int
) -> None:
    """One heatmap per map in `maps` (n, query_len, key_len), `grid` panels per row."""
    plt = pyplot()
    count = maps.shape[0]
    ncols = min(grid, count)
    nrows = -(-count // ncols)
    cell = 0.28
    width = max(3.0, cell * len(columns) + 1.5)
    height = max(2.5, cell * len(rows) + 1.2)
    figure, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False
    )
    for index, axis in enumerate(axes.flat):
        if index >= count:
            axis.axis("off")
            continue
        axis.imshow(maps[index].numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        axis.set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
        axis.set_yticks(range(len(rows)), rows, fontsize=7)
        axis.set_title(titles[index], fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def attention_figures(
    maps: AttentionMaps, source: list[str], target: list[str], out_dir: Path, prefix: str
) -> dict[str, str]:
    """PNG files for one sentence pair; returns {caption: file name}."""
    layers = maps.cross.shape[0]
    heads = maps.cross.shape[1]
    layer_titles = [f"layer {i + 1} (heads averaged)" for i in range(layers)]
    head_titles = [f"layer {i + 1} head {h + 1}" for i in range(layers) for h in range(heads)]
    decoder_inputs = ["<s>", *target[:-1]]  # query i reads these positions; it predicts target[i]
    figures = {
        "cross-attention: target (rows) x source (columns)": (
            maps.cross.mean(1),
            target,
            source,
            layer_titles,
            layers,
        ),
        "cross-attention, every head": (
            maps.cross.flatten(0, 1),
            target,
            source,
            head_titles,
            heads,
        ),
        "encoder self-attention: source x source (bidirectional)": (
            maps.encoder.mean(1),
            source,
            source,
            layer_titles,
            layers,
        ),
        "decoder self-attention: target x target (causal)": (
            maps.decoder.mean(1),
            target,
            decoder_inputs,
            layer_titles,
            layers,
        ),
    }
    files = {}
    for (caption, (tensor, rows, columns, titles, grid)), name in zip(
        figures.items(), ("cross", "cross_heads", "encoder", "decoder"), strict=True
    ):
        file = f"{prefix}_{name}.png"
        heatmaps(tensor, rows, columns, titles, out_dir / file, grid)
        files[caption] = file
    return files


def attention_page(out_dir: Path, sentences: list[dict]) -> Path:
    """index.html: each sentence, its translation and its figures."""
    parts = [
        "<!doctype html><meta charset='utf-8'><title>seq2seq attention</title>",
        "<style>body{font-family:sans-serif;max-width:1400px;margin:auto}"
        "img{max-width:100%;border:1px solid #ddd}</style>",
        "<h1>Attention</h1><p>Rows are queries, columns keys; each row sums to 1. "
        "Decoder row i predicts target token i from the tokens before it.</p>",
    ]
    for number, sentence in enumerate(sentences, 1):
        parts.append(f"<h2>Sentence {number}</h2>")
        parts.append(f"<p><b>Source:</b> {html.escape(sentence['source'])}<br>")
        parts.append(f"<b>Translation:</b> {html.escape(sentence['translation'])}</p>")
        for caption, file in sentence["figures"].items():
            parts.append(f"<h3>{html.escape(caption)}</h3><img src='{html.escape(file)}'>")
    path = out_dir / "index.html"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- training curves


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / constants.METRICS
    if not path.is_file():
        raise UserError(f"{path} not found: is {run_dir} a seq2seq run directory?")
    return checkpoint.read_metrics(path)


def training_curves(run_dir: Path, out: Path | None = None) -> Path:
    """One PNG (default: the run's training_curves.png), four panels against the step: losses,
    validation BLEU, learning rate, tokens/s."""
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    out = out or run_dir / constants.TRAINING_CURVES
    records = read_metrics(run_dir)
    train = [r for r in records if r["kind"] == "train"]
    valid = [r for r in records if r["kind"] == "valid"]
    if not train:
        raise UserError(f"{run_dir / constants.METRICS} has no training records yet")
    plt = pyplot()
    figure, axes = plt.subplots(2, 2, figsize=(11, 7))
    loss, bleu, lr, speed = axes.flat
    steps = [r["step"] for r in train]
    loss.plot(steps, [r["loss"] for r in train], label="train loss (label-smoothed)", lw=0.8)
    loss.plot(steps, [r["nll"] for r in train], label="train nll", lw=0.8)
    if valid:
        loss.plot(
            [r["step"] for r in valid], [r["valid_nll"] for r in valid], "o-", label="valid nll"
        )
    loss.set_ylabel("nats per token")
    loss.legend()
    scored = [r for r in valid if "bleu" in r]
    bleu.plot([r["step"] for r in scored], [r["bleu"] for r in scored], "o-", color="tab:blue")
    bleu.set_ylabel("validation BLEU")
    lr.plot(steps, [r["lr"] for r in train], color="tab:green")
    lr.set_ylabel("learning rate")
    speed.plot(steps, [r["tokens_per_s"] for r in train], color="tab:gray", lw=0.8)
    speed.set_ylabel("source + target tokens / s")
    for axis in axes.flat:
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    figure.suptitle(str(run_dir))
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


# --------------------------------------------------------------------------- time budgets

BUDGET_CURVE = "budget_curve.png"  # seq2seq-plot runs=...'s default output
BudgetPoint = tuple[float, float]  # (minutes of training, test BLEU)


def budget_point(run_dir: Path) -> BudgetPoint:
    """A finished run's training budget (train.max_minutes, or else the minutes it trained)
    and the BLEU that its results.json holds for the run's test set (data.test)."""
    results_path = run_dir / constants.RESULTS
    if not results_path.is_file():
        raise UserError(
            f"{results_path} not found: {run_dir} has no test score (a run scores data.test "
            "when training ends, with train.test_at_end=true)"
        )
    config = load_saved_config(run_dir / constants.CONFIG)
    test = checkpoint.read_json_object(results_path).get(config.data.test)
    score = test.get("bleu", {}).get("score") if isinstance(test, dict) else None
    if not isinstance(score, int | float):
        raise UserError(f"{results_path} has no BLEU for the run's test set {config.data.test}")
    minutes = float(config.train.max_minutes)
    if not minutes:
        minutes = max((r.get("elapsed_s", 0.0) for r in read_metrics(run_dir)), default=0.0) / 60
    if not minutes:
        raise UserError(f"{run_dir}: neither train.max_minutes nor a training time is recorded")
    return minutes, float(score)


def budget_series(run_dirs: list[Path]) -> dict[str, list[BudgetPoint]]:
    """Runs grouped into series by the folder that holds them, named by the folder's name
    (or its path, where two folders share a name)."""
    folders: dict[Path, list[BudgetPoint]] = {}
    for run_dir in run_dirs:
        folder = Path(os.path.abspath(run_dir)).parent
        folders.setdefault(folder, []).append(budget_point(run_dir))
    names = [folder.name for folder in folders]
    return {
        (folder.name if names.count(folder.name) == 1 else str(folder)): sorted(points)
        for folder, points in folders.items()
    }


def budget_curve(series: dict[str, list[BudgetPoint]], out: Path, title: str = "") -> Path:
    """Test BLEU against the training budget, one line per series."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, points in series.items():
        minutes, bleu = zip(*sorted(points), strict=True)
        axis.plot(minutes, bleu, "o-", label=name)
        for x, y in zip(minutes, bleu, strict=True):
            axis.annotate(
                f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center"
            )
    axis.set_xlabel("training budget (minutes)")
    axis.set_ylabel("test BLEU")
    axis.grid(alpha=0.3)
    axis.legend()
    axis.set_title(title or "test BLEU against the training budget")
    figure.tight_layout()
    return save(figure, out)


# --------------------------------------------------------------------------- concept figures


def positions_figure(out: Path, d_model: int = 128, positions: int = 100) -> Path:
    """The sinusoidal table as an image, and a few of its dimensions as curves."""
    plt = pyplot()
    table = sinusoidal_table(positions, d_model)
    figure, (image, curves) = plt.subplots(1, 2, figsize=(11, 3.8))
    shown = image.imshow(table.t().numpy(), aspect="auto", cmap="RdBu", vmin=-1, vmax=1)
    image.set_xlabel("position")
    image.set_ylabel("dimension (sines, then cosines)")
    figure.colorbar(shown, ax=image)
    for dimension in (0, 4, 16, d_model // 2):
        curves.plot(table[:, dimension].numpy(), label=f"dimension {dimension}")
    curves.set_xlabel("position")
    curves.legend(fontsize=8)
    figure.suptitle(f"Sinusoidal positional encodings, d_model={d_model}")
    return save(figure, out)


def schedule_figure(out: Path, d_model: int = 512, steps: int = 20000) -> Path:
    """Learning rate against step for the schedules in `optim.schedule`."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 3.8))
    choices = {
        "inverse_sqrt (lr 5e-4, warm-up 4000)": OptimConfig(lr=5e-4, warmup_steps=4000),
        "noam (factor 1, warm-up 4000, d_model 512)": OptimConfig(
            lr=1.0, warmup_steps=4000, schedule=Schedule.noam
        ),
        "cosine (lr 5e-4, warm-up 1000)": OptimConfig(
            lr=5e-4, warmup_steps=1000, schedule=Schedule.cosine
        ),
    }
    grid = list(range(1, steps + 1, 50))
    for label, cfg in choices.items():
        axis.plot(grid, [learning_rate(s, cfg, d_model, steps) for s in grid], label=label)
    axis.set_xlabel("step")
    axis.set_ylabel("learning rate")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return save(figure, out)


def label_smoothing_figure(out: Path, vocab: int = 12, target: int = 3, eps: float = 0.1) -> Path:
    """The training target q = (1 - eps) one_hot(y) + eps / V next to the one-hot target."""
    plt = pyplot()
    one_hot = torch.zeros(vocab)
    one_hot[target] = 1.0
    smoothed = (1 - eps) * one_hot + eps / vocab
    figure, axes = plt.subplots(1, 2, figsize=(9, 3), sharey=True)
    for axis, values, title in (
        (axes[0], one_hot, "one-hot target"),
        (axes[1], smoothed, f"label smoothing, eps={eps}"),
    ):
        axis.bar(range(vocab), values.numpy())
        axis.set_title(title)
        axis.set_xlabel("vocabulary entry")
    axes[0].set_ylabel("target probability")
    return save(figure, out)


def save(figure, out: Path) -> Path:
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    pyplot().close(figure)
    return out
