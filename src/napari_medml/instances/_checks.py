"""Input checks shared by the instance modules (one clear line per bad input)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from napari_medml.errors import InputError
from napari_medml.segmentation.label_values import check_label_values


def check_instances(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """Instance labels as integer ids, after checking their shape and values.

    The values follow the project's one rule for labels
    (:func:`napari_medml.segmentation.label_values.check_label_values`): whole numbers
    are ids, also when stored as floats (as NIfTI and TIFF files often are); fractions,
    non-finite values and negative ids are refused with the fix.

    Parameters
    ----------
    labels : numpy.ndarray
        2D (Y, X) or 3D (Z, Y, X); 0 is background, one id per object.
    name : str
        How the message names them (``"labels 'cells.tif'"``).

    Returns
    -------
    numpy.ndarray
        Integer ids >= 0 (a bool mask becomes 0/1 uint8, whole-number floats int64).

    Raises
    ------
    InputError
        Another number of axes, or values that are not ids.
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise InputError(
            f"{name} has shape {labels.shape}: instance labels must be 2D (Y, X) or 3D (Z, Y, X); "
            "take one channel or time point first"
        )
    return check_label_values(labels, name, ids="object")


def check_spacing(spacing: Sequence[float] | None, ndim: int, name: str = "spacing") -> tuple[float, ...]:
    """Return ``spacing`` as a tuple of ``ndim`` positive floats (all ones when None)."""
    if spacing is None:
        return (1.0,) * ndim
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim or not all(np.isfinite(v) and v > 0 for v in values):
        raise InputError(
            f"{name} {tuple(spacing)} does not fit a {ndim}D image: give {ndim} positive voxel sizes"
        )
    return values


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise InputError unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise InputError(
            f"{name_a} has shape {a.shape} but {name_b} has {b.shape}: they must cover the same voxels"
        )


def relabelling_refusal(out: Any, maps: dict[str, Any]) -> Callable[[Any, dict[str, Any]], str | None]:
    """The words refusing an ``out`` labels store whose objects were labelled from the same
    maps with other post-processing options: the fix relabels from the kept ``maps``.
    For ``label_blocks(..., refusal=...)``: called with the store's run and this run
    (``maps``, ``params``, ``spacing``, and the block plan's); None for any other store,
    which gets the general refusal.
    """

    def refusal(old: Any, run: dict[str, Any]) -> str | None:
        import json

        run = json.loads(json.dumps(run))  # as the store keeps it (lists, not tuples)
        if not isinstance(old, dict) or old.get("maps") != run.get("maps"):
            return None  # another store: the general refusal
        if all(old.get(k) == run.get(k) for k in ("params", "spacing")):
            return None  # the same labelling on another block plan
        before = ", ".join(f"{k} {v}" for k, v in sorted((old.get("params") or {}).items())
                           if (run.get("params") or {}).get(k) != v)
        kept = " and ".join(f"'{p}'" for p in maps.values())
        return (f"'{out}' holds objects labelled from these maps with other post-processing options "
                f"({before or 'another voxel size'}): remove it and run the same command again to label anew "
                f"from the network's maps kept in {kept} (the network does not run again), or choose "
                "another output name")

    return refusal
