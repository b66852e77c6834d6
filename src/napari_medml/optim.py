"""Optimizers and learning-rate schedules from an ``OptimConfig``, shared by both tasks."""

from __future__ import annotations

import math
from typing import Any

import torch

from napari_medml.config import TrainConfig
from napari_medml.errors import ConfigError

__all__ = ["build_optimizer", "build_scheduler"]


def build_optimizer(network: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    o = config.optim
    params = [p for p in network.parameters() if p.requires_grad]
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.learning_rate, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                               weight_decay=o.weight_decay)
    if o.optimizer == "adam":
        return torch.optim.Adam(params, lr=o.learning_rate, weight_decay=o.weight_decay)
    if o.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=o.learning_rate, weight_decay=o.weight_decay)
    if o.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=o.learning_rate, momentum=o.momentum, weight_decay=o.weight_decay)
    raise ConfigError(f"unknown optimizer {o.optimizer!r}: choose sgd, adam, adamw or rmsprop")


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total: int) -> tuple[Any, Any]:
    """(per-step scheduler or None, per-epoch plateau scheduler or None)."""
    name = config.optim.schedule
    if name == "plateau":
        patience = max(1, (config.optim.early_stopping_patience or 10) // 2)
        return None, torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=patience)
    if name == "constant":
        return None, None
    if name == "poly":
        fn = _Poly(total)
    elif name == "cosine":
        fn = _Cosine(total)
    else:
        raise ConfigError(f"unknown schedule {name!r}: choose constant, cosine, poly or plateau")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn), None


class _Poly:
    """nnU-Net's polynomial decay, (1 - step / total) ** 0.9."""

    def __init__(self, total: int) -> None:
        self.total = total

    def __call__(self, step: int) -> float:
        return max(0.0, 1.0 - step / self.total) ** 0.9


class _Cosine:
    """Cosine decay from the base rate to 0 over the run."""

    def __init__(self, total: int) -> None:
        self.total = total

    def __call__(self, step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, self.total) / self.total))
