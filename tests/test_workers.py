"""Worker threads: order, errors, stopping, and the state each worker runs under."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from seq2seq.fast.workers import map_in_threads, map_in_workers


def test_results_come_in_order_and_errors_reach_the_caller():
    assert map_in_workers(lambda x: x * x, list(range(20)), 3) == [x * x for x in range(20)]
    with pytest.raises(ZeroDivisionError):
        map_in_workers(lambda x: 1 / x, [1, 0, 2], 2)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        map_in_workers(abs, [1], 0)


def test_workers_take_no_new_item_once_the_caller_stops():
    started: list[int] = []
    release = threading.Event()

    def held(x: int) -> int:
        started.append(x)
        if x > 0:
            release.wait(10)
        return x

    results = map_in_threads(held, list(range(100)), 2)
    assert next(results) == 0
    results.close()  # the caller stops: each worker finishes the item it holds
    release.set()
    time.sleep(0.3)  # without the stop, 97 more items would start in far less
    assert len(started) <= 3  # item 0 and at most one more per worker


def test_each_worker_gets_its_share_of_threads_and_the_callers_modes():
    def state(_: int) -> tuple[int, bool, bool, torch.dtype]:
        autocast = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
        return torch.get_num_threads(), torch.is_grad_enabled(), *autocast

    torch.set_num_threads(4)
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            states = set(map_in_workers(state, list(range(8)), 2))
        assert torch.get_num_threads() == 4  # given back
        with pytest.raises(ZeroDivisionError):
            map_in_workers(lambda x: 1 / x, [0, 1], 2)
        assert torch.get_num_threads() == 4  # given back after an error too
    finally:
        torch.set_num_threads(1)
    assert states == {(2, False, True, torch.bfloat16)}
