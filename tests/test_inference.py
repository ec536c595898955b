"""The inference copy of a model: low-precision weights converted and packed once, computing
what autocast computes on the float32 model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import random_tokens, tiny_model
from torch import nn

from seq2seq.config import Activation, DecodeConfig, Precision
from seq2seq.fast import inference
from seq2seq.fast.inference import LowPrecisionLinear, inference_copy, packing_works
from seq2seq.translate import Translator

ACTIVATIONS = {None: lambda y: y, Activation.relu: F.relu, Activation.gelu: F.gelu}


@pytest.mark.parametrize("pack", [True, False])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("shape", [(1, 16), (7, 16), (3, 5, 16)])
def test_a_low_precision_linear_computes_what_autocast_computes(pack, activation, shape):
    if pack and not packing_works(torch.bfloat16):
        pytest.skip("this PyTorch build has no oneDNN bf16 linear")
    torch.manual_seed(0)
    layer, x = nn.Linear(16, 24), torch.randn(*shape) * 3  # float32 input, as under autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = ACTIVATIONS[activation](layer(x))
    found = LowPrecisionLinear(layer, torch.bfloat16, pack, activation)(x)
    assert found.dtype == torch.bfloat16
    assert torch.equal(found, expected)


def test_the_inference_copy_converts_every_linear_layer_and_leaves_the_model_alone():
    model = tiny_model()
    before = {name: p.clone() for name, p in model.state_dict().items()}
    copy = inference_copy(model, torch.bfloat16)
    assert not [m for m in copy.modules() if type(m) is nn.Linear]
    linears = [m for m in copy.modules() if isinstance(m, LowPrecisionLinear)]
    # tiny: 2 encoder and 2 decoder layers, the output layer, a fused q/k/v per self-attention
    assert len(linears) == 2 * 6 + 2 * 10 + 1 + 4
    assert {m.dtype for m in linears} == {torch.bfloat16}
    assert all(torch.equal(p, before[name]) for name, p in model.state_dict().items())
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_without_packing_the_inference_copy_still_decodes_as_autocast_does(monkeypatch):
    """The path of devices without oneDNN packing (CUDA, other builds)."""
    monkeypatch.setattr(inference, "packing_works", lambda dtype: False)
    model, cfg = tiny_model(), DecodeConfig(beam=3)
    sources = [random_tokens(1, n, seed=n)[0].tolist() for n in (3, 5, 8)]
    translator = Translator(model, None, cfg, "cpu", Precision.bf16)
    assert not any(m.pack for m in translator.model.modules() if isinstance(m, LowPrecisionLinear))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = Translator(model, None, cfg, "cpu").search_ids(sources)
    found = translator.search_ids(sources)
    assert [[(h.tokens, h.score) for h in n] for n in found] == [
        [(h.tokens, h.score) for h in n] for n in reference
    ]


def test_on_cpu_the_self_attention_cache_is_float32_under_autocast():
    model = tiny_model()
    src = random_tokens(2, 6, seed=1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        cache = model.init_cache(model.encode(src, None), None)
        model.decode_step(torch.tensor([1, 1]), cache)
    assert cache.layers[0].self_keys.dtype == torch.float32  # float32 attention (LayerCache)
    assert cache.layers[0].cross_keys.dtype == torch.bfloat16  # as computed


def test_the_fused_query_key_value_projection_computes_the_three_projections():
    model = tiny_model()
    attention = model.decoder.layers[0].self_attn
    fused = inference_copy(model, torch.bfloat16).decoder.layers[0].self_attn
    assert fused.qkv_proj.out_features == 3 * 32
    x = torch.randn(3, 5, 32) * 2
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = attention.project_qkv(x)  # three products (training's path)
        found = fused.project_qkv(x)
    assert all(torch.equal(f, e) for f, e in zip(found, expected, strict=True))
