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


@pytest.fixture(scope="session")
def multi30k():
    """Path of the local Multi30k copy (tests that need it are skipped without it)."""
    from helpers import multi30k_root

    root = multi30k_root()
    if root is None:
        pytest.skip("Multi30k not found: set SEQ2SEQ_MULTI30K to the directory of the raw files")
    return root
