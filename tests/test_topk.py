"""The CPU top-k kernel (`seq2seq/topk.py`): torch.topk's values, ties to the lower index, and a
fallback to torch.topk when it cannot be built."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from helpers import random_tokens, tiny_model

from seq2seq import topk
from seq2seq.config import DecodeConfig
from seq2seq.constants import PAD_ID
from seq2seq.search import search

needs_compiler = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")


@pytest.fixture(scope="module")
def kernel_topk():
    assert topk.KERNEL.get() is not None, "the kernel should build where a compiler exists"
    return topk.kernel_topk


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
def test_forbidden_tokens_and_empty_batches(kernel_topk):
    x = torch.full((3, 50), float("-inf"))
    x[1, 7] = -2.0
    values, indices = kernel_topk(x, 3)
    assert values[1].tolist() == [-2.0, float("-inf"), float("-inf")]
    assert indices[1, 0] == 7
    assert all(len(set(row)) == 3 for row in indices.tolist())
    values, indices = kernel_topk(torch.randn(0, 50), 3)
    assert values.shape == (0, 3) and indices.shape == (0, 3)


@needs_compiler
def test_beam_search_finds_the_same_translations_with_either_top_k(kernel_topk):
    model = tiny_model()
    src = torch.cat([random_tokens(1, 9, seed=70 + i) for i in range(5)])
    for strategy in ("beam", "greedy"):
        found = {}
        for fast in (True, False):
            nbest = 3 if strategy == "beam" else 1
            cfg = DecodeConfig(strategy=strategy, beam=4, nbest=nbest, fast_topk=fast)
            found[fast] = search(model, src, src == PAD_ID, cfg)
        for with_kernel, without in zip(found[True], found[False], strict=True):
            assert [h.tokens for h in with_kernel] == [h.tokens for h in without]
            scores = [h.score for h in without]
            assert [h.score for h in with_kernel] == pytest.approx(scores, abs=1e-6)


def test_without_a_kernel_searches_use_torch_topk(monkeypatch, caplog):
    def no_compiler(**_kwargs):
        raise RuntimeError("Error building extension: c++ not found\nmore detail")

    monkeypatch.setattr("torch.utils.cpp_extension.load", no_compiler)
    cache = topk.KernelCache()
    monkeypatch.setattr(topk, "KERNEL", cache)
    with caplog.at_level(logging.WARNING, logger="seq2seq.topk"):
        assert topk.row_topk(True, torch.device("cpu")) is topk.torch_topk
        assert topk.row_topk(True, torch.device("cpu")) is topk.torch_topk
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # built (and failed) once per process
    assert "c++ not found" in warnings[0] and "more detail" not in warnings[0]
    x = torch.randn(4, 30)
    assert torch.equal(topk.kernel_topk(x, 5)[0], x.topk(5, dim=1)[0])


def test_the_kernel_is_only_for_cpu_and_only_when_asked(monkeypatch):
    def must_not_build():
        raise AssertionError("built although not needed")

    cache = topk.KernelCache()
    monkeypatch.setattr(cache, "get", must_not_build)
    monkeypatch.setattr(topk, "KERNEL", cache)
    assert topk.row_topk(False, torch.device("cpu")) is topk.torch_topk
    assert topk.row_topk(True, torch.device("cuda")) is topk.torch_topk
