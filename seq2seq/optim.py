"""Optimizer with parameter groups, and learning-rate schedules as small named functions.

Each schedule maps the optimizer step (1-based) and the run's horizon (the step where the
schedule ends: seq2seq/horizon.py) to a learning rate; `LambdaLR` applies it as a multiplier
of 1.0, so the optimizer's own lr is the schedule's value.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from seq2seq.config import OptimConfig, OptimizerName, Schedule
from seq2seq.errors import ConfigError
from seq2seq.horizon import Horizon


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: biases, LayerNorm and embedding-free vectors are exempt."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for parameter in model.parameters():  # shared (tied) parameters are listed once
        if parameter.requires_grad:
            (decay if parameter.dim() >= 2 else no_decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.weight_decay)
    kind = torch.optim.AdamW if cfg.optimizer == OptimizerName.adamw else torch.optim.Adam
    # lr=1.0: the schedule's multiplier is the learning rate itself. The fused implementation
    # updates all parameters in one kernel (CPU and CUDA).
    return kind(groups, lr=1.0, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=True)


def warmup_length(cfg: OptimConfig, horizon: int) -> int:
    """Warm-up steps: optim.warmup_fraction of the horizon when given, else optim.warmup_steps."""
    if cfg.warmup_fraction > 0:
        return max(round(cfg.warmup_fraction * horizon), 1)
    return cfg.warmup_steps


def warmup_factor(step: int, warmup: int) -> float:
    return 1.0 if warmup == 0 else min(1.0, step / warmup)


def inverse_sqrt(step: int, cfg: OptimConfig, d_model: int, horizon: int) -> float:
    """Linear warm-up to lr, then lr * sqrt(warmup / step) (fairseq's inverse_sqrt)."""
    step, warmup = max(step, 1), warmup_length(cfg, horizon)
    if step < warmup:
        return cfg.lr * step / warmup
    return cfg.lr * math.sqrt(max(warmup, 1) / step)


def noam(step: int, cfg: OptimConfig, d_model: int, horizon: int) -> float:
    """Vaswani et al. eq. (3): lr * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)."""
    step, warmup = max(step, 1), max(warmup_length(cfg, horizon), 1)
    return cfg.lr * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def decay_progress(step: int, warmup: int, horizon: int) -> float:
    """How far past the warm-up towards the horizon `step` is, from 0 to 1."""
    return min(max(step - warmup, 0) / max(horizon - warmup, 1), 1.0)


def cosine(step: int, cfg: OptimConfig, d_model: int, horizon: int) -> float:
    """Linear warm-up, then half a cosine from lr down to min_lr at the horizon."""
    warmup = warmup_length(cfg, horizon)
    if step < warmup:
        return cfg.lr * warmup_factor(max(step, 1), warmup)
    progress = decay_progress(step, warmup, horizon)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def linear(step: int, cfg: OptimConfig, d_model: int, horizon: int) -> float:
    """Linear warm-up, then a straight line from lr down to min_lr at the horizon."""
    warmup = warmup_length(cfg, horizon)
    if step < warmup:
        return cfg.lr * warmup_factor(max(step, 1), warmup)
    return cfg.lr - (cfg.lr - cfg.min_lr) * decay_progress(step, warmup, horizon)


def constant(step: int, cfg: OptimConfig, d_model: int, horizon: int) -> float:
    return cfg.lr * warmup_factor(max(step, 1), warmup_length(cfg, horizon))


SCHEDULES: dict[Schedule, Callable[[int, OptimConfig, int, int], float]] = {
    Schedule.inverse_sqrt: inverse_sqrt,
    Schedule.noam: noam,
    Schedule.cosine: cosine,
    Schedule.linear: linear,
    Schedule.constant: constant,
}
ENDS_AT_THE_HORIZON = (Schedule.cosine, Schedule.linear)


def with_cooldown(lr: float, step: int, cfg: OptimConfig, horizon: int) -> float:
    """The last optim.cooldown of the horizon: lr falls in a straight line to min_lr."""
    length = cfg.cooldown * horizon
    if length <= 0 or step <= horizon - length:
        return lr
    left = max(horizon - step, 0) / length
    return cfg.min_lr + (lr - cfg.min_lr) * left


def learning_rate(step: int, cfg: OptimConfig, d_model: int, horizon: int) -> float:
    """The learning rate for optimizer step `step` (1-based) of a run ending at `horizon`."""
    lr = SCHEDULES[cfg.schedule](step, cfg, d_model, horizon)
    return with_cooldown(lr, step, cfg, horizon)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, d_model: int, horizon: Horizon
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR counts from 0 before the first step; our schedules count steps from 1. The
    horizon is read at every step: a time budget refits it while training runs."""
    check_schedule(cfg, horizon)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate(step + 1, cfg, d_model, horizon.steps)
    )


def check_schedule(cfg: OptimConfig, horizon: Horizon) -> None:
    """A schedule that needs an end (decay, cool-down, warm-up fraction) has one."""
    needs = []
    if cfg.schedule in ENDS_AT_THE_HORIZON:
        needs.append(f"optim.schedule={cfg.schedule.value}")
    if cfg.cooldown > 0:
        needs.append(f"optim.cooldown={cfg.cooldown}")
    if cfg.warmup_fraction > 0:
        needs.append(f"optim.warmup_fraction={cfg.warmup_fraction}")
    if needs and not horizon.known:
        raise ConfigError(
            f"{' and '.join(needs)} needs an end of training: "
            "set train.max_steps or train.max_minutes"
        )
