"""Learning-rate schedules against their formulas, and the optimizer each config builds."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_model

from seq2seq.config import OptimConfig, TrainConfig
from seq2seq.errors import ConfigError
from seq2seq.horizon import FAR_AWAY, Horizon
from seq2seq.optim import build_optimizer, build_scheduler, learning_rate, parameter_groups


def lr_at(step: int, max_steps: int = FAR_AWAY, d_model: int = 512, **optim) -> float:
    return learning_rate(step, OptimConfig(**optim), d_model, max_steps)


def test_inverse_sqrt_warms_up_linearly_then_decays_with_the_square_root():
    cfg = {"schedule": "inverse_sqrt", "lr": 1e-3, "warmup_steps": 100}
    assert lr_at(50, **cfg) == pytest.approx(5e-4)
    assert lr_at(100, **cfg) == pytest.approx(1e-3)  # the peak is optim.lr
    assert lr_at(400, **cfg) == pytest.approx(5e-4)  # 4x the warm-up: half the peak


def test_noam_is_the_papers_formula():
    cfg = {"schedule": "noam", "lr": 2.0, "warmup_steps": 4000}
    for step in (1, 1000, 4000, 10_000):
        expected = 2.0 * 512**-0.5 * min(step**-0.5, step * 4000**-1.5)
        assert lr_at(step, **cfg) == pytest.approx(expected)


def test_cosine_falls_from_the_peak_to_min_lr_at_max_steps():
    cfg = {"schedule": "cosine", "lr": 1e-3, "min_lr": 1e-5, "warmup_steps": 10}
    assert lr_at(5, max_steps=110, **cfg) == pytest.approx(5e-4)
    assert lr_at(10, max_steps=110, **cfg) == pytest.approx(1e-3)
    assert lr_at(60, max_steps=110, **cfg) == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at(110, max_steps=110, **cfg) == pytest.approx(1e-5)
    assert lr_at(500, max_steps=110, **cfg) == pytest.approx(1e-5)


def test_linear_falls_in_a_straight_line_from_the_peak_to_min_lr():
    cfg = {"schedule": "linear", "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 10}
    assert lr_at(10, max_steps=110, **cfg) == pytest.approx(1e-3)
    assert lr_at(60, max_steps=110, **cfg) == pytest.approx(5.5e-4)
    assert lr_at(110, max_steps=110, **cfg) == pytest.approx(1e-4)
    assert lr_at(200, max_steps=110, **cfg) == pytest.approx(1e-4)


def test_a_warmup_fraction_is_that_share_of_the_horizon():
    cfg = {"schedule": "cosine", "lr": 1e-3, "warmup_steps": 4000, "warmup_fraction": 0.1}
    assert lr_at(50, max_steps=1000, **cfg) == pytest.approx(5e-4)  # warm-up: 100 steps
    assert lr_at(100, max_steps=1000, **cfg) == pytest.approx(1e-3)
    assert lr_at(50, max_steps=2000, **cfg) == pytest.approx(2.5e-4)  # 200 steps
    assert lr_at(5, max_steps=FAR_AWAY, **cfg) < 1e-9  # horizon not yet fitted: next to 0


def test_a_cooldown_brings_any_schedule_down_to_min_lr_at_the_horizon():
    cfg = {"schedule": "inverse_sqrt", "lr": 1e-3, "warmup_steps": 100, "cooldown": 0.2}
    assert lr_at(400, max_steps=1000, **cfg) == pytest.approx(5e-4)  # before the cool-down
    assert lr_at(800, max_steps=1000, **cfg) == pytest.approx(1e-3 * math.sqrt(100 / 800))
    halfway = 1e-3 * math.sqrt(100 / 900) / 2
    assert lr_at(900, max_steps=1000, **cfg) == pytest.approx(halfway)
    assert lr_at(1000, max_steps=1000, **cfg) == 0.0


@pytest.mark.parametrize(
    "optim",
    [{"schedule": "cosine"}, {"schedule": "linear"}, {"cooldown": 0.1}, {"warmup_fraction": 0.1}],
)
def test_a_schedule_that_needs_an_end_without_one_is_a_config_error(optim):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    horizon = Horizon.from_config(TrainConfig(max_steps=0, max_minutes=0))
    with pytest.raises(ConfigError, match="set train.max_steps or train.max_minutes"):
        build_scheduler(optimizer, OptimConfig(**optim), 512, horizon)


def test_the_scheduler_reads_the_horizon_at_every_step():
    cfg = OptimConfig(schedule="linear", lr=1e-3, warmup_steps=0)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    horizon = Horizon.from_config(TrainConfig(max_steps=0, max_minutes=1))
    scheduler = build_scheduler(optimizer, cfg, 32, horizon)
    horizon.steps = 10  # refitted while training runs
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 8 / 10)  # step 2 of 10


def test_the_scheduler_gives_the_optimizer_the_schedules_learning_rate():
    cfg = OptimConfig(lr=1e-3, warmup_steps=4)
    optimizer = build_optimizer(tiny_model(), cfg)
    scheduler = build_scheduler(optimizer, cfg, 32, Horizon.from_config(TrainConfig()))
    seen = []
    for _ in range(8):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    warm = [2.5e-4, 5e-4, 7.5e-4, 1e-3]  # steps 1-4: linear warm-up
    decay = [1e-3 * math.sqrt(4 / step) for step in (5, 6, 7, 8)]
    assert seen == pytest.approx(warm + decay)


@pytest.mark.parametrize("name, kind", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_optimizer_choice_and_betas(name, kind):
    optimizer = build_optimizer(tiny_model(), OptimConfig(optimizer=name, weight_decay=0.01))
    assert type(optimizer) is kind
    assert optimizer.defaults["betas"] == (0.9, 0.98)


def test_weight_decay_applies_to_matrices_only():
    decay, no_decay = parameter_groups(tiny_model(), 0.1)
    assert all(p.dim() >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert all(p.dim() == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
