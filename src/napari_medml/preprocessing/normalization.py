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

import numpy as np

from napari_medml.errors import InputError

__all__ = ["apply_normalization", "fit_normalization"]


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
