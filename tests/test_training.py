"""Training end to end: run directories, exact resume after a kill, Ctrl-C, averaging, DDP."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from helpers import installed_script
from toy import toy_overrides, write_toy_corpus

from seq2seq import checkpoint, constants
from seq2seq import precision as precision_module
from seq2seq.config import Precision

pytestmark = pytest.mark.slow
QUICK = {"train__valid_bleu": False, "train__test_at_end": False}


def seq2seq_train(*overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [installed_script("seq2seq-train"), *overrides],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def weights(path: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(path))


def metrics(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def wait_for(condition, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_toy_corpus(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def finished_run(corpus, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run") / "run"
    seq2seq_train(
        *toy_overrides(
            corpus,
            run_dir,
            train__max_steps=30,
            train__validate_every=10,
            train__keep_last=2,
            train__average_last=2,
        )
    )
    return run_dir


def test_run_directory_holds_everything_needed_to_reuse_the_model(finished_run):
    names = {p.name for p in finished_run.iterdir()}
    assert {
        "config.yaml",
        "meta.json",
        "spm.model",
        "tokenizer.json",
        "model.safetensors",
        "model.best.safetensors",
        "train_state.pt",
        "metrics.jsonl",
        "results.json",
        "checkpoints",
    } <= names
    meta = json.loads((finished_run / "meta.json").read_text())
    assert meta["format_version"] == checkpoint.FORMAT_VERSION
    assert (
        meta["tokenizer_sha256"]
        == json.loads((finished_run / "tokenizer.json").read_text())["sha256"]
    )
    state = torch.load(finished_run / "train_state.pt", weights_only=True)
    assert state["step"] == 30
    assert set(state) >= {"optimizer", "scheduler", "sampler", "rng", "best"}


def test_metrics_also_go_to_tensorboard(finished_run):
    pytest.importorskip("tensorboard")
    events = list((finished_run / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_only_the_last_k_step_checkpoints_are_kept(finished_run):
    kept = [p.name for p in checkpoint.step_dirs(finished_run)]
    assert kept == ["step_00000020", "step_00000030"]


def test_training_learns_the_toy_task(finished_run):
    train = metrics(finished_run, "train")
    assert train[-1]["loss"] < 0.8 * train[0]["loss"]
    valid = metrics(finished_run, "valid")
    assert [v["step"] for v in valid] == [10, 20, 30]
    assert all("bleu" in v and "valid_ppl" in v for v in valid)


def test_the_log_shows_the_time_left(finished_run):
    log = (finished_run / "train.log").read_text().splitlines()
    steps = [line for line in log if " INFO step " in line]
    assert len(steps) == 30 and all(re.search(r" eta \d+:\d\d:\d\d$", line) for line in steps)
    assert steps[-1].endswith(" eta 0:00:00")  # train.max_steps reached


def test_results_hold_test_scores_with_signatures(finished_run):
    results = json.loads((finished_run / "results.json").read_text())
    (test,) = results.values()
    assert test["sentences"] == 40
    assert test["bleu"]["signature"].startswith("nrefs:1|case:mixed")
    hypotheses = (finished_run / test["hypotheses"]).read_text().splitlines()
    assert len(hypotheses) == 40


def prepared_data(corpus: Path, directory: Path) -> dict:
    """The toy corpus prepared into shards of 200 pairs, batched two shards at a time."""
    subprocess.run(
        [
            installed_script("seq2seq-prepare"),
            *toy_overrides(corpus, directory / "unused", data__shard_pairs=200),
            f"out={directory}",
        ],
        check=True,
        capture_output=True,
    )
    return {"data__prepared": directory, "data__window_pairs": 400}


@pytest.mark.parametrize("data", ["best", "sampled", "prepared"])
def test_resume_after_a_kill_gives_bitwise_identical_weights(corpus, tmp_path, data):
    variant = {
        "best": lambda: {},
        "sampled": lambda: {"train__subword_alpha": 0.3},
        "prepared": lambda: prepared_data(corpus, tmp_path / "prepared"),
    }[data]()
    common = {"train__max_steps": 12, "train__validate_every": 6, **QUICK, **variant}
    straight = tmp_path / "straight"
    seq2seq_train(*toy_overrides(corpus, straight, **common))

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [installed_script("seq2seq-train"), *toy_overrides(corpus, killed, **common)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: checkpoint.step_dir(killed, 6).is_dir())
    process.kill()
    process.wait()
    for later in checkpoint.step_dirs(killed):  # as if the kill came right after step 6
        if later.name > "step_00000006":
            shutil.rmtree(later)
    seq2seq_train(f"run_dir={killed}")
    logged = [r["step"] for r in metrics(killed, "train")]
    assert logged == sorted(set(logged))  # the killed session's extra records were dropped

    sampling_logged = "subword regularisation" in (killed / "train.log").read_text()
    assert sampling_logged == (data == "sampled")
    expected, resumed = (
        weights(straight / "model.safetensors"),
        weights(killed / "model.safetensors"),
    )
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name
    assert [r["loss"] for r in metrics(killed, "train")][-6:] == [
        r["loss"] for r in metrics(straight, "train")
    ][-6:]


@pytest.mark.parametrize(
    "stop",
    [
        [signal.SIGINT],
        [signal.SIGTERM],
        [signal.SIGUSR1],
        [signal.SIGUSR2],
        [signal.SIGTERM, signal.SIGUSR2],  # a pre-empted submitit job gets both
    ],
    ids=["SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGTERM+SIGUSR2"],
)
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(corpus, tmp_path, stop):
    """Ctrl-C, SIGTERM (pre-emption), SIGUSR1 and SIGUSR2 (a time limit coming) alike."""
    run_dir = tmp_path / "interrupted"
    process = subprocess.Popen(
        [
            installed_script("seq2seq-train"),
            *toy_overrides(
                corpus, run_dir, train__max_steps=100000, train__validate_every=100000, **QUICK
            ),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(
        lambda: (
            (run_dir / "metrics.jsonl").is_file()
            and len((run_dir / "metrics.jsonl").read_text().splitlines()) >= 3
        )
    )
    for each in stop:
        process.send_signal(each)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "interrupted at step" in stderr and "checkpoint saved" in stderr
    step = int(stderr.split("interrupted at step ")[1].split(";")[0])
    assert checkpoint.latest_checkpoint(run_dir) == checkpoint.step_dir(run_dir, step)
    assert torch.load(run_dir / "train_state.pt", weights_only=True)["step"] == step


def test_resume_applies_new_limits_but_refuses_group_changes(finished_run, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run, run_dir)
    seq2seq_train(f"run_dir={run_dir}", "train.max_steps=32", "train.test_at_end=false")
    assert torch.load(run_dir / "train_state.pt", weights_only=True)["step"] == 32
    result = subprocess.run(
        [installed_script("seq2seq-train"), f"run_dir={run_dir}", "model=small"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "cannot change 'model' when resuming" in result.stderr


def test_average_of_checkpoints_is_their_mean(finished_run, tmp_path):
    out = tmp_path / "avg.safetensors"
    result = subprocess.run(
        [installed_script("seq2seq-average"), f"run={finished_run}", "last=2", f"out={out}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    first, second = (weights(p / constants.WEIGHTS) for p in checkpoint.step_dirs(finished_run))
    averaged = weights(out)
    for name in first:
        torch.testing.assert_close(averaged[name], (first[name] + second[name]) / 2)


def test_average_last_averages_at_the_end_and_keeps_the_average_if_it_validates_best(
    finished_run,
):
    first, second = (weights(p / constants.WEIGHTS) for p in checkpoint.step_dirs(finished_run))
    averaged = weights(finished_run / constants.AVERAGE_WEIGHTS)
    for name in first:
        torch.testing.assert_close(averaged[name], (first[name] + second[name]) / 2)
    (record,) = metrics(finished_run, "valid_average")
    assert record["step"] == 30 and record["checkpoints"] == 2
    checkpoints = metrics(finished_run, "valid")
    best = max(checkpoints, key=lambda r: (r["bleu"], -r["step"]))
    best_weights = (finished_run / constants.BEST_WEIGHTS).read_bytes()
    if record["bleu"] > best["bleu"]:
        assert best_weights == (finished_run / constants.AVERAGE_WEIGHTS).read_bytes()
    else:
        assert best_weights != (finished_run / constants.AVERAGE_WEIGHTS).read_bytes()
        step = checkpoint.step_dir(finished_run, best["step"])
        if step.is_dir():  # not pruned by train.keep_last
            assert best_weights == (step / constants.WEIGHTS).read_bytes()


def test_average_with_a_wrong_argument_is_one_line(tmp_path):
    result = subprocess.run(
        [installed_script("seq2seq-average"), f"runn={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "did you mean run?" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_gloo_processes_train_like_one_process_with_the_same_global_batch(corpus, tmp_path):
    """2 processes x 1 batch per step == 1 process x 2 batches per step (same batches)."""
    common = {"train__max_steps": 4, "train__validate_every": 4, "model__dropout": 0.0, **QUICK}
    single = tmp_path / "single"
    seq2seq_train(*toy_overrides(corpus, single, train__accumulate=2, **common))
    parallel = tmp_path / "parallel"
    torchrun = installed_script("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node=2",
            installed_script("seq2seq-train"),
            *toy_overrides(corpus, parallel, **common),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # rank 0 validates and shares what it found: both processes name the same best step
    assert result.stderr.count("best validation at step 4") == 2, result.stderr[-3000:]
    single_losses = [r["loss"] for r in metrics(single, "train")]
    parallel_losses = [r["loss"] for r in metrics(parallel, "train")]
    assert len(parallel_losses) == 4
    # Documented tolerance: float32 sums in a different order (gloo all-reduce vs accumulation).
    assert parallel_losses == pytest.approx(single_losses, rel=1e-4)
    expected, actual = (
        weights(single / "model.safetensors"),
        weights(parallel / "model.safetensors"),
    )
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-5, rtol=1e-4)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def start_node(corpus: Path, run_dir: Path, port: int, **settings: object) -> subprocess.Popen:
    """One "node" of a two-node job: torchrun with one process, meeting the other through the
    c10d rendezvous on localhost (as two machines would meet at the first one's address)."""
    return subprocess.Popen(
        [
            installed_script("torchrun"),
            "--nnodes=2",
            "--nproc_per_node=1",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint=localhost:{port}",
            "--rdzv-id=seq2seq-two-nodes",
            installed_script("seq2seq-train"),
            *toy_overrides(corpus, run_dir, **settings),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,  # a node is killed with all its processes
    )


def finish(nodes: list[subprocess.Popen]) -> list[str]:
    logs = [node.communicate(timeout=600)[1] for node in nodes]
    assert all(node.returncode == 0 for node in nodes), "\n".join(log[-2000:] for log in logs)
    return logs


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_nodes_meeting_through_the_rendezvous_train_like_one_process(corpus, tmp_path):
    """Two torchrun launches (--nnodes=2, c10d rendezvous, gloo), one process each, against
    one process with train.accumulate=2; a node killed mid-run leaves a run both nodes resume."""
    common = {"train__max_steps": 8, "train__validate_every": 2, "model__dropout": 0.0, **QUICK}
    single = tmp_path / "single"
    seq2seq_train(*toy_overrides(corpus, single, train__accumulate=2, **common))
    two_nodes = tmp_path / "two_nodes"
    port = free_port()
    finish([start_node(corpus, two_nodes, port, **common) for _ in range(2)])
    single_losses = [r["loss"] for r in metrics(single, "train")]
    assert [r["loss"] for r in metrics(two_nodes, "train")] == pytest.approx(
        single_losses, rel=1e-4
    )
    expected, actual = (
        weights(single / "model.safetensors"),
        weights(two_nodes / "model.safetensors"),
    )
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-5, rtol=1e-4)

    killed = tmp_path / "killed"
    port = free_port()
    nodes = [start_node(corpus, killed, port, **common) for _ in range(2)]
    wait_for(lambda: checkpoint.step_dir(killed, 4).is_dir())
    os.killpg(nodes[1].pid, signal.SIGKILL)
    try:  # the other node's process fails when its peer goes
        nodes[0].communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(nodes[0].pid, signal.SIGKILL)
        nodes[0].communicate()
    assert nodes[0].returncode != 0
    port = free_port()
    finish([start_node(corpus, killed, port, **common) for _ in range(2)])
    resumed = weights(killed / "model.safetensors")
    for name in actual:
        torch.testing.assert_close(resumed[name], actual[name], atol=1e-5, rtol=1e-4)


def test_early_stopping_after_patience_validations_without_improvement(corpus, tmp_path):
    run_dir = tmp_path / "run"
    result = seq2seq_train(
        *toy_overrides(
            corpus,
            run_dir,
            optim__lr=1e-9,  # nothing is learnt, so validation BLEU never improves
            train__max_steps=40,
            train__validate_every=2,
            train__patience=2,
            train__stop_metric="bleu",
            train__test_at_end=False,
        )
    )
    assert [v["step"] for v in metrics(run_dir, "valid")] == [2, 4, 6]
    assert (
        "stopped: no improvement in 2 validations at step 6; best validation at step 2"
        in result.stderr
    )
    # resuming the stopped run stops again at once: patience survives the resume...
    again = seq2seq_train(f"run_dir={run_dir}")
    assert "stopped: no improvement in 2 validations at step 6" in again.stderr
    assert [v["step"] for v in metrics(run_dir, "valid")] == [2, 4, 6]
    # ...unless the resume gives more patience
    more = seq2seq_train(f"run_dir={run_dir}", "train.patience=3")
    assert [v["step"] for v in metrics(run_dir, "valid")] == [2, 4, 6, 8]
    assert "stopped: no improvement in 3 validations at step 8" in more.stderr


def test_bf16_autocast_training_learns_and_saves_float32_weights(corpus, tmp_path):
    run_dir = tmp_path / "run"
    seq2seq_train(
        *toy_overrides(corpus, run_dir, train__precision="bf16", train__max_steps=30, **QUICK)
    )
    train = metrics(run_dir, "train")
    assert train[-1]["loss"] < 0.8 * train[0]["loss"]
    saved = weights(run_dir / constants.WEIGHTS)
    assert {t.dtype for t in saved.values()} == {torch.float32}


@pytest.mark.parametrize("native, expected", [(True, Precision.bf16), (False, Precision.fp32)])
def test_auto_precision_is_bf16_only_where_the_device_computes_it_natively(
    monkeypatch, native, expected
):
    monkeypatch.setattr(precision_module, "native_bf16", lambda device_type: native)
    cpu = torch.device("cpu")
    assert precision_module.parse_precision("auto", cpu) == expected
    line = precision_module.describe_precision("auto", cpu)
    assert line.startswith(f"precision: {expected.value} (train.precision=auto")


def test_bf16_asked_for_where_it_is_emulated_says_so(monkeypatch):
    monkeypatch.setattr(precision_module, "native_bf16", lambda device_type: False)
    line = precision_module.describe_precision("bf16", torch.device("cpu"))
    assert "emulated" in line and "train.precision=auto" in line


def test_a_trainer_can_be_stepped_without_fit(corpus, tmp_path):
    """The throughput benchmarks drive `Trainer.train_step` directly, outside `fit`."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from seq2seq.config import register_configs
    from seq2seq.distributed import Distributed
    from seq2seq.model import Transformer
    from seq2seq.trainer import Trainer
    from seq2seq.training_data import fit_vocabulary, open_training_data, prepare_run_data

    register_configs()
    with initialize_config_module("seq2seq.conf", version_base="1.3"):
        composed = compose("config", overrides=toy_overrides(corpus, tmp_path / "run"))
    cfg = OmegaConf.to_object(composed)
    prepare_run_data(cfg, tmp_path / "run")
    tokenizer, data = open_training_data(cfg, tmp_path / "run")
    fit_vocabulary(cfg, tokenizer)
    trainer = Trainer(
        cfg,
        tmp_path / "run",
        Transformer(cfg.model),
        tokenizer,
        data,
        torch.device("cpu"),
        Distributed(),
    )
    batches = trainer.batch_stream()
    first = trainer.train_step([next(batches)])
    for _ in range(20):
        last = trainer.train_step([next(batches)])
    assert last.nll < first.nll


def test_a_sweep_trains_each_job_in_a_run_directory_of_its_own(corpus, tmp_path):
    overrides = toy_overrides(
        corpus, tmp_path, train__max_steps=2, train__validate_every=2, **QUICK
    )
    without_run_dir = [o for o in overrides if not o.startswith("run_dir=")]
    result = subprocess.run(
        [installed_script("seq2seq-train"), "-m", *without_run_dir, "optim.lr=0.003,0.001"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "runs" / "custom").iterdir()
    assert sweep.name.startswith("sweep-")
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    for job, lr in (("0", 0.003), ("1", 0.001)):
        saved = (sweep / job / "config.yaml").read_text()
        assert f"lr: {lr}" in saved, saved
        assert [r["step"] for r in metrics(sweep / job, "train")] == [1, 2]

    named = tmp_path / "named"
    seq2seq_train("-m", *without_run_dir, f"run_dir={named}", "train.seed=1,2")
    assert sorted(p.name for p in named.iterdir() if p.is_dir()) == ["0", "1"]


def processes_running(marker: str) -> list[int]:
    """The PIDs of the processes whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and marker in command:
            found.append(int(entry.name))
    return found


def test_a_submitit_job_warned_of_its_time_limit_is_requeued_and_resumes_exactly(corpus, tmp_path):
    """Slurm's warning before a time limit (SIGUSR2 or SIGUSR1, as submitit asks) to a job of
    Hydra's submitit launcher:
    the step ends, a checkpoint is saved, submitit requeues the job, and the job resumes the run
    to the same weights as a run never stopped."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from submitit.core.job_environment import JobEnvironment

    warning = JobEnvironment._usr_sig()  # the signal submitit listens for
    common = {"train__max_steps": 300, "train__validate_every": 10, **QUICK}
    straight = tmp_path / "straight"
    seq2seq_train(*toy_overrides(corpus, straight, **common))
    sweep = tmp_path / "sweep"
    launcher = [
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "hydra.launcher.cpus_per_task=1",
    ]
    process = subprocess.Popen(
        [installed_script("seq2seq-train"), *launcher, *toy_overrides(corpus, sweep, **common)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    job = sweep / "0"
    wait_for(lambda: checkpoint.step_dir(job, 20).is_dir())
    (task,) = processes_running(f"submitit.core._submit {sweep}")
    os.kill(task, warning)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    log = (job / "train.log").read_text()
    assert "handing the signal on to the job's launcher" in log
    assert "resuming from" in log
    expected, resumed = weights(straight / "model.safetensors"), weights(job / "model.safetensors")
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name
