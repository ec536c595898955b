"""Pytest settings shared by every test."""

import pytest
import torch


@pytest.fixture(autouse=True)
def deterministic_threads():
    """Property tests compare float results: keep the thread count fixed."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
