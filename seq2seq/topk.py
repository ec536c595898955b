"""Top-k of each row for beam search: a small C++ kernel on CPU, `torch.topk` everywhere else.

Beam search selects the best 2 x beam tokens of every row at every step. On CPU,
`torch.topk` over a (320, 8000) float32 matrix takes ~1.7 ms (2 threads), 8% of a batch-64
step; `csrc/row_topk.cpp` scans each row once, 16 values per AVX-512 comparison, in ~0.2 ms.
Its values equal `torch.topk`'s; among equal values the lower index comes first (torch leaves
that order unspecified).

The kernel is compiled for this machine on first use (`torch.utils.cpp_extension`: a C++
compiler and ninja, ~20 s once, then cached in torch's extension directory). Without them, or
with `decode.fast_topk=false`, `torch.topk` is used: same values, the same translations up to
the order of ties.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "row_topk.cpp"
TopK = Callable[[Tensor, int], tuple[Tensor, Tensor]]


class KernelCache:
    """The compiled kernel of this process, built at most once (`get` is thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tried = False
        self.module: ModuleType | None = None

    def get(self) -> ModuleType | None:
        with self.lock:
            if not self.tried:
                self.tried = True
                self.module = build()
            return self.module


def build() -> ModuleType | None:
    """Compile (or load the cached build of) the kernel; None, with a warning, if impossible."""
    try:
        from torch.utils import cpp_extension

        put_ninja_on_path()
        log.info("loading the CPU top-k kernel (compiled once, ~20 s the first time)")
        return cpp_extension.load(
            name="seq2seq_row_topk",
            sources=[str(SOURCE)],
            extra_cflags=["-O3", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
        )
    except Exception as error:  # no compiler, no ninja, an unsupported platform, ...
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        log.warning(
            "the CPU top-k kernel could not be built (%s: %s); using torch.topk "
            "(decode.fast_topk=false silences this)",
            type(error).__name__,
            first_line[:200],
        )
        return None


def put_ninja_on_path() -> None:
    """torch runs `ninja` from PATH; the pip package's binary sits with the environment's
    scripts, which are on PATH only in an activated environment."""
    try:
        import ninja
    except ImportError:
        return
    folders = os.environ.get("PATH", "").split(os.pathsep)
    if ninja.BIN_DIR not in folders:
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, *folders])


KERNEL = KernelCache()


def torch_topk(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    return x.topk(k, dim=1)


def kernel_topk(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The kernel where it applies (CPU, 2-D, float32/bf16, k <= columns), else torch.topk."""
    fits = (
        x.device.type == "cpu"
        and x.dim() == 2
        and x.dtype in (torch.float32, torch.bfloat16)
        and 1 <= k <= x.shape[1]
        and not x.requires_grad
    )
    module = KERNEL.get() if fits else None
    if module is None:
        return torch_topk(x, k)
    values, indices = module.row_topk(x.contiguous(), k)  # values in float32
    return values.to(x.dtype), indices


def row_topk(fast: bool, device: torch.device) -> TopK:
    """The top-k function for a search: the kernel when `fast` and on CPU (built now, so the
    first decoding step does not pay for compiling), else torch.topk."""
    if fast and device.type == "cpu" and KERNEL.get() is not None:
        return kernel_topk
    return torch_topk
