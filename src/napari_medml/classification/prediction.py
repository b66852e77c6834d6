"""What a classifier's ``classify`` returns: the class labels, tables and probabilities of an image."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ClassPrediction"]


@dataclass(frozen=True)
class ClassPrediction:
    """What :meth:`Classifier.classify` returns, ready for napari layers.

    Attributes
    ----------
    labels : np.ndarray
        Labels at the input's shape: each sample, object or tile filled with its class.
    table : dict
        One row per sample, object or tile (``sample``/``object``/``tile``, ``class``,
        ``prob_<id>``, ``size``...): the CSV of ``napari-medml predict``
        (``tables.write_table``).
    classes : np.ndarray
        Predicted class id per sample.
    proba : np.ndarray
        ``(N, K)`` probabilities, column k = ``class_ids[k]``.
    class_ids : tuple of int
    level : {"image", "object", "tile"}
    probabilities : np.ndarray or None
        ``(K, *image_shape)`` float32 probability map (tile level, or when asked for).
    class_table : dict
        One row per class, ``index`` = class id (and 0 when 0 appears in ``labels``):
        the ``features`` of a Labels layer of ``labels`` (``tables.class_table``).
    note : str
        The samples' note (``ClassSamples.note``), "" when there is nothing to say.
    """

    labels: np.ndarray
    table: dict
    classes: np.ndarray
    proba: np.ndarray
    class_ids: tuple[int, ...]
    level: str = "image"
    probabilities: np.ndarray | None = None
    class_table: dict = field(default_factory=dict)
    note: str = ""
