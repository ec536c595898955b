"""A time budget: the schedule's horizon is fitted to the steps the machine can make, the
learning rate reaches its floor when the budget ends, and a resumed run is exact (with a
moving average of the weights too)."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import torch
from hydra import compose, initialize_config_module
from toy import toy_overrides, write_toy_corpus

from seq2seq import runs
from seq2seq import trainer as trainer_module
from seq2seq.config import Config, TrainConfig, register_configs, to_dataclass
from seq2seq.horizon import END_MARGIN, FAR_AWAY, FIRST_FIT, Horizon

BUDGET_MINUTES = 2.0
TRAIN_STEP = trainer_module.Trainer.train_step


def fitted(minutes: float = 1.0) -> Horizon:
    return Horizon.from_config(TrainConfig(max_steps=0, max_minutes=minutes))


def run_at(horizon: Horizon, seconds_per_step, steps: int) -> list[int]:
    """The horizon after each of `steps` steps, each taking seconds_per_step(step) seconds."""
    elapsed, seen = 0.0, []
    for step in range(1, steps + 1):
        elapsed += seconds_per_step(step)
        horizon.observe(step, elapsed)
        seen.append(horizon.steps)
    return seen


def test_a_step_limit_is_the_horizon_and_a_budget_then_only_stops_training():
    horizon = Horizon.from_config(TrainConfig(max_steps=500, max_minutes=1))
    run_at(horizon, lambda step: 10.0, 100)  # far slower than 500 steps a minute
    assert horizon.steps == 500 and not horizon.reached(500)  # train.max_steps stops it


def test_a_budget_alone_is_fitted_after_the_first_steps_at_the_measured_rate():
    horizon = fitted(minutes=1.0)
    seen = run_at(horizon, lambda step: 5.0 if step == 1 else 0.5, 40)
    assert seen[: FIRST_FIT - 1] == [FAR_AWAY] * (FIRST_FIT - 1)
    # step 1 (one-off costs) is left out: 0.5 s per step, 60 s less the margin, less step 1
    expected = 1 + round(((1 - END_MARGIN) * 60 - 5.0) / 0.5)
    assert abs(horizon.steps - expected) <= 1


def test_the_horizon_follows_a_machine_that_slows_down():
    horizon = fitted(minutes=20.0)
    run_at(horizon, lambda step: 1.0 if step <= 200 else 2.0, 400)
    # at step 400, 600 s are gone; the rest of the aimed end goes at 2 s per step
    expected = 400 + ((1 - END_MARGIN) * 1200 - 600) / 2.0
    assert horizon.steps == pytest.approx(expected, abs=2)


def test_the_horizon_and_its_measurements_survive_a_resume():
    horizon = fitted()
    run_at(horizon, lambda step: 0.3, 50)
    again = fitted()
    again.load_state_dict(horizon.state_dict())
    assert again == horizon


class FakeClock:
    """Training's clock, advanced by each step: step costs are chosen, not measured."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def corpus(tmp_path_factory) -> Path:
    return write_toy_corpus(tmp_path_factory.mktemp("toy"))


@pytest.fixture
def torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def budget_config(corpus: Path, run_dir: Path, **extra) -> Config:
    overrides = toy_overrides(
        corpus,
        run_dir,
        **extra,
        train__max_steps=0,
        train__max_minutes=BUDGET_MINUTES,
        train__validate_every=10,
        train__valid_bleu=False,
        train__test_at_end=False,
        optim__schedule="cosine",
        optim__warmup_fraction=0.1,
        optim__min_lr=0.0,
    )
    register_configs()
    with initialize_config_module("seq2seq.conf", version_base="1.3"):
        return to_dataclass(compose("config", overrides=overrides), Config)


def train_with_step_costs(monkeypatch, config: Config, cost, crash_at: int = 0):
    """Train `config` in this process, step n taking cost(n) seconds on the fake clock."""
    clock = FakeClock()
    monkeypatch.setattr(trainer_module, "clock", clock)

    def timed_step(self, batches):
        if self.step + 1 == crash_at:
            raise RuntimeError("killed")
        clock.now += cost(self.step + 1)
        return TRAIN_STEP(self, batches)

    monkeypatch.setattr(trainer_module.Trainer, "train_step", timed_step)
    return runs.train(config, Path(config.run_dir))


def slower_after_40(step: int) -> float:
    return 1.0 if step <= 40 else 1.3


def faster_after_40(step: int) -> float:
    return 1.3 if step <= 40 else 1.0


@pytest.mark.parametrize("cost", [slower_after_40, faster_after_40])
def test_the_learning_rate_reaches_its_floor_within_3_percent_of_the_budgets_end(
    corpus, tmp_path, monkeypatch, torch_threads, cost
):
    config = budget_config(corpus, tmp_path / "run")
    trainer = train_with_step_costs(monkeypatch, config, cost)
    budget = 60 * BUDGET_MINUTES
    assert trainer.optimizer.param_groups[0]["lr"] == 0.0  # optim.min_lr: the floor
    assert "schedule fitted to train.max_minutes" in trainer.stop_reason
    assert 0.97 * budget <= trainer.elapsed_now() <= budget


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_a_budget_run_resumed_after_a_crash_is_bitwise_the_uninterrupted_run(
    corpus, tmp_path, monkeypatch, torch_threads, ema
):
    straight = train_with_step_costs(
        monkeypatch, budget_config(corpus, tmp_path / "straight", train__ema=ema), slower_after_40
    )
    crashed = budget_config(corpus, tmp_path / "crashed", train__ema=ema)
    with pytest.raises(RuntimeError, match="killed"):
        train_with_step_costs(monkeypatch, crashed, slower_after_40, crash_at=57)
    resumed = train_with_step_costs(monkeypatch, crashed, slower_after_40)
    assert resumed.step == straight.step and resumed.horizon.steps == straight.horizon.steps
    expected, found = (
        safetensors.torch.load_file(str(Path(run.run_dir) / "model.safetensors"))
        for run in (straight, resumed)
    )
    for name in expected:
        assert torch.equal(expected[name], found[name]), name
    if ema:  # the training weights, which the checkpoints do not hold, resumed exactly too
        for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
            assert torch.equal(a, b)
