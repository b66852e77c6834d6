"""Object classes from a table: a CSV of ``object,class`` rows painted onto the objects.

Object-level classification reads an object's class from a labels layer painted on it;
a researcher's classes often live in a spreadsheet keyed by object id instead (the
``object`` column that ``predict`` and ``evaluate`` use). :func:`object_class_labels`
turns such a table into that painted labels array, so every front builds its samples
the same way (``levels.make_samples``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from napari_medml.classification.data import map_ids
from napari_medml.classification.evaluation import read_truth_table
from napari_medml.errors import InputError

__all__ = ["object_class_labels"]


def object_class_labels(path: str | Path, instances: np.ndarray, *,
                        class_names: Mapping[int, str] | None = None,
                        instances_name: str = "instance labels") -> np.ndarray:
    """Paint the classes of a CSV table onto the objects of an instance labels array.

    Parameters
    ----------
    path : str or Path
        CSV with one row per object: the object id (the instance label value, the
        ``object`` column of a ``predict`` table), then its class id (or a name in
        ``class_names``); an optional header row; empty or 0 = unknown. Objects not
        listed are unknown (not trained on).
    instances : np.ndarray
        Integer instance ids, ``(Y, X)`` or ``(Z, Y, X)``; 0 = background.
    class_names : mapping, optional
        Class id -> name, to read names as ids.
    instances_name : str
        The instance labels' name, for messages.

    Returns
    -------
    np.ndarray
        Class ids of ``instances``' shape: every listed object's voxels hold its class,
        everything else 0.

    Raises
    ------
    InputError
        A malformed table (see ``evaluation.read_truth_table``), ids that are not
        objects of ``instances``, or no object with a known class.
    """
    path = Path(path)
    keys, classes = read_truth_table(path, key="object", class_names=class_names, what="class file")
    inst = np.asarray(instances)
    if not np.issubdtype(inst.dtype, np.integer):
        raise InputError(f"{instances_name} have dtype {inst.dtype}: they must be integer object ids")
    present = np.unique(inst)
    present = present[present > 0]
    absent = keys[~np.isin(keys, present)]
    if absent.size:
        shown = ", ".join(str(int(k)) for k in absent[:5]) + (f", ... ({absent.size})" if absent.size > 5 else "")
        span = f"ids {present.min()}..{present.max()}" if present.size else "no objects"
        raise InputError(f"class file '{path.name}' lists object(s) {shown} that {instances_name} do not have "
                         f"({present.size} objects, {span}): give the instance labels the table was made "
                         "from, or remove those rows")
    known = classes > 0
    if not known.any():
        raise InputError(f"class file '{path.name}' gives no object a class (every class is empty or 0): "
                         "write a class id > 0 for the objects you know")
    dtype = np.uint8 if classes.max() <= np.iinfo(np.uint8).max else np.int64
    return map_ids(inst, keys[known], classes[known], dtype)
