"""Pytest settings shared by every test."""

import os

import pytest
import torch

# pytest-xdist runs the tests in several processes (pyproject.toml): the commands a test starts
# get an equal share of the cores, so that processes do not fight over them.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, (os.cpu_count() or 1) // WORKERS)
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))


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


@pytest.fixture(scope="session")
def toy_corpus(tmp_path_factory):
    """The toy translation task on disk (tests/toy.py)."""
    from toy import write_toy_corpus

    return write_toy_corpus(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="session")
def toy_run(toy_corpus, tmp_path_factory):
    """A run directory with a tiny model trained for 200 steps on the toy task (enough that
    its translations are not empty)."""
    from helpers import run_command
    from toy import toy_overrides

    run_dir = tmp_path_factory.mktemp("toy_run") / "run"
    result = run_command(
        "seq2seq-train",
        *toy_overrides(
            toy_corpus,
            run_dir,
            train__max_steps=200,
            train__validate_every=100,
            decode__max_len_b=12,
        ),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


@pytest.fixture(scope="session")
def multi30k_run(multi30k, tmp_path_factory):
    """A small model trained for a few hundred steps on Multi30k en-de (about a minute)."""
    from helpers import run_command

    run_dir = tmp_path_factory.mktemp("multi30k_run") / "run"
    result = run_command(
        "seq2seq-train",
        "recipe=multi30k_en_de",
        f"data.root={multi30k}",
        f"data.cache_dir={run_dir.parent / 'cache'}",
        f"run_dir={run_dir}",
        "model.d_model=64",
        "model.ffn_dim=128",
        "model.encoder_layers=2",
        "model.decoder_layers=2",
        "tokenizer.vocab_size=2000",
        "train.max_steps=200",
        "train.validate_every=200",
        "train.valid_bleu=false",
        "train.test_at_end=false",
        f"train.threads={THREADS}",
        "train.precision=fp32",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir
