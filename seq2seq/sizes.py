"""The size of a configured model, computed from its config without building it."""

from __future__ import annotations

import os
from pathlib import Path

from seq2seq.config import ModelConfig, NormPlacement, Positions, TieEmbeddings
from seq2seq.errors import UserError

BYTES_PER_PARAMETER = 4  # float32 weights, as the model is built
MEMINFO = Path("/proc/meminfo")


def parameter_count(cfg: ModelConfig) -> int:
    """The number of distinct trainable parameters of `Transformer(cfg)` (tied matrices once)."""
    d, ffn = cfg.d_model, cfg.ffn_dim
    attention = 4 * (d * d + d)  # query, key, value and output projections with biases
    feed_forward = 2 * d * ffn + ffn + d
    norm = 2 * d
    encoder_layer = attention + feed_forward + 2 * norm
    decoder_layer = 2 * attention + feed_forward + 3 * norm
    final_norms = 2 * norm if cfg.norm == NormPlacement.pre else 0
    positions = 2 * cfg.max_positions * d if cfg.positions == Positions.learned else 0
    embeddings = cfg.tgt_vocab_size * d
    if cfg.tie_embeddings != TieEmbeddings.all:
        embeddings += cfg.src_vocab_size * d
    if cfg.tie_embeddings == TieEmbeddings.none:
        embeddings += cfg.tgt_vocab_size * d  # the output projection
    return (
        cfg.encoder_layers * encoder_layer
        + cfg.decoder_layers * decoder_layer
        + final_norms
        + positions
        + embeddings
    )


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation: MemAvailable of /proc/meminfo, else the
    physical memory; None when neither can be read."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def check_fits_in_memory(cfg: ModelConfig) -> None:
    """Raise UserError when the weights of `cfg` alone need more memory than is available
    (building the model would be killed for lack of memory); when unknown, do not refuse."""
    count = parameter_count(cfg)
    needed, available = count * BYTES_PER_PARAMETER, available_memory()
    if available is not None and needed > available:
        raise UserError(
            f"this model has {count:,} parameters: its weights alone need {gigabytes(needed)} "
            f"of memory, more than the {gigabytes(available)} available; choose a smaller "
            "model.d_model, model.ffn_dim, model.*_layers or vocabulary"
        )


def gigabytes(size: int) -> str:
    return f"{size / 1e9:,.1f} GB"


def describe(m: ModelConfig) -> str:
    """Two lines: the architecture, and the parameters of the model built from it (a model
    too large for the memory is refused before it is built)."""
    from seq2seq.model import Transformer, count_parameters

    check_fits_in_memory(m)
    model = Transformer(m)
    return (
        f"Transformer {m.encoder_layers}+{m.decoder_layers} layers, d_model {m.d_model}, "
        f"{m.heads} heads, ffn {m.ffn_dim}, {m.norm.value}-norm, {m.positions.value} positions, "
        f"vocab {m.src_vocab_size}/{m.tgt_vocab_size}, tied embeddings: {m.tie_embeddings.value}\n"
        f"parameters: {count_parameters(model):,}"
    )
