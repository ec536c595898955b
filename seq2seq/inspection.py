"""Attention weights of a trained model on one sentence pair, for looking at them.

`attention_maps` runs the model once with teacher forcing on (source, translation) and records,
through forward hooks, what each attention module was given; the weights are then recomputed
with `MultiHeadAttention.attention_weights`. Training and decoding never pay for this.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor

from seq2seq.constants import BOS_ID, EOS_ID
from seq2seq.errors import UserError
from seq2seq.files import make_directory, read_lines
from seq2seq.layers import DecoderLayer, EncoderLayer, MultiHeadAttention
from seq2seq.model import Transformer

if TYPE_CHECKING:
    from seq2seq.translate import Translator


@dataclass
class AttentionMaps:
    """Weights of one sentence pair, each (layers, heads, query_len, key_len)."""

    encoder: Tensor  # source x source, bidirectional
    decoder: Tensor  # target x target, causal: zero above the diagonal
    cross: Tensor  # target x source


@torch.no_grad()
def attention_maps(model: Transformer, source: list[int], target: list[int]) -> AttentionMaps:
    """source: source ids (with eos); target: target ids (with eos). Query row i of the decoder
    maps is the position that predicts target[i] (its input is bos + target[:i])."""
    was_training = model.training
    model.eval()
    recorded: dict[str, list[Tensor]] = {"encoder": [], "decoder": [], "cross": []}
    handles = []
    encoder_layers = cast(list[EncoderLayer], model.encoder.layers)
    decoder_layers = cast(list[DecoderLayer], model.decoder.layers)
    for kind, modules in (
        ("encoder", [layer.self_attn for layer in encoder_layers]),
        ("decoder", [layer.self_attn for layer in decoder_layers]),
        ("cross", [layer.cross_attn for layer in decoder_layers]),
    ):
        for module in modules:
            handles.append(module.register_forward_hook(recorder(recorded[kind]), with_kwargs=True))
    try:
        src = torch.tensor([source])
        tgt_in = torch.tensor([[BOS_ID, *target[:-1]]])
        model(src, None, tgt_in)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return AttentionMaps(**{kind: torch.stack(maps) for kind, maps in recorded.items()})


def recorder(into: list[Tensor]):
    """A forward hook that stores the module's attention weights for the (single) sentence."""

    def hook(module: MultiHeadAttention, args: tuple, kwargs: dict, output: Tensor) -> None:
        queries, keys, _values = args  # projected, as `MultiHeadAttention.forward` takes them
        weights = module.attention_weights(
            queries, keys, kwargs.get("attn_mask"), kwargs.get("causal", False)
        )
        into.append(weights[0].float())  # (heads, q_len, k_len)

    return hook


def chosen_sentences(text: str | None, input_path: str | None, lines: str) -> list[str]:
    """The sentences to show: `text`, or lines `A-B` (1-based) of the file `input_path`."""
    if (text is None) == (input_path is None):
        raise UserError('give exactly one of text="a sentence" or input=<file> [lines=1-3]')
    if text is not None:
        if not text.strip():
            raise UserError("text= is empty; give a sentence to translate")
        return [text]
    first, _, last = lines.partition("-")
    if not first.isdigit() or not (last or first).isdigit() or int(first) < 1:
        raise UserError(f"lines must look like 3 or 1-5 (1-based), got '{lines}'")
    start, stop = int(first), int(last or first)
    assert input_path is not None  # exactly one of text and input_path was given
    chosen = [
        line for number, line in enumerate(read_lines(input_path), 1) if start <= number <= stop
    ]
    if not chosen:
        raise UserError(f"{input_path} has no lines {lines}")
    if not any(line.strip() for line in chosen):
        raise UserError(f"lines {lines} of {input_path} are empty")
    return [line for line in chosen if line.strip()]


def attention_report(
    translator: Translator, sentences: list[str], out: Path, max_tokens: int
) -> Path:
    """Translate each sentence, draw every attention of the pair, and write an HTML page
    showing them all into `out`; returns the page. The maps cover at most `max_tokens` pieces
    of the source and of the translation (the figures grow with the square of the lengths)."""
    from seq2seq.plots import attention_figures, attention_page

    tokenizer = translator.tokenizer
    make_directory(out, "out")
    pages = []
    for number, sentence in enumerate(sentences, 1):
        ids = tokenizer.encode([sentence.strip()], "src")[0]
        source = cut(ids, min(max_tokens, translator.max_source_tokens), "source", number)
        found = translator.search_ids([source])[0][0].tokens  # (its best)
        target = cut(found, max_tokens, "translation", number)
        if len(target) == len(found):
            target.append(EOS_ID)  # the whole translation: its end too
        maps = attention_maps(translator.model, [*source, EOS_ID], target)
        figures = attention_figures(
            maps,
            tokenizer.pieces([*source, EOS_ID], "src"),
            tokenizer.pieces(target, "tgt"),
            out,
            f"sentence{number}",
        )
        translation = tokenizer.decode([found], "tgt")[0]
        pages.append({"source": sentence, "translation": translation, "figures": figures})
    return attention_page(out, pages)


def cut(ids: list[int], limit: int, side: str, number: int) -> list[int]:
    """The first `limit` ids, with a warning on stderr when there are more."""
    if len(ids) > limit:
        print(
            f"warning: sentence {number}: the attention maps show the first {limit} of the "
            f"{len(ids)} pieces of its {side} (max_tokens= sets how many)",
            file=sys.stderr,
        )
    return ids[:limit]
