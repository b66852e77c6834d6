"""Lengths in the units files name: a grid in millimetres beside the same grid in micrometres."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from dataclasses import replace

import numpy as np

from napari_medml.io.volume import Volume, length_factor

__all__ = ["UNIT_AS_READ", "as_read", "in_model_unit", "in_unit", "in_unit_of", "length_axes", "scaled",
           "trained_unit"]

UNIT_AS_READ = "unit_as_read"  # meta key: the unit a volume was read in, before in_model_unit


def in_unit_of(moving: Volume, reference: Volume, first: int, stop: int) -> tuple[Volume, str | None]:
    """``moving`` with its spatial geometry in ``reference``'s unit, when both name a different one.

    Parameters
    ----------
    moving, reference : Volume
        Their ``meta["unit"]`` (``"nm"``, ``"um"``, ``"mm"``, ``"cm"``, ``"m"``) name the unit of
        spacing, origin and affine; a volume naming none, or another, is left as it is.
    first, stop : int
        ``moving``'s spatial axes (``data`` axes ``first:stop``); the others (time, channels)
        keep their spacing.

    Returns
    -------
    (Volume, str or None)
        The volume in ``reference``'s unit and a note naming both units; ``moving`` itself and
        None when there is nothing to convert.
    """
    have, want = moving.meta.get("unit"), reference.meta.get("unit")
    volume = in_unit(moving, want, range(first, stop))
    if volume is moving:
        return moving, None
    return volume, f"its voxel size and position in {have} were compared in {want}"


def in_unit(volume: Volume, unit: str | None, axes: Iterable[int]) -> Volume:
    """``volume`` with the voxel size and position of ``axes``, and its affine, in ``unit``.

    Parameters
    ----------
    volume : Volume
        Its ``meta["unit"]`` names the unit of its spatial geometry.
    unit : str or None
        A length unit (``"nm"``, ``"um"``, ``"mm"``, ``"cm"``, ``"m"``).
    axes : iterable of int
        The spatial axes of ``data``; the others (time, channels) keep their spacing.

    Returns
    -------
    Volume
        ``volume`` itself when either unit is unknown or they are the same length.
    """
    have, axes = volume.meta.get("unit"), set(axes)
    f = length_factor(have, unit)
    if have == unit or f == 1.0:
        return volume
    spacing = tuple(scaled(s, f) if a in axes else s for a, s in enumerate(volume.spacing))
    origin = tuple(scaled(o, f) if a in axes else o for a, o in enumerate(volume.origin))
    affine = None if volume.affine is None else scaled(np.diag([f, f, f, 1.0]) @ np.asarray(volume.affine, float), 1.0)
    return replace(volume, spacing=spacing, origin=origin, affine=affine, meta={**volume.meta, "unit": unit})


def scaled(value: Any, factor: float) -> Any:
    """``value * factor`` to 12 significant digits: 2 µm in mm is 0.002, not 0.0020000000000000005
    (trial 52: scales written after a round trip through another unit carried the noise).

    Parameters
    ----------
    value : float or np.ndarray
        A length (voxel size, position) or an affine.
    factor : float
        From one length unit to another (``io.volume.length_factor``).
    """
    if isinstance(value, np.ndarray):
        return np.vectorize(lambda v: float(f"{v:.12g}"), otypes=[float])(value * factor)
    return float(f"{value * factor:.12g}")


def trained_unit(model: Any) -> str | None:
    """The length unit a model's training images named their voxel size in (``"um"``, ``"mm"``...),
    as its bundle records it (``provenance["unit"]``); None for a model that records none.

    Parameters
    ----------
    model : object
        A segmentation, instance, pretraining or ensemble model (anything with ``provenance``).
    """
    return (getattr(model, "provenance", None) or {}).get("unit")


def in_model_unit(volume: Volume, trained: str | None) -> tuple[Volume, float]:
    """``volume`` with the voxel size, position and affine of its Z, Y and X axes in ``trained``,
    the length unit a model was trained in, so that the model compares its own numbers (trial 51:
    an image in mm, the same voxels as the training images in µm, was resampled 1000-fold).

    Parameters
    ----------
    volume : Volume
        As read; ``meta["unit"]`` names its length unit.
    trained : str or None
        The model's (``model.provenance["unit"]``).

    Returns
    -------
    (Volume, float)
        The volume, with the unit it was read in kept in ``meta[UNIT_AS_READ]`` for
        :func:`as_read` (its outputs are written in it), and the factor (1: nothing changed).
    """
    have = volume.meta.get("unit")
    converted = in_unit(volume, trained, length_axes(volume))
    if converted is volume or trained is None:
        return volume, 1.0
    return replace(converted, meta={**converted.meta, UNIT_AS_READ: have}), length_factor(have, trained)


def as_read(volume: Volume) -> Volume:
    """``volume`` back in the unit it was read in, when :func:`in_model_unit` changed it: outputs
    written like an image lie on it in its own unit."""
    have = volume.meta.get(UNIT_AS_READ)
    if have is None:
        return volume
    back, _ = in_model_unit(volume, have)
    return replace(back, meta={k: v for k, v in back.meta.items() if k != UNIT_AS_READ})


def length_axes(volume: Volume) -> list[int]:
    """The axes of ``volume`` whose spacing is a length (Z, Y and X, and an unnamed axis ``Q`` that a 3D
    network takes as Z; not time, channels or colour), which a change of unit scales, whichever of them
    a network takes (a 2D one on a volume). Review 53: a layer with napari's default axis labels (QYX)
    was predicted with Q in the model's unit and its stores kept Q there."""
    return [a for a, name in enumerate(volume.axes[: len(volume.spacing)]) if name in "QZYX"]
