"""Pure array operations for preprocessing, and replayable recipes of them.

Every operation takes one single-channel spatial image, ``(Y, X)`` or ``(Z, Y, X)``,
and returns a *new* array (inputs are never modified). Intensity results are float32;
NaNs are ignored by the statistics and stay NaN.

A recipe is a tuple of :class:`~napari_medml.config.PreprocessStep` (an operation name
from :data:`OPERATIONS` and JSON-able parameters). It is stored in a model bundle and
re-applied to every image the model predicts on, so only *replayable* operations are
allowed: ``crop`` in a recipe crops to the bounding box of ``image > threshold``. A crop
to a labels layer depends on that one layer; it is a one-off :func:`crop_to_mask` call
and cannot be a recipe step. Recipes act per channel: a multi-channel caller applies the
recipe to each channel.

SciPy and scikit-image only; no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_medml.config import PreprocessStep
from napari_medml.errors import InputError

__all__ = [
    "CT_WINDOW_PRESETS",
    "OPERATIONS",
    "Operation",
    "RecipeResult",
    "apply_recipe",
    "apply_step",
    "ct_window",
    "clahe",
    "crop_to_mask",
    "describe_step",
    "gaussian_denoise",
    "median_denoise",
    "minmax",
    "percentile_rescale",
    "resample",
    "run_recipe",
    "threshold_mask",
    "zscore",
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
    return ((image - mean) / (std if std > 0 else 1.0)).astype(np.float32)


def percentile_rescale(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Clip to the ``low`` and ``high`` percentiles and rescale that range to 0-1."""
    if not 0.0 <= low < high <= 100.0:
        raise InputError(f"percentile: need 0 <= low < high <= 100, got low={low}, high={high}")
    image = np.asarray(image, dtype=np.float32)
    lo, hi = (float(v) for v in np.nanpercentile(image, [low, high]))
    return _rescale(image, lo, hi)


def minmax(image: np.ndarray) -> np.ndarray:
    """Rescale the image's range to 0-1 (a constant image becomes 0)."""
    image = np.asarray(image, dtype=np.float32)
    return _rescale(image, float(np.nanmin(image)), float(np.nanmax(image)))


def ct_window(image: np.ndarray, level: float, width: float) -> np.ndarray:
    """Map the CT window ``level +/- width/2`` (Hounsfield units) to 0-1, clipping outside.

    See :data:`CT_WINDOW_PRESETS` for standard windows.
    """
    if not width > 0:
        raise InputError(f"ct_window: width must be > 0, got {width}")
    image = np.asarray(image, dtype=np.float32)
    return _rescale(image, level - width / 2.0, level + width / 2.0)


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
        sp = _check_spacing("gaussian", spacing, image.ndim)
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
    sp = _check_spacing("resample", spacing, image.ndim)
    target = _check_spacing("resample", target_spacing, image.ndim, what="target spacing")
    if order not in range(6):
        raise InputError(f"resample: order must be 0-5, got {order}")
    new_shape = tuple(max(1, round(n * s / t)) for n, s, t in zip(image.shape, sp, target))
    new_spacing = tuple(s * n / m for s, n, m in zip(sp, image.shape, new_shape))
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
    index = np.nonzero(mask)
    if len(index[0]) == 0:
        raise InputError("crop: the mask is empty; nothing to crop to")
    lo = tuple(max(0, int(ix.min()) - int(m)) for ix, m in zip(index, margins))
    hi = tuple(min(n, int(ix.max()) + 1 + int(m)) for ix, m, n in zip(index, margins, image.shape))
    return image[tuple(slice(a, b) for a, b in zip(lo, hi))].copy(), lo


