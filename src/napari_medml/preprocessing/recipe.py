"""Replayable preprocessing recipes: named operations from :mod:`napari_medml.preprocessing.ops`.

A recipe is a tuple of :class:`~napari_medml.config.PreprocessStep` (an operation name
from :data:`OPERATIONS` and JSON-able parameters). It is stored in a model bundle and
re-applied to every image the model predicts on, so only *replayable* operations are
allowed: ``crop`` in a recipe crops to the bounding box of ``image > threshold``. A crop
to a labels layer depends on that one layer; it is a one-off
:func:`~napari_medml.preprocessing.ops.crop_to_mask` call and cannot be a recipe step. Recipes
act per channel: a multi-channel caller applies the recipe to each channel.

SciPy and scikit-image only; no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_medml.config import PreprocessStep
from napari_medml.errors import InputError
from napari_medml.preprocessing.ops import (
    CT_WINDOW_PRESETS,
    check_spacing,
    clahe,
    crop_to_mask,
    ct_window,
    fill_nonfinite,
    gaussian_denoise,
    median_denoise,
    minmax,
    percentile_rescale,
    resample,
    threshold_mask,
    zscore,
)

__all__ = [
    "OPERATIONS",
    "Operation",
    "RecipeResult",
    "apply_recipe",
    "apply_step",
    "describe_step",
    "run_recipe",
]

Spacing = tuple[float, ...]


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
        Operation("fill_nan", lambda im, sp, value=None: (fill_nonfinite(im, value), sp), ("value",),
                  lambda p: "fill NaN" + (f" with {_num(p['value'])}" if p.get("value") is not None else "")),
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
            lambda im, sp, threshold, margin=0: (_crop_above(im, threshold, margin)[0], sp),
            ("threshold", "margin"),
            lambda p: f"crop >{_num(p['threshold'])}",
        ),
    ]
}


class NothingToCrop(InputError):
    """A crop to a threshold found no voxel above it. The fix depends on who chose the
    threshold (the user in Preprocess, a model's recipe when predicting), so callers add it."""


def _crop_above(image: np.ndarray, threshold: float, margin: Any) -> tuple[np.ndarray, tuple[int, ...]]:
    """``crop_to_mask`` of the voxels above ``threshold``; none above it is refused with the
    image's largest value (trial 46: "the mask is empty" gave neither)."""
    mask = threshold_mask(image, threshold)
    if not mask.any():
        finite = np.asarray(image)[np.isfinite(image)]
        top = f"its largest value is {float(finite.max()):.4g}" if finite.size else "it has no finite value"
        raise NothingToCrop(f"crop: no voxel is above the threshold {threshold:g} ({top})")
    return crop_to_mask(image, mask, margin)


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
    sp = None if spacing is None else check_spacing("recipe", spacing, image.ndim)
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
    sp = None if spacing is None else check_spacing(step.operation, spacing, image.ndim)
    params = dict(step.params)
    if step.operation == "crop":
        if "threshold" not in params:
            raise InputError("crop: a recipe crop needs a 'threshold' parameter")
        out, offset = _crop_above(image, params["threshold"], params.get("margin", 0))
        return out, sp, offset
    try:
        out, new_sp = op(image, sp, **params)
    except TypeError as exc:  # a required parameter is missing
        raise InputError(f"{step.operation}: {exc}; it takes {list(op.params)}") from None
    return out, new_sp, None
