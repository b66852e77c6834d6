"""Where a layer lies beyond its scale and translate: napari's rotate, shear and affine, and units.

The core places results by voxel size and origin (``layer_data.spatial_meta``). A napari
layer may also be rotated, sheared or given an affine (``layer.rotate``, ``layer.shear``,
``layer.affine``); napari maps its data to the world as ``A (R Sh diag(s) x + t)``. A
result computed on the layer's grid, with its own scale ``s'`` and translate ``t'``, lies on
the layer when it gets the affine ``A T`` with ``T = [[R Sh, (I - R Sh) t], [0, 1]]``: the
rotation and shear about the layer's translate. Scale and translate stay the voxel size and
origin the rest of the plugin reads.

Written by hand: napari composes these transforms but has no call that carries one layer's
onto another of other dimensions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_medml.errors import InputError

__all__ = ["place_like", "placement", "placement_events", "world_mismatch"]

_TOLERANCE = 1e-6


def _beyond_scale(layer: Any) -> np.ndarray:
    """``A T`` of ``layer`` (see the module), ``(ndim + 1, ndim + 1)``."""
    from napari.utils.transforms import CompositeAffine

    n = layer.ndim
    linear = CompositeAffine(rotate=layer.rotate, shear=layer.shear, ndim=n).linear_matrix
    shift = np.asarray(layer.translate, float)
    inner = np.eye(n + 1)
    inner[:n, :n] = linear
    inner[:n, n] = shift - linear @ shift
    return np.asarray(layer.affine.affine_matrix, float) @ inner


def _last_axes(matrix: np.ndarray, n: int) -> np.ndarray | None:
    """``matrix`` (homogeneous) on its last ``n`` axes, as napari lines up layers of other
    dimensions; None when those axes depend on the others (a rotation across a channel axis)."""
    m = matrix.shape[0] - 1
    if n >= m:
        out = np.eye(n + 1)
        out[n - m:, n - m:] = matrix
        return out
    keep, drop = [*range(m - n, m), m], list(range(m - n))
    if np.abs(matrix[np.ix_(keep[:-1], drop)]).max() > _TOLERANCE:
        return None
    return matrix[np.ix_(keep, keep)]


def placement(like: Any, ndim: int, name: str = "the result") -> np.ndarray | None:
    """The affine a result of ``ndim`` axes on ``like``'s grid takes to lie on ``like`` (see
    the module), or None when ``like`` has no rotation, shear or affine.

    Raises
    ------
    InputError
        ``like`` is rotated or sheared across an axis the result does not have (checked before
        the result is added: a result that cannot be placed is not shown).
    """
    beyond = _beyond_scale(like)
    if np.allclose(beyond, np.eye(like.ndim + 1), atol=_TOLERANCE):
        return None
    placed = _last_axes(beyond, ndim)
    if placed is None:
        raise InputError(f"image '{like.name}' is rotated, sheared or has an affine across an axis {name} lacks: set "
                         "its rotate, shear and affine for its spatial axes only")
    return placed


def place_like(layer: Any, like: Any) -> None:
    """Give ``layer`` (a result placed by scale and translate on ``like``'s grid) ``like``'s
    rotation, shear, affine and units, so that it lies on ``like`` in the viewer.

    Raises
    ------
    InputError
        As :func:`placement`.
    """
    placed = placement(like, layer.ndim, f"'{layer.name}'")
    if placed is not None or not np.allclose(layer.affine.affine_matrix, np.eye(layer.ndim + 1), atol=_TOLERANCE):
        layer.affine = np.eye(layer.ndim + 1) if placed is None else placed  # a refilled layer's earlier one goes
    units = tuple(getattr(like, "units", ()) or ())  # napari >= 0.6
    if units and hasattr(layer, "units") and tuple(layer.units) != units[-layer.ndim:]:
        n = layer.ndim
        layer.units = (tuple(layer.units)[: max(n - len(units), 0)] + units)[-n:]


def world_mismatch(a: Any, b: Any) -> str | None:
    """How layer ``b`` is rotated, sheared or given an affine other than ``a`` (their last
    common axes), or None; scale and translate are compared by ``placement_mismatch``."""
    n = min(a.ndim, b.ndim)
    one, two = _last_axes(_beyond_scale(a), n), _last_axes(_beyond_scale(b), n)
    if one is not None and two is not None and np.allclose(one, two, atol=1e-4):
        return None
    return "another rotate, shear or affine"


def placement_events(layer: Any) -> list[Any]:
    """The events of ``layer`` that move it in the world (scale, translate, rotate, shear, affine)."""
    return [getattr(layer.events, name) for name in ("scale", "translate", "rotate", "shear", "affine")
            if hasattr(layer.events, name)]