def threshold_mask(image: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of ``image > threshold`` (NaN is outside)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(image) > threshold


# --- recipes -------------------------------------------------------------------------


@dataclass(frozen=True)
class RecipeResult:
    """A recipe's output, and how to put arrays on its grid back on the input grid.

    ``shift`` is how far the first voxel's centre moved, in physical units (voxels when
    no spacing was given): add it to the layer's translate.
    """

    image: np.ndarray
    spacing: Spacing | None
    shift: tuple[float, ...]
    # Geometric steps in order: ("crop", input shape, slices) or ("resample", input shape).
    geometry: tuple[tuple[Any, ...], ...] = ()

    def restore(self, array: np.ndarray, order: int = 0, fill: float = 0) -> np.ndarray:
        """Map ``array`` (e.g. predicted labels, ``(..., *output spatial)``) to the input grid.

        Crops are padded with ``fill``; resampling is undone with interpolation ``order``
        (0 for labels). Leading axes (e.g. classes) are kept.
        """
        from scipy import ndimage

        out = np.asarray(array)
        for record in reversed(self.geometry):
            shape = record[1]
            lead = out.shape[: out.ndim - len(shape)]
            if record[0] == "crop":
                full = np.full(lead + tuple(shape), fill, dtype=out.dtype)
                full[(Ellipsis, *record[2])] = out
                out = full
            else:
                spatial = out.shape[len(lead) :]
                zoom = (1.0,) * len(lead) + tuple(n / m for n, m in zip(shape, spatial))
                src = out if order == 0 else out.astype(np.float32)
                out = ndimage.zoom(src, zoom, order=order, mode="nearest", grid_mode=True)
        return out


@dataclass(frozen=True)
class Operation:
    """A recipe operation: ``run(image, spacing, **params) -> (image, spacing)``."""

    name: str
    run: Callable[..., tuple[np.ndarray, Spacing | None]]
    params: tuple[str, ...]
    describe: Callable[[Mapping[str, Any]], str]

    def __call__(self, image: np.ndarray, spacing: Spacing | None, **params: Any):
        return self.run(image, spacing, **params)


def _window(image, spacing, level=None, width=None, preset=None):
    if preset is not None:
        if preset not in CT_WINDOW_PRESETS:
            raise InputError(
                f"ct_window: unknown preset {preset!r}; choose one of {sorted(CT_WINDOW_PRESETS)}"
            )
        level, width = CT_WINDOW_PRESETS[preset]
    if level is None or width is None:
        raise InputError("ct_window: give a preset or both level and width")
    return ct_window(image, level, width), spacing


def _gaussian(image, spacing, sigma, physical=False):
    if physical and spacing is None:
        raise InputError("gaussian: physical sigma needs the image spacing")
    return gaussian_denoise(image, sigma, spacing if physical else None), spacing


def _resample(image, spacing, target_spacing, order=1):
    if spacing is None:
        raise InputError("resample: the image spacing is needed to resample")
    return resample(image, spacing, target_spacing, order)


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in [
        Operation("zscore", lambda im, sp: (zscore(im), sp), (), lambda p: "z-score"),
        Operation(
            "percentile",
            lambda im, sp, low=1.0, high=99.0: (percentile_rescale(im, low, high), sp),
            ("low", "high"),
            lambda p: f"percentile {_num(p.get('low', 1))}-{_num(p.get('high', 99))}",
        ),
        Operation("minmax", lambda im, sp: (minmax(im), sp), (), lambda p: "min-max"),
        Operation(
            "ct_window",
            _window,
            ("level", "width", "preset"),
            lambda p: f"window {p['preset']}"
            if p.get("preset")
            else f"window {_num(p.get('level'))}/{_num(p.get('width'))}",
        ),
        Operation(
            "gaussian", _gaussian, ("sigma", "physical"), lambda p: f"gaussian {_num(p['sigma'])}"
        ),
        Operation(
            "median",
            lambda im, sp, size=3: (median_denoise(im, size), sp),
            ("size",),
            lambda p: f"median {_num(p.get('size', 3))}",
        ),
        Operation(
            "clahe",
            lambda im, sp, clip_limit=0.01, kernel_size=None: (
                clahe(im, clip_limit, kernel_size),
                sp,
            ),
            ("clip_limit", "kernel_size"),
            lambda p: "clahe",
        ),
        Operation(
            "resample",
            _resample,
            ("target_spacing", "order"),
            lambda p: "resample " + "x".join(_num(t) for t in p["target_spacing"]),
        ),
        Operation(
            "crop",
            lambda im, sp, threshold, margin=0: (
                crop_to_mask(im, threshold_mask(im, threshold), margin)[0],
                sp,
            ),
            ("threshold", "margin"),
            lambda p: f"crop >{_num(p['threshold'])}",
        ),
    ]
}


