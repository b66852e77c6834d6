"""The Train widget's form: the fields a plan chooses, the start of transfer learning, and the
modules imported in the background once it is docked."""

from __future__ import annotations

from typing import Any

from napari_medml._widgets._forms import is_planned, planned_value
from napari_medml.config import DataConfig, ModelConfig, OptimConfig, usual_learning_rate
from napari_medml.errors import InputError

__all__ = ["BUNDLE_START", "FORM_DEFAULTS", "FORM_PLANNED", "RANDOM_START", "WARM_UP", "planned_settings",
           "resume_form", "start_source", "stopped_folds", "user_set"]

RANDOM_START = "random weights"
BUNDLE_START = "bundle folder..."

# the form's fields the plan chooses when they show 'planned' (config field: form field)
FORM_PLANNED = {"model.network": "network", "model.channels": "channels", "model.depth": "depth", "model.norm": "norm",
                "data.normalization": "normalization", "optim.learning_rate": "lr", "optim.schedule": "schedule",
                "optim.warmup": "warmup", "optim.epochs": "epochs", "optim.steps_per_epoch": "steps"}
# what a 'planned' field gives without the plan, where the form's default is not the config's (a short run)
FORM_DEFAULTS = {"optim.epochs": 20, "optim.steps_per_epoch": 25}
_SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig}

# Imported in the background right after docking: a module's first import can hold the
# GIL for a few hundred ms (torch op registration, sympy for torch._dynamo), which would
# stall napari if it happened during training.
# tests/widgets/test_widget_train.py checks that fit imports nothing after these.
WARM_UP = ("napari_medml.segmentation.task", "napari_medml.segmentation.plan", "scipy.ndimage",
           "napari_medml.segmentation.prepare", "napari_medml.segmentation.data",
           "napari_medml.segmentation.split", "napari_medml.segmentation.validation", "napari_medml.engine.loop",
           "napari_medml.engine.optim", "napari_medml.bundles.format", "napari_medml.bundles.checkpoints",
           "napari_medml.bundles.transfer", "napari_medml.preprocessing.normalization", "napari_medml.io.atomic",
           "napari_medml.nn.losses", "napari_medml.nn.segmentation", "napari_medml.augment",
           "napari_medml.segmentation.metrics", "napari_medml.segmentation.postprocess", "monai.networks.nets",
           "monai.inferers", "monai.metrics", "monai.transforms", "monai.losses", "torch._dynamo", "safetensors.torch",
           "napari_medml.instances.task", "napari_medml.instances.data", "napari_medml.instances.model",
           "napari_medml.instances.metrics", "skimage.segmentation", "skimage.morphology",
           "napari_medml.segmentation.lazy", "napari_medml.segmentation.label_warnings")


def planned_settings(w: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The :data:`FORM_PLANNED` fields' values by config section (``{"model": {"depth": 4}, ...}``);
    a field showing 'planned' gives the config's default, which a plan replaces."""
    out: dict[str, dict[str, Any]] = {section: {} for section in _SECTIONS}
    for field, name in FORM_PLANNED.items():
        section, attr = field.split(".")
        default = FORM_DEFAULTS.get(field, getattr(_SECTIONS[section], attr))
        if field == "optim.learning_rate":  # without the plan: the optimizer's own (SGD's is ten times Adam's)
            default = usual_learning_rate(w["optimizer"].value)
        out[section][attr] = planned_value(w[name], default)
    return out


def user_set(w: dict[str, Any]) -> set[str]:
    """The :data:`FORM_PLANNED` config fields the user set (the plan keeps them)."""
    return {field for field, name in FORM_PLANNED.items() if not is_planned(w[name])}


def resume_form(now: Any, run_config: Any, w: dict[str, Any]) -> Any:
    """The form's config ``now`` with each field left 'planned' at the stopped run's value (what
    its plan chose): Resume compares the fields the user set with the network that ran."""
    from dataclasses import replace

    taken: dict[str, dict[str, Any]] = {}
    for field, name in FORM_PLANNED.items():
        if is_planned(w[name]):
            section, attr = field.split(".")
            taken.setdefault(section, {})[attr] = getattr(getattr(run_config, section), attr)
    return replace(now, **{section: replace(getattr(now, section), **values) for section, values in taken.items()})


def start_source(w: dict[str, Any], session: Any) -> Any:
    """The transfer-learning source chosen in *start from*: None, a bundle folder (str) or a
    session model.

    Raises
    ------
    InputError
        *bundle folder* chosen without a folder.
    """
    choice = w["init"].value
    if choice in (None, RANDOM_START):
        return None
    if choice == BUNDLE_START:
        folder = str(w["init_bundle"].value)
        if folder in ("", "."):
            raise InputError("'start from' is a bundle folder: choose the folder (e.g. a Pretrain bundle)")
        return folder
    return session.models[choice]


def stopped_folds(model: Any) -> str:
    """What a stopped run's status adds for an ensemble missing folds (trial 41: it did not say that 3 of
    4 models were missing), as the command line says it.

    Parameters
    ----------
    model : any task's model
        The stopped run's model (an ensemble's provenance counts its folds).

    Returns
    -------
    str
        ``"an ensemble of the 1 of 4 folds trained so far; "``, or ``""``.
    """
    ensemble = (getattr(model, "provenance", None) or {}).get("ensemble") or {}
    trained, folds = ensemble.get("trained", 0), ensemble.get("folds", 0)
    return f"an ensemble of the {trained} of {folds} folds trained so far; " if trained < folds else ""
