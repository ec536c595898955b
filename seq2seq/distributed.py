"""Data-parallel training under torchrun: this process's place among the workers, and the
process group that lives exactly as long as the training (torn down on every exit)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from seq2seq import checkpoint


@dataclass
class Distributed:
    """This process's place among the torchrun workers (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> Distributed:
        return cls(
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
        )


@contextlib.contextmanager
def process_group(world: Distributed, device: torch.device) -> Iterator[None]:
    """The torchrun processes' group (gloo on CPU, NCCL on GPU) while training; nothing for a
    single process. It is torn down however training ends; after a normal end every process
    first waits for the others, so none leaves while another still communicates."""
    if world.world_size == 1 or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=world.rank, world_size=world.world_size)
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()


def claim_run_dir(run_dir: Path) -> contextlib.AbstractContextManager:
    """The run directory's lock, held by the process that writes the run (rank 0)."""
    if Distributed.from_environment().is_main:
        return checkpoint.locked(run_dir)
    return contextlib.nullcontext()
