"""Export a run to a CTranslate2 model directory through CTranslate2's own spec API.

CTranslate2 (a C++ inference engine) describes a Transformer as a tree of specs; we fill one
with our weights, the way its converters do for fairseq or OpenNMT checkpoints:

    ours                                         CTranslate2 spec
    {encoder,decoder}.embedder.embed_tokens      {encoder.embeddings[0], decoder.embeddings}
    sinusoidal / learned position table          *.position_encodings.encodings (from 0)
    *.self_attn.{q,k,v}_proj                     *.self_attention.linear[0] (fused Q|K|V)
    *.self_attn.out_proj                         *.self_attention.linear[1]
    decoder.layers.N.cross_attn.q_proj           decoder.layer[N].attention.linear[0]
    decoder.layers.N.cross_attn.{k,v}_proj       decoder.layer[N].attention.linear[1] (K|V)
    decoder.layers.N.cross_attn.out_proj         decoder.layer[N].attention.linear[2]
    *.{self_attn,cross_attn,ffn}_block.norm      *.{self_attention,attention,ffn}.layer_norm
    *.ffn.fc1, *.ffn.fc2                         *.ffn.linear_0, *.ffn.linear_1
    {encoder,decoder}.final_norm (pre-norm)      {encoder,decoder}.layer_norm
    output_projection                            decoder.projection

Decoding starts from bos and sources end with eos, as ours. Needs `pip install ctranslate2`.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

from seq2seq.config import Activation, NormPlacement, Positions
from seq2seq.constants import BOS_ID, EOS_ID, UNK_ID
from seq2seq.errors import UserError
from seq2seq.export_output import write_export
from seq2seq.layers import DecoderLayer, EncoderLayer, MultiHeadAttention, sinusoidal_table
from seq2seq.model import Embedder, Transformer
from seq2seq.tokenizer import Tokenizer

QUANTIZATIONS = (
    "float32",
    "int8",
    "int8_float32",
    "int8_float16",
    "int8_bfloat16",
    "int16",
    "float16",
    "bfloat16",
)


def array(tensor: torch.Tensor) -> np.ndarray:
    """A float32 copy: CTranslate2 quantizes its arrays in place, and `.numpy()` of a CPU
    float32 tensor shares the tensor's memory (an int8 export would rewrite the model)."""
    return tensor.detach().float().cpu().numpy().copy()


def set_linear(spec, *linears: nn.Linear) -> None:
    """One spec linear from one or more of ours, fused along the output dimension."""
    spec.weight = array(torch.cat([linear.weight for linear in linears]))
    spec.bias = array(torch.cat([linear.bias for linear in linears]))


def set_norm(spec, norm: nn.LayerNorm) -> None:
    spec.gamma, spec.beta = array(norm.weight), array(norm.bias)


def set_attention(spec, attention: MultiHeadAttention, self_attention: bool) -> None:
    if self_attention:
        set_linear(spec.linear[0], attention.q_proj, attention.k_proj, attention.v_proj)
    else:
        set_linear(spec.linear[0], attention.q_proj)
        set_linear(spec.linear[1], attention.k_proj, attention.v_proj)
    set_linear(spec.linear[-1], attention.out_proj)


def set_embedder(spec, embeddings_spec, embedder: Embedder, cfg) -> None:
    embeddings_spec.weight = array(embedder.embed_tokens.weight)
    spec.scale_embeddings = True  # sqrt(d_model), as ours
    if cfg.positions == Positions.sinusoidal:
        spec.position_encodings.encodings = array(sinusoidal_table(cfg.max_positions, cfg.d_model))
    else:
        assert embedder.embed_positions is not None  # learned positions
        spec.position_encodings.encodings = array(
            cast(torch.Tensor, embedder.embed_positions.weight)
        )


def set_encoder_layer(spec, layer: EncoderLayer) -> None:
    set_attention(spec.self_attention, layer.self_attn, self_attention=True)
    set_norm(spec.self_attention.layer_norm, layer.self_attn_block.norm)
    set_linear(spec.ffn.linear_0, layer.ffn.fc1)
    set_linear(spec.ffn.linear_1, layer.ffn.fc2)
    set_norm(spec.ffn.layer_norm, layer.ffn_block.norm)


