"""Export a run to a Hugging Face `MarianMTModel` + `MarianTokenizer` directory.

Marian's architecture is ours with the paper's choices: post-norm, sinusoidal positions from 0
(sines in the first half, cosines in the second, as ours), embeddings scaled by sqrt(d_model)
and shared by the encoder, the decoder and the output layer. Parameter names map 1:1:

    ours                                   Marian
    encoder.embedder.embed_tokens          model.shared (= encoder/decoder embed_tokens, lm_head)
    {encoder,decoder}.layers.N.self_attn   model.{encoder,decoder}.layers.N.self_attn
    decoder.layers.N.cross_attn            model.decoder.layers.N.encoder_attn
    *.self_attn_block.norm                 *.self_attn_layer_norm
    *.cross_attn_block.norm                *.encoder_attn_layer_norm
    *.ffn.fc1, *.ffn.fc2                   *.fc1, *.fc2
    *.ffn_block.norm                       *.final_layer_norm

The exported model starts decoding from bos (id 2), as ours does, not from pad as OPUS-MT models.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from seq2seq.config import Activation, ModelConfig, NormPlacement, Positions, TieEmbeddings
from seq2seq.constants import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from seq2seq.errors import UserError
from seq2seq.export_output import write_export
from seq2seq.layers import sinusoidal_table
from seq2seq.model import Transformer
from seq2seq.tokenizer import Tokenizer

RENAMES = [
    (r"\.cross_attn_block\.norm\.", ".encoder_attn_layer_norm."),
    (r"\.self_attn_block\.norm\.", ".self_attn_layer_norm."),
    (r"\.ffn_block\.norm\.", ".final_layer_norm."),
    (r"\.ffn\.(fc[12])\.", r".\1."),
    (r"\.cross_attn\.", ".encoder_attn."),
]


def check_marian_compatible(cfg: ModelConfig) -> None:
    """A clear error for configurations Marian cannot represent."""
    problems = []
    if cfg.norm != NormPlacement.post:
        problems.append("model.norm must be post")
    if cfg.positions != Positions.sinusoidal:
        problems.append("model.positions must be sinusoidal")
    if cfg.tie_embeddings != TieEmbeddings.all:
        problems.append("model.tie_embeddings must be all")
    if cfg.activation not in (Activation.relu, Activation.gelu):
        problems.append("model.activation must be relu or gelu")
    if problems:
        raise UserError(f"this model cannot be exported to Marian: {'; '.join(problems)}")


def marian_name(name: str) -> str:
    for pattern, replacement in RENAMES:
        name = re.sub(pattern, replacement, name)
    return f"model.{name}"


def marian_state_dict(model: Transformer) -> dict[str, Tensor]:
    """Our weights under Marian's parameter names."""
    cfg = model.cfg
    embeddings = model.decoder.embedder.embed_tokens.weight.detach()
    positions = sinusoidal_table(cfg.max_positions, cfg.d_model)
    state = {
        "model.shared.weight": embeddings,
        "model.encoder.embed_tokens.weight": embeddings,
        "model.decoder.embed_tokens.weight": embeddings,
        "lm_head.weight": embeddings,
        "model.encoder.embed_positions.weight": positions,
        "model.decoder.embed_positions.weight": positions,
        "final_logits_bias": torch.zeros(1, cfg.tgt_vocab_size),
    }
    for name, tensor in model.state_dict().items():
        if ".layers." in name:
            state[marian_name(name)] = tensor.detach()
    return state


def marian_config(cfg: ModelConfig, decode_max_length: int = 256):
    from transformers import MarianConfig

    return MarianConfig(
        vocab_size=cfg.tgt_vocab_size,
        decoder_vocab_size=cfg.tgt_vocab_size,
        d_model=cfg.d_model,
        encoder_layers=cfg.encoder_layers,
        decoder_layers=cfg.decoder_layers,
        encoder_attention_heads=cfg.heads,
        decoder_attention_heads=cfg.heads,
        encoder_ffn_dim=cfg.ffn_dim,
        decoder_ffn_dim=cfg.ffn_dim,
        activation_function=cfg.activation.value,
        max_position_embeddings=cfg.max_positions,
        dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout,
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=BOS_ID,
        decoder_start_token_id=BOS_ID,
        forced_eos_token_id=EOS_ID,
        max_length=min(decode_max_length, cfg.max_positions - 1),  # type: ignore[call-arg]
    )


def to_marian(model: Transformer):
    """A `MarianMTModel` with our weights (in eval mode)."""
    try:
        from transformers import MarianMTModel
    except ImportError:
        raise UserError(
            "exporting to Hugging Face needs transformers: pip install transformers"
        ) from None
    check_marian_compatible(model.cfg)
    marian = MarianMTModel(marian_config(model.cfg))
    missing, unexpected = marian.load_state_dict(marian_state_dict(model), strict=False)
    if unexpected or [k for k in missing if "embed_positions" not in k]:
        raise UserError(
            f"weight mapping to Marian failed: missing {missing}, unexpected {unexpected}"
        )
    return marian.eval()


def write_marian_tokenizer(tokenizer: Tokenizer, out_dir: Path) -> None:
    from transformers import MarianTokenizer

    processor = tokenizer.processors["src"]
    vocab = {processor.id_to_piece(i): i for i in range(processor.get_piece_size())}
    with tempfile.TemporaryDirectory() as scratch:
        scratch_dir = Path(scratch)
        shutil.copyfile(tokenizer.files["src"], scratch_dir / "source.spm")
        shutil.copyfile(tokenizer.files["tgt"], scratch_dir / "target.spm")
        (scratch_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        hf_tokenizer = MarianTokenizer(
            source_spm=str(scratch_dir / "source.spm"),
            target_spm=str(scratch_dir / "target.spm"),
            vocab=str(scratch_dir / "vocab.json"),
            unk_token=processor.id_to_piece(UNK_ID),
            eos_token=processor.id_to_piece(EOS_ID),
            pad_token=processor.id_to_piece(PAD_ID),
        )
        hf_tokenizer.save_pretrained(str(out_dir))


def export_hf(model: Transformer, tokenizer: Tokenizer, out_dir: Path) -> None:
    """Write `save_pretrained` directories of the model and its tokenizer into `out_dir`
    (files of `out_dir` that the export does not write stay)."""
    if not tokenizer.joint:
        raise UserError(
            "this model cannot be exported to Marian: it needs a joint tokenizer "
            "(tokenizer.joint=true)"
        )
    marian = to_marian(model)

    def write(directory: Path) -> None:
        marian.save_pretrained(str(directory))
        write_marian_tokenizer(tokenizer, directory)

    write_export(out_dir, write)
