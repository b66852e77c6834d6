"""Optimizers and learning-rate schedules from a ``TrainConfig``, for every task.

"poly" (power 0.9, nnU-Net's) and "cosine" follow the run's *progress*, a number from
0 to 1: the share of the planned steps done or, with a time limit, the share of the
time budget used (the loop sets it before each step), whichever is larger. So with
``max_minutes`` the rate warms up and decays to its end over the time budget instead
of over a step count that the clock cuts off. :class:`ProgressSchedule` is a torch
``LRScheduler`` stepped once per optimizer step, so its state saves and resumes with
``state_dict()``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from napari_medml.config import TrainConfig
from napari_medml.errors import ConfigError

__all__ = ["ProgressSchedule", "build_optimizer", "build_scheduler", "schedule_factor"]


def build_optimizer(network: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (with momentum/Nesterov), Adam, AdamW or RMSprop over the trainable parameters.

    Raises
    ------
    ConfigError
        For an unknown optimizer name.
    """
    o = config.optim
    params = [p for p in network.parameters() if p.requires_grad]
    if o.optimizer == "sgd":
        momentum = o.momentum_in_use
        return torch.optim.SGD(params, lr=o.learning_rate, momentum=momentum, nesterov=o.nesterov and momentum > 0,
                               weight_decay=o.weight_decay)
    if o.optimizer == "adam":
        return torch.optim.Adam(params, lr=o.learning_rate, weight_decay=o.weight_decay)
    if o.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=o.learning_rate, weight_decay=o.weight_decay)
    if o.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=o.learning_rate, momentum=o.momentum_in_use,
                                   weight_decay=o.weight_decay)
    raise ConfigError(f"unknown optimizer {o.optimizer!r}: choose sgd, adam, adamw or rmsprop")


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total: int) -> tuple[Any, Any]:
    """The schedule: ``(per-step scheduler or None, per-epoch plateau scheduler or None)``.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
    config : TrainConfig
        ``optim.schedule``: constant, poly (nnU-Net, Isensee et al. 2021), cosine
        (Loshchilov & Hutter 2017, without restarts) or plateau (halve the rate after
        half the early-stopping patience, rounded up, of epochs without improvement of the
        validation key; 5 epochs without early stopping).
    total : int
        Steps in the run.

    Returns
    -------
    tuple
        A :class:`ProgressSchedule` (poly, cosine) or None, and a ``ReduceLROnPlateau``
        (plateau) or None.
    """
    name = config.optim.schedule
    total = max(int(total), 1)
    if name == "plateau":
        # halve at half the early-stopping patience (10 when none is set), so the lower rate gets its chance
        # before the run stops; torch halves after ``patience`` bad epochs plus one (trial 44: with --patience 2,
        # early stopping ended the run before the rate ever fell)
        wait = math.ceil((config.optim.early_stopping_patience or 10) / 2)
        return None, torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5,
                                                                patience=wait - 1)
    if name == "constant" and not config.optim.warmup:
        return None, None
    if name in ("constant", "poly", "cosine"):
        return ProgressSchedule(optimizer, name, total, config.optim.warmup), None
    raise ConfigError(f"unknown schedule {name!r}: choose constant, cosine, poly or plateau")


def schedule_factor(name: str, progress: float, warmup: float = 0.0) -> float:
    """The learning rate's multiplier at ``progress`` (0 to 1) of the run.

    A linear warm-up from 0.1 to 1 over the first ``warmup`` share, then ``name``'s
    decay over the rest: poly ``(1 - q) ** 0.9``, cosine ``(1 + cos(pi q)) / 2``,
    constant 1 (``q``: progress after the warm-up, 0 to 1).
    """
    p = min(max(float(progress), 0.0), 1.0)
    if warmup > 0 and p < warmup:
        return 0.1 + 0.9 * p / warmup
    q = (p - warmup) / (1.0 - warmup) if warmup < 1 else 1.0
    if name == "poly":
        return (1.0 - q) ** 0.9
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * q))
    return 1.0


class ProgressSchedule(torch.optim.lr_scheduler.LRScheduler):
    """Learning rates as a function of the run's progress (:func:`schedule_factor`).

    Progress is ``max(steps / total, clock)``: ``step()`` counts steps as torch's
    schedulers do, and ``set_clock`` gives the share of a time budget used (torch's
    step-counting schedulers cannot follow a clock). Both are in ``state_dict``, so a
    resumed run goes on where it stopped.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, name: str, total: int, warmup: float = 0.0) -> None:
        self.name, self.total, self.warmup, self.clock = name, max(int(total), 1), float(warmup), 0.0
        super().__init__(optimizer)

    @property
    def progress(self) -> float:
        return min(max(self.last_epoch / self.total, self.clock, 0.0), 1.0)

    def get_lr(self) -> list[float]:
        return self._rates()

    def _rates(self) -> list[float]:
        factor = schedule_factor(self.name, self.progress, self.warmup)
        return [base * factor for base in self.base_lrs]

    def set_clock(self, share: float) -> None:
        """The share (0 to 1) of the time budget used: the rates follow it when it is ahead."""
        self.clock = min(max(float(share), 0.0), 1.0)
        for group, rate in zip(self.optimizer.param_groups, self._rates()):
            group["lr"] = rate
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
