"""Numeric precision: float32, or bf16/fp16 autocast; fp16 only where it works (CUDA)."""

from __future__ import annotations

import contextlib
import functools

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
        raise UserError(f"unknown {key} '{name}'; use fp32, bf16, fp16 or auto") from None
    if precision == Precision.fp16 and device.type != "cuda":
        raise UserError(f"{key}=fp16 needs a CUDA device; on CPU use bf16")
    if precision == Precision.auto:
        return Precision.bf16 if native_bf16(device.type) else Precision.fp32
    return precision


@functools.cache
def native_bf16(device_type: str) -> bool:
    """Whether the device computes bfloat16 natively: CUDA GPUs that support it, CPUs with
    AVX-512 BF16 or AMX. Elsewhere bf16 is emulated, many times slower than float32."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def describe_precision(name: str | Precision, device: torch.device) -> str:
    """One line for the log: the precision in use, and why when it was chosen or is slow."""
    precision = parse_precision(name, device, "train.precision")
    native = native_bf16(device.type)
    if Precision(name) == Precision.auto:
        reason = "native bf16" if native else f"no native bf16 on this {device.type}"
        return f"precision: {precision.value} (train.precision=auto: {reason})"
    if precision == Precision.bf16 and not native:
        return (
            f"precision: bf16, emulated on this {device.type} and much slower than fp32 "
            "(train.precision=auto chooses)"
        )
    return f"precision: {precision.value}"


def autocast(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass, or nothing for float32."""
    precision = parse_precision(precision, device, "train.precision")
    if precision == Precision.fp32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=LOW_PRECISION_DTYPES[precision])
