"""What a layer of scribbles may hold: a few class ids, not an instance mask's object ids."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_medml.errors import InputError
from napari_medml.segmentation.label_values import MANY_CLASSES

__all__ = ["check_class_ids"]


def check_class_ids(scribbles: Any, name: str, background_id: int, new_choice: str) -> None:
    """Refuse scribbles whose ids look like object ids, in one line naming the layer and a fix.

    Parameters
    ----------
    scribbles : array-like
        Integer label ids, any shape: 0 unpainted, ``background_id`` background, others classes.
    name : str
        The layer's name, for the message.
    background_id : int
        The id painted for background.
    new_choice : str
        The choice that makes an empty scribbles layer, for the message.

    Raises
    ------
    InputError
        More distinct non-zero ids than ``segmentation.label_values.MANY_CLASSES`` (32), which
        read as one id per object (an instance mask): a live session would learn one class
        per object (trial 40 started a 57-class session without a word).
    """
    arr = np.asarray(scribbles)
    if arr.size == 0 or arr.dtype.kind not in "iub" or int(arr.max()) <= MANY_CLASSES:
        return  # one pass; the distinct ids are counted only past the limit
    ids = np.unique(arr)
    ids = ids[ids != 0]
    if len(ids) <= MANY_CLASSES:
        return
    raise InputError(f"scribbles '{name}' hold {len(ids)} ids, as an instance mask does (one id per object): live "
                     f"segmentation learns one class per id, so it would learn {len(ids)} classes; choose "
                     f"'{new_choice}' in scribbles and paint background with {background_id} and each class with "
                     f"another id (up to {MANY_CLASSES}), or train from the mask with Train segmentation")
