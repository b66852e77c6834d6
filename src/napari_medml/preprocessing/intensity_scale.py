"""Unlabeled images in different intensity units: each z-scored by its own statistics.

One z-score over all images (``normalization.fit_normalization``) suits images in one unit
(CT in Hounsfield units, one microscope's camera). Beside a bright 8-bit photograph, a
dim 16-bit fluorescence image keeps a contrast of a few hundredths after it, and a
network learns little of it. nnU-Net z-scores each MRI or microscopy case by its own mean
and standard deviation; this decides when a pretraining run needs that.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_medml.preprocessing.normalization import FAR, INTENSITY_STEPS

__all__ = ["scales_differ"]


def scales_differ(images: Sequence[np.ndarray], groups: Sequence[int] | None = None, *,
                  recipe: Sequence = (), normalization: str = "zscore") -> str | None:
    """Whether the images' intensities are on scales too far apart for one normalisation.

    Far apart, on any channel: one case's standard deviation more than :data:`FAR` times
    another's, or two cases' means more than ``FAR`` of the largest standard deviation
    apart (one z-score over all would then squeeze one case into a sliver of the range).

    Parameters
    ----------
    images : sequence of np.ndarray
        The samples, ``(C, *spatial)`` each, after the recipe's geometry steps.
    groups : sequence of int, optional
        How many consecutive samples each case (file or layer) gave (``DataConfig.sample_groups``);
        None: each sample is a case.
    recipe : sequence of PreprocessStep
        The run's recipe: one that already sets intensities image by image is left alone.
    normalization : str
        The run's normalisation method: ``ct`` (Hounsfield units, one scale by definition)
        and ``none`` are left alone.

    Returns
    -------
    str or None
        E.g. ``"standard deviations 4.9 to 74, means 67 to 129"`` when they are far apart; None
        when one normalisation fits all, for fewer than two cases, or when left alone.
    """
    if normalization in ("ct", "none") or any(getattr(s, "operation", None) in INTENSITY_STEPS for s in recipe):
        return None
    groups = list(groups) if groups and sum(groups) == len(images) else [1] * len(images)
    if len(groups) < 2:
        return None
    starts = np.cumsum([0, *groups])
    means, stds = [], []  # (cases, channels)
    for a, b in zip(starts[:-1], starts[1:]):
        values = [np.concatenate([_sample(img[c]) for img in images[a:b]]) for c in range(images[a].shape[0])]
        means.append([float(np.nanmean(v)) for v in values])
        stds.append([float(np.nanstd(v)) for v in values])
    means, stds = np.asarray(means), np.asarray(stds)
    spread = stds.max(axis=0) > FAR * np.maximum(stds.min(axis=0), 1e-12)
    shifted = means.max(axis=0) - means.min(axis=0) > FAR * stds.max(axis=0)
    if not (spread | shifted).any():
        return None
    return (f"standard deviations {stds.min():.2g} to {stds.max():.2g}, "
            f"means {means.min():.3g} to {means.max():.3g}")


def _sample(channel: np.ndarray, limit: int = 200_000) -> np.ndarray:
    flat = channel.reshape(-1)
    return flat[:: max(1, flat.size // limit)].astype(np.float64)
