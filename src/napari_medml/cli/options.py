"""Command-line options -> configuration fields: the one place that says which option sets
which ``TrainConfig`` field, for every training command (``train`` for each task, and
``pretrain``). Options left out keep the task's defaults, so the config stays the one
source of defaults."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from napari_medml.config import AugmentConfig, TrainConfig

__all__ = ["OPTION_FIELDS", "PRETRAIN_FIELDS", "config_from_options", "fields_given"]

# option dest -> "group.field" (or a top-level field) of TrainConfig
OPTION_FIELDS: dict[str, str] = {
    "background_id": "data.background_id",
    "patch_size": "data.patch_size",
    "batch_size": "data.batch_size",
    "val_fraction": "data.val_fraction",
    "normalization": "data.normalization",
    "foreground_fraction": "data.foreground_fraction",
    "val_margin": "data.val_margin",
    "folds": "data.folds",
    "network": "model.network",
    "features": "model.channels",
    "depth": "model.depth",
    "dropout": "model.dropout",
    "norm": "model.norm",
    "init_from": "model.init_from",
    "freeze_stages": "model.freeze_stages",
    "epochs": "optim.epochs",
    "steps_per_epoch": "optim.steps_per_epoch",
    "max_minutes": "optim.max_minutes",
    "optimizer": "optim.optimizer",
    "lr": "optim.learning_rate",
    "momentum": "optim.momentum",
    "nesterov": "optim.nesterov",
    "weight_decay": "optim.weight_decay",
    "loss": "optim.loss",
    "schedule": "optim.schedule",
    "warmup": "optim.warmup",
    "patience": "optim.early_stopping_patience",
    "stop_metric": "optim.early_stopping_metric",
    "label_smoothing": "optim.label_smoothing",
    "class_weights": "optim.class_weights",
    "device": "device",
    "seed": "seed",
}

# ``pretrain``: --loss is the reconstruction loss, and the corruption options
PRETRAIN_FIELDS: dict[str, str] = {
    **OPTION_FIELDS,
    "loss": "pretrain.loss",
    "corruption": "pretrain.corruption",
    "mask_ratio": "pretrain.mask_ratio",
    "mask_block": "pretrain.mask_block",
    "noise_std": "pretrain.noise_std",
}


def _value(value: Any) -> Any:
    """argparse gives lists and Paths; configs hold tuples and strings."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, Path):
        return str(value)
    return value


def fields_given(args: argparse.Namespace, fields: Mapping[str, str] = OPTION_FIELDS) -> dict[str, Any]:
    """``{"group.field": value}`` for every option in ``fields`` that was given (not None)."""
    out = {field: _value(getattr(args, dest)) for dest, field in fields.items()
           if getattr(args, dest, None) is not None}
    if getattr(args, "sparse", False):
        out["data.label_mode"] = "sparse"
    return out


def config_from_options(args: argparse.Namespace, base: TrainConfig,
                        fields: Mapping[str, str] = OPTION_FIELDS) -> TrainConfig:
    """``base`` with every option of ``args`` that was given set in its field.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options; options a command does not declare are simply absent.
    base : TrainConfig
        The task's starting configuration (its defaults).
    fields : mapping
        Option dest -> config field (:data:`OPTION_FIELDS`, :data:`PRETRAIN_FIELDS`).

    Returns
    -------
    TrainConfig
        Validated again by the config classes (``ConfigError`` on a bad combination). An
        ``--optimizer`` without ``--lr`` takes that optimizer's ``usual_learning_rate`` (a plan
        may still choose another rate: the rate was not given).
    """
    groups: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for field, value in fields_given(args, fields).items():
        group, _, name = field.rpartition(".")
        (groups.setdefault(group, {}) if group else top)[name] = value
    optim = groups.get("optim", {})
    if "optimizer" in optim and "learning_rate" not in optim:  # SGD at Adam's rate barely moves
        from napari_medml.config import usual_learning_rate

        optim["learning_rate"] = usual_learning_rate(optim["optimizer"])
    config = replace(base, **{g: replace(getattr(base, g), **v) for g, v in groups.items()}, **top)
    if "momentum" in groups.get("optim", {}) and config.optim.optimizer not in ("sgd", "rmsprop"):
        from napari_medml.errors import ConfigError

        raise ConfigError(f"--momentum is for SGD and RMSprop, and the optimizer is {config.optim.optimizer} "
                          "(no momentum): add --optimizer sgd (or rmsprop), or leave --momentum out")
    if "nesterov" in groups.get("optim", {}) and config.optim.optimizer != "sgd":
        from napari_medml.errors import ConfigError

        raise ConfigError(f"--no-nesterov is for SGD, and the optimizer is {config.optim.optimizer}: add "
                          "--optimizer sgd, or leave --no-nesterov out")
    if getattr(args, "no_augment", False):
        config = replace(config, augment=AugmentConfig.none())
    elif getattr(args, "augment_scale", None) is not None:
        config = replace(config, augment=AugmentConfig().scaled(args.augment_scale))
    return config
