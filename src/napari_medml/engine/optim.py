"""Optimizers and learning-rate schedules from a ``TrainConfig``, for every task.

The schedules are torch's own (``PolynomialLR`` with power 0.9 is nnU-Net's "poly";
``CosineAnnealingLR`` decays to 0 over the run), so their state saves and resumes
with ``state_dict()``.
"""

from __future__ import annotations

from typing import Any

import torch

from napari_medml.config import TrainConfig
from napari_medml.errors import ConfigError

__all__ = ["build_optimizer", "build_scheduler"]


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
    """The schedule: ``(per-step scheduler or None, per-epoch plateau scheduler or None)``.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
    config : TrainConfig
        ``optim.schedule``: constant, poly (nnU-Net, Isensee et al. 2021), cosine
        (Loshchilov & Hutter 2017, without restarts) or plateau (halve the rate when
        the validation key stops improving).
    total : int
        Steps in the run.
    """
    name = config.optim.schedule
    total = max(int(total), 1)
    if name == "plateau":
        patience = max(1, (config.optim.early_stopping_patience or 10) // 2)
        return None, torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=patience)
    if name == "constant":
        return None, None
    if name == "poly":
        return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=total, power=0.9), None
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=0.0), None
    raise ConfigError(f"unknown schedule {name!r}: choose constant, cosine, poly or plateau")
