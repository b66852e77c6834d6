"""Segmentation quality: Dice, IoU and the 95th-percentile Hausdorff distance per class.

All functions take two label arrays of the same spatial shape (napari axis order,
integer class ids, 0 = background) and return plain ``dict``s keyed by class id, so
results drop straight into JSON, a table or a plot. Class ids need not be contiguous.

Which classes are scored: the nonzero ids present in the ground truth or the
prediction (their union), unless ``class_ids`` names them. Conventions for a class
that is missing:

* present in neither array (only possible with explicit ``class_ids``): Dice, IoU
  and HD95 are ``nan`` (undefined; a mean skips them);
* present in only one array: Dice and IoU are 0.0, HD95 is ``inf`` (the distance
  from a surface to no surface is unbounded).

Means over classes skip ``nan`` (a class in neither array is not scored) but keep
``inf``: a missed class makes the mean HD95 ``inf``, never a mean of the classes that
were found (MONAI's ``do_metric_reduction`` averages the same way). ``evaluate`` turns
non-finite values into ``None`` so its output is strict JSON.
Classification metrics live elsewhere; this module is about segmentation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from napari_medml.errors import InputError

__all__ = ["check_pair", "dice", "evaluate", "evaluation_notes", "hausdorff95", "iou"]


def dice(
    pred: np.ndarray, gt: np.ndarray, class_ids: Iterable[int] | None = None
) -> dict[int, float]:
    """Dice coefficient ``2|P∩G| / (|P|+|G|)`` per foreground class.

    Parameters
    ----------
    pred, gt : numpy.ndarray
        Integer label arrays of the same shape (prediction and ground truth).
    class_ids : iterable of int, optional
        Classes to score; default: every nonzero id in ``gt`` or ``pred``.

    Returns
    -------
    dict[int, float]
        Class id -> Dice in [0, 1]; ``nan`` for a class absent from both arrays.
    """
    pred, gt = check_pair(pred, gt)
    out = {}
    for cid in _class_ids(pred, gt, class_ids):
        inter, n_pred, n_gt = _counts(pred, gt, cid)
        total = n_pred + n_gt
        out[cid] = 2.0 * inter / total if total else math.nan
    return out


def iou(
    pred: np.ndarray, gt: np.ndarray, class_ids: Iterable[int] | None = None
) -> dict[int, float]:
    """Intersection over union (Jaccard index) ``|P∩G| / |P∪G|`` per foreground class.

    Parameters
    ----------
    pred, gt : numpy.ndarray
        Integer label arrays of the same shape (prediction and ground truth).
    class_ids : iterable of int, optional
        Classes to score; default: every nonzero id in ``gt`` or ``pred``.

    Returns
    -------
    dict[int, float]
        Class id -> IoU in [0, 1]; ``nan`` for a class absent from both arrays.
    """
    pred, gt = check_pair(pred, gt)
    out = {}
    for cid in _class_ids(pred, gt, class_ids):
        inter, n_pred, n_gt = _counts(pred, gt, cid)
        union = n_pred + n_gt - inter
        out[cid] = inter / union if union else math.nan
    return out


def hausdorff95(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None = None,
    class_ids: Iterable[int] | None = None,
    *,
    each: Callable[[], None] | None = None,
) -> dict[int, float]:
    """95th-percentile Hausdorff distance per foreground class, in physical units.

    Surfaces are the boundary voxels of each class mask; for each direction
    (prediction -> ground truth and back) the 95th percentile of the nearest-surface
    distances is taken, and HD95 is the larger of the two (MONAI's
    ``compute_hausdorff_distance(percentile=95)`` convention, which this calls).

    Parameters
    ----------
    pred, gt : numpy.ndarray
        Integer label arrays of the same shape (prediction and ground truth).
    spacing : sequence of float, optional
        Voxel size per axis in the arrays' axis order (e.g. mm for (Z, Y, X));
        default: 1 per axis (distances in voxels).
    class_ids : iterable of int, optional
        Classes to score; default: every nonzero id in ``gt`` or ``pred``.
    each : callable, optional
        Called with no arguments before each class: a caller's progress and stop check
        (what it raises, e.g. ``Cancelled``, ends the scoring).

    Returns
    -------
    dict[int, float]
        Class id -> HD95; ``inf`` when the class is in only one array, ``nan`` when
        in neither.
    """
    from napari_medml.segmentation.surface_distance import hd95_binary

    pred, gt = check_pair(pred, gt)
    spacing = _check_spacing(spacing, gt.ndim)
    out = {}
    for cid in _class_ids(pred, gt, class_ids):
        if each is not None:
            each()
        p, g = pred == cid, gt == cid
        has_p, has_g = bool(p.any()), bool(g.any())
        if not (has_p or has_g):
            out[cid] = math.nan
        elif has_p != has_g:
            out[cid] = math.inf
        else:
            out[cid] = hd95_binary(p, g, spacing)
    return out


def evaluate(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None = None,
    *,
    binary: bool = False,
    frames_axis: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """All segmentation metrics at once, as a JSON-able dictionary.

    Parameters
    ----------
    pred, gt : numpy.ndarray
        Integer label arrays of the same shape (prediction and ground truth).
    spacing : sequence of float, optional
        Voxel size per axis, used for HD95 (physical units); default 1 per axis.
    binary : bool, optional
        Score foreground against background: every nonzero id of either array counts
        as class 1 (e.g. a 0/255 mask against a 0/1 prediction). Default False.
    frames_axis : int, optional
        The time axis of a time series: HD95 is measured frame by frame (a distance never
        crosses frames) and each class gets its worst frame's; Dice and IoU count every
        voxel. Default None: every axis is spatial.
    progress : callable, optional
        ``progress(done, total)`` before each class's HD95 (of each frame), the slow part:
        a front's progress bar and stop check (what it raises, e.g. ``Cancelled``, ends
        the scoring).

    Returns
    -------
    dict
        ``{"spacing": [...], "classes": {"<id>": {"dice", "iou", "hd95",
        "gt_voxels", "pred_voxels"}}, "mean_dice", "mean_iou", "mean_hd95"}``; ``spacing``
        is the voxel size of the spatial axes (a time series' frames axis left out).
        Means are over the scored foreground classes (``None`` if there are none).
        A class missing from one array has Dice and IoU 0.0, which the means count,
        and an infinite HD95, shown as ``None``; ``mean_hd95`` is then ``None`` too
        (infinite): a missed class never leaves a finite, perfect-looking mean.
    """
    pred, gt = check_pair(pred, gt)
    spacing = _check_spacing(spacing, gt.ndim)
    if binary:
        pred, gt = (pred != 0).astype(np.uint8), (gt != 0).astype(np.uint8)
    ids = _class_ids(pred, gt, None)
    d, j = dice(pred, gt, ids), iou(pred, gt, ids)
    total, done = len(ids) * (1 if frames_axis is None else gt.shape[frames_axis]), itertools.count()
    each = None if progress is None else (lambda: progress(next(done), total))
    h = (hausdorff95(pred, gt, spacing, ids, each=each) if frames_axis is None
         else _hd95_frames(pred, gt, spacing, ids, frames_axis, each))
    classes = {
        str(cid): {
            "dice": _finite_or_none(d[cid]),
            "iou": _finite_or_none(j[cid]),
            "hd95": _finite_or_none(h[cid]),
            "gt_voxels": int(np.count_nonzero(gt == cid)),
            "pred_voxels": int(np.count_nonzero(pred == cid)),
        }
        for cid in ids
    }
    return {  # a time series' frame interval is not a voxel size: only the spatial axes'
        "spacing": [float(s) for a, s in enumerate(spacing) if a != frames_axis],
        "classes": classes,
        "mean_dice": _mean(d.values()),
        "mean_iou": _mean(j.values()),
        "mean_hd95": _mean(h.values()),
    }


def _hd95_frames(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...], ids: list[int],
                 axis: int, each: Callable[[], None] | None = None) -> dict[int, float]:
    # HD95 of a time series: per frame, the worst frame's (nan: in no frame; inf: a frame has it on one side only)
    frame_spacing = tuple(s for a, s in enumerate(spacing) if a != axis)
    out = {cid: math.nan for cid in ids}
    for t in range(gt.shape[axis]):
        frame = hausdorff95(np.take(pred, t, axis=axis), np.take(gt, t, axis=axis), frame_spacing, ids, each=each)
        for cid, value in frame.items():
            if not math.isnan(value):
                out[cid] = value if math.isnan(out[cid]) else max(out[cid], value)
    return out


def evaluation_notes(
    result: dict[str, Any], pred_name: str, gt_name: str, binary_fix: str, instances_fix: str | None = None
) -> list[str]:
    """Lines that say what the numbers of an :func:`evaluate` result hide.

    Three cases: no foreground in either array (nothing to score); classes missing from
    one array (their HD95, and so ``mean_hd95``, are infinite, shown as ``None``); and
    foreground ids that the two arrays do not share at all, so every class scores Dice
    0 -- e.g. a 0/255 mask against a 0/1 prediction.

    Parameters
    ----------
    result : dict
        What :func:`evaluate` returned.
    pred_name, gt_name : str
        How the lines name the prediction and the ground truth
        (``"prediction 'p.tif'"``, ``"labels 'gt.tif'"``).
    binary_fix : str
        How to score foreground against background where the lines are read
        (``"--binary"``).
    instances_fix : str, optional
        How to score objects instead (``"--instances"``): named when the ground truth holds
        more ids than :data:`~napari_medml.segmentation.label_values.MANY_CLASSES`, which
        reads as one id per object (instance labels, whose ids differ between two files).

    Returns
    -------
    list of str
        Zero to four lines, the warnings starting with ``warning:``.
    """
    from napari_medml.segmentation.label_values import MANY_CLASSES

    classes = result["classes"]
    gt_ids = [int(c) for c, v in classes.items() if v["gt_voxels"]]
    pred_ids = [int(c) for c, v in classes.items() if v["pred_voxels"]]
    notes = []
    if not gt_ids and not pred_ids:
        notes.append(f"{gt_name} and {pred_name} hold no foreground (only 0): there is no class to score, so the "
                     "means are null; check that these are the files you meant")
    if instances_fix is not None and len(gt_ids) > MANY_CLASSES:
        notes.append(f"warning: {gt_name} hold {len(gt_ids)} ids, each scored as a class of its own; if each id is "
                     f"one object (instance labels), score the objects with {instances_fix} (matched by overlap: "
                     "F1 and average precision)")
    if gt_ids and pred_ids and not set(gt_ids) & set(pred_ids):
        line = (f"warning: {gt_name} use {_ids_text(gt_ids)} and {pred_name} {_ids_text(pred_ids)}, "
                "no foreground id in common, so every class scores Dice 0. ")
        if len(gt_ids) == 1 and len(pred_ids) == 1:
            line += (f"A 0/{gt_ids[0]} mask against a 0/{pred_ids[0]} prediction? Score foreground against "
                     f"background with {binary_fix}, or write the labels with the prediction's ids "
                     f"({gt_ids[0]} -> {pred_ids[0]})")
        else:
            line += (f"If the ids name the same classes differently, write one file with the other's ids; "
                     f"{binary_fix} scores all foreground as one class")
        notes.append(line)
    missed = [c for c, v in classes.items() if v["hd95"] is None and (v["gt_voxels"] or v["pred_voxels"])]
    if missed:
        if len(missed) <= 5:
            where = ", ".join(f"{c} (only in {gt_name if classes[c]['gt_voxels'] else pred_name})" for c in missed)
        else:  # e.g. instance maps scored as classes: a few ids of each side, then counts
            sides = ((gt_name, [c for c in missed if classes[c]["gt_voxels"]]),
                     (pred_name, [c for c in missed if not classes[c]["gt_voxels"]]))
            where = "; ".join(", ".join(str(c) for c in ids[:5]) + (f", ... ({len(ids)})" if len(ids) > 5 else "")
                              + f" only in {name}" for name, ids in sides if ids)
        notes.append(f"class{'es' if len(missed) > 1 else ''} {where}: HD95 infinite, so hd95 and mean_hd95 "
                     "are null; mean_dice and mean_iou count such a class as 0")
    return notes


def _ids_text(ids: list[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:5]) + (", ..." if len(ids) > 5 else "")
    return f"id{'s' if len(ids) > 1 else ''} {shown}"


# --- helpers -----------------------------------------------------------------------


def check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two label arrays of one shape, whole-numbered floats as int64.

    Raises
    ------
    InputError
        Shapes that differ, or fractional values (an image or probabilities).
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise InputError(
            f"prediction has shape {pred.shape} but ground truth has {gt.shape}: "
            "both must be label arrays of the same image"
        )
    return _as_labels(pred, "prediction"), _as_labels(gt, "ground truth")


def _as_labels(a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype == bool or np.issubdtype(a.dtype, np.integer):
        return a
    # Label files are often stored as float (NIfTI); accept them when whole-numbered.
    if np.issubdtype(a.dtype, np.floating) and np.array_equal(a, np.round(a)):
        return a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.floating):  # trial 47: strings were said to hold fractional values
        raise InputError(f"{what} must hold integer class ids, got dtype {a.dtype}: pass a labels array of integers")
    raise InputError(
        f"{what} must hold integer class ids, got dtype {a.dtype} with fractional "
        "values: pass a labels array, not an image or probabilities"
    )


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ndim or not all(s > 0 and math.isfinite(s) for s in spacing):
        raise InputError(
            f"spacing {spacing} does not fit {ndim}D labels: give {ndim} positive "
            "voxel sizes in the arrays' axis order"
        )
    return spacing


def _class_ids(pred: np.ndarray, gt: np.ndarray, class_ids: Iterable[int] | None) -> list[int]:
    if class_ids is not None:
        return [int(c) for c in class_ids]
    # as Python ints: np.union1d of int64 and uint64 ids goes through float64 (ids >= 2**53 change)
    ids = set(_present(gt).tolist()) | set(_present(pred).tolist())
    return sorted(int(c) for c in ids if c != 0)


def _present(a: np.ndarray) -> np.ndarray:
    # bincount is much faster than np.unique on large volumes of small non-negative ids.
    if a.dtype == bool or (a.size and a.min() >= 0 and a.max() < 65536):
        return np.flatnonzero(np.bincount(a.ravel().astype(np.intp, copy=False)))
    return np.unique(a)


def _counts(pred: np.ndarray, gt: np.ndarray, cid: int) -> tuple[int, int, int]:
    # Counting on boolean masks, rather than MONAI's compute_dice, avoids building
    # one-hot float tensors of the whole volume for every class.
    p, g = pred == cid, gt == cid
    return int(np.count_nonzero(p & g)), int(np.count_nonzero(p)), int(np.count_nonzero(g))


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _mean(values: Iterable[float]) -> float | None:
    # nan (class in neither array) is skipped; inf (class in one array) makes the mean inf
    scored = [v for v in values if not math.isnan(v)]
    return _finite_or_none(float(np.mean(scored))) if scored else None
