"""The encoder-decoder Transformer: `encode`, teacher-forced `forward`, cached `decode_step`.

Parameter names are stable (the checkpoint format and exporters rely on them) and listed in
`docs/architecture.md`:

    encoder.embedder.embed_tokens.weight        decoder.embedder.embed_tokens.weight
    {encoder,decoder}.embedder.embed_positions.weight (learned positions only)
    encoder.layers.N.self_attn.{q,k,v,out}_proj.{weight,bias}
    encoder.layers.N.self_attn_block.norm.{weight,bias}
    encoder.layers.N.ffn.{fc1,fc2}.{weight,bias}
    encoder.layers.N.ffn_block.norm.{weight,bias}
    decoder.layers.N.{self_attn,cross_attn}.{q,k,v,out}_proj.{weight,bias}
    decoder.layers.N.{self_attn,cross_attn,ffn}_block.norm.{weight,bias}
    decoder.layers.N.ffn.{fc1,fc2}.{weight,bias}
    {encoder,decoder}.final_norm.{weight,bias} (pre-norm only)
    output_projection.weight
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn

from seq2seq.cache import DecoderCache, LayerCache
from seq2seq.config import ModelConfig, NormPlacement, Positions, TieEmbeddings
from seq2seq.layers import (
    DecoderLayer,
    Dropout,
    EncoderLayer,
    LearnedPositions,
    SinusoidalPositions,
    padding_to_attention_mask,
)


def make_positions(cfg: ModelConfig) -> nn.Module | None:
    if cfg.positions == Positions.sinusoidal:
        return SinusoidalPositions(cfg.max_positions, cfg.d_model)
    if cfg.positions == Positions.learned:
        return LearnedPositions(cfg.max_positions, cfg.d_model)
    return None


class Embedder(nn.Module):
    """Token embedding * sqrt(d_model) + position encoding, then dropout."""

    def __init__(self, embed_tokens: nn.Embedding, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = embed_tokens
        self.embed_positions = make_positions(cfg)
        self.scale = math.sqrt(cfg.d_model)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, tokens: Tensor, offset: int = 0) -> Tensor:
        """tokens: (batch, len) -> (batch, len, d_model); `offset` is the first position."""
        x = self.embed_tokens(tokens) * self.scale
        if self.embed_positions is not None:
            x = x + self.embed_positions(tokens.shape[1], offset)
        return self.dropout(x)


class Encoder(nn.Module):
    """A stack of encoder layers: every source position attends to every non-pad position."""

    def __init__(self, embed_tokens: nn.Embedding, cfg: ModelConfig) -> None:
        super().__init__()
        self.embedder = Embedder(embed_tokens, cfg)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model) if cfg.norm == NormPlacement.pre else None

    def forward(self, src: Tensor, src_attn_mask: Tensor | None) -> Tensor:
        """src: (batch, src_len) ids -> memory (batch, src_len, d_model)."""
        x = self.embedder(src)
        for layer in self.layers:
            x = layer(x, src_attn_mask)
        return x if self.final_norm is None else self.final_norm(x)


class Decoder(nn.Module):
    """A stack of decoder layers; returns hidden states (the output projection is the model's)."""

    def __init__(self, embed_tokens: nn.Embedding, cfg: ModelConfig) -> None:
        super().__init__()
        self.embedder = Embedder(embed_tokens, cfg)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.decoder_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model) if cfg.norm == NormPlacement.pre else None

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor | None,
        src_attn_mask: Tensor | None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        """tgt: (batch, tgt_len) -> (batch, tgt_len, d_model).

        Without a cache, `tgt` is the whole target prefix and `memory` the encoder output. With a
        cache, `tgt` holds only the new positions and cross-attention reads the cached keys/values.
        """
        x = self.embedder(tgt, offset=0 if cache is None else cache.steps)
        for layer in self.layers:
            x = layer(x, memory, src_attn_mask, cache)
        return x if self.final_norm is None else self.final_norm(x)


class Transformer(nn.Module):
    """Encoder-decoder Transformer for translation (Vaswani et al., 2017)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        tgt_embed = nn.Embedding(cfg.tgt_vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        if cfg.tie_embeddings == TieEmbeddings.all:
            src_embed = tgt_embed
        else:
            src_embed = nn.Embedding(cfg.src_vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        self.encoder = Encoder(src_embed, cfg)
        self.decoder = Decoder(tgt_embed, cfg)
        self.output_projection = nn.Linear(cfg.d_model, cfg.tgt_vocab_size, bias=False)
        self.reset_parameters()
        if cfg.tie_embeddings != TieEmbeddings.none:
            self.output_projection.weight = tgt_embed.weight

    def reset_parameters(self) -> None:
        """Xavier-uniform projections, N(0, d_model^-0.5) embeddings with a zero padding row."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=self.cfg.d_model**-0.5)
                with torch.no_grad():
                    module.weight[self.cfg.pad_id].zero_()

    def encode(self, src: Tensor, src_pad_mask: Tensor | None) -> Tensor:
        """src: (batch, src_len) ids; src_pad_mask: (batch, src_len), True at padding.

        Returns the memory (batch, src_len, d_model).
        """
        return self.encoder(src, padding_to_attention_mask(src_pad_mask))

    def forward(
        self, src: Tensor, src_pad_mask: Tensor | None, tgt_in: Tensor, project: bool = True
    ) -> Tensor:
        """Teacher forcing: logits (batch, tgt_len, tgt_vocab) for every target position, or
        with `project=False` the decoder states (batch, tgt_len, d_model) before the output
        projection (the trainer fuses that projection into the loss).

        tgt_in: (batch, tgt_len), bos + target, right-padded. Right padding needs no target mask:
        the causal mask already keeps every real position from seeing the padding after it.
        """
        src_attn_mask = padding_to_attention_mask(src_pad_mask)
        memory = self.encoder(src, src_attn_mask)
        hidden = self.decoder(tgt_in, memory, src_attn_mask)
        return self.output_projection(hidden) if project else hidden

    def init_cache(self, memory: Tensor, src_pad_mask: Tensor | None) -> DecoderCache:
        """Start incremental decoding: cross-attention keys/values computed once per source.
        On CPU the self-attention keys/values are kept in float32 (see `LayerCache`)."""
        self_dtype = torch.float32 if memory.device.type == "cpu" else None
        layers = []
        for layer in cast(list[DecoderLayer], self.decoder.layers):
            keys, values = layer.cross_attn.project_kv(memory)
            layers.append(LayerCache(keys, values, self_dtype=self_dtype))
        return DecoderCache(layers, padding_to_attention_mask(src_pad_mask))

    def decode_step(self, tokens: Tensor, cache: DecoderCache, project: bool = True) -> Tensor:
        """Consume the newest target token of each row, (batch,) ids; return (batch, tgt_vocab)
        logits for the next position, or with `project=False` the decoder state (batch,
        d_model) before the output projection. Appends this position's keys/values to `cache`."""
        hidden = self.decoder(tokens[:, None], None, None, cache)[:, 0]  # (batch, d_model)
        return self.output_projection(hidden) if project else hidden


def count_parameters(model: nn.Module) -> int:
    """Number of distinct trainable parameters (tied matrices are counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
