"""Worker threads on CPU: run a function over several items at once, each item in its own
thread with an equal share of the torch threads (`Translator` decodes batches this way when
`decode.workers` > 1).

A decoding step is many small operations; on a few cores, giving each core a batch of its
own gains more than sharing each operation between them. Threads, not processes: the model
is shared, and torch releases the interpreter lock inside its operations.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def map_in_workers(function: Callable[[T], R], items: list[T], workers: int) -> list[R]:
    """[function(item) for item in items], computed by `workers` threads with
    `torch.get_num_threads() // workers` torch threads each (at least 1; restored after) and
    the caller's grad mode and autocast settings (both are per thread in torch)."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    with threads_shared_by(workers):
        return list(map_in_threads(in_callers_mode(function), items, workers))


@contextlib.contextmanager
def threads_shared_by(workers: int) -> Iterator[None]:
    """An equal share of the torch threads for each of `workers` concurrent workers. The
    setting is global to the process: not for two callers at once."""
    total = torch.get_num_threads()
    torch.set_num_threads(max(1, total // workers))
    try:
        yield
    finally:
        torch.set_num_threads(total)


def in_callers_mode(function: Callable[[T], R]) -> Callable[[T], R]:
    """`function` run under the grad mode and CPU/CUDA autocast settings of the thread that
    wraps it (a new thread starts with grad on and autocast off)."""
    grad = torch.is_grad_enabled()
    autocasts = [
        (device, torch.get_autocast_dtype(device))
        for device in ("cpu", "cuda")
        if torch.is_autocast_enabled(device)
    ]

    def run(item: T) -> R:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.set_grad_enabled(grad))
            for device, dtype in autocasts:
                stack.enter_context(torch.autocast(device, dtype=dtype))
            return function(item)

    return run


def map_in_threads(function: Callable[[T], R], items: list[T], workers: int) -> Iterator[R]:
    """function(item) for each item, in order, computed by `workers` threads. They are daemon
    threads that take no new item once the caller stops: Ctrl-C need not wait for them (an
    item in progress still runs to its end)."""
    futures: list[Future[R]] = [Future() for _ in items]
    todo: queue.SimpleQueue[tuple[int, T]] = queue.SimpleQueue()
    for pair in enumerate(items):
        todo.put(pair)
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            try:
                i, item = todo.get_nowait()
            except queue.Empty:
                return
            try:
                futures[i].set_result(function(item))
            except BaseException as error:  # handed to the caller by `result()`
                futures[i].set_exception(error)

    for _ in range(workers):
        threading.Thread(target=work, daemon=True).start()
    try:
        for future in futures:
            yield future.result()
    finally:
        stop.set()
