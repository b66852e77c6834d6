"""What label values a run can learn from: integer class ids, and how many of them.

:func:`check_label_values` turns labels into class ids or refuses them with the fix;
:func:`many_ids_warning` says when dense labels look like instance labels, and
:func:`check_scribble_ids` refuses such labels as a live session's scribbles.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_medml.errors import InputError

__all__ = ["MANY_CLASSES", "MAX_CLASSES", "check_label_values", "check_scribble_ids", "many_ids_warning"]

MAX_CLASSES = 254  # encoded as channel + 1 in uint8, 0 = unlabeled (and MONAI's label padding)
MANY_CLASSES = 32  # more label ids than this read as one id per object (instance labels)


def many_ids_warning(labels: Sequence[Any], name: str, fix: str) -> str | None:
    """One warning line when dense labels hold more ids than a segmentation usually has
    classes (> :data:`MANY_CLASSES`): each id becomes an output channel of its own, while
    instance labels (one id per object) want an instance model.

    Parameters
    ----------
    labels : sequence of arrays
        The label arrays of a run, any shapes.
    name : str
        How the line names them (``"labels 'seg.nii.gz'"``).
    fix : str
        How to train an instance model where the line is read (``"--task instances"``).

    Returns
    -------
    str or None
        None when the ids are few, or too many to train at all (``find_class_ids`` says so).
    """
    ids: set[int] = set()
    for lab in labels:
        ids.update(int(v) for v in np.unique(np.asarray(lab)))
    n = len(ids - {0})
    if not MANY_CLASSES < n < MAX_CLASSES:
        return None
    return (f"warning: {name} hold {n} ids, trained as {n} classes (one output channel each); if each id is one "
            f"object, train an instance model ({fix})")


def check_label_values(labels: Any, name: str = "labels", ids: str = "class") -> np.ndarray:
    """Labels as integer class ids, or one line saying what is wrong with their values.

    Parameters
    ----------
    labels : array-like
        Any shape. Booleans become ids 0/1; floats holding whole numbers become int64.
    name : str
        How the message names them (``"labels 'seg.nii.gz'"``).
    ids : str
        What an id is, for the message: ``"class"`` or ``"object"`` (instance labels).

    Returns
    -------
    np.ndarray
        Integer ids, all >= 0.

    Raises
    ------
    InputError
        Fractions or non-finite values (e.g. a probability map), other dtypes, or negative ids;
        each with the fix.
    """
    arr = np.asarray(labels)
    if arr.dtype == bool:  # as ids: True indexes nothing in a lookup table
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind != "f":
            raise InputError(f"{name} have dtype {arr.dtype}: labels must be integer {ids} ids "
                             f"(0 background, 1, 2, ... the {ids}{'es' if ids == 'class' else 's'})")
        finite = np.isfinite(arr)
        whole = finite & (arr == np.round(arr))
        if whole.all():
            arr = arr.astype(np.int64)
        else:
            bad = arr[~whole]
            raise InputError(f"{name} hold non-integer values ({arr.dtype}, e.g. {float(bad.flat[0]):g}): labels must "
                             f"be integer {ids} ids; a probability map becomes labels by a threshold, e.g. p > 0.5")
    if arr.size and arr.min() < 0:
        negative = np.unique(arr[arr < 0])
        raise InputError(f"{name} contain negative ids ({', '.join(str(int(v)) for v in negative[:3])}"
                         f"{', ...' if negative.size > 3 else ''}): {ids} ids must be 0 (background) or more; "
                         f"set the negative voxels to 0, or to {'a class' if ids == 'class' else 'an object'} id of "
                         "their own")
    return arr


def check_scribble_ids(scribbles: Any, name: str, background_id: int, new_choice: str) -> None:
    """Refuse a live session's scribbles whose ids look like object ids, in one line naming the layer and a fix.

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
        More distinct non-zero ids than :data:`MANY_CLASSES` (32), which
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
                     f"another id (up to {MANY_CLASSES} classes), or train from the mask with Train segmentation")
