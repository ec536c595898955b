"""The attention implementation training uses on CPU."""

from __future__ import annotations

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def attention_kernels(device: torch.device) -> contextlib.AbstractContextManager:
    """On CPU, plain matmul + softmax attention: for sentence-length sequences it trains faster
    than the fused flash kernel, whose backward is slow (docs/benchmarks.md). GPUs keep
    PyTorch's choice."""
    if device.type == "cpu":
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()
