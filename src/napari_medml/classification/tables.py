"""The tables of a classification, for every front.

- :func:`class_table`: one row per class, the ``features`` of a Labels layer whose values
  are class ids (napari maps a label value to the row whose ``index`` is that value);
- :func:`object_table`: one row per object, the ``features`` of a Labels layer whose values
  are object ids (``index`` = object id);
- :func:`write_table`: the per-sample table (``levels.prediction_table``: one row per
  sample, object or tile) as CSV, the file ``napari-medml predict`` and the Classify
  widget's *save table (CSV)* write.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["class_table", "is_prediction_table", "object_table", "write_table"]


def class_table(classes: Sequence[int], proba: np.ndarray, class_ids: Sequence[int],
                class_names: Mapping[int, str] | None = None, *, zero: str | None = None) -> dict[str, np.ndarray]:
    """One row per class: ``index`` (the class id), ``class_name``, ``count``, ``mean_prob``.

    Parameters
    ----------
    classes : sequence of int
        Predicted class id per sample, object or tile.
    proba : np.ndarray
        ``(N, K)`` probabilities, column k = ``class_ids[k]``.
    class_ids : sequence of int
        The classifier's classes (a class nobody was classified into keeps its row).
    class_names : mapping, optional
        Class id -> name (default ``"class <id>"``).
    zero : str, optional
        The name of a first row for value 0 (``"background"`` outside the objects,
        ``"unclassified"`` where no tile reaches), when 0 appears in the labels.

    Returns
    -------
    dict
        ``count``: samples classified into the class; ``mean_prob``: their mean
        probability of that class (NaN when the count is 0).
    """
    classes = np.asarray(classes, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64).reshape(len(classes), len(class_ids))
    names = dict(class_names or {})
    index, label, count, mean = ([0], [zero], [0], [np.nan]) if zero is not None else ([], [], [], [])
    for k, cid in enumerate(int(c) for c in class_ids):
        chosen = classes == cid
        index.append(cid)
        label.append(str(names.get(cid, f"class {cid}")))
        count.append(int(chosen.sum()))
        mean.append(float(p[chosen, k].mean()) if chosen.any() else np.nan)
    return {"index": np.asarray(index, dtype=np.int64), "class_name": np.asarray(label, dtype=object),
            "count": np.asarray(count, dtype=np.int64), "mean_prob": np.asarray(mean, dtype=np.float32)}


def object_table(samples_table: Mapping[str, np.ndarray],
                 class_names: Mapping[int, str] | None = None) -> dict[str, np.ndarray]:
    """The per-object table with ``index`` = object id and the class's name after ``class``.

    ``samples_table`` is an object-level ``levels.prediction_table`` (``object``,
    ``class``, ``prob_<id>``, ``voxels``); it is not changed.
    """
    names = dict(class_names or {})
    out: dict[str, np.ndarray] = {"index": np.asarray(samples_table["object"]).copy()}
    for column, values in samples_table.items():
        out[column] = np.asarray(values).copy()
        if column == "class":
            out["class_name"] = np.asarray([str(names.get(int(c), f"class {int(c)}")) for c in values], dtype=object)
    return out


def write_table(path: str | Path, table: Mapping[str, np.ndarray]) -> Path:
    """Write one CSV row per sample, object or tile (the columns of ``prediction_table``).

    Parameters
    ----------
    path : str or Path
        The CSV file (its folder is made when missing).
    table : mapping
        Column name -> values, all of one length.

    Returns
    -------
    Path
        ``path``. Floats are written with 6 significant digits.
    """
    from napari_medml.io.atomic import atomic_path

    path = Path(path)
    columns = list(table)
    with atomic_path(path, ".csv") as tmp, tmp.open("w", newline="") as fh:  # never a half-written table
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in zip(*(np.asarray(table[c]).tolist() for c in columns)):
            writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
    return path


def is_prediction_table(columns: Sequence[str]) -> bool:
    """Whether CSV ``columns`` are those :func:`write_table` writes for a prediction (a class
    and a ``prob_<id>`` per class), e.g. to replace only such a file on a re-run."""
    return "class" in columns and any(name.startswith("prob_") for name in columns)
