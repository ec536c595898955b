"""Device names (`train.device=`, `device=`) to torch devices, refusing in one line a device that
is unknown, unsupported or not present on this machine."""

from __future__ import annotations

import torch

from seq2seq.errors import UserError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")  # what a device option accepts
DEVICE_CHOICES = ", ".join(DEVICES[:-1]) + " or " + DEVICES[-1]  # "auto, cpu, ... or mps"


def resolve_device(name: str, option: str = "device", local_rank: int = 0) -> torch.device:
    """The device `option=name` names; `auto` is this process's GPU (`local_rank` under
    torchrun) when CUDA is available, else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}' ({option}); use {DEVICE_CHOICES}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"{option}={name} is not supported; use {DEVICE_CHOICES}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{option}={name} but CUDA is not available; use {option}=cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(
            f"{option}={name} but this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{option}={name} but MPS (Apple GPU) is not available; use {option}=cpu")
    return device
