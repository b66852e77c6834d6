"""A classifier's evaluation report (``evaluation.score_table``) as text for people."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["report_text", "result_line"]


def report_text(report: Mapping[str, Any]) -> str:
    """A :func:`score_table` report as text for people: the summary line, a per-class table
    (precision, recall, F1, support, AUC) and the confusion matrix (rows = true class)."""
    def num(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    ids = report["class_ids"]
    names = {int(c): n for c, n in (report.get("class_names") or {}).items()}
    label = [names.get(c, str(c)) for c in ids]
    files = f" (prediction '{report['prediction']}', labels '{report['labels']}')" if "prediction" in report else ""
    lines = [f"{report['n']} {report.get('level', 'sample')}s scored{files}",
             f"accuracy {num(report['accuracy'])}, balanced accuracy {num(report['balanced_accuracy'])}, "
             f"macro F1 {num(report['macro_f1'])}, macro AUC {num(report.get('macro_auc'))}", ""]
    w = max(len("class"), *(len(s) for s in label))
    lines.append(f"{'class':<{w}}  precision  recall     F1  support    AUC")
    for text, e in zip(label, report["per_class"]):
        lines.append(f"{text:<{w}}  {num(e['precision']):>9}  {num(e['recall']):>6}  {num(e['f1']):>5}"
                     f"  {e['support']:>7}  {num(e['auc']):>5}")
    corner = "true \\ predicted"
    w = max(len(corner), *(len(s) for s in label))
    cells = [max(len(s), *(len(str(row[k])) for row in report["confusion_matrix"])) for k, s in enumerate(label)]
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)",
              f"{corner:<{w}}" + "".join(f"  {s:>{c}}" for s, c in zip(label, cells))]
    for text, row in zip(label, report["confusion_matrix"]):
        lines.append(f"{text:<{w}}" + "".join(f"  {v:>{c}}" for v, c in zip(row, cells)))
    return "\n".join(lines)


def result_line(classifier: Any, result: Any, from_bundle: bool = False) -> str:
    """What a classification of an image says: how many samples of each class, which were
    trained or validated on, and what a start bundle gave.

    Parameters
    ----------
    classifier : Classifier
        The classifier (its class names and provenance).
    result : ClassificationResult
        Its classification of the image (``classes``, ``class_ids``, ``level``, ``table``, ``note``).
    from_bundle : bool
        A saved classifier applied: its start is not this run's, and is not said.

    Returns
    -------
    str
        E.g. ``"12 objects classified (live: 7, dead: 5); 8 trained on, 2 validated on"``.
    """
    from napari_medml.classification.transfer import describe_start, describe_taken

    counts = ", ".join(f"{classifier.class_names[c]}: {int((result.classes == c).sum())}" for c in result.class_ids)
    taken = describe_taken(classifier.provenance.get("taken_from_start") or {})
    started = "" if from_bundle else describe_start(classifier.provenance, started=True)  # trial 48: kept
    n, parts = len(result.classes), list(result.table.get("part", ()))
    seen = f"; {parts.count('training')} trained on, {parts.count('validation')} validated on" if parts else ""
    return f"{n} {result.level}{'' if n == 1 else 's'} classified ({counts}){seen}" + "".join(
        f"; {t}" for t in (started, taken, result.note) if t)
