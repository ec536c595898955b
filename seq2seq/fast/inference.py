"""The model a translator decodes with in bf16/fp16: a copy of the trained model whose weights
are prepared once for inference, so that no decoding step pays for it again.

- The linear layers hold `dtype` weights and cast their inputs to `dtype`; everything else
  stays float32. Without autocast this computes exactly what autocast computes on the float32
  model (tested), without autocast's casting of every weight at every call.
- On CPU the `dtype` weights are also packed once into oneDNN's blocked layout, which
  PyTorch's bf16 `F.linear` would redo at every call. The results are bit-identical (tested);
  a ReLU is fused into the feed-forward's first product.
- Self-attention computes its queries, keys and values in one stacked product (`qkv_proj`).
- The output layer keeps its float32 weight next to the `dtype` copy (`TwoPrecisionLinear`):
  the search re-scores its top candidates with it (`search.NextToken.top`).

A float32 translator decodes with the model itself: float32 is the reference.
"""

from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seq2seq.config import Activation
from seq2seq.layers import ACTIVATIONS, FeedForward, MultiHeadAttention
from seq2seq.model import Transformer


def inference_copy(model: Transformer, dtype: torch.dtype) -> Transformer:
    """A copy of `model` (eval mode, same device) whose linear layers compute in `dtype`."""
    prepared = copy.deepcopy(model).eval()
    pack = model.output_projection.weight.device.type == "cpu" and packing_works(dtype)
    for ffn in [m for m in prepared.modules() if isinstance(m, FeedForward)]:
        ffn.fc1 = LowPrecisionLinear(  # type: ignore[assignment]  # a drop-in Linear
            ffn.fc1, dtype, pack, prepared.cfg.activation
        )
        ffn.activation = nn.Identity()  # now part of fc1
    for layer in [*prepared.encoder.layers, *prepared.decoder.layers]:
        layer.self_attn.qkv_proj = LowPrecisionLinear(stacked_qkv(layer.self_attn), dtype, pack)
    for parent in list(prepared.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Linear and child is not prepared.output_projection:
                setattr(parent, name, LowPrecisionLinear(child, dtype, pack))
    prepared.output_projection = TwoPrecisionLinear(  # type: ignore[assignment]  # a drop-in Linear
        prepared.output_projection, dtype, pack
    )
    return prepared


def stacked_qkv(attention: MultiHeadAttention) -> nn.Linear:
    """One linear layer computing the queries, keys and values side by side."""
    parts = [attention.q_proj, attention.k_proj, attention.v_proj]
    d_model = parts[0].in_features
    stacked = nn.Linear(d_model, 3 * d_model, device=parts[0].weight.device)
    with torch.no_grad():
        stacked.weight.copy_(torch.cat([p.weight for p in parts]))
        stacked.bias.copy_(torch.cat([p.bias for p in parts]))
    return stacked


class LowPrecisionLinear(nn.Module):
    """y = act(x W^T + b) computed in `dtype` from weights converted (and on CPU packed) once.

    Inputs in another dtype (the float32 activations) are cast first, as autocast casts them
    for `F.linear`. Not for training: the weights are constants.
    """

    def __init__(
        self,
        layer: nn.Linear,
        dtype: torch.dtype,
        pack: bool,
        activation: Activation | None = None,
    ) -> None:
        super().__init__()
        self.dtype, self.pack, self.activation = dtype, pack, activation
        weight = layer.weight.detach().to(dtype)  # (out_features, in_features)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        # oneDNN's own layout: an opaque tensor (no views, no deepcopy), the original kept by
        # the float32 model
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, 1) if pack else weight
        self.bias = None if layer.bias is None else layer.bias.detach().to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(self.dtype)
        if self.pack and self.activation == Activation.relu:  # fused: commutes with rounding
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "relu", [None], "")
        if self.pack:  # GELU is not fused: oneDNN applies it before the rounding to `dtype`
            y = torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        else:
            y = F.linear(x, self.weight, self.bias)
        return y if self.activation is None else ACTIVATIONS[self.activation](y)

    def dense_weight(self) -> Tensor:
        """The (out_features, in_features) `dtype` weight, unpacked."""
        return self.weight.to_dense() if self.pack else self.weight

    def extra_repr(self) -> str:
        activation = self.activation.value if self.activation else "none"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"dtype={self.dtype}, packed={self.pack}, activation={activation}"
        )


@functools.cache
def packing_works(dtype: torch.dtype) -> bool:
    """Whether this PyTorch build packs `dtype` linear layers for oneDNN: a private operator,
    so it is checked on a tiny product against `F.linear` rather than trusted."""
    try:
        layer = nn.Linear(8, 4)
        x = torch.randn(3, 8)
        packed = LowPrecisionLinear(layer, dtype, pack=True)(x)
        plain = LowPrecisionLinear(layer, dtype, pack=False)(x)
        return torch.equal(packed, plain)
    except (AttributeError, RuntimeError):
        return False


class TwoPrecisionLinear(nn.Module):
    """The bias-free output layer computing in `dtype` (`low`); `weight` stays the float32
    original, shared with the tied embeddings."""

    def __init__(self, layer: nn.Linear, dtype: torch.dtype, pack: bool) -> None:
        super().__init__()
        self.weight = layer.weight
        self.low = LowPrecisionLinear(layer, dtype, pack)

    def forward(self, x: Tensor) -> Tensor:
        return self.low(x)
