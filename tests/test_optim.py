"""Learning-rate schedules against their formulas, and the optimizer each config builds."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_model

from seq2seq.config import OptimConfig
from seq2seq.errors import ConfigError
from seq2seq.optim import build_optimizer, build_scheduler, learning_rate, parameter_groups


def lr_at(step: int, max_steps: int = 0, d_model: int = 512, **optim) -> float:
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


def test_cosine_without_max_steps_is_a_config_error():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ConfigError, match="needs train.max_steps"):
        build_scheduler(optimizer, OptimConfig(schedule="cosine"), 512, 0)


def test_the_scheduler_gives_the_optimizer_the_schedules_learning_rate():
    cfg = OptimConfig(lr=1e-3, warmup_steps=4)
    optimizer = build_optimizer(tiny_model(), cfg)
    scheduler = build_scheduler(optimizer, cfg, 32, 0)
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
