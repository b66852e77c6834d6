"""Intensity normalisation: statistics learned from the training images (z-score,
percentiles, min-max per channel) and re-applied to every image a model sees."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_medml.errors import InputError

__all__ = ["apply_normalization", "fit_normalization"]


def fit_normalization(images: Sequence[np.ndarray], method: str) -> dict:
    """Per-channel statistics over all training images (``(C, *spatial)`` each).

    Large images are subsampled (every n-th voxel) so that this stays fast.
    """
    channels = images[0].shape[0]
    stats = []
    for c in range(channels):
        values = np.concatenate([_subsample(img[c]) for img in images]).astype(np.float64)
        if method == "zscore":
            stats.append({"mean": float(values.mean()), "std": float(values.std())})
        elif method == "percentile":
            lo, hi = np.percentile(values, [0.5, 99.5])
            stats.append({"low": float(lo), "high": float(hi)})
        elif method == "minmax":
            stats.append({"low": float(values.min()), "high": float(values.max())})
        elif method == "none":
            stats.append({})
        else:
            raise InputError(f"unknown normalization {method!r}: use zscore, percentile, minmax or none")
    return {"method": method, "channels": stats}



def apply_normalization(image: np.ndarray, stats: dict) -> np.ndarray:
    """Apply stored statistics to a ``(C, *spatial)`` float32 image (in place on the copy given)."""
    method = stats.get("method", "none")
    for c, s in enumerate(stats.get("channels", [])):
        if method == "zscore":
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
