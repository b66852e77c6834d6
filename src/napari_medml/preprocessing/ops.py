"""Pure array operations for preprocessing (normalize, window, denoise, CLAHE, resample, crop).

Every operation takes one single-channel spatial image, ``(Y, X)`` or ``(Z, Y, X)``,
and returns a *new* array (inputs are never modified). Intensity results are float32;
NaNs are ignored by the statistics and stay NaN. Replayable chains of these operations
(recipes) live in :mod:`napari_medml.preprocessing.recipe`.

SciPy and scikit-image only; no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_medml.errors import InputError

__all__ = [
    "CT_WINDOW_PRESETS",
    "check_output_size",
    "clahe",
    "crop_to_mask",
    "ct_window",
    "fill_nonfinite",
    "fill_with",
    "gaussian_denoise",
    "median_denoise",
    "minmax",
    "percentile_rescale",
    "rescale",
    "resample",
    "threshold_mask",
    "zscore",
    "zscore_with",
]

Spacing = tuple[float, ...]

# (level, width) in Hounsfield units.
CT_WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "soft tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}


# --- operations ----------------------------------------------------------------------


def zscore(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Subtract the mean and divide by the standard deviation (over ``mask`` if given).

    A constant image is only centred. NaNs are ignored and stay NaN.
    """
    image = np.asarray(image, dtype=np.float32)
    values = image
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != image.shape:
            raise InputError(f"zscore: mask has shape {mask.shape} but image has {image.shape}")
        values = image[mask]
    if values.size == 0 or np.all(np.isnan(values)):
        raise InputError("zscore: no (non-NaN) voxels to compute statistics from")
    mean = float(np.nanmean(values, dtype=np.float64))
    std = float(np.nanstd(values, dtype=np.float64))
    return zscore_with(image, mean, std)