def set_decoder_layer(spec, layer: DecoderLayer) -> None:
    set_attention(spec.self_attention, layer.self_attn, self_attention=True)
    set_norm(spec.self_attention.layer_norm, layer.self_attn_block.norm)
    set_attention(spec.attention, layer.cross_attn, self_attention=False)
    set_norm(spec.attention.layer_norm, layer.cross_attn_block.norm)
    set_linear(spec.ffn.linear_0, layer.ffn.fc1)
    set_linear(spec.ffn.linear_1, layer.ffn.fc2)
    set_norm(spec.ffn.layer_norm, layer.ffn_block.norm)


def ct2_spec(model: Transformer, tokenizer: Tokenizer):
    """A `TransformerSpec` holding the model's weights and vocabularies."""
    from ctranslate2.specs import common_spec, transformer_spec

    cfg = model.cfg
    if cfg.positions == Positions.none:
        raise UserError("this model cannot be exported to CTranslate2: it has no positions")
    activation = {
        Activation.relu: common_spec.Activation.RELU,
        Activation.gelu: common_spec.Activation.GELU,
    }[cfg.activation]
    pre_norm = cfg.norm == NormPlacement.pre
    spec = transformer_spec.TransformerSpec.from_config(
        (cfg.encoder_layers, cfg.decoder_layers),
        cfg.heads,
        pre_norm=pre_norm,
        activation=activation,
    )
    set_embedder(spec.encoder, spec.encoder.embeddings[0], model.encoder.embedder, cfg)
    set_embedder(spec.decoder, spec.decoder.embeddings, model.decoder.embedder, cfg)
    encoder_layers = cast(list[EncoderLayer], model.encoder.layers)
    for layer_spec, encoder_layer in zip(spec.encoder.layer, encoder_layers, strict=True):
        set_encoder_layer(layer_spec, encoder_layer)
    decoder_layers = cast(list[DecoderLayer], model.decoder.layers)
    for layer_spec, decoder_layer in zip(spec.decoder.layer, decoder_layers, strict=True):
        set_decoder_layer(layer_spec, decoder_layer)
    if pre_norm:
        assert model.encoder.final_norm is not None and model.decoder.final_norm is not None
        set_norm(spec.encoder.layer_norm, model.encoder.final_norm)
        set_norm(spec.decoder.layer_norm, model.decoder.final_norm)
    spec.decoder.projection.weight = array(model.output_projection.weight)
    spec.register_source_vocabulary(pieces(tokenizer, "src"))
    spec.register_target_vocabulary(pieces(tokenizer, "tgt"))
    target = tokenizer.processors["tgt"]
    spec.config.bos_token = target.id_to_piece(BOS_ID)
    spec.config.eos_token = target.id_to_piece(EOS_ID)
    spec.config.unk_token = target.id_to_piece(UNK_ID)
    spec.config.decoder_start_token = target.id_to_piece(BOS_ID)
    spec.config.add_source_eos = True  # callers pass the subword pieces only
    return spec


def pieces(tokenizer: Tokenizer, side: str) -> list[str]:
    processor = tokenizer.processors[side]
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def export_ct2(model: Transformer, tokenizer: Tokenizer, out_dir: Path, quantization: str) -> None:
    """Write a CTranslate2 model directory (model.bin, vocabularies, config.json) and copy the
    SentencePiece models next to it for tokenisation (other files of `out_dir` stay)."""
    try:
        import ctranslate2.converters
    except ImportError:
        raise UserError(
            'exporting to CTranslate2 needs ctranslate2: pip install "seq2seq[ct2]"'
        ) from None
    if quantization not in QUANTIZATIONS:
        raise UserError(
            f"unknown quantization={quantization}; available: {', '.join(QUANTIZATIONS)}"
        )
    spec = ct2_spec(model, tokenizer)

    class SpecConverter(ctranslate2.converters.Converter):
        def _load(self):
            return spec

    def write(directory: Path) -> None:  # a directory that does not exist, as converters want
        SpecConverter().convert(
            str(directory), quantization=None if quantization == "float32" else quantization
        )
        for side, path in tokenizer.files.items():
            (directory / f"{side}.spm.model").write_bytes(path.read_bytes())

    write_export(out_dir, write)
