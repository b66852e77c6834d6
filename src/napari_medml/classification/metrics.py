"""Classification metrics: accuracy, balanced accuracy, per-class precision, recall and
F1, confusion matrix, one-vs-rest ROC curves and AUC, and Youden's operating threshold.

The formulas are scikit-learn's (``sklearn.metrics``: confusion-matrix rows are the true
class, ROC curves drop collinear points, AUC is the trapezoid area so ties count one
half); this module fixes the class order, checks the inputs with messages that say
what is wrong, and makes every result of :func:`classification_report` plain JSON
(lists, floats, ``None`` for undefined).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from napari_medml.errors import InputError

__all__ = [
    "absent_classes_note",
    "accuracy",
    "balanced_accuracy",
    "chance_note",
    "classification_report",
    "confusion_matrix",
    "no_metrics_reason",
    "one_class_note",
    "precision_recall_f1",
    "roc_auc",
    "roc_curve",
    "report_summary",
    "youden_threshold",
]


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], class_ids: Sequence[int]) -> np.ndarray:
    """Counts ``(K, K)``: row = true class, column = predicted class, in ``class_ids`` order.

    Samples whose true or predicted id is not in ``class_ids`` are not counted.
    """
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    t, p = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if t.shape != p.shape:
        raise InputError(f"a confusion matrix needs two equal arrays, got {t.shape} and {p.shape}")
    ids = np.asarray(class_ids)
    if t.size == 0:
        return np.zeros((len(ids), len(ids)), np.int64)
    return sk_confusion_matrix(t, p, labels=ids).astype(np.int64)


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Share of samples predicted right."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.size == 0:
        raise InputError(f"accuracy needs two equal, non-empty arrays, got {t.shape} and {p.shape}")
    return float(np.mean(t == p))


def balanced_accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Mean recall over the classes present in ``y_true`` (robust to class imbalance)."""
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": those are left out, as wanted
        warnings.simplefilter("ignore")
        return float(balanced_accuracy_score(np.asarray(y_true), np.asarray(y_pred)))


