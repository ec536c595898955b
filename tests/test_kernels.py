"""The CPU decoding kernels (`seq2seq/fast/kernels.py`): torch.topk's values with ties to the lower
index, SDPA's attention, the same translations, and a fallback to torch when they cannot be
built."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
import torch.nn.functional as F
from helpers import random_tokens, tiny_model

from seq2seq.config import DecodeConfig
from seq2seq.constants import PAD_ID
from seq2seq.fast import kernels
from seq2seq.search import search

needs_compiler = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def built():
    assert kernels.KERNELS.get() is not None, "the kernels should build where a compiler exists"


@pytest.fixture
def kernel_topk(built):
    select = kernels.row_topk(True, CPU)
    assert select is not kernels.torch_topk
    return select


@pytest.fixture
def kernel_attend(built):
    return kernels.attention(True, CPU)


def sdpa(q, keys, values, mask):
    """The reference: SDPA, heads side by side -> (batch, q_len, d_model)."""
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("columns", [1, 15, 16, 17, 100, 8003])
def test_the_kernel_returns_torch_topk_values(kernel_topk, dtype, columns):
    torch.manual_seed(columns)
    x = (torch.randn(37, columns) * 3).to(dtype)  # 37 rows: split between threads
    for k in sorted({1, min(2, columns), min(10, columns), columns}):
        values, indices = kernel_topk(x, k)
        expected, _ = x.topk(k, dim=1)
        assert values.dtype == dtype and indices.dtype == torch.int64
        assert torch.equal(values, expected)
        assert torch.equal(x.gather(1, indices), values)  # each index points at its value
        assert all(len(set(row)) == k for row in indices.tolist())


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ties_go_to_the_lower_index(kernel_topk, dtype):
    x = torch.zeros(2, 40, dtype=dtype)
    x[0, [5, 20, 33]] = 3.0  # three equal best values, the rest 0
    x[1, 30:] = 1.0
    values, indices = kernel_topk(x, 4)
    assert indices[0].tolist() == [5, 20, 33, 0]
    assert indices[1].tolist() == [30, 31, 32, 33]
    assert values[0].tolist() == [3.0, 3.0, 3.0, 0.0]


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nan_ranks_above_every_number_as_in_torch(kernel_topk, dtype):
    nan = float("nan")
    row = [5.0, nan, 3.0, 4.0, 6.0] + [0.0] * 30 + [7.0, nan]  # past one block of 16 too
    x = torch.tensor([row, list(reversed(row))], dtype=dtype)
    values, indices = kernel_topk(x, 4)
    assert indices[0].tolist() == [1, 36, 35, 4]  # NaN, NaN (lower index first), 7, 6
    assert indices[1].tolist() == [0, 35, 1, 32]
    assert torch.equal(values[:, 2:], x.topk(4, dim=1).values[:, 2:])


@needs_compiler
def test_forbidden_tokens_and_empty_batches(kernel_topk):
    x = torch.full((3, 50), float("-inf"))
    x[1, 7] = -2.0
    values, indices = kernel_topk(x, 3)
    assert values[1].tolist() == [-2.0, float("-inf"), float("-inf")]
    assert indices[1, 0] == 7
    assert all(len(set(row)) == 3 for row in indices.tolist())
    values, indices = kernel_topk(torch.randn(0, 50), 3)
    assert values.shape == (0, 3) and indices.shape == (0, 3)


def heads(batch: int, length: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """(batch, 4, length, 16) as a model makes them: a transposed view of (batch, length, 64)."""
    generator = torch.Generator().manual_seed(seed)
    flat = torch.randn(batch, length, 64, generator=generator).to(dtype)
    return flat.view(batch, length, 4, 16).transpose(1, 2)


@needs_compiler
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("queries, keys", [(1, 1), (1, 9), (5, 17), (3, 40)])
@torch.no_grad()  # as decoding runs
def test_the_attention_kernel_computes_what_sdpa_computes(
    kernel_attend, dtype, tolerance, queries, keys
):
    q, k, v = (heads(6, n, dtype, seed) for n, seed in ((queries, 1), (keys, 2), (keys, 3)))
    mask = torch.ones(6, 1, 1, keys, dtype=torch.bool)
    mask[::2, ..., keys // 2 :] = False  # padding at the end of every other source
    mask[:, ..., 0] = True
    for m in (None, mask, mask[:1]):
        out = kernel_attend(q, k, v, m)
        expected = sdpa(q.float(), k.float(), v.float(), m)
        assert out.shape == (6, queries, 64) and out.dtype == dtype
        torch.testing.assert_close(out.float(), expected, atol=tolerance, rtol=tolerance)


@needs_compiler
@torch.no_grad()  # as decoding runs
def test_the_attention_kernel_reads_a_cache_in_place(kernel_attend):
    buffer = torch.randn(6, 4, 32, 16)  # a LayerCache buffer: capacity 32, 11 positions filled
    keys, values = buffer[:, :, :11], buffer.flip(0)[:, :, :11]
    q = heads(6, 1, torch.float32, 4)
    expected = sdpa(q, keys.contiguous(), values.contiguous(), None)
    torch.testing.assert_close(kernel_attend(q, keys, values, None), expected)


@needs_compiler
@torch.no_grad()  # as decoding runs
def test_the_attention_kernel_attends_in_the_dtype_of_a_float32_cache(kernel_attend):
    q, k = heads(6, 1, torch.bfloat16, 7), heads(6, 9, torch.float32, 8)
    out = kernel_attend(q, k, k, None, causal=True)  # the newest position: nothing to mask
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, sdpa(q.float(), k, k, None))


@needs_compiler
@torch.no_grad()  # as decoding runs
def test_the_attention_kernel_gives_zeros_for_a_query_whose_keys_are_all_masked(kernel_attend):
    q, k = heads(6, 1, torch.float32, 5), heads(6, 7, torch.float32, 6)
    every_key_masked = torch.zeros(6, 1, 1, 7, dtype=torch.bool)
    assert kernel_attend(q, k, k, every_key_masked).abs().max() == 0  # zeros, not NaN


@needs_compiler
@torch.no_grad()  # as decoding runs
def test_the_attention_kernel_leaves_what_it_does_not_take_to_sdpa(kernel_attend):
    q, k = heads(6, 1, torch.float32, 5), heads(6, 7, torch.float32, 6)
    assert kernel_attend(q, k, k.double(), None) is None  # mixed dtypes
    assert kernel_attend(q, k, k, torch.ones(6, 1, 2, 7, dtype=torch.bool)) is None  # mask shape
    assert kernel_attend(q, k[:3], k[:3], None) is None  # batch mismatch
    assert kernel_attend(k, k, k, None, causal=True) is None  # several queries to mask
    with torch.enable_grad():
        assert kernel_attend(q.requires_grad_(), k, k, None) is None  # training


@needs_compiler
@pytest.mark.parametrize("strategy", ["beam", "greedy"])
def test_searches_find_the_same_translations_with_or_without_kernels(built, strategy):
    model = tiny_model()
    src = torch.cat([random_tokens(1, 9, seed=70 + i) for i in range(5)])
    src[1:3, 6:] = PAD_ID  # padded sources: the cross-attention mask matters
    found = {}
    for enabled in (True, False):
        cfg = DecodeConfig(
            strategy=strategy, beam=4, nbest=3 if strategy == "beam" else 1, kernels=enabled
        )
        found[enabled] = search(model, src, src == PAD_ID, cfg)
    for with_kernels, without in zip(found[True], found[False], strict=True):
        assert [h.tokens for h in with_kernels] == [h.tokens for h in without]
        scores = [h.score for h in without]
        assert [h.score for h in with_kernels] == pytest.approx(scores, abs=1e-5)


@needs_compiler
def test_cached_decoding_uses_the_kernels_only_when_asked(built, monkeypatch):
    calls = []
    module = kernels.KERNELS.get()
    attend = module.attend
    monkeypatch.setattr(module, "attend", lambda *args: calls.append(1) or attend(*args))
    model = tiny_model()
    src = random_tokens(2, 5, seed=3)
    for enabled in (False, True):
        search(model, src, src == PAD_ID, DecodeConfig(strategy="greedy", kernels=enabled))
        assert bool(calls) == enabled
    assert len(calls) % (2 * model.cfg.decoder_layers) == 0  # self and cross, every layer


def test_without_kernels_searches_use_torch(monkeypatch, caplog):
    def no_compiler(**_kwargs):
        raise RuntimeError("Error building extension: c++ not found\nmore detail")

    monkeypatch.setattr("torch.utils.cpp_extension.load", no_compiler)
    cache = kernels.KernelCache()
    monkeypatch.setattr(kernels, "KERNELS", cache)
    with caplog.at_level(logging.WARNING, logger="seq2seq.fast.kernels"):
        assert kernels.row_topk(True, CPU) is kernels.torch_topk
        assert kernels.attention(True, CPU) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # built (and failed) once per process
    assert "c++ not found" in warnings[0] and "more detail" not in warnings[0]


def test_the_kernel_is_only_for_cpu_and_only_when_asked(monkeypatch):
    def must_not_build():
        raise AssertionError("built although not needed")

    cache = kernels.KernelCache()
    monkeypatch.setattr(cache, "get", must_not_build)
    monkeypatch.setattr(kernels, "KERNELS", cache)
    assert kernels.row_topk(False, CPU) is kernels.torch_topk
    assert kernels.row_topk(True, torch.device("cuda")) is kernels.torch_topk
    assert kernels.attention(False, CPU) is None


@needs_compiler
def test_a_build_killed_midway_does_not_leave_later_builds_waiting_forever(built, tmp_path):
    """torch's `lock` file, left in the build directory by a killed build, is cleared."""
    import subprocess
    import sys

    from torch.utils import cpp_extension

    directory = kernels.build_directory(cpp_extension.get_default_build_root())
    (directory / "lock").touch()  # as a build killed midway leaves it
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from seq2seq.fast import kernels; assert kernels.build() is not None",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # imports the installation this test imported, not a checkout in cwd
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (directory / "lock").exists()
