"""Intensity normalisation: statistics learned from the training images (z-score,
percentiles, min-max per channel) and re-applied to every image a model sees.

Two methods follow nnU-Net's per-modality normalisation: ``ct`` clips to the 0.5-99.5
percentiles of the labelled foreground and z-scores with the foreground's mean and
std (CT in Hounsfield units); ``zscore_nonzero`` z-scores with the statistics of the
voxels above the image's minimum (a constant background, as in skull-stripped MRI,
is left out of them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_medml.errors import InputError

__all__ = ["apply_normalization", "fit_normalization", "intensity_note"]

# recipe steps that set the intensities themselves, image by image: the stored statistics are of their output
INTENSITY_STEPS = frozenset({"zscore", "percentile", "minmax", "ct_window", "clahe"})
FAR = 4.0  # a spread this many times wider or narrower, or a mean this many training stds away, is far


def fit_normalization(images: Sequence[np.ndarray], method: str,
                      masks: Sequence[np.ndarray] | None = None) -> dict:
    """Per-channel statistics over all training images (``(C, *spatial)`` each).

    Large images are subsampled (every n-th voxel) so that this stays fast.

    Parameters
    ----------
    images : sequence of np.ndarray
        ``(C, *spatial)`` each.
    method : str
        zscore, zscore_nonzero, ct, percentile, minmax or none.
    masks : sequence of np.ndarray, optional
        Boolean ``(*spatial)`` labelled-foreground masks (``ct`` uses their voxels; without
        any foreground voxel, all voxels).

    Raises
    ------
    InputError
        An unknown method.
    """
    channels = images[0].shape[0]
    stats = []
    for c in range(channels):
        values = np.concatenate([_subsample(img[c]) for img in images]).astype(np.float64)
        if method == "ct":
            fg = (np.concatenate([_subsample(img[c][m]) for img, m in zip(images, masks)]).astype(np.float64)
                  if masks is not None else values)
            fg = fg if fg.size else values
            lo, hi = np.percentile(fg, [0.5, 99.5])
            clipped = np.clip(fg, lo, hi)
            stats.append({"low": float(lo), "high": float(hi), "mean": float(clipped.mean()),
                          "std": float(clipped.std())})
        elif method == "zscore_nonzero":
            inside = values[values > values.min()]
            inside = inside if inside.size else values
            stats.append({"mean": float(inside.mean()), "std": float(inside.std())})
        elif method == "zscore":
            stats.append({"mean": float(values.mean()), "std": float(values.std())})
        elif method == "percentile":
            lo, hi = np.percentile(values, [0.5, 99.5])
            stats.append({"low": float(lo), "high": float(hi)})
        elif method == "minmax":
            stats.append({"low": float(values.min()), "high": float(values.max())})
        elif method == "none":
            stats.append({})
        else:
            raise InputError(f"unknown normalization {method!r}: use zscore, zscore_nonzero, ct, percentile, "
                             "minmax or none")
    return {"method": method, "channels": stats}



_NEEDS = {"zscore": ("mean", "std"), "zscore_nonzero": ("mean", "std"), "ct": ("low", "high", "mean", "std"),
          "percentile": ("low", "high"), "minmax": ("low", "high"), "none": ()}


def check_normalization(stats: Any, channels: int | None = None) -> None:
    """Refuse statistics that :func:`apply_normalization` would misread (a hand-edited bundle).

    Parameters
    ----------
    stats : dict
        ``{"method": ..., "channels": [{...}, ...]}`` as :func:`fit_normalization` gives.
    channels : int, optional
        How many channels the statistics must cover.

    Raises
    ------
    ValueError
        An unknown method, a channel count other than ``channels``, or a channel without the
        method's numbers (finite; a standard deviation or range not below 0).
    """
    if not isinstance(stats, dict) or stats.get("method") not in _NEEDS:
        method = stats.get("method") if isinstance(stats, dict) else stats
        raise ValueError(f"normalization method {method!r} is none of {', '.join(_NEEDS)}")
    entries = stats.get("channels")
    if not isinstance(entries, list) or (channels is not None and len(entries) != channels):
        count = len(entries) if isinstance(entries, list) else "no list of"
        raise ValueError(f"normalization has {count} channel(s) of statistics for {channels} input channel(s)")
    for c, entry in enumerate(entries):
        values = {k: entry.get(k) if isinstance(entry, dict) else None for k in _NEEDS[stats["method"]]}
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) for v in values.values()):
            raise ValueError(f"normalization channel {c} needs finite numbers {', '.join(values)}, got {entry!r}")
        if values.get("std", 0) < 0 or values.get("high", 0) < values.get("low", 0):
            raise ValueError(f"normalization channel {c} has a negative spread: {entry!r}")


def apply_normalization(image: np.ndarray, stats: dict) -> np.ndarray:
    """Apply stored statistics to a ``(C, *spatial)`` float32 image (in place on the copy given)."""
    method = stats.get("method", "none")
    for c, s in enumerate(stats.get("channels", [])):
        if method == "ct":
            np.clip(image[c], s["low"], s["high"], out=image[c])
        if method in ("zscore", "zscore_nonzero", "ct"):
            image[c] -= s["mean"]
            image[c] /= max(s["std"], 1e-8)
        elif method in ("percentile", "minmax"):
            np.clip(image[c], s["low"], s["high"], out=image[c])
            image[c] -= s["low"]
            image[c] /= max(s["high"] - s["low"], 1e-8)
    return image



def _subsample(arr: np.ndarray, limit: int = 2_000_000) -> np.ndarray:
    flat = arr.reshape(-1)
    step = max(1, flat.size // limit)
    return flat[::step]


def intensity_note(image: Any, channel_axis: int | None, stats: dict, name: str,
                   recipe: Sequence[Any] = (), retrain: str = "train with Preprocess > z-score in the recipe, "
                   "which z-scores each image by itself") -> str | None:
    """One line when an image's intensities are far from those a model was trained on.

    The z-score, percentile and min-max methods apply the *training* images' statistics
    to every image, so an image in other units (another scanner's scale, 8 instead of 16
    bits, a ×10 gain) reaches the network at another contrast and is segmented badly
    without an error. Compared per channel on a strided subsample of at most ~10⁶ voxels:
    z-score methods flag a standard deviation more than :data:`FAR` times wider or
    narrower than the training one, or a mean more than ``FAR`` training standard
    deviations away; percentile/min-max flag a 0.5-99.5 percentile range ``FAR`` times
    wider or narrower than the training range. ``ct`` (Hounsfield units) and ``none``
    are not checked, nor models whose recipe sets intensities image by image.

    Parameters
    ----------
    image : array-like
        The image as given to ``Model.predict``. NumPy: a strided subsample; dask or Zarr
        (read chunk by chunk): 3 boxes of up to 32 voxels per axis (start, middle, end),
        so that only a few chunks are read.
    channel_axis : int or None
        Its channel axis.
    stats : dict
        The model's ``normalization`` (:func:`fit_normalization`).
    name : str
        How the line names the image.
    recipe : sequence of PreprocessStep
        The model's preprocessing recipe.
    retrain : str
        The second fix the line gives (a classifier has no recipe).

    Returns
    -------
    str or None
    """
    method = stats.get("method", "none")
    channels = stats.get("channels") or []
    if method not in ("zscore", "zscore_nonzero", "percentile", "minmax") or not channels:
        return None
    if any(getattr(step, "operation", None) in INTENSITY_STEPS for step in recipe or ()):
        return None
    sample = _voxel_sample(image, channel_axis)
    if sample.shape[0] != len(channels):
        return None  # the channel check of predict says so
    for c, (values, s) in enumerate(zip(sample, channels)):
        values = values[np.isfinite(values)]
        if method == "zscore_nonzero" and values.size:
            values = values[values > values.min()] if (values > values.min()).any() else values
        if values.size < 2:
            continue
        if method in ("zscore", "zscore_nonzero"):
            mean, std, ref_mean, ref_std = values.mean(), values.std(), s["mean"], max(s["std"], 1e-12)
            far = std > FAR * ref_std or std < ref_std / FAR or abs(mean - ref_mean) > FAR * ref_std
            seen = f"mean {mean:.4g}, std {std:.4g}; training: mean {ref_mean:.4g}, std {ref_std:.4g}"
        else:
            low, high = np.percentile(values, [0.5, 99.5])
            width, ref = high - low, max(s["high"] - s["low"], 1e-12)
            far = width > FAR * ref or width < ref / FAR
            seen = f"0.5-99.5% range {low:.4g} to {high:.4g}; training: {s['low']:.4g} to {s['high']:.4g}"
        if far:
            where_c = f" (channel {c})" if len(channels) > 1 else ""
            return (f"{name}{where_c} has intensities far from the training images' ({seen}): the model "
                    f"normalizes every image with the training statistics ({method}), so it sees another "
                    "contrast and its answer may be wrong; give the image in the training images' units (the "
                    f"same scale and bit depth), or {retrain}")
    return None


def _voxel_sample(image: Any, channel_axis: int | None) -> np.ndarray:
    """``(C, n)`` float64 voxel values spread over ``image`` (see :func:`intensity_note`)."""
    shape = np.shape(image)
    axes = [a for a in range(len(shape)) if a != channel_axis]
    if isinstance(image, np.ndarray):
        step = max(1, int(np.ceil((float(np.prod(shape)) / 1e6) ** (1.0 / max(len(axes), 1)))))
        boxes = [tuple(slice(None) if a == channel_axis else slice(None, None, step) for a in range(len(shape)))]
    else:
        starts = [sorted({0, max(0, (shape[a] - 32) // 2), max(0, shape[a] - 32)}) for a in axes]
        boxes = []
        for corner in np.ndindex(*(len(s) for s in starts)):
            where: list[slice] = [slice(None)] * len(shape)
            for a, k, s in zip(axes, corner, starts):
                where[a] = slice(s[k], s[k] + 32)
            boxes.append(tuple(where))
    parts = []
    for where in boxes:
        part = np.asarray(image[where], dtype=np.float64)
        part = part[None] if channel_axis is None else np.moveaxis(part, channel_axis, 0)
        parts.append(part.reshape(part.shape[0], -1))
    return np.concatenate(parts, axis=1)
