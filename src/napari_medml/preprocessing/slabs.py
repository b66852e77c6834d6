"""A local filter (median, Gaussian) of one large image in slabs, so Cancel stops within a slab
(about 2 s for a median of 7).

SciPy's filters cannot be interrupted: a median of 7 on a 64x256x256 volume held Cancel, and
the closing of napari, for 16 s (note 48). A local filter's output at a voxel reads only the
voxels within its reach, so the image is cut into slabs along its longest axis, each read
with a halo of that reach (dask's ``map_overlap``), and the stop is checked between slabs.
The result is the same as the whole image's, voxel for voxel: at the image's ends a slab
has no halo and the filter's own ``mode="nearest"`` pads as it does for the whole image.

Plain NumPy, SciPy and dask; no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from napari_medml.config import PreprocessStep
from napari_medml.errors import raise_if_stopped

__all__ = ["SLAB_VOXELS", "filter_reach", "run_in_slabs", "slab_count"]

# a median of 7 takes about 2 s on a slab of this size on one core (the longest a Cancel waits), and the
# halos add about 15 % to the whole (64x256x256: 16.5 s whole, 19 s in 8 slabs; 4 slabs: 17.7 s, 4.6 s each).
# A larger median window costs more per voxel and needs thicker slabs (8 reaches): 13-15 s a slab for 11,
# a minute for 15 (review 50, on a loaded machine); thinner slabs would double the whole run's time.
SLAB_VOXELS = 2**19
_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default: its kernel reaches 4 sigma, rounded


def filter_reach(step: PreprocessStep, spacing: Sequence[float] | None, ndim: int) -> tuple[int, ...] | None:
    """How many voxels beside a voxel the step reads along each axis, or None for a step that
    is not a local filter (a crop, a resample, CLAHE's tiles, a z-score's whole-image mean).

    Parameters
    ----------
    step : PreprocessStep
        ``median`` (``size`` in voxels) or ``gaussian`` (``sigma`` in voxels, or in the
        units of ``spacing`` with ``physical``); any other operation gives None.
    spacing : sequence of float or None
        Voxel size per spatial axis, ``(Z, Y, X)`` or ``(Y, X)``, for a physical sigma.
    ndim : int
        The image's spatial dimensions, 2 or 3.

    Returns
    -------
    tuple of int or None
        Voxels per axis, in the image's axis order. A Gaussian reaches ``int(4 * sigma + 0.5)``
        voxels, as ``scipy.ndimage.gaussian_filter`` truncates its kernel at 4 sigma.
    """
    params = dict(step.params)
    value = params.get("size" if step.operation == "median" else "sigma")
    if step.operation not in ("median", "gaussian") or value is None:
        return None
    try:
        per_axis = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value] * ndim)]
    except (TypeError, ValueError):
        return None
    invalid = any(v < 1 or v != int(v) for v in per_axis) if step.operation == "median" else any(
        not v >= 0 for v in per_axis)
    if len(per_axis) != ndim or invalid or set(params) - {"size", "sigma", "physical"}:
        return None  # run whole: the step itself says what is wrong, in its own words
    if step.operation == "median":
        return tuple(int(v) // 2 for v in per_axis)
    if params.get("physical") and spacing is not None:
        per_axis = [s / float(p) for s, p in zip(per_axis, spacing)]
    return tuple(int(_TRUNCATE * s + 0.5) for s in per_axis)


def slab_count(shape: Sequence[int], reach: Sequence[int]) -> tuple[int, int]:
    """The axis to cut along (the longest) and how many slabs: about :data:`SLAB_VOXELS` each,
    and each at least 8 reaches thick, so the halos add at most a quarter to the work.

    Parameters
    ----------
    shape : sequence of int
        The image's spatial shape.
    reach : sequence of int
        :func:`filter_reach`'s voxels per axis.

    Returns
    -------
    (int, int)
        The axis and the number of slabs along it (1: the image is filtered whole).
    """
    axis = int(np.argmax(shape))
    n = int(shape[axis])
    thinnest = max(1, 8 * int(reach[axis]))
    wanted = math.ceil(math.prod(shape) / SLAB_VOXELS)
    return axis, max(1, min(wanted, n // thinnest))


def run_in_slabs(image: np.ndarray, filtered: Callable[[np.ndarray], np.ndarray], reach: Sequence[int], *,
                 stop: Any = None, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """``filtered(image)``, computed slab by slab with a halo of ``reach``.

    Parameters
    ----------
    image : np.ndarray
        ``(Z, Y, X)`` or ``(Y, X)``, one channel of one frame.
    filtered : callable
        The local filter: an array in, an array of the same shape out.
    reach : sequence of int
        Its reach per axis (:func:`filter_reach`).
    stop : StopToken, optional
        Checked before each slab.
    progress : callable, optional
        ``progress(done, total)`` after each slab.

    Returns
    -------
    np.ndarray
        The filtered image, equal to ``filtered(image)``.

    Raises
    ------
    Cancelled
        When ``stop`` was tripped.
    """
    import dask.array as da

    axis, count = slab_count(image.shape, reach)
    if count == 1:
        raise_if_stopped(stop)
        out = filtered(image)
        if progress is not None:
            progress(1, 1)
        return out
    edges = np.linspace(0, image.shape[axis], count + 1).astype(int)
    chunks = tuple(tuple(np.diff(edges)) if a == axis else (n,) for a, n in enumerate(image.shape))
    first = filtered(image[tuple(slice(0, 1) if a == axis else slice(None) for a in range(image.ndim))])
    lazy = da.map_overlap(filtered, da.from_array(image, chunks=chunks), depth={axis: int(reach[axis])},
                          boundary="none", trim=True, dtype=first.dtype, meta=np.empty((0,) * image.ndim, first.dtype))
    out = np.empty(image.shape, first.dtype)
    for k in range(count):
        raise_if_stopped(stop)
        where = tuple(slice(edges[k], edges[k + 1]) if a == axis else slice(None) for a in range(image.ndim))
        out[where] = lazy.blocks[tuple(k if a == axis else 0 for a in range(image.ndim))].compute(
            scheduler="synchronous")
        if progress is not None:
            progress(k + 1, count)
    return out
