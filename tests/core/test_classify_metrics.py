"""classify_metrics against scikit-learn on the same scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from napari_medml.classification.metrics import (
    accuracy,
    balanced_accuracy,
    classification_report,
    confusion_matrix,
    one_class_note,
    precision_recall_f1,
    report_summary,
    roc_auc,
    roc_curve,
    youden_threshold,
)


def _scores(seed: int, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    logits = np.round(logits, 1)  # ties on purpose
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_roc_and_auc_match_sklearn(seed: int) -> None:
    y, p = _scores(seed, 200, 2)
    s = p[:, 1]
    assert roc_auc(y == 1, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    for drop in (True, False):
        fpr, tpr, thr = roc_curve(y == 1, s, drop_intermediate=drop)
        sf, st, sth = skm.roc_curve(y, s, drop_intermediate=drop)
        np.testing.assert_allclose(fpr, sf)
        np.testing.assert_allclose(tpr, st)
        np.testing.assert_allclose(thr[1:], sth[1:])


def test_multiclass_ovr_auc_matches_sklearn() -> None:
    y, p = _scores(3, 300, 4)
    ids = [2, 5, 7, 9]
    yy = np.asarray(ids)[y]
    report = classification_report(yy, p, ids)
    expected = skm.roc_auc_score(yy, p, multi_class="ovr", labels=ids)
    assert report["auc"] == pytest.approx(expected, abs=1e-12)
    for k, cid in enumerate(ids):
        assert report["per_class"][k]["auc"] == pytest.approx(skm.roc_auc_score(yy == cid, p[:, k]))


def test_confusion_precision_recall_f1_accuracy_match_sklearn() -> None:
    y, p = _scores(4, 250, 3)
    ids = [1, 2, 3]
    yt, yp = y + 1, np.argmax(p, 1) + 1
    yp[:5] = 3  # some imbalance in the predictions
    np.testing.assert_array_equal(confusion_matrix(yt, yp, ids), skm.confusion_matrix(yt, yp, labels=ids))
    prf = precision_recall_f1(yt, yp, ids)
    sp, sr, sf, ss = skm.precision_recall_fscore_support(yt, yp, labels=ids, zero_division=0)
    np.testing.assert_allclose(prf["precision"], sp)
    np.testing.assert_allclose(prf["recall"], sr)
    np.testing.assert_allclose(prf["f1"], sf)
    np.testing.assert_array_equal(prf["support"], ss)
    assert accuracy(yt, yp) == pytest.approx(skm.accuracy_score(yt, yp))
    assert balanced_accuracy(yt, yp) == pytest.approx(skm.balanced_accuracy_score(yt, yp))


def test_report_is_json_with_binary_threshold() -> None:
    y, p = _scores(5, 120, 2)
    ids = [3, 8]
    report = classification_report(np.asarray(ids)[y], p, ids, class_names={3: "a", 8: "b"})
    text = json.dumps(report, allow_nan=False)  # strict JSON: no NaN or Infinity
    back = json.loads(text)
    assert back["confusion_matrix"] == skm.confusion_matrix(np.asarray(ids)[y], np.asarray(ids)[p.argmax(1)],
                                                            labels=ids).tolist()
    fpr, tpr, thr = skm.roc_curve(y, p[:, 1])
    assert back["threshold"] == pytest.approx(thr[np.argmax(tpr - fpr)])
    assert back["per_class"][1]["name"] == "b"
    assert back["roc"][1]["thresholds"][0] is None
    assert youden_threshold(y == 1, p[:, 1]) == back["threshold"]


def test_undefined_auc_is_none_when_a_class_is_missing() -> None:
    y = np.array([1, 1, 1, 2])
    p = np.array([[0.9, 0.1, 0.0], [0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    report = classification_report(y, p, [1, 2, 3])
    assert report["per_class"][2]["auc"] is None
    assert report["auc"] == pytest.approx(1.0)
    json.dumps(report, allow_nan=False)


def test_a_report_that_puts_every_sample_in_one_class_says_so() -> None:
    """Two true classes, every sample predicted 'round': the summary ends with what to do;
    a report that tells the classes apart, or has one true class only, gets no such line."""
    y = np.array([1, 1, 2, 2, 2])
    one = np.array([[0.6, 0.4]] * 5)
    report = {**classification_report(y, one, [1, 2], class_names={1: "round", 2: "long"}), "split": "validation"}
    note = ("every validation sample was put in one class (round): the network does not tell the classes apart "
            "yet: train longer (more epochs) or label more samples of each class")
    assert one_class_note(report) == note.replace("(round)", "(class 1)")
    assert report_summary(report).splitlines()[-1] == note
    good = classification_report(y, np.array([[0.9, 0.1]] * 2 + [[0.2, 0.8]] * 3), [1, 2])
    assert one_class_note(good) is None and "one class" not in report_summary(good)
    assert one_class_note(classification_report(np.array([1, 1]), np.array([[0.7, 0.3]] * 2), [1, 2])) is None


def test_an_accuracy_not_clearly_above_the_most_frequent_class_is_said() -> None:
    """Trial 40: shuffled classes gave validation accuracy 0.607 on 28 samples without a word on
    chance (the most frequent class alone scores 0.5 there)."""
    from scipy.stats import binomtest

    from napari_medml.classification.metrics import chance_note

    y = np.array([1] * 14 + [2] * 14)
    guess = np.array([[0.6, 0.4]] * 9 + [[0.4, 0.6]] * 5 + [[0.4, 0.6]] * 8 + [[0.6, 0.4]] * 6)  # 17 of 28
    report = {**classification_report(y, guess, [1, 2]), "split": "validation"}
    p = binomtest(17, 28, 0.5, alternative="greater").pvalue
    assert p == pytest.approx(0.172, abs=1e-3)
    assert chance_note(report) == (
        "accuracy 0.607 on 28 validation samples is not clearly above the 0.500 that putting every sample in the "
        f"most frequent class scores (one-sided binomial test p = {p:.2g}): the classifier may not tell the classes "
        "apart yet: train longer, label more samples of each class, or check the classes")
    assert report_summary(report).splitlines()[-1] == chance_note(report)
    # 24 of 28 is clearly above (p = 8e-5); 9 of 10 of a 0.8 majority is not (p = 0.38)
    good = classification_report(y, np.array([[0.9, 0.1]] * 12 + [[0.1, 0.9]] * 2 + [[0.1, 0.9]] * 12
                                                + [[0.9, 0.1]] * 2), [1, 2])
    assert chance_note(good) is None
    skewed = classification_report(np.array([1] * 8 + [2] * 2), np.array([[0.9, 0.1]] * 9 + [[0.1, 0.9]]), [1, 2])
    assert "accuracy 0.900 on 10 scored samples is not clearly above the 0.800" in chance_note(skewed)
    # every sample in one class: one_class_note speaks, not this
    assert chance_note({**classification_report(y, np.array([[0.6, 0.4]] * 28), [1, 2]), "split": "x"}) is None


def test_binary_auc_is_one_number_for_both_classes() -> None:
    # computed from each column, float rounding printed 0.567 and 0.568 (sklearn: 0.5675)
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 40)
    p1 = np.round(rng.random(40).astype(np.float32), 2)
    proba = np.stack([1 - p1, p1], axis=1)
    report = classification_report(y, proba, [0, 1])
    aucs = [row["auc"] for row in report["per_class"]]
    assert aucs[0] == aucs[1] == report["auc"] == skm.roc_auc_score(y, p1.astype(np.float64))
    # scores that are not probabilities keep each class's own AUC
    loose = classification_report(y, np.stack([p1 * 0, p1], axis=1) + 0.5, [0, 1])
    assert loose["per_class"][0]["auc"] == 0.5


def test_a_report_refuses_true_classes_it_does_not_know_and_nan_probabilities() -> None:
    """Trial 47: 1.5 and 2.5 were read as classes 1 and 2 (accuracy 1.0), 7 and NaN gave scikit-learn's errors."""
    from napari_medml.errors import InputError

    y, p = np.array([1, 2, 1, 2]), np.array([[.9, .1], [.2, .8], [.6, .4], [.3, .7]])
    for true, proba, said in (
            (y + 0.5, p, "y_true holds 1.5, 2.5, not among the class ids [1, 2]: give each sample's true class id"),
            (np.full(4, 7), p, "y_true holds 7, not among the class ids [1, 2]"),
            (y.astype(str), p, "y_true has dtype <U21: give each sample's true class id, an integer"),
            (y, p * np.nan, "proba holds NaN or infinite values")):
        with pytest.raises(InputError, match=said.replace("[", r"\[").replace("]", r"\]")):
            classification_report(true, proba, [1, 2])
    assert classification_report(y.astype(float), p, [1, 2])["accuracy"] == 1.0


def test_why_a_classifier_has_no_metrics():
    from napari_medml.classification.metrics import no_metrics_reason

    assert no_metrics_reason(0.0, "--val-fraction 0.2").endswith("give --val-fraction 0.2 to measure")
    assert no_metrics_reason(0.2).startswith("no validation samples: no class has two labelled samples")
    # stopped before it ever validated (trial 49: the labels were blamed), in the front's words
    stopped = {"stopped_in_first_epoch": True, "steps": 3}
    assert no_metrics_reason(0.2, "x", stopped, "train again with --resume") == (
        "stopped before its first epoch ended: never validated, so no metrics; train again with --resume to measure")
