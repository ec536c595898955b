"""Optimizer with parameter groups, and learning-rate schedules as small named functions.

Each schedule maps the optimizer step (1-based) to a learning rate; `LambdaLR` applies it as a
multiplier of 1.0, so the optimizer's own lr is the schedule's value.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from seq2seq.config import OptimConfig, OptimizerName, Schedule
from seq2seq.errors import ConfigError


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


def warmup_factor(step: int, warmup: int) -> float:
    return 1.0 if warmup == 0 else min(1.0, step / warmup)


def inverse_sqrt(step: int, cfg: OptimConfig, d_model: int, max_steps: int) -> float:
    """Linear warm-up to lr, then lr * sqrt(warmup / step) (fairseq's inverse_sqrt)."""
    step = max(step, 1)
    if step < cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    return cfg.lr * math.sqrt(max(cfg.warmup_steps, 1) / step)


def noam(step: int, cfg: OptimConfig, d_model: int, max_steps: int) -> float:
    """Vaswani et al. eq. (3): lr * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)."""
    step = max(step, 1)
    warmup = max(cfg.warmup_steps, 1)
    return cfg.lr * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def cosine(step: int, cfg: OptimConfig, d_model: int, max_steps: int) -> float:
    """Linear warm-up, then half a cosine from lr down to min_lr at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * warmup_factor(max(step, 1), cfg.warmup_steps)
    span = max(max_steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def constant(step: int, cfg: OptimConfig, d_model: int, max_steps: int) -> float:
    return cfg.lr * warmup_factor(max(step, 1), cfg.warmup_steps)


SCHEDULES: dict[Schedule, Callable[[int, OptimConfig, int, int], float]] = {
    Schedule.inverse_sqrt: inverse_sqrt,
    Schedule.noam: noam,
    Schedule.cosine: cosine,
    Schedule.constant: constant,
}


def learning_rate(step: int, cfg: OptimConfig, d_model: int, max_steps: int) -> float:
    """The learning rate for optimizer step `step` (1-based)."""
    return SCHEDULES[cfg.schedule](step, cfg, d_model, max_steps)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, d_model: int, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR counts from 0 before the first step; our schedules count steps from 1."""
    if cfg.schedule == Schedule.cosine and max_steps <= 0:
        raise ConfigError("optim.schedule=cosine needs train.max_steps > 0")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate(step + 1, cfg, d_model, max_steps)
    )
