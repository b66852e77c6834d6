"""Scoring a classifier on a labelled test set: its prediction table against known classes.

The table is the CSV ``napari-medml predict`` and the Classify widget write
(``tables.write_table``): a key column (``sample``, ``object`` or ``tile``), ``class`` and
``prob_<id>`` per class. The truth is a CSV as ``train --classes`` reads it
(``data.read_class_csv``): an optional header, the class in the last column (empty or 0 =
unknown) and, with two or more columns, the sample number, object id or tile number first.
Rows are matched by that key, never by row order; rows on one side only and truth 0 are
left out, one note per kind. The metrics are ``metrics.classification_report``'s
(scikit-learn): hard metrics score the ``class`` column, AUC and ROC the probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_medml.classification.report_text import report_text
from napari_medml.errors import InputError

__all__ = ["KEY_COLUMNS", "PredictionTable", "TableScore", "evaluate_tables", "read_prediction_table",
           "read_truth_table", "report_text", "score_table"]

KEY_COLUMNS = ("sample", "object", "tile")


@dataclass(frozen=True)
class PredictionTable:
    """A classifier's per-sample prediction table, as read from its CSV.

    Attributes
    ----------
    key : {"sample", "object", "tile"}
        What a row is (the key column's name).
    keys : np.ndarray
        int64 ``(N,)``: sample number, object id or tile number of each row (unique).
    classes : np.ndarray
        int64 ``(N,)``: the predicted class id of each row.
    proba : np.ndarray
        float64 ``(N, K)``: column k is the probability of ``class_ids[k]``.
    class_ids : tuple of int
        The classifier's classes, in the table's column order.
    class_names : dict
        Class id -> name, from a ``class_name`` column when the table has one, else empty.
    parts : tuple of str
        Per row, what the classifier did with it (``training``, ``validation``, ``unlabelled``:
        the Classify widget's and ``predict``'s ``part`` column); empty without that column.
    """

    key: str
    keys: np.ndarray
    classes: np.ndarray
    proba: np.ndarray
    class_ids: tuple[int, ...]
    class_names: Mapping[int, str] = field(default_factory=dict, hash=False)
    parts: tuple[str, ...] = ()  # per row, the table's 'part' column (training, validation, unlabelled)


@dataclass(frozen=True)
class TableScore:
    """:func:`score_table`'s ``report`` (plain JSON) and ``notes`` (one line per kind left out)."""

    report: dict[str, Any]
    notes: tuple[str, ...] = ()


def _read_rows(path: Path, what: str) -> list[list[str]]:
    """The rows of a CSV file (tab-separated for .tsv), cells stripped, trailing blank rows removed."""
    from napari_medml.io.text_tables import read_csv_rows

    delimiter = "\t" if path.suffix.lower() == ".tsv" else None  # None: comma, tab or semicolon
    rows = [[cell.strip() for cell in row] for row in read_csv_rows(path, what, delimiter=delimiter)]
    while rows and not any(rows[-1]):
        rows.pop()
    return rows


def _number(cell: str, where: str, what: str, *, probability: bool = False) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise InputError(f"{where}: {cell!r} is not a number: {what}") from None
    bad = not np.isfinite(value) or (not (0 <= value <= 1) if probability else (value < 0 or value != int(value)))
    if bad:
        raise InputError(f"{where}: {cell!r} is not {'in [0, 1]' if probability else 'an integer >= 0'}: {what}")
    return value


def read_prediction_table(path: str | Path) -> PredictionTable:
    """Read the CSV that ``napari-medml predict`` writes for a classifier.

    Parameters
    ----------
    path : str or Path
        The table: a header row with a key column (``sample``, ``object`` or ``tile``),
        ``class`` and ``prob_<id>`` per class; other columns are ignored.

    Returns
    -------
    PredictionTable

    Raises
    ------
    InputError
        Not a prediction table, no rows, a cell that is not a number, a class without a
        probability column, or a key listed twice.
    """
    from napari_medml.classification.tables import is_prediction_table

    path = Path(path)
    rows = _read_rows(path, "prediction")
    header = rows[0] if rows else []
    key = next((name for name in KEY_COLUMNS if name in header), None)
    if not is_prediction_table(header) or key is None:
        raise InputError(f"prediction '{path}' is not a classifier's prediction table (it needs a sample, object "
                         "or tile column, 'class' and a 'prob_<id>' column per class): give the CSV that "
                         "'napari-medml predict' writes for a classification model")
    prob_columns = [(k, name) for k, name in enumerate(header) if name.startswith("prob_")]
    try:
        class_ids = tuple(int(name[5:]) for _, name in prob_columns)
    except ValueError:
        raise InputError(f"prediction '{path}': probability columns {[n for _, n in prob_columns]} must be "
                         "named prob_<class id>, as 'napari-medml predict' writes them") from None
    body = [row for row in rows[1:] if any(row)]
    if not body:
        raise InputError(f"prediction '{path}' has no rows: predict on the test images first")
    at = {name: k for k, name in reversed(list(enumerate(header)))}
    keys, classes, proba, names = [], [], [], {}
    fix = "use the table 'napari-medml predict' wrote, unedited"
    for line, row in enumerate(body, start=2):
        if len(row) < len(header):
            raise InputError(f"prediction '{path}' line {line} has {len(row)} cells, the header {len(header)}: {fix}")
        where = f"prediction '{path}' line {line}"
        keys.append(int(_number(row[at[key]], where, fix)))
        classes.append(int(_number(row[at["class"]], where, fix)))
        proba.append([_number(row[k], where, fix, probability=True) for k, _ in prob_columns])
        if "class_name" in at and row[at["class_name"]]:
            names[classes[-1]] = row[at["class_name"]]
    parts = tuple(row[at["part"]].strip() for row in body) if "part" in at else ()
    table = PredictionTable(key, np.asarray(keys, np.int64), np.asarray(classes, np.int64),
                            np.asarray(proba, np.float64).reshape(len(body), len(class_ids)), class_ids, names, parts)
    _check_unique(table.keys, key, f"prediction '{path}'")
    strange = sorted(set(table.classes.tolist()) - set(class_ids))
    if strange:
        raise InputError(f"prediction '{path}' has class {strange[0]} but no 'prob_{strange[0]}' column: {fix}")
    return table


def _numbered(rows: Sequence[Sequence[str]]) -> bool:
    """Whether the first cell of every non-empty row is a number (a key column)."""
    for row in rows:
        if row and row[0] != "":
            try:
                float(row[0])
            except ValueError:
                return False
    return True


def read_truth_table(path: str | Path, *, key: str = "sample", class_names: Mapping[int, str] | None = None,
                     what: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Read known classes from a CSV in the format ``train --classes`` reads.

    Parameters
    ----------
    path : str or Path
        One row per sample, object or tile; an optional header row; the class in the last
        column (empty or 0 = unknown). With two or more columns the first is the key (sample
        number, object id or tile number) when it holds numbers; with one column, or a first
        column of names (e.g. file names), row i (after a header) is sample or tile i.
    key : {"sample", "object", "tile"}
        What the rows are, for messages; objects need a key column.
    class_names : mapping, optional
        Class id -> name: names are read as their ids.
    what : {"labels", "class file"}
        The file in messages: evaluate's ``--labels`` or train's ``--classes``.

    Returns
    -------
    keys, classes : np.ndarray
        int64 ``(M,)`` each; ``classes`` 0 = unknown.

    Raises
    ------
    InputError
        A cell that is not a class id (or known name), a key listed twice, objects
        without a key column, or no rows.
    """
    path, rows = Path(path), _read_rows(Path(path), what)
    by_name = {str(v).strip().lower(): int(k) for k, v in (class_names or {}).items()}
    # a first column of names (a file,class list, as train --classes reads it) is not a key: rows in order
    keyed = any(len(row) > 1 for row in rows) and (key == "object" or _numbered(rows[1:]))
    then = "its number or id, then " if keyed else ""
    fix = f"write one row per {key}: {then}its class id in the last column (empty or 0 = unknown)"

    def parse_class(cell: str, line: int) -> int:
        if cell == "":
            return 0
        if cell.lower() in by_name:
            return by_name[cell.lower()]
        return int(_number(cell, f"{what} '{path}' line {line}", fix))

    def header(row: list[str]) -> bool:
        try:
            parse_class(row[-1] if row else "", 1)
            if keyed and len(row) > 1:
                _number(row[0], "", "")
        except InputError:
            return True
        return False

    start = 1 if rows and header(rows[0]) else 0
    keys, classes = [], []
    for line, row in enumerate(rows[start:], start=start + 1):
        if keyed:
            if not any(row):
                continue
            if len(row) < 2 or row[0] == "":
                raise InputError(f"{what} '{path}' line {line} has no {key} number: {fix}")
            keys.append(int(_number(row[0], f"{what} '{path}' line {line}", fix)))
        else:
            keys.append(len(keys))
        classes.append(parse_class(row[-1] if row else "", line))
    if not keyed and key == "object":
        raise InputError(f"labels '{path}' has one column but object ids are not row numbers: write two "
                         "columns, the object id (the table's 'object' column) and its class")
    if not keys:
        raise InputError(f"labels '{path}' has no class rows: {fix}")
    out = np.asarray(keys, np.int64)
    _check_unique(out, key, f"labels '{path}'")
    return out, np.asarray(classes, np.int64)


def _check_unique(keys: np.ndarray, key: str, name: str) -> None:
    values, counts = np.unique(keys, return_counts=True)
    if (counts > 1).any():
        raise InputError(f"{name} lists {key} {values[counts > 1][0]} {counts.max()} times: give one row per {key}")


def _some(keys: Sequence[int], key: str) -> str:  # 'sample 4' or 'samples 4, 7, 9, ... (12)'
    shown = ", ".join(str(int(k)) for k in keys[:5])
    return f"{key}{'s' if len(keys) > 1 else ''} {shown}" + (f", ... ({len(keys)})" if len(keys) > 5 else "")


def _span(keys: np.ndarray) -> str:
    return f"{keys.min()}..{keys.max()}" if keys.size else "none"


def score_table(table: PredictionTable, truth_keys: np.ndarray, truth_classes: np.ndarray, *,
                prediction_name: str = "prediction", truth_name: str = "labels") -> TableScore:
    """Score a prediction table against known classes, matching rows by key.

    Parameters
    ----------
    table : PredictionTable
        ``N`` rows.
    truth_keys, truth_classes : np.ndarray
        int ``(M,)`` each: key and true class id (0 = unknown) per truth row.
    prediction_name, truth_name : str
        How messages name the two inputs, e.g. ``"prediction 'pred.csv'"``.

    Returns
    -------
    TableScore
        ``report``: :func:`~napari_medml.classification.metrics.classification_report`
        (confusion matrix rows = true class; ``roc`` per class) with hard metrics from the
        ``class`` column, plus ``level``, ``macro_auc`` and ``left_out`` (keys without
        truth, without prediction, of unknown class); ``notes``: one line per kind left out.

    Raises
    ------
    InputError
        A true class the classifier does not know, no common key, or no known class.
    """
    from napari_medml.classification.metrics import (
        absent_classes_note, accuracy, balanced_accuracy, classification_report, confusion_matrix,
        precision_recall_f1)

    key, ids = table.key, [int(c) for c in table.class_ids]
    t_keys, t_cls = np.asarray(truth_keys, np.int64).ravel(), np.asarray(truth_classes, np.int64).ravel()
    notes = []
    unknown_ids = sorted(set(t_cls[t_cls > 0].tolist()) - set(ids))
    if unknown_ids:
        rows = t_keys[np.isin(t_cls, unknown_ids)]
        raise InputError(f"{truth_name} has class {unknown_ids[0]} ({_some(rows, key)}) but the classifier's "
                         f"classes are {', '.join(map(str, ids))}: fix the class ids in {truth_name} "
                         "(0 or empty = unknown), or score a classifier trained on those classes")
    last = int(table.keys.max(initial=-1))
    if 0 in table.keys and t_keys.size and 0 not in t_keys and t_keys.min() == 1:  # counted from 1?
        if t_keys.max() == last + 1:  # its last row is one past the table's: from 1, rows may be missing
            t_keys = t_keys - 1  # as train --classes accepts
            notes.append(f"{truth_name} numbers the {key}s from 1: read as {key}s 0..{last} of {prediction_name}")
        else:  # from 0 without row 0, or from 1 without its last rows: said, read from 0
            notes.append(f"{truth_name} has no {key} 0 and ends at {int(t_keys.max())}: read as counted from 0, "
                         f"as {prediction_name}; if it counts from 1, give its last row too (or number from 0)")
    common, in_pred, in_truth = np.intersect1d(table.keys, t_keys, return_indices=True)
    if common.size == 0:
        raise InputError(f"no {key} of {prediction_name} ({key}s {_span(table.keys)}) has a row in {truth_name} "
                         f"({key}s {_span(t_keys)}): the first column of {truth_name} must be the {key} "
                         f"numbers of the table's '{key}' column")
    no_truth = np.setdiff1d(table.keys, t_keys)
    no_pred = np.setdiff1d(t_keys, table.keys)
    y = t_cls[in_truth]
    known = y > 0
    if not known.any():
        raise InputError(f"{truth_name} gives no known class for the {common.size} {key}s it shares with "
                         f"{prediction_name} (all 0 or empty): write their class ids")
    unknown = common[~known]
    for left, where, why in ((no_truth, prediction_name, f"no row in {truth_name}"),
                             (no_pred, truth_name, f"no row in {prediction_name}"),
                             (unknown, truth_name, "class 0 or none (unknown)")):
        if left.size:
            one = left.size == 1
            notes.append(f"{left.size} {key}{'' if one else 's'} of {where} {'has' if one else 'have'} {why} "
                         f"({_some(left, key)}): left out")
    rows = in_pred[known]
    y, pred, proba = y[known], table.classes[rows], table.proba[rows]
    names = dict(table.class_names) or None
    report = classification_report(y, proba, ids, class_names=names)  # AUC and ROC from the probabilities
    argmax = np.asarray(ids)[np.argmax(proba, axis=1)]
    if (argmax != pred).any():
        notes.append(f"{int((argmax != pred).sum())} rows of {prediction_name} have a class other than their "
                     "most probable one: accuracy and the confusion matrix score the 'class' column, AUC the "
                     "probabilities")
    # the hard metrics score what predict decided, the 'class' column
    prf = precision_recall_f1(y, pred, ids)
    for k, entry in enumerate(report["per_class"]):
        entry.update(precision=float(prf["precision"][k]), recall=float(prf["recall"][k]), f1=float(prf["f1"][k]))
    present = prf["support"] > 0
    aucs = [e["auc"] for e in report["per_class"] if e["auc"] is not None]
    note = absent_classes_note(ids, prf, pred, key)
    if note:
        notes.append(note)
    if table.parts:  # trial 42: rows the model learned from were scored without a word
        seen = np.isin(np.asarray(table.parts, dtype=object)[rows], ("training", "validation"))
        if seen.any():
            unseen = f"the {int((~seen).sum())} others alone: accuracy {accuracy(y[~seen], pred[~seen]):.3f}" if (
                ~seen).any() else "none of them is unseen: score a table of images the model did not see"
            notes.append(f"{int(seen.sum())} of the {seen.size} {key}s scored are marked training or validation in "
                         f"the 'part' column of {prediction_name}: the classifier learned from them or was chosen "
                         f"on them, so these scores are optimistic; {unseen}")
    report.update(accuracy=accuracy(y, pred), balanced_accuracy=balanced_accuracy(y, pred),
                  macro_f1=float(np.mean(prf["f1"][present])),
                  confusion_matrix=confusion_matrix(y, pred, ids).tolist(),
                  macro_auc=float(np.mean(aucs)) if aucs else None, level=key,
                  class_names={str(c): names[c] for c in ids if c in names} if names else None,
                  left_out={"no_truth": no_truth.tolist(), "no_prediction": no_pred.tolist(),
                            "unknown_class": unknown.tolist()})
    return TableScore(report, tuple(notes))


def evaluate_tables(prediction: str | Path, labels: str | Path) -> TableScore:
    """Read a classifier's prediction table and a truth CSV, and score one against the other.

    Parameters
    ----------
    prediction : str or Path
        The CSV ``napari-medml predict`` wrote (see :func:`read_prediction_table`).
    labels : str or Path
        The known classes (see :func:`read_truth_table`).

    Returns
    -------
    TableScore
        As :func:`score_table`, the report also naming both files.

    Raises
    ------
    InputError
        Either file unusable, or the two sharing no labelled row.
    """
    from napari_medml.classification.tables import is_prediction_table

    table = read_prediction_table(prediction)
    head = _read_rows(Path(labels), "labels")[:1]
    if head and is_prediction_table(head[0]):
        raise InputError(f"labels '{labels}' is a prediction table, not the known classes: give as --labels a "
                         f"CSV with one row per {table.key}, its number or id and its class")
    named = head[0][0].strip().lower() if head and head[0] else ""
    if named in KEY_COLUMNS and named != table.key:  # trial 38: objects' classes were scored as samples
        raise InputError(f"labels '{labels}' has a row per {named}, prediction '{prediction}' a row per "
                         f"{table.key}: give the known classes of its {table.key}s (one row per {table.key}: its "
                         "number or id, its class)")
    keys, classes = read_truth_table(labels, key=table.key, class_names=table.class_names)
    score = score_table(table, keys, classes, prediction_name=f"prediction '{prediction}'",
                        truth_name=f"labels '{labels}'")
    return TableScore({"prediction": str(prediction), "labels": str(labels), **score.report}, score.notes)
