"""Which samples a classifier run trains on and which it holds out for validation."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["sample_parts", "stratified_split", "with_parts"]


def stratified_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) of the labelled samples, ``val_fraction`` of each class held out.

    A class with a single sample stays in training; otherwise at least one sample of
    each class is held out when ``val_fraction > 0`` and at least one stays in training.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(y[y > 0]):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = 0
        if val_fraction > 0 and len(idx) >= 2:
            n_val = min(max(1, int(round(val_fraction * len(idx)))), len(idx) - 1)
        val.extend(idx[:n_val].tolist())
        train.extend(idx[n_val:].tolist())
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(val, dtype=np.int64))


def sample_parts(y: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Which part of a run each sample was in, as :func:`fit_classifier` split them.

    Parameters
    ----------
    y : np.ndarray
        ``(N,)`` class id per sample, 0 unknown (``ClassSamples.y``).
    val_fraction : float
        ``config.data.val_fraction`` of the run.
    seed : int
        ``config.seed`` of the run.

    Returns
    -------
    np.ndarray
        ``(N,)`` object array: "training", "validation" or "unlabelled" (class 0: classified only).
    """
    parts = np.full(len(y), "unlabelled", dtype=object)
    train, val = stratified_split(np.asarray(y), val_fraction, seed)
    parts[train], parts[val] = "training", "validation"
    return parts


def with_parts(result: Any, y: np.ndarray, config: Any) -> Any:
    """``result`` (a ``ClassPrediction`` of the image a run was trained on) with a ``part`` column
    in its table (:func:`sample_parts`): its numbers then tell seen samples from unseen ones.

    Parameters
    ----------
    result : ClassPrediction
        ``Classifier.classify`` of the training image: one row per sample of ``y``.
    y : np.ndarray
        ``(N,)`` the run's ``ClassSamples.y``.
    config : TrainConfig
        The run's configuration (validation fraction and seed).

    Returns
    -------
    ClassPrediction
        A copy; ``result`` itself where its rows are not the samples' (another count).
    """
    from dataclasses import replace

    if len(result.classes) != len(y):
        return result
    return replace(result, table={**result.table, "part": sample_parts(y, config.data.val_fraction, config.seed)})
