"""Two small C++ kernels for decoding on CPU (`decode.kernels=true`, the default), where
PyTorch's general ones spend most of their time in set-up on the small shapes of a step.

- `row_topk` (csrc/row_topk.cpp): the best k values of each row, as `torch.topk` returns them;
  among equal values the lower index comes first (torch leaves that order unspecified).
- `attend` (csrc/attention.cpp): attention for cached decoding, a few queries per (row, head)
  against a few dozen keys. Same results as `MultiHeadAttention.attention` up to float
  rounding.

They are compiled for this machine on first use (`torch.utils.cpp_extension`: the system's C++
compiler and the `ninja` package; then cached in torch's extension directory). Where that
fails, one warning, and decoding uses `torch.topk` and the model's attention as with
`decode.kernels=false`; other devices always do.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from seq2seq.cache import Attend

log = logging.getLogger(__name__)

SOURCES = [
    Path(__file__).parent / "csrc" / name
    for name in ("row_topk.cpp", "attention.cpp", "bindings.cpp")
]
TopK = Callable[[Tensor, int], tuple[Tensor, Tensor]]


class KernelCache:
    """The compiled kernels of this process, built at most once (`get` is thread-safe)."""

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
    """Compile (or load the cached build of) the kernels; None, with a warning, if impossible."""
    try:
        from torch.utils import cpp_extension

        put_ninja_on_path()
        log.info("loading the CPU decoding kernels (compiled once: 1-2 minutes the first time)")
        openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []  # torch's threads
        directory = build_directory(cpp_extension.get_default_build_root())
        with exclusive_build(directory):
            return cpp_extension.load(
                name="seq2seq_kernels",
                sources=[str(source) for source in SOURCES],
                extra_cflags=["-O3", *openmp],
                extra_ldflags=openmp,
                build_directory=str(directory),
            )
    except Exception as error:  # no compiler, no ninja, an unsupported platform, ...
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        log.warning(
            "the CPU decoding kernels could not be built (%s: %s); using torch.topk and "
            "scaled_dot_product_attention (decode.kernels=false silences this)",
            type(error).__name__,
            first_line[:200],
        )
        return None


def build_directory(default_root: str) -> Path:
    """Where the kernels are built and cached: per Python and torch version, and per
    installation (two installations sharing one cache would rebuild over each other)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or default_root
    version = f"py{sys.version_info.major}{sys.version_info.minor}_torch{torch.__version__}"
    installation = hashlib.sha256(str(SOURCES[0].parent.resolve()).encode()).hexdigest()[:8]
    return Path(root) / version / f"seq2seq_kernels_{installation}"


@contextlib.contextmanager
def exclusive_build(directory: Path) -> Iterator[None]:
    """One process builds at a time. torch's own `lock` file, which a build killed midway
    leaves behind (every later build would then wait forever), is removed while this process
    holds the OS lock that every builder takes first."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not a POSIX system: torch's own lock only
        yield
        return
    with open(directory / "build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the OS if this process dies
        (directory / "lock").unlink(missing_ok=True)
        yield


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


KERNELS = KernelCache()


def compiled(enabled: bool, device: torch.device) -> ModuleType | None:
    """The kernels when decoding on `device` should use them (built now if needed, not in the
    middle of a batch), else None."""
    return KERNELS.get() if enabled and device.type == "cpu" else None


# --------------------------------------------------------------------------- top-k


def torch_topk(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    return x.topk(k, dim=1)


def row_topk(enabled: bool, device: torch.device) -> TopK:
    """The top-k of a search: the kernel when enabled and on CPU, else torch.topk."""
    module = compiled(enabled, device)
    if module is None:
        return torch_topk

    def kernel_topk(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The kernel where it applies (CPU, 2-D, float32/bf16, k <= columns), else torch."""
        fits = (
            x.device.type == "cpu"
            and x.dim() == 2
            and x.dtype in (torch.float32, torch.bfloat16)
            and 1 <= k <= x.shape[1]
            and not x.requires_grad
        )
        if not fits:
            return torch_topk(x, k)
        values, indices = module.row_topk(x.contiguous(), k)  # values in float32
        return values.to(x.dtype), indices

    return kernel_topk


# --------------------------------------------------------------------------- attention


def attention(enabled: bool, device: torch.device) -> Attend | None:
    """The attention of cached decoding: the kernel when enabled and on CPU, else None (the
    model's own SDPA path). The kernel returns None for inputs it does not take, which then
    take that path too."""
    module = compiled(enabled, device)
    if module is None:
        return None

    def kernel_attend(
        q: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None, causal: bool = False
    ) -> Tensor | None:
        """softmax(q k^T / sqrt(d_head) + mask) v: q (batch, heads, q_len, d_head), keys and
        values (batch, heads, k_len, d_head), mask True = attend -> (batch, q_len, d_model),
        computed in the keys' dtype; None unless CPU, no gradient, one dtype of float32/bf16
        for keys and values, d_head <= 256, a mask of shape (batch or 1, 1, 1, k_len), and
        no causal mask to apply (causal with a single query, the newest position, is none)."""
        if causal and q.shape[2] > 1:
            return None
        q = q.to(keys.dtype)  # a float32 cache: attend in its dtype
        batch, _, _, d_head = q.shape
        fits = (
            q.device.type == keys.device.type == values.device.type == "cpu"
            and not torch.is_grad_enabled()
            and q.dtype in (torch.float32, torch.bfloat16)
            and q.dtype == keys.dtype == values.dtype
            and d_head <= 256
            and keys.shape[2] >= 1
            and keys.shape == values.shape
            and keys.shape[:2] == q.shape[:2]
            and keys.shape[3] == d_head
            and q.stride(-1) == keys.stride(-1) == values.stride(-1) == 1
            and (mask is None or (mask.dtype == torch.bool and mask_fits(mask, batch, keys)))
        )
        return module.attend(q, keys, values, mask) if fits else None

    return kernel_attend


def mask_fits(mask: Tensor, batch: int, keys: Tensor) -> bool:
    """(batch or 1, 1, 1, k_len) booleans."""
    shape = (1, 1, keys.shape[2])
    return mask.dim() == 4 and mask.shape[0] in (1, batch) and tuple(mask.shape[1:]) == shape
