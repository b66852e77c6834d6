"""What a segmentation model's prediction returns, and one such result made of those of
the slices or frames of a stack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Prediction", "stack_predictions"]


@dataclass(frozen=True)
class Prediction:
    """What ``Model.predict`` returns.

    Attributes
    ----------
    labels : np.ndarray
        Integer label map of the input's spatial shape with the original class ids.
    probabilities : np.ndarray or None
        float16 ``(K, *spatial)``, channel k = ``class_ids[k]`` (only when asked).
    uncertainty : np.ndarray or None
        float32 entropy of the mean probabilities (only when asked).
    class_ids : tuple of int
        ``class_ids[0] == 0`` (background).
    instances : np.ndarray or None
        uint32 instance ids when ``InferConfig.instances`` is not "none".
    """

    labels: np.ndarray
    probabilities: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    class_ids: tuple[int, ...] = ()
    instances: np.ndarray | None = None


def stack_predictions(parts: list[Prediction], lead: tuple[int, ...], class_ids: tuple[int, ...]) -> Prediction:
    """One Prediction from those of each slice/frame.

    Parameters
    ----------
    parts : list of Prediction
        One per index of the leading axes, in ``np.ndindex(*lead)`` order.
    lead : tuple of int
        Shape of the leading (slice/frame) axes.
    class_ids : tuple of int

    Returns
    -------
    Prediction
        Arrays of shape ``(*lead, *spatial)`` (probabilities ``(K, *lead, *spatial)``);
        instance ids shifted to stay unique across the parts.
    """
    def stack(arrays: list[Any], axis: int = 0) -> Any:
        if arrays[0] is None:
            return None
        out = np.stack(arrays, axis=axis)
        return out.reshape(out.shape[:axis] + lead + out.shape[axis + 1:])

    instances = None
    if parts[0].instances is not None:  # keep ids unique across slices/frames
        offset, shifted = 0, []
        for part in parts:
            ids = part.instances.astype(np.uint32)
            shifted.append(np.where(ids > 0, ids + offset, 0).astype(np.uint32))
            offset += int(ids.max(initial=0))
        instances = stack(shifted)
    return Prediction(labels=stack([p.labels for p in parts]),
                      probabilities=stack([p.probabilities for p in parts], axis=1),
                      uncertainty=stack([p.uncertainty for p in parts]), class_ids=class_ids,
                      instances=instances)  # fmt: skip
