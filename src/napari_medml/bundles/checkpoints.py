"""Training checkpoints: a bundle plus the optimizer, schedule and loop state, so a run can
resume. Tensors go to safetensors, the rest to JSON; nothing is pickled."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from napari_medml.bundles.format import CHECKPOINTS_NAME, save_model, write_bundle_files
from napari_medml.config import to_dict
from napari_medml.io.atomic import left_by_dead_writers, restore_interrupted, temp_name
from napari_medml.errors import BundleError, ConfigError

if TYPE_CHECKING:
    from napari_medml.config import TrainConfig

__all__ = ["STATE_JSON", "STATE_TENSORS", "check_same_network", "check_same_training", "checkpoint_folder",
           "find_checkpoint", "has_checkpoint", "optimizer_state", "read_checkpoint", "save_keeping_checkpoints",
           "save_run", "write_checkpoint"]


STATE_JSON = "train_state.json"


STATE_TENSORS = "train_state.safetensors"
SET_ASIDE = "checkpoints"  # .<bundle>.checkpoints-<pid>-<random>: a stopped run's checkpoints while it saves
FOLD_MEMBER = "member"  # <checkpoint_dir>/fold-<k>/member: a finished fold's model, for resuming an ensemble



def write_checkpoint(model: Any, path: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any,
                     scaler: Any, scalars: Mapping[str, Any]) -> Path:
    """A bundle that training can resume from: tensors in safetensors, the rest in JSON."""
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    other_state: dict[str, dict[str, Any]] = {}
    for idx, entry in opt["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{name}"] = value
            else:
                other_state.setdefault(str(idx), {})[name] = value
    state = {
        **scalars,
        "optimizer": {"param_groups": _jsonable(opt["param_groups"]), "state": _jsonable(other_state)},
        "scheduler": _jsonable(scheduler.state_dict()) if scheduler is not None else None,
        "scaler": _jsonable(scaler.state_dict()) if scaler is not None else None,
    }
    return write_bundle_files(model.description(), model.network, path, extra_json={STATE_JSON: state},
                              extra_tensors={STATE_TENSORS: tensors or {"empty": torch.zeros(1)}})



def find_checkpoint(path: str | Path) -> Path:
    """The resumable checkpoint at ``path`` (a checkpoint folder or a ``checkpoint_dir``)."""
    path = Path(path).expanduser()
    restore_killed_writes(path)
    for candidate in (path / "last", path):
        if (candidate / STATE_JSON).is_file():
            return candidate
    if (path / "last").is_dir():  # review 46: a damaged ``last`` was told to find another run
        raise BundleError(damaged_checkpoint(path / "last", f"{path / 'last' / STATE_JSON} is missing"))
    raise BundleError(f"{path} holds no resumable checkpoint ({STATE_JSON} missing): "
                      "give the checkpoint folder of an earlier run")


# where a bundle's or checkpoint's own "damaged" line ends and its fix begins
_DAMAGE_SAID = (": the bundle is damaged", ": it is not a bundle or it is damaged", ": the checkpoint is damaged",
                ": the two files are not of one model")


def damaged_checkpoint(checkpoint: Path, line: str) -> str | None:
    """The line for a run's ``checkpoint`` that cannot be read, from the reader's ``line``: what is
    wrong, then the ways on (start again; the run's best epoch so far, when its bundle is there).

    Parameters
    ----------
    checkpoint : Path
        The checkpoint folder (``<checkpoint_dir>/last``).
    line : str
        The reader's message (``bundles.format``: what is wrong, then a bundle's fix).

    Returns
    -------
    str or None
        None when ``line`` does not say the files are damaged (a newer version's bundle: its own fix).
    """
    from napari_medml.bundles.format import CONFIG_NAME

    cut = [line.index(mark) for mark in _DAMAGE_SAID if mark in line]
    if not cut and not line.endswith(" is missing"):
        return None
    best = checkpoint.parent / "best"
    kept = f", or use its best epoch so far, the bundle '{best}'" if (best / CONFIG_NAME).is_file() else ""
    return (f"{line[:min(cut)] if cut else line}: the run's checkpoint is damaged, so it cannot go on: start it "
            f"again without resuming{kept}")



def restore_killed_writes(folder: Path) -> None:
    """Put back the checkpoints (``last``, ``best``, a fold's and its ``member``) that a run killed
    while replacing one left under its hidden old name, before anything looks for them
    (``io.atomic.restore_interrupted``): else ``--resume`` finds no ``last`` although it is on disk.
    So too ``<bundle>/checkpoints``, which a stopped run's save sets aside while it writes the bundle
    (:func:`save_keeping_checkpoints`)."""
    if folder.name == CHECKPOINTS_NAME and not folder.exists():  # a stopped run's save was killed
        restore_interrupted(folder.parent)
        aside = next((entry for _, entry in left_by_dead_writers(folder.parent, (SET_ASIDE,))), None)
        if aside is not None:
            folder.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                os.replace(aside, folder)
    if not folder.is_dir():
        restore_interrupted(folder)  # a checkpoint folder named itself
        return
    for sub in (folder, *sorted(folder.glob("fold-*"))):
        for name in ("last", "best", FOLD_MEMBER):
            restore_interrupted(sub / name)


def checkpoint_folder(bundle: str | Path) -> Path:
    """Where a run that saves its bundle to ``bundle`` keeps its ``best``/``last`` checkpoints.

    Parameters
    ----------
    bundle : str or Path
        The bundle folder the run saves to.

    Returns
    -------
    Path
        ``<bundle>/checkpoints`` (absolute): an interrupted run can go on from there;
        saving the finished bundle removes it.
    """
    return Path(bundle).expanduser().absolute() / CHECKPOINTS_NAME



def has_checkpoint(folder: str | Path | None) -> bool:
    """Whether ``folder`` (a run's ``checkpoint_dir``) holds a run to resume.

    Parameters
    ----------
    folder : str, Path or None
        A run's checkpoint folder (None: no folder, False).

    Returns
    -------
    bool
        True when ``<folder>/last`` holds the training state (``train_state.json``), or, for
        an ensemble (``--folds``), when a ``<folder>/fold-<k>`` holds a fold's ``last`` or its
        finished model (``member``).
    """
    if folder is None:
        return False
    folder = Path(folder).expanduser()
    restore_killed_writes(folder)
    if (folder / "last" / STATE_JSON).is_file():
        return True
    return any((fold / "last" / STATE_JSON).is_file() or (fold / FOLD_MEMBER / "config.json").is_file()
               for fold in folder.glob("fold-*"))



def save_keeping_checkpoints(model: Any, bundle: str | Path) -> Path:
    """Save ``model`` as the bundle ``bundle`` and keep ``<bundle>/checkpoints``.

    A plain save replaces the whole folder (and so the checkpoints): right for a
    finished run; a stopped run keeps its checkpoints so that it can resume.

    Parameters
    ----------
    model : any task's model
        Has ``save(path)``, or ``network`` and ``description()`` (``bundles.format.save_model``).
    bundle : str or Path
        The bundle folder.

    Returns
    -------
    Path
        The bundle folder.
    """
    checkpoints = checkpoint_folder(bundle)
    if not checkpoints.is_dir():
        return _save(model, bundle)
    # named with this process's id: a kill during the save leaves them where has_checkpoint puts them back
    aside = temp_name(checkpoints.parent, SET_ASIDE)
    os.replace(checkpoints, aside)
    saved = None
    try:
        saved = _save(model, bundle)
    finally:
        os.replace(aside, (saved or checkpoints.parent) / CHECKPOINTS_NAME)
    return saved



def save_run(model: Any, bundle: str | Path, *, stopped: bool, resumable: bool = True) -> Path:
    """Save the model of a training run as the bundle ``bundle``, as every front does.

    A finished run's bundle replaces the folder, and with it the run's checkpoints in
    ``<bundle>/checkpoints``; a stopped run (Stop, Ctrl-C) keeps them, so that resuming
    continues it (:func:`save_keeping_checkpoints`).

    Parameters
    ----------
    model : any task's model
        Has ``save(path)``, or ``network`` and ``description()``.
    bundle : str or Path
        The bundle folder.
    stopped : bool
        The run was stopped before its end (not by its time limit or early stopping).
    resumable : bool
        The run could resume from its checkpoints (False for an ensemble of folds, which
        trains from scratch: its checkpoints go with the save).

    Returns
    -------
    Path
        The bundle folder.
    """
    if stopped and resumable:
        return save_keeping_checkpoints(model, bundle)
    return _save(model, bundle)


def _save(model: Any, bundle: str | Path) -> Path:
    """``model.save(bundle)``, or the generic bundle writer for a model without ``save``."""
    return Path(model.save(bundle) if hasattr(model, "save") else save_model(model, bundle))


def check_same_network(before: TrainConfig, now: TrainConfig) -> None:
    """Raise unless ``now`` describes the same network as ``before`` (resuming a run).

    A resumed run continues its checkpoint's network; a changed setting that shapes the
    network (task, 2D/3D, network, width, depth, ...) would be ignored, so it is refused.

    Parameters
    ----------
    before : TrainConfig
        The settings the run started with.
    now : TrainConfig
        The settings asked for now.

    Raises
    ------
    ConfigError
        Names the settings that differ.
    """
    ignored = {"init_from", "freeze_stages"}  # a resumed run starts from its checkpoint
    changed = [f.name for f in fields(before.model)
               if f.name not in ignored and getattr(before.model, f.name) != getattr(now.model, f.name)]
    if before.data.spatial_dims != now.data.spatial_dims:
        changed.insert(0, "spatial_dims")
    if before.task != now.task:
        changed.insert(0, "task")
    if changed:
        raise ConfigError(f"cannot resume: {', '.join(changed)} changed since the stopped run (the checkpoint "
                          "holds the earlier network); set them back, or press Start for a new run")


def check_same_training(before: TrainConfig, now: TrainConfig) -> None:
    """Raise unless ``now`` describes the same network (:func:`check_same_network`) and trains it
    the same way as ``before``: a widget's Resume continues the checkpoint's optimizer state, so
    a changed loss, optimizer, rate, momentum, weight decay, schedule, warm-up or best-epoch metric
    would be ignored without a word (review 51), and is refused, as ``--resume`` refuses it.
    Epochs, time limit and patience may change.

    Parameters
    ----------
    before : TrainConfig
        The settings the run started with.
    now : TrainConfig
        The settings asked for now.

    Raises
    ------
    ConfigError
        Names the settings that differ, with both values.
    """
    check_same_network(before, now)
    kept = ("loss", "class_weights", "label_smoothing", "optimizer", "learning_rate", "momentum", "nesterov",
            "weight_decay", "schedule", "warmup", "early_stopping_metric")
    label = {"warmup": "warm-up", "early_stopping_metric": "best epoch by"}  # the forms' words
    optim = [f"{label.get(name, name.replace('_', ' '))} is {getattr(now.optim, name)}, the run's "
             f"{getattr(before.optim, name)}" for name in kept
             if getattr(now.optim, name) != getattr(before.optim, name)]
    if optim:
        raise ConfigError(f"Resume continues the stopped run with its own settings: {'; '.join(optim)}: set them "
                          "back, or press Start for a new run with the new ones")


def read_checkpoint(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """``train_state.json`` and the optimizer tensors of a checkpoint.

    Raises
    ------
    BundleError
        Naming the file that cannot be read (trial 46: safetensors' own error passed through).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = path / STATE_JSON
    try:
        state = json.loads(file.read_text())
        file = path / STATE_TENSORS
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:  # ValueError: JSON's and safetensors' own
        raise BundleError(f"{file} cannot be read ({exc}): the checkpoint is damaged") from exc
    return state, tensors



def optimizer_state(state: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> dict:
    """Rebuild an optimizer ``state_dict`` from ``read_checkpoint`` output."""
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, idx, name = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = value
    for idx, entry in state["optimizer"]["state"].items():
        opt_state.setdefault(int(idx), {}).update(entry)
    groups = state["optimizer"]["param_groups"]
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    return {"state": opt_state, "param_groups": groups}



def _jsonable(obj: Any) -> Any:
    return to_dict(obj, default=lambda value: None)  # callables (schedule lambdas) are rebuilt from the config
