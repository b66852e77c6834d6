"""Input checks shared by the instance modules (one clear line per bad input)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from napari_medml.errors import InputError


def check_instances(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as an integer array (a bool mask becomes 0/1) after checking it is 2D/3D and non-negative."""
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise InputError(
            f"{name} has shape {labels.shape}: instance labels must be 2D (Y, X) or 3D (Z, Y, X); "
            "take one channel or time point first"
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise InputError(
            f"{name} has dtype {labels.dtype}: instance labels must be integers (0 background, "
            "one id per object); convert the layer to Labels"
        )
    if labels.size and np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
        raise InputError(f"{name} has negative ids: use 0 for background and positive ids for objects")
    return labels.astype(np.uint8) if labels.dtype == bool else labels


def check_spacing(spacing: Sequence[float] | None, ndim: int, name: str = "spacing") -> tuple[float, ...]:
    """Return ``spacing`` as a tuple of ``ndim`` positive floats (all ones when None)."""
    if spacing is None:
        return (1.0,) * ndim
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim or not all(np.isfinite(v) and v > 0 for v in values):
        raise InputError(
            f"{name} {tuple(spacing)} does not fit a {ndim}D image: give {ndim} positive voxel sizes"
        )
    return values


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise InputError unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise InputError(
            f"{name_a} has shape {a.shape} but {name_b} has {b.shape}: they must cover the same voxels"
        )