def zscore_with(image: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(image - mean) / std`` as float32 (``std`` 0: only centred): :func:`zscore` once its
    statistics are known, also applied block by block (``preprocessing.lazy_recipe``)."""
    return ((np.asarray(image, dtype=np.float32) - mean) / (std if std > 0 else 1.0)).astype(np.float32)


def percentile_rescale(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Clip to the ``low`` and ``high`` percentiles and rescale that range to 0-1."""
    if not 0.0 <= low < high <= 100.0:
        raise InputError(f"percentile: need 0 <= low < high <= 100, got low={low}, high={high}")
    image = np.asarray(image, dtype=np.float32)
    lo, hi = (float(v) for v in np.nanpercentile(image, [low, high]))
    return rescale(image, lo, hi)


def fill_nonfinite(image: np.ndarray, value: float | None = None) -> np.ndarray:
    """Replace NaN and infinite voxels (outside a scanner's field of view, after a
    registration) with ``value``, by default the smallest finite value (the background).

    Fill an image before training on it or predicting it. As the first step of a recipe,
    training and prediction (in memory and block by block) take images with NaN and replay
    the fill on each (``preprocessing.inputs.fills_nonfinite``): the Preprocess widget's
    *fill NaN/inf* on a raw layer is such a step (after other steps it makes a new image).

    Raises
    ------
    InputError
        No finite value to take the smallest of.
    """
    image = np.asarray(image, dtype=np.float32)
    bad = ~np.isfinite(image)
    out = image.copy()
    if not bad.any():
        return out
    if value is None:
        if bad.all():
            raise InputError("fill NaN: every voxel is NaN or infinite, so there is no smallest value to fill "
                             "with: give a value")
        value = float(image[~bad].min())
    return fill_with(image, value)


def fill_with(image: np.ndarray, value: float) -> np.ndarray:
    """A float32 copy of ``image`` with ``value`` where it is NaN or infinite: :func:`fill_nonfinite`
    once its value is known, also applied block by block (``preprocessing.lazy_recipe``)."""
    out = np.array(image, dtype=np.float32, copy=True)
    out[~np.isfinite(out)] = value
    return out


def minmax(image: np.ndarray) -> np.ndarray:
    """Rescale the image's range to 0-1 (a constant image becomes 0)."""
    image = np.asarray(image, dtype=np.float32)
    return rescale(image, float(np.nanmin(image)), float(np.nanmax(image)))


def ct_window(image: np.ndarray, level: float, width: float) -> np.ndarray:
    """Map the CT window ``level +/- width/2`` (Hounsfield units) to 0-1, clipping outside.

    See :data:`CT_WINDOW_PRESETS` for standard windows.
    """
    if not width > 0:
        raise InputError(f"ct_window: width must be > 0, got {width}")
    image = np.asarray(image, dtype=np.float32)
    return rescale(image, level - width / 2.0, level + width / 2.0)


def gaussian_denoise(
    image: np.ndarray, sigma: float | Sequence[float], spacing: Sequence[float] | None = None
) -> np.ndarray:
    """Gaussian smoothing; ``sigma`` in physical units when ``spacing`` is given, else voxels."""
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    sig = _per_axis("gaussian", "sigma", sigma, image.ndim)
    if any(s < 0 for s in sig):
        raise InputError(f"gaussian: sigma must be >= 0, got {sigma}")
    if spacing is not None:
        sp = check_spacing("gaussian", spacing, image.ndim)
        sig = tuple(s / p for s, p in zip(sig, sp))
    return ndimage.gaussian_filter(image, sigma=sig, mode="nearest")


def median_denoise(image: np.ndarray, size: int | Sequence[int] = 3) -> np.ndarray:
    """Median filter over a window of ``size`` voxels (per axis or one for all)."""
    from scipy import ndimage

    image = np.asarray(image)
    sizes = _per_axis("median", "size", size, image.ndim)
    if any(s < 1 or int(s) != s for s in sizes):
        raise InputError(f"median: size must be a whole number >= 1, got {size}")
    return ndimage.median_filter(image, size=tuple(int(s) for s in sizes), mode="nearest")


def clahe(
    image: np.ndarray, clip_limit: float = 0.01, kernel_size: int | Sequence[int] | None = None
) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (2D or 3D), output 0-1.

    The image is first rescaled to 0-1 (min-max); NaNs stay NaN. ``kernel_size`` in
    voxels defaults to 1/8 of each axis (scikit-image's default).
    """
    from skimage.exposure import equalize_adapthist

    if not 0.0 < clip_limit <= 1.0:
        raise InputError(f"clahe: clip_limit must be in (0, 1], got {clip_limit}")
    scaled = minmax(image)
    nan = np.isnan(scaled)
    if nan.any():
        scaled[nan] = 0.0
    out = equalize_adapthist(scaled, kernel_size=kernel_size, clip_limit=clip_limit)
    out = out.astype(np.float32)
    out[nan] = np.nan
    return out


def resample(
    image: np.ndarray,
    spacing: Sequence[float],
    target_spacing: Sequence[float],
    order: int = 1,
) -> tuple[np.ndarray, Spacing]:
    """Resample to (about) ``target_spacing``; returns the image and its exact new spacing.

    The new shape is ``round(shape * spacing / target_spacing)`` and the physical extent is
    kept, so the reported spacing is ``spacing * shape / new_shape`` (equal to the target
    when it divides evenly). Voxel edges stay aligned: the first voxel's centre moves by
    ``(new_spacing - spacing) / 2``. ``order`` 0 (nearest) is for labels and keeps the
    dtype; higher orders return float32 and smooth first when shrinking (anti-aliasing).
    """
    from scipy import ndimage

    image = np.asarray(image)
    sp = check_spacing("resample", spacing, image.ndim)
    target = check_spacing("resample", target_spacing, image.ndim, what="target spacing")
    if order not in range(6):
        raise InputError(f"resample: order must be 0-5, got {order}")
    new_shape = tuple(max(1, round(n * s / t)) for n, s, t in zip(image.shape, sp, target))
    new_spacing = tuple(s * n / m for s, n, m in zip(sp, image.shape, new_shape))
    check_output_size("resample", image.shape, new_shape, sp, image.dtype.itemsize if order == 0 else 4)
    if new_shape == image.shape:
        return image.copy(), sp
    zoom = tuple(m / n for m, n in zip(new_shape, image.shape))
    if order == 0:
        out = ndimage.zoom(image, zoom, order=0, mode="nearest", grid_mode=True)
        return out, new_spacing
    work = image.astype(np.float32)
    # Anti-aliasing as in skimage.transform.resize: sigma (factor - 1) / 2 on shrunk axes.
    sigma = tuple(max(0.0, (1.0 / z - 1.0) / 2.0) for z in zoom)
    if any(sigma):
        work = ndimage.gaussian_filter(work, sigma, mode="nearest")
    out = ndimage.zoom(work, zoom, order=order, mode="nearest", grid_mode=True)
    return out.astype(np.float32), new_spacing


def check_output_size(what: str, shape: Sequence[int], new_shape: Sequence[int], spacing: Sequence[float],
                      itemsize: int) -> None:
    """Refuse, before allocating, a resampled array larger than the memory budget.

    ``shape`` and ``spacing`` are the input's, ``new_shape`` the output's, ``itemsize``
    its bytes per voxel (float32: 4).

    Raises
    ------
    InputError
        Naming the new shape, its size, the budget and the finest spacing that fits.
    """
    from napari_medml.io.memory import MEMORY_ENV, memory_budget, size_text

    nbytes = float(np.prod(new_shape, dtype=np.float64)) * itemsize
    budget = memory_budget()
    if nbytes <= budget:
        return
    grow = 1.05 * (nbytes / budget) ** (1.0 / len(new_shape))  # each axis this much coarser fits (5 % spare)
    finest = ", ".join(f"{s * n / m * grow:.3g}" for s, n, m in zip(spacing, shape, new_shape))
    raise InputError(f"{what}: {tuple(shape)} voxels at that spacing become {tuple(new_shape)}, "
                     f"{size_text(nbytes)}, more than the {size_text(budget)} this machine can spare "
                     f"(a quarter of the free memory; {MEMORY_ENV} sets it): choose a target spacing of "
                     f"about {finest} or coarser")


def crop_to_mask(
    image: np.ndarray, mask: np.ndarray, margin: int | Sequence[int] = 0
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Crop to the bounding box of ``mask`` (non-zero) plus ``margin`` voxels.

    Returns the cropped copy and the offset of its first voxel in the input, in voxels:
    add ``offset * spacing`` to the layer's translate to keep it in place.
    """
    image = np.asarray(image)
    mask = np.asarray(mask)
    if mask.shape != image.shape:
        raise InputError(f"crop: mask has shape {mask.shape} but image has {image.shape}")
    margins = _per_axis("crop", "margin", margin, image.ndim)
    if any(m < 0 or int(m) != m for m in margins):
        raise InputError(f"crop: margin must be a whole number >= 0, got {margin}")
    # the box from each axis's projection: np.nonzero's indices took 24 bytes a voxel
    index = [np.flatnonzero(np.any(mask, axis=tuple(b for b in range(mask.ndim) if b != a))) for a in range(mask.ndim)]
    if len(index[0]) == 0:
        raise InputError("crop: the mask is empty; nothing to crop to")
    lo = tuple(max(0, int(ix.min()) - int(m)) for ix, m in zip(index, margins))
    hi = tuple(min(n, int(ix.max()) + 1 + int(m)) for ix, m, n in zip(index, margins, image.shape))
    return image[tuple(slice(a, b) for a, b in zip(lo, hi))].copy(), lo


def threshold_mask(image: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of ``image > threshold`` (NaN is outside)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(image) > threshold


# --- helpers -------------------------------------------------------------------------


def rescale(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``lo``-``hi`` to 0-1 as float32, clipped (``hi <= lo``: 0, NaN kept): :func:`minmax`,
    :func:`ct_window` and :func:`percentile_rescale` once their range is known."""
    image = np.asarray(image, dtype=np.float32)
    if not hi > lo:
        return np.where(np.isnan(image), np.nan, 0.0).astype(np.float32)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _per_axis(op: str, name: str, value: Any, ndim: int) -> tuple[float, ...]:
    values = tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else (value,) * ndim
    if len(values) != ndim:
        raise InputError(f"{op}: {name} {value} has {len(values)} values for a {ndim}D image")
    return tuple(float(v) for v in values)


def check_spacing(op: str, spacing: Any, ndim: int, what: str = "spacing") -> Spacing:
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim:
        raise InputError(f"{op}: {what} {tuple(spacing)} has {len(sp)} values for a {ndim}D image")
    if not all(s > 0 for s in sp):
        raise InputError(f"{op}: {what} must be > 0 on every axis, got {tuple(spacing)}")
    return sp
