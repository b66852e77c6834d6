"""The world affine of a volume whose grid moved in napari's axis-aligned view.

napari places a layer by scale and translate only, so an oblique NIfTI volume is shown
axis-aligned: its voxel (0, 0, 0) at the file's origin, its voxel axes along the
screen's. A volume cut or resampled from it (a crop, a resampled copy) is shown where it
lies in that view, and its translate is an origin in that view, not in the world: on a
turned grid the two differ. :data:`AFFINE_ORIGIN` records the view's origin at which a
stored affine holds exactly; a move by ``d`` (in the view, along the voxel axes) is then a
move by ``D @ d`` in the world, ``D`` the affine's unit axis directions
(:func:`moved_affine`). Written by hand: nibabel's ``rescale_affine`` keeps the centre of
the field of view and knows no view.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_medml.io.volume import affine_from_spacing

__all__ = ["AFFINE_ORIGIN", "PLACEMENT_META", "moved_affine", "regridded_affine", "view_anchor"]

# file-meta key: the view's origin (NIfTI x, y, z order) at which the stored affine holds
AFFINE_ORIGIN = "affine_origin"

# Volume.meta keys that say in what unit and frame a grid's voxels lie; a volume cut, resampled
# or predicted from another keeps them, so it saves as its source would
# "qform"/"qform_sform": a NIfTI's qform where it differs from its sform, and that sform (io.nifti)
PLACEMENT_META = ("unit", "time_unit", "sform_code", "qform_code", "qform", "qform_sform")


def moved_affine(stored: Any, anchor: Sequence[float] | None, spacing: Sequence[float],
                 origin: Sequence[float]) -> np.ndarray:
    """The affine of a layer shown at ``spacing``/``origin`` whose stored affine held at ``anchor``.

    Parameters
    ----------
    stored : array-like
        4x4 NIfTI affine (x, y, z columns).
    anchor : sequence of float or None
        The view's origin (x, y, z) at which ``stored`` holds; None: its own translation.
    spacing, origin : sequence of float
        The layer's scale and translate in napari order (the last two or three are spatial).

    Returns
    -------
    np.ndarray
        float64 (4, 4): the stored axis directions times ``spacing``; the stored origin moved by
        the view's move along those directions.
    """
    stored = np.asarray(stored, dtype=np.float64)
    k = min(len(spacing), 3)
    affine = affine_from_spacing(tuple(spacing), tuple(origin), direction=stored)
    at = stored[:k, 3] if anchor is None else np.asarray(anchor, dtype=np.float64)[:k]
    norms = np.linalg.norm(stored[:3, :k], axis=0)
    directions = stored[:3, :k] / np.where(norms > 0, norms, 1.0)
    view = np.asarray([float(o) for o in origin[::-1][:k]])
    affine[:3, 3] = stored[:3, 3] + directions @ (view - at)
    return affine


def regridded_affine(affine: Any, spatial: Sequence[int], spacing: Sequence[float], origin: Sequence[float],
                     new_spacing: Sequence[float], new_origin: Sequence[float]) -> tuple[np.ndarray, list[float]]:
    """The affine of a grid cut or resampled from one with ``affine``, and the view's origin it holds at.

    Parameters
    ----------
    affine : array-like
        4x4 NIfTI affine of the input grid (as :func:`moved_affine` resolves it).
    spatial : sequence of int
        The volume's spatial axes (napari order) among ``spacing``'s.
    spacing, origin : sequence of float
        The input's voxel size and view origin per axis (napari order).
    new_spacing, new_origin : sequence of float
        The output's, in the same view.

    Returns
    -------
    (np.ndarray, list of float)
        The output's affine (its voxel 0's world position, its voxel sizes) and its view origin
        in NIfTI (x, y, z) order.
    """
    n = len(spatial)
    to_input = np.eye(4)  # output voxel -> input voxel, NIfTI column order
    for k, axis in enumerate(spatial):
        col = n - 1 - k
        to_input[col, col] = float(new_spacing[axis]) / float(spacing[axis])
        to_input[col, 3] = (float(new_origin[axis]) - float(origin[axis])) / float(spacing[axis])
    return np.asarray(affine, dtype=np.float64) @ to_input, [float(new_origin[a]) for a in reversed(spatial)]


def view_anchor(affine: Any, view: Sequence[float], rtol: float = 1e-5, atol: float = 1e-6) -> list[float] | None:
    """The view's origin to record with ``affine`` (under :data:`AFFINE_ORIGIN`), or None.

    Parameters
    ----------
    affine : array-like
        4x4 NIfTI affine (x, y, z columns).
    view : sequence of float
        The grid's origin in napari's view, NIfTI (x, y, z) order (as many as spatial axes).
    rtol, atol : float
        Tolerances of "the same point".

    Returns
    -------
    list of float or None
        ``view`` when the affine's translation is elsewhere (a grid cut from a turned one,
        whose affine holds at that view origin only); None when they agree.
    """
    view = np.asarray(view, dtype=np.float64)
    translation = np.asarray(affine, dtype=np.float64)[:len(view), 3]
    return None if np.allclose(translation, view, rtol=rtol, atol=atol) else view.tolist()