def precision_recall_f1(y_true: Sequence[int], y_pred: Sequence[int],
                        class_ids: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support; 0 where undefined (no predictions)."""
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        np.asarray(y_true), np.asarray(y_pred), labels=np.asarray(class_ids), zero_division=0)
    return {"precision": precision.astype(np.float64), "recall": recall.astype(np.float64),
            "f1": f1.astype(np.float64), "support": support.astype(np.int64)}


def roc_curve(is_positive: Sequence[bool], scores: Sequence[float], *,
              drop_intermediate: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False and true positive rates at every score threshold, highest threshold first.

    As in scikit-learn, the curve starts at (0, 0) with threshold ``+inf``, and with
    ``drop_intermediate`` the points on straight segments are left out.

    Parameters
    ----------
    is_positive : sequence of bool
        Whether each sample belongs to the positive class.
    scores : sequence of float
        The score of the positive class (e.g. its probability).

    Returns
    -------
    fpr, tpr, thresholds : np.ndarray
        ``nan`` rates where a class is absent.
    """
    from sklearn.metrics import roc_curve as sk_roc_curve

    y = np.asarray(is_positive, dtype=bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape or y.size == 0:
        raise InputError(f"ROC needs equal, non-empty labels and scores, got {y.shape} and {s.shape}")
    with warnings.catch_warnings():  # one class only: sklearn warns and returns nan rates, as we want
        warnings.simplefilter("ignore")
        fpr, tpr, thresholds = sk_roc_curve(y, s, drop_intermediate=drop_intermediate)
    return fpr.astype(np.float64), tpr.astype(np.float64), thresholds.astype(np.float64)


def roc_auc(is_positive: Sequence[bool], scores: Sequence[float]) -> float:
    """Area under the ROC curve; ``nan`` when only one class is present."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(is_positive, dtype=bool)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, np.asarray(scores, dtype=np.float64)))


def youden_threshold(is_positive: Sequence[bool], scores: Sequence[float]) -> float | None:
    """The score threshold that maximises Youden's J = TPR - FPR (``None`` if undefined)."""
    y = np.asarray(is_positive, dtype=bool)
    if y.all() or not y.any():
        return None
    fpr, tpr, thr = roc_curve(y, scores)
    j = tpr - fpr
    best = int(np.argmax(j[1:])) + 1  # skip the +inf start point
    return float(thr[best])


def classification_report(y_true: Sequence[int], proba: np.ndarray, class_ids: Sequence[int], *,
                          class_names: Mapping[int, str] | None = None) -> dict[str, Any]:
    """Every metric of a classifier on labelled samples, as plain JSON.

    Parameters
    ----------
    y_true : sequence of int
        True class id per sample (ids from ``class_ids``).
    proba : np.ndarray
        ``(N, K)`` class probabilities, column k = ``class_ids[k]``.
    class_ids : sequence of int
        The classifier's class ids.
    class_names : mapping, optional
        Class id -> name, copied into the per-class entries.

    Returns
    -------
    dict
        ``n``, ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``auc`` (binary: of
        ``class_ids[1]``; more classes: macro one-vs-rest over classes present),
        ``class_ids``, ``confusion_matrix`` (rows = true), ``per_class`` (a list of
        dicts: class, name, precision, recall, f1, support, auc) and ``roc`` (a list of
        dicts: class, fpr, tpr, thresholds; the first threshold, +inf, is written as
        ``None``); for two classes also ``threshold`` (Youden's J on the probability
        of ``class_ids[1]``).
    """
    ids = [int(c) for c in class_ids]
    raw = np.asarray(y_true).ravel()
    if raw.dtype.kind not in "iubf":
        raise InputError(f"y_true has dtype {raw.dtype}: give each sample's true class id, an integer")
    odd = np.unique(raw[~np.isin(raw, ids)])  # trial 47: 1.5 was read as 1, and 7 gave scikit-learn's error
    if odd.size:
        raise InputError(f"y_true holds {', '.join(f'{v:g}' for v in odd[:5])}, not among the class ids {ids}: "
                         "give each sample's true class id (leave out samples without one)")
    t = raw.astype(np.int64)
    p = np.asarray(proba, dtype=np.float64)
    if not np.isfinite(p).all():
        raise InputError("proba holds NaN or infinite values: give the classifier's probabilities for samples "
                         "without NaN (fill the image's NaN first)")
    if p.ndim != 2 or p.shape != (t.size, len(ids)):
        raise InputError(
            f"probabilities have shape {p.shape} but {t.size} samples and {len(ids)} classes "
            f"need ({t.size}, {len(ids)})"
        )
    if t.size == 0:
        raise InputError("classification_report needs at least one labelled sample")
    pred = np.asarray(ids)[np.argmax(p, axis=1)]
    prf = precision_recall_f1(t, pred, ids)
    per_class, roc, aucs = [], [], []
    # two classes whose probabilities sum to 1 rank the samples in reverse: one AUC for both
    # (computed from each column, rounding made them differ in the third digit, 0.567 and 0.568)
    shared = roc_auc(t == ids[1], p[:, 1]) if len(ids) == 2 and np.allclose(p.sum(axis=1), 1.0, atol=1e-4) else None
    for k, cid in enumerate(ids):
        positive = t == cid
        auc = shared if shared is not None else roc_auc(positive, p[:, k])
        aucs.append(auc)
        per_class.append({
            "class": cid,
            "name": None if class_names is None else class_names.get(cid),
            "precision": float(prf["precision"][k]),
            "recall": float(prf["recall"][k]),
            "f1": float(prf["f1"][k]),
            "support": int(prf["support"][k]),
            "auc": _json_float(auc),
        })
        if positive.any() and not positive.all():
            fpr, tpr, thr = roc_curve(positive, p[:, k])
            roc.append({"class": cid, "fpr": fpr.tolist(), "tpr": tpr.tolist(),
                        "thresholds": [None, *thr[1:].tolist()]})
    if len(ids) == 2:
        auc_all = aucs[1]
    else:
        defined = [a for a in aucs if not np.isnan(a)]
        auc_all = float(np.mean(defined)) if defined else float("nan")
    report: dict[str, Any] = {
        "n": int(t.size),
        "accuracy": accuracy(t, pred),
        "balanced_accuracy": balanced_accuracy(t, pred),
        "macro_f1": float(np.mean(prf["f1"][prf["support"] > 0])) if (prf["support"] > 0).any() else 0.0,
        "auc": _json_float(auc_all),
        "class_ids": ids,
        "confusion_matrix": confusion_matrix(t, pred, ids).tolist(),
        "per_class": per_class,
        "roc": roc,
    }
    if len(ids) == 2:
        report["threshold"] = youden_threshold(t == ids[1], p[:, 1])
    return report


def one_class_note(report: Mapping[str, Any], class_names: Mapping[int, str] | None = None) -> str | None:
    """A line when every scored sample (``report["split"]``: validation, test) of two or more
    true classes was put in one class (the network does not tell them apart yet: a short run,
    or too few samples); else None."""
    matrix = np.asarray(report.get("confusion_matrix") or [[0]])
    ids = list(report.get("class_ids") or [])
    if len(ids) != len(matrix) or (matrix.sum(axis=1) > 0).sum() < 2 or (matrix.sum(axis=0) > 0).sum() != 1:
        return None
    cid = ids[int(np.argmax(matrix.sum(axis=0)))]
    name = (class_names or {}).get(cid) or f"class {cid}"
    split = report.get("split") or "scored"
    return (f"every {split} sample was put in one class ({name}): the network does not tell the classes "
            "apart yet: train longer (more epochs) or label more samples of each class")


CHANCE_ALPHA = 0.05  # the one-sided binomial test's level for "clearly above the most frequent class"


def chance_note(report: Mapping[str, Any]) -> str | None:
    """A line when a report's accuracy is not clearly above putting every sample in the most
    frequent true class (a one-sided binomial test at :data:`CHANCE_ALPHA`): on a few samples,
    0.6 reads as success while a network that learned nothing scores it; else None.

    Parameters
    ----------
    report : mapping
        :func:`classification_report` or ``evaluation.score_table``'s report (its
        ``confusion_matrix``, rows the true classes; ``split`` names the samples).

    Returns
    -------
    str or None
        None also where :func:`one_class_note` speaks (every sample in one class).
    """
    matrix = np.asarray(report.get("confusion_matrix") or [[0]])
    n = int(matrix.sum())
    truth = matrix.sum(axis=1)
    if matrix.ndim != 2 or n == 0 or (truth > 0).sum() < 2 or one_class_note(report) is not None:
        return None
    from scipy.stats import binomtest

    correct, majority = int(np.trace(matrix)), float(truth.max() / n)
    p = binomtest(correct, n, majority, alternative="greater").pvalue
    if p <= CHANCE_ALPHA:
        return None
    split = report.get("split") or "scored"
    return (f"accuracy {correct / n:.3f} on {n} {split} samples is not clearly above the {majority:.3f} that putting "
            f"every sample in the most frequent class scores (one-sided binomial test p = {p:.2g}): the "
            "classifier may not tell the classes apart yet: train longer, label more samples of each class, or "
            "check the classes")


def no_metrics_reason(val_fraction: float | None, fix: str = "a validation fraction of 0.2",
                      provenance: Mapping[str, Any] | None = None, resume: str = "resume the run") -> str:
    """Why a classifier trained with ``val_fraction`` has no validation metrics, and what to do.

    :func:`~napari_medml.classification.task.stratified_split` holds samples out only from
    classes with two or more labelled samples (a class's only sample stays in training).

    Parameters
    ----------
    val_fraction : float or None
        The run's validation share (None: unknown).
    fix : str
        The setting that holds samples out, as the front names it.
    provenance : Mapping, optional
        The classifier's; ``stopped_in_first_epoch``: stopped before it ever validated.
    resume : str
        How the front continues a stopped run.

    Returns
    -------
    str
    """
    if (provenance or {}).get("stopped_in_first_epoch") and (val_fraction or 0) > 0:  # trial 49: the labels blamed
        return f"stopped before its first epoch ended: never validated, so no metrics; {resume} to measure"
    if val_fraction is None:
        return "no validation samples: no metrics"
    if val_fraction <= 0:
        return f"no validation samples (validation fraction 0): no metrics; give {fix} to measure"
    return ("no validation samples: no class has two labelled samples (a class's only sample stays in "
            "training), so no metrics: label at least two samples of each class, more for numbers worth reading")


def report_summary(report: Mapping[str, Any], *, class_names: Mapping[int, str] | None = None) -> str:
    """A :func:`classification_report` as a few lines of text for people.

    Accuracy, balanced accuracy, AUC and the threshold (two classes) on the first
    line; then precision, recall and F1 per class.
    """
    if not report:
        return no_metrics_reason(None)

    def num(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    head = (f"{report.get('split', 'evaluated')} ({report['n']} samples"
            + (f", epoch {report['epoch']}" if "epoch" in report else "") + "): "
            f"accuracy {num(report['accuracy'])}, balanced {num(report['balanced_accuracy'])}, "
            f"AUC {num(report.get('auc'))}")
    if report.get("threshold") is not None:
        head += f", threshold {report['threshold']:.3f}"
    lines = [head]
    for entry in report.get("per_class", []):
        name = entry.get("name") or (class_names or {}).get(entry["class"]) or f"class {entry['class']}"
        lines.append(f"  {name}: P {num(entry['precision'])}  R {num(entry['recall'])}  "
                     f"F1 {num(entry['f1'])}  (n={entry['support']})")
    names = {e["class"]: e["name"] for e in report.get("per_class", []) if e.get("name")} or class_names
    notes = [one_class_note(report, names), chance_note(report)]
    return "\n".join(lines + [n for n in notes if n])


def _json_float(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def absent_classes_note(ids: Sequence[int], prf: Mapping[str, np.ndarray], pred: np.ndarray, key: str) -> str | None:
    """The line naming the classes with no true sample (no AUC; left out of macro AUC and macro
    F1), and those of them that were predicted, with scikit-learn's default macro F1, which
    counts them as 0; None when every class has true samples.

    Parameters
    ----------
    ids : sequence of int
        The class ids, in ``prf``'s order.
    prf : mapping
        :func:`precision_recall_f1` of the scored samples.
    pred : np.ndarray
        The predicted class of each scored sample.
    key : str
        What a sample is called (``"sample"``, ``"object"``, ``"tile"``).
    """
    absent = [c for c, s in zip(ids, prf["support"]) if s == 0]
    if not absent:
        return None
    predicted = [c for c in absent if np.any(pred == c)]
    also = ""
    if predicted:
        n, many = int(np.isin(pred, predicted).sum()), len(predicted) > 1
        sklearn_f1 = float(np.mean(np.append(prf["f1"][prf["support"] > 0], [0.0] * len(predicted))))
        also = (f" (class{'es' * many} {', '.join(map(str, predicted))} predicted for {n} {key}{'s' * (n != 1)}: "
                f"scikit-learn's default macro F1 counts {'them' if many else 'it'} as 0, {sklearn_f1:.3f})")
    return (f"class{'es' if len(absent) > 1 else ''} {', '.join(map(str, absent))} "
            f"{'have' if len(absent) > 1 else 'has'} no labelled {key}: no AUC, left out of macro AUC and macro F1"
            + also)
