"""``train --resume`` and ``pretrain --resume``: continue a stopped run with the settings it started with.

The stopped run was planned (or configured) when it started, and its checkpoint holds that
network. Planning again would time the step again and could choose other epochs, steps
or a width the checkpoint does not have; an option given now that differs from the run's
own value would be ignored. So the run's stored settings are taken (with the epochs or
minutes given now: a run can be made longer), and another differing option is refused in
one line.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from napari_medml.cli.common import UsageError
from napari_medml.cli.options import OPTION_FIELDS, fields_given
from napari_medml.config import AugmentConfig, TrainConfig

__all__ = ["resumed_config", "resumed_note", "stopped_config"]

# settings a resumed run may take from the command: where it runs, not what it learns
_FREE = {"device", "amp", "checkpoint_dir"}
# the options' own names where argparse's dest differs (--channels is also --features)
_NAMES = {"model.channels": "--channels", "data.label_mode": "--sparse"}
# and how long it goes on: a run stopped early can be given more epochs or minutes
_LENGTH = ("optim.epochs", "optim.max_minutes")


def stopped_config(folder: Path) -> TrainConfig:
    """The settings the stopped run in checkpoint ``folder`` started with (an ensemble's: its
    first fold's, with the fold unset)."""
    from napari_medml.config import from_dict

    for path in sorted(folder.rglob("config.json")):
        desc = json.loads(path.read_text())
        if "train_config" in desc:
            config = from_dict(TrainConfig, desc["train_config"])
            return replace(config, data=replace(config.data, fold=None))
    raise UsageError(f"--resume: the checkpoints in '{folder}' hold no run settings; train without --resume")


def _value(config: TrainConfig, field: str) -> Any:
    group, _, name = field.rpartition(".")
    return getattr(getattr(config, group) if group else config, name)


def resumed_config(args: argparse.Namespace, asked: TrainConfig, folder: Path,
                   fields: Mapping[str, str] = OPTION_FIELDS) -> TrainConfig:
    """The stopped run's settings, for ``--resume`` of ``train`` (every task) and ``pretrain``.

    Parameters
    ----------
    args : argparse.Namespace
        The command's options.
    asked : TrainConfig
        The settings the options make now (``checkpoint_dir`` and ``device`` are taken from it).
    folder : Path
        The run's checkpoint folder.
    fields : mapping
        The command's option dest -> config field (``cli.options.PRETRAIN_FIELDS`` for ``pretrain``).

    Raises
    ------
    UsageError
        An option given now differs from the stopped run's value, e.g.
        ``--resume continues the stopped run with its own settings: --channels is 32, the run's 16 ...``.
    """
    stored = stopped_config(folder)
    option = {field: dest for dest, field in fields.items()}
    differ, given = [], fields_given(args, fields)
    # an instance run stopped before val_loss was refused for instances (it silently judged epochs by the
    # training loss) goes on with the metric its refusal names (review 32)
    stale = stored.task == "instances" and stored.optim.early_stopping_metric == "val_loss"
    free = _LENGTH + (("optim.early_stopping_metric",) if stale else ())
    for field in given:
        if field.rpartition(".")[2] in _FREE or field in free:
            continue
        theirs = _value(stored, field)
        if _value(asked, field) != theirs:
            name = _NAMES.get(field) or "--" + option[field].replace("_", "-")
            differ.append(f"{name} is {_shown(_value(asked, field))}, the run's {_shown(theirs)}")
    # options that set no field of their own: augmentation off, the task, the network's dimensions
    if getattr(args, "no_augment", False) and stored.augment != AugmentConfig.none():
        differ.append("--no-augment is given, the run trained with augmentation")
    scale = getattr(args, "augment_scale", None)
    if scale is not None and stored.augment != AugmentConfig().scaled(scale):
        differ.append(f"--augment-scale is {scale:g}, the run trained with other augmentation probabilities")
    if getattr(args, "task", None) is not None and args.task != stored.task:
        differ.append(f"--task is {args.task}, the run's {stored.task}")
    if getattr(args, "spatial_dims", None) is not None and args.spatial_dims != stored.data.spatial_dims:
        differ.append(f"--spatial-dims is {args.spatial_dims}, the run's {stored.data.spatial_dims}")
    if differ:
        raise UsageError("--resume continues the stopped run with its own settings: " + "; ".join(differ)
                         + ": drop those options, or train a new run without --resume")
    if stored.data.folds > 1 and stored.optim.max_minutes is not None and "optim.max_minutes" not in given:
        # its checkpoints keep each fold's share, which as the whole budget would starve the folds left (review 37)
        raise UsageError(f"--resume: the stopped ensemble of {stored.data.folds} folds had a time limit, and its "
                         "checkpoints keep only each fold's share of it: give --max-minutes as the run started with "
                         "it (the same command with --resume)")
    optim = replace(stored.optim, **{f.partition(".")[2]: _value(asked, f) for f in free if f in given})
    return replace(stored, optim=optim, checkpoint_dir=asked.checkpoint_dir, device=asked.device)


def resumed_note(config: TrainConfig, folder: Path) -> str:
    """The line ``--resume`` prints: the run goes on with its own settings, and where ``--epochs`` or
    ``--max-minutes`` made it longer or shorter, that its schedule follows the new length (trial 46:
    the rate rose from 0.00078 to 0.00112 on resuming with twice the epochs, and the line said nothing)."""
    stored = stopped_config(folder)
    changed = []
    if config.optim.epochs != stored.optim.epochs:
        changed.append(f"{config.optim.epochs} epochs instead of {stored.optim.epochs}")
    if stored.data.folds <= 1 and config.optim.max_minutes != stored.optim.max_minutes:
        limits = (config.optim.max_minutes, stored.optim.max_minutes)
        now, then = ("none" if m is None else f"{m:g} min" for m in limits)
        changed.append(f"a time limit of {now} instead of {then}")
    elif stored.data.folds > 1 and config.optim.max_minutes is not None and not (  # checkpoints keep a fold's share:
            # the first fold's is what was left of the whole after setup, over the folds (ensemble._fold_minutes)
            0.9 <= (stored.optim.max_minutes or 0) * stored.data.folds / config.optim.max_minutes <= 1.001):
        changed.append(f"the time limit given now, {config.optim.max_minutes:g} min for the {stored.data.folds} "
                       "folds")
    line = "--resume: the stopped run goes on with the settings it started with (not planned again)"
    if not changed or stored.optim.schedule in ("constant", "plateau"):
        return line + (f", but {' and '.join(changed)}" if changed else "")
    return (f"{line}, but {' and '.join(changed)}: its {stored.optim.schedule} schedule follows that length, so "
            "the learning rate goes on from where a run of that length would be at this step")


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value)
    return "none" if value is None else str(value)
