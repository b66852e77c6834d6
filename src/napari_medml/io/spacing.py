"""Whether an image's voxel size suits a model: one line when it does not."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["spacing_note", "unit_note"]


def spacing_note(spacing: tuple[float, ...] | None, trained: tuple[float, ...] | None, name: str,
                 tolerance: float = 1.25, recipe: Any = ()) -> str | None:
    """One line when an image's voxel size differs from a model's training spacing by more
    than ``tolerance`` (a ratio) along any axis; None otherwise or when either is unknown.

    Parameters
    ----------
    spacing : tuple of float or None
        The image's voxel size (napari order).
    trained : tuple of float or None
        The model's training spacing (``model.spacing``: after its recipe).
    name : str
        How the line names the image.
    tolerance : float
        The largest ratio that says nothing.
    recipe : sequence of PreprocessStep (or their dicts)
        The model's preprocessing recipe (``model.config.data.preprocessing``). A resample
        step in it sets the voxel size the network sees, so the spacing after it is
        compared: a model that resamples its input warns about nothing.

    Returns
    -------
    str or None
    """
    if spacing is None or trained is None:
        return None
    hint = _unit_hint(spacing, trained, name)
    if hint:  # review 52: a model that resamples took mm numbers for um ones without a word
        return hint
    for step in recipe or ():
        operation = step.get("operation") if isinstance(step, Mapping) else getattr(step, "operation", None)
        params = (step.get("params") if isinstance(step, Mapping) else getattr(step, "params", None)) or {}
        target = params.get("target_spacing") if operation == "resample" else None
        if target is not None and len(target) >= len(spacing):
            spacing = tuple(float(t) for t in target)[len(target) - len(spacing):]
    if len(spacing) != len(trained):
        return None
    ratios = [s / t for s, t in zip(spacing, trained) if s > 0 and t > 0]
    if all(1 / tolerance <= r <= tolerance for r in ratios):
        return None
    show = lambda v: " x ".join(f"{x:g}" for x in v)  # noqa: E731
    return (f"warning: {name} has voxel size {show(spacing)} but the model was trained at {show(trained)}: "
            "objects look larger or smaller to it; for the best result resample the image to the training "
            "spacing (napari: Preprocess > resample; Python: napari_medml.preprocessing.ops.resample), or train on "
            "images of both voxel sizes: such a model resamples every image it is given")


def unit_note(unit: str | None, trained: str | None, spacing: tuple[float, ...], name: str) -> str | None:
    """One line when an image names its voxel size in another length unit than the model's
    training images did, and is predicted in the model's (``io.units.in_model_unit``; trial 51:
    a model trained at 2 x 0.5 x 0.5 µm ran on a NIfTI of 2 x 0.5 x 0.5 mm without a word).

    Parameters
    ----------
    unit : str or None
        The image's length unit (``Volume.meta["unit"]``: nm, um, mm, cm or m).
    trained : str or None
        The model's (``model.provenance["unit"]``); None: not recorded.
    spacing : tuple of float
        The image's spatial voxel size, in ``unit``.
    name : str
        How the line names the image.

    Returns
    -------
    str or None
        None when either unit is unknown or both are the same length.
    """
    from napari_medml.io.volume import length_factor

    factor = length_factor(unit, trained)
    if unit is None or trained is None or unit == trained or factor == 1.0:
        return None
    show = lambda v: " x ".join(f"{x:g}" for x in v)  # noqa: E731
    fix = ("layer's unit is wrong, set its units" if name.startswith("layer") else  # review 53: a layer has no
           "file's unit is wrong, fix its header")  # header
    return (f"{name} names its voxel size in {unit} ({show(spacing)} {unit}) and the model's training images in "
            f"{trained}: it is predicted at {show(tuple(s * factor for s in spacing))} {trained}, and its outputs "
            f"are written in {unit} (if the {fix})")


def _unit_hint(spacing: tuple[float, ...], trained: tuple[float, ...], name: str) -> str | None:
    """A line when the image's voxel size is about 1000 (or 1000000) times the training one along
    every axis: the mark of a file that names another length unit (mm for um), which a model
    without a recorded unit cannot tell; None otherwise."""
    import math

    if len(spacing) != len(trained) or not all(s > 0 and t > 0 for s, t in zip(spacing, trained)):
        return None
    logs = [math.log10(s / t) for s, t in zip(spacing, trained)]
    power = round(sum(logs) / len(logs) / 3) * 3  # 10**power: 1000, 1e6, 0.001...
    if power == 0 or any(abs(x - power) > 0.5 for x in logs):
        return None
    show = lambda v: " x ".join(f"{x:g}" for x in v)  # noqa: E731
    times = f"{10 ** abs(power):g} times {'larger' if power > 0 else 'smaller'}"
    return (f"warning: {name} has voxel size {show(spacing)}, about {times} than the model's training voxel size "
            f"{show(trained)}: if its file names another length unit than the training images did (mm for um), fix "
            "its header or save it in theirs; otherwise resample it to the training voxel size")