def _lookup(step: PreprocessStep) -> Operation:
    op = OPERATIONS.get(step.operation)
    if op is None:
        raise InputError(
            f"unknown preprocessing operation {step.operation!r}; "
            f"choose one of {sorted(OPERATIONS)}"
        )
    unknown = set(step.params) - set(op.params)
    if step.operation == "crop" and "mask" in unknown:
        raise InputError(
            "crop: a crop to a labels layer cannot be replayed on new images, so it cannot be "
            "a recipe step; crop with a 'threshold' instead, or call crop_to_mask once"
        )
    if unknown:
        raise InputError(
            f"{step.operation}: unknown parameter(s) {sorted(unknown)}; "
            f"it takes {list(op.params) or 'none'}"
        )
    return op


def describe_step(step: PreprocessStep) -> str:
    """Short human name of a step, for layer names such as ``"ct [window lung]"``."""
    return _lookup(step).describe(dict(step.params))


def apply_step(
    image: np.ndarray, spacing: Sequence[float] | None, step: PreprocessStep
) -> tuple[np.ndarray, Spacing | None]:
    """Apply one recipe step to a single-channel spatial image; returns image and spacing."""
    return _run_step(image, spacing, step)[:2]


def run_recipe(
    image: np.ndarray, spacing: Sequence[float] | None, steps: Sequence[PreprocessStep]
) -> RecipeResult:
    """Chain ``steps`` and record the geometry, so results can be mapped back (see
    :meth:`RecipeResult.restore`) and the layer's translate shifted."""
    image = np.asarray(image)
    sp = None if spacing is None else _check_spacing("recipe", spacing, image.ndim)
    unit = sp or (1.0,) * image.ndim
    shift = [0.0] * image.ndim
    geometry: list[tuple[Any, ...]] = []
    out = image
    for step in steps:
        before_shape = out.shape
        out, new_sp, offset = _run_step(out, sp, step)
        cur = sp or unit
        if offset is not None:
            box = tuple(slice(o, o + n) for o, n in zip(offset, out.shape))
            geometry.append(("crop", before_shape, box))
            shift = [s + o * c for s, o, c in zip(shift, offset, cur)]
        elif out.shape != before_shape:
            geometry.append(("resample", before_shape))
            shift = [s + (n - c) / 2.0 for s, n, c in zip(shift, new_sp or cur, cur)]
        sp = new_sp
    if out is image:
        out = image.copy()
    return RecipeResult(out, sp, tuple(shift), tuple(geometry))


def apply_recipe(
    image: np.ndarray, spacing: Sequence[float] | None, steps: Sequence[PreprocessStep]
) -> tuple[np.ndarray, Spacing | None]:
    """Chain the recipe's steps on a single-channel spatial image; returns image and spacing."""
    result = run_recipe(image, spacing, steps)
    return result.image, result.spacing


def _run_step(image, spacing, step):
    """Returns (image, spacing, crop offset or None)."""
    if not isinstance(step, PreprocessStep):
        raise InputError(f"a recipe step must be a PreprocessStep, got {type(step).__name__}")
    op = _lookup(step)
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise InputError(
            f"{step.operation}: needs a single-channel 2D or 3D image, got shape {image.shape}; "
            "apply recipes per channel"
        )
    sp = None if spacing is None else _check_spacing(step.operation, spacing, image.ndim)
    params = dict(step.params)
    if step.operation == "crop":
        if "threshold" not in params:
            raise InputError("crop: a recipe crop needs a 'threshold' parameter")
        mask = threshold_mask(image, params["threshold"])
        out, offset = crop_to_mask(image, mask, params.get("margin", 0))
        return out, sp, offset
    try:
        out, new_sp = op(image, sp, **params)
    except TypeError as exc:  # a required parameter is missing
        raise InputError(f"{step.operation}: {exc}; it takes {list(op.params)}") from None
    return out, new_sp, None


# --- helpers -------------------------------------------------------------------------


def _rescale(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if not hi > lo:
        return np.where(np.isnan(image), np.nan, 0.0).astype(np.float32)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _per_axis(op: str, name: str, value: Any, ndim: int) -> tuple[float, ...]:
    values = tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else (value,) * ndim
    if len(values) != ndim:
        raise InputError(f"{op}: {name} {value} has {len(values)} values for a {ndim}D image")
    return tuple(float(v) for v in values)


def _check_spacing(op: str, spacing: Any, ndim: int, what: str = "spacing") -> Spacing:
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim:
        raise InputError(f"{op}: {what} {tuple(spacing)} has {len(sp)} values for a {ndim}D image")
    if not all(s > 0 for s in sp):
        raise InputError(f"{op}: {what} must be > 0 on every axis, got {tuple(spacing)}")
    return sp
