"""Every public name of ``napari_medml`` says what it takes, in ``help()`` (numpydoc)."""

from __future__ import annotations

import inspect

import pytest

import napari_medml as mm


def _public_callables() -> list[tuple[str, object]]:
    found = []
    for name in mm.__all__:
        obj = getattr(mm, name)
        if not callable(obj):
            continue
        found.append((name, obj))
        if inspect.isclass(obj):
            own = [base for base in obj.__mro__ if base.__module__.startswith("napari_medml")]
            members = {n for base in own for n in vars(base) if not n.startswith("_")}
            found += [(f"{name}.{n}", getattr(obj, n)) for n in sorted(members)
                      if inspect.isfunction(getattr(obj, n)) or inspect.ismethod(getattr(obj, n))]
    return found


@pytest.mark.parametrize(("name", "obj"), _public_callables(), ids=lambda v: v if isinstance(v, str) else "")
def test_public_functions_document_their_parameters(name: str, obj: object) -> None:
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{name} has no docstring"
    if inspect.isclass(obj):
        return
    params = [p for p in inspect.signature(obj).parameters if p not in ("self", "cls")]
    if params:
        assert "Parameters\n----------" in doc, f"{name}({', '.join(params)}) has no Parameters section"


@pytest.mark.parametrize(("runner", "generator"), [(mm.train, mm.fit), (mm.train_classifier, mm.fit_classifier)])
def test_train_shows_fits_parameters(runner: object, generator: object) -> None:
    # help(mm.train) used to show **kwargs: the same keywords are named, with the same defaults
    ours = inspect.signature(runner).parameters
    theirs = inspect.signature(generator).parameters
    assert list(ours) == list(theirs)
    assert [p.default for p in ours.values()] == [p.default for p in theirs.values()]


def test_a_classifier_is_scored_through_the_public_api() -> None:
    # the confusion matrix, ROC and AUC were reachable from the command line and the widget only
    import numpy as np

    report = mm.classification_report([1, 1, 2, 2], np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]]), [1, 2])
    assert report["confusion_matrix"] == [[1, 1], [0, 2]] and report["auc"] == 1.0 and report["roc"]
    with pytest.raises(ValueError, match=r"got 'classification': a classifier's predictions are scored with "
                                         r"napari_medml.classification_report\(true_classes, probabilities"):
        mm.evaluate(np.zeros((4, 4), int), np.zeros((4, 4), int), level="classification")
