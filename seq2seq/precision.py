"""Numeric precision: float32, or bf16/fp16 autocast; fp16 only where it works (CUDA)."""

from __future__ import annotations

import contextlib

import torch

from seq2seq.config import Precision
from seq2seq.errors import UserError

LOW_PRECISION_DTYPES = {Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}


def parse_precision(
    name: str | Precision, device: torch.device, key: str = "precision"
) -> Precision:
    """`name` as a Precision that `device` supports; `key` names the option in errors."""
    try:
        precision = Precision(name)
    except ValueError:
        raise UserError(f"unknown {key} '{name}'; use fp32, bf16 or fp16") from None
    if precision == Precision.fp16 and device.type != "cuda":
        raise UserError(f"{key}=fp16 needs a CUDA device; on CPU use bf16")
    return precision


def autocast(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass, or nothing for float32."""
    precision = parse_precision(precision, device, "train.precision")
    if precision == Precision.fp32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=LOW_PRECISION_DTYPES[precision])
