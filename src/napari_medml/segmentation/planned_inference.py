"""The prediction settings a run's plan chose (``Plan.tta``), read back from a model in
memory or a bundle folder without loading its weights: what a prediction uses when the
user sets nothing (the CLI's ``predict`` without ``--tta``/``--no-tta``, the Predict
widget's box when a model is chosen, ``Model.predict`` without a config)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from napari_medml.config import InferConfig

__all__ = ["planned_infer_config", "planned_inference"]


def planned_inference(source: Any) -> dict[str, Any]:
    """The prediction settings a model's plan chose, as ``InferConfig`` fields (``{"tta": True}``).

    Parameters
    ----------
    source : model or path
        A model in memory (its ``provenance["plan"]``) or a bundle folder (its ``config.json``,
        read without loading the weights).

    Returns
    -------
    dict
        Empty for a model trained without a plan (``--no-plan``, a classifier, a bundle older
        than the planned test-time augmentation) or a folder that cannot be read: loading it
        says why. Never raises.
    """
    plan = None
    if hasattr(source, "provenance"):
        plan = (source.provenance or {}).get("plan")
    elif source is not None and str(source) not in ("", "."):
        try:
            desc = json.loads((Path(source).expanduser() / "config.json").read_text())
            # ensembles saved before dd61ea1 kept their plan in provenance
            plan = desc.get("plan") or (desc.get("provenance") or {}).get("plan")
        except (OSError, ValueError, AttributeError):
            return {}  # not a bundle: loading it gives the reason
    if not isinstance(plan, dict) or not isinstance(plan.get("tta"), bool):
        return {}
    return {"tta": plan["tta"]}


def planned_infer_config(model: Any, given: Any = None) -> InferConfig:
    """``given``, or where it is None ``InferConfig()`` with the settings ``model``'s plan chose
    (:func:`planned_inference`): what a prediction uses when the caller gives no config.

    Parameters
    ----------
    model : model or path
        As for :func:`planned_inference`.
    given : InferConfig or None
        The caller's settings.

    Raises
    ------
    InputError
        ``given`` is not an ``InferConfig`` (a dict raised AttributeError deep in prediction; trial 47).
    """
    if given is None:
        return InferConfig(**planned_inference(model))
    if not isinstance(given, InferConfig):
        from napari_medml.errors import InputError

        got = "a dict" if isinstance(given, dict) else f"{type(given).__name__} {given!r}"
        raise InputError(f"config must be an InferConfig, got {got}: build one with InferConfig(tta=..., ...) or "
                         "napari_medml.config.from_dict(InferConfig, a_dict)")
    return given
