"""classification.evaluation: a prediction table scored against a truth CSV, matched by key,
against scikit-learn on the same rows (a row without truth, a truth row without prediction
and a truth 0 are left out and said)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from napari_medml.classification.evaluation import evaluate_tables, read_truth_table, report_text
from napari_medml.classification.tables import write_table
from napari_medml.errors import InputError

IDS = [1, 2, 5]  # not contiguous, as class ids may be
PROBA = np.array([
    [0.70, 0.20, 0.10],  # sample 0: no truth row
    [0.60, 0.30, 0.10],  # 1: true 1
    [0.20, 0.50, 0.30],  # 2: true 1 (predicted 2)
    [0.10, 0.80, 0.10],  # 3: true 2
    [0.30, 0.30, 0.40],  # 4: truth 0, unknown
    [0.25, 0.35, 0.40],  # 5: true 2 (predicted 5)
    [0.05, 0.15, 0.80],  # 6: true 5
    [0.40, 0.45, 0.15],  # 7: true 5 (predicted 2)
    [0.55, 0.25, 0.20],  # 8: true 1
    [0.10, 0.20, 0.70],  # 9: true 5
])  # fmt: skip
TRUTH = {9: 5, 3: 2, 11: 2, 1: 1, 7: 5, 4: 0, 2: 1, 6: 5, 8: 1, 5: 2}  # shuffled; 11 is not predicted
SCORED = [1, 2, 3, 5, 6, 7, 8, 9]


def table(path, proba=PROBA, ids=IDS, **extra):
    cols = {"sample": np.arange(len(proba)), "class": np.asarray(ids)[np.argmax(proba, 1)]}
    cols.update({f"prob_{c}": proba[:, k] for k, c in enumerate(ids)}, **extra)
    return write_table(path, cols)


def truth(path, rows, header="sample,class\n"):
    path.write_text(header + "".join(f"{k},{c}\n" for k, c in rows.items()))
    return path


def test_scores_match_sklearn_on_the_rows_both_files_know(tmp_path):
    score = evaluate_tables(table(tmp_path / "pred.csv"), truth(tmp_path / "test.csv", TRUTH))
    r = score.report
    y = np.array([TRUTH[k] for k in SCORED])
    p = PROBA[SCORED]
    pred = np.asarray(IDS)[p.argmax(1)]
    assert r["n"] == 8 and r["level"] == "sample"
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(y, pred)) == 5 / 8
    assert r["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert r["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=IDS).tolist() == [[2, 1, 0], [0, 1, 1],
                                                                                            [0, 1, 2]]
    prec, rec, f1, sup = skm.precision_recall_fscore_support(y, pred, labels=IDS, zero_division=0)
    for k, entry in enumerate(r["per_class"]):
        assert entry["class"] == IDS[k] and entry["support"] == sup[k]
        assert (entry["precision"], entry["recall"], entry["f1"]) == pytest.approx((prec[k], rec[k], f1[k]))
        assert entry["auc"] == pytest.approx(skm.roc_auc_score(y == IDS[k], p[:, k]))
    assert r["macro_f1"] == pytest.approx(skm.f1_score(y, pred, labels=IDS, average="macro"))
    assert r["macro_auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", labels=IDS, average="macro"))
    fpr, tpr, _ = skm.roc_curve(y == 5, p[:, 2])
    roc5 = next(c for c in r["roc"] if c["class"] == 5)
    assert roc5["fpr"] == pytest.approx(fpr.tolist()) and roc5["tpr"] == pytest.approx(tpr.tolist())
    assert r["left_out"] == {"no_truth": [0], "no_prediction": [11], "unknown_class": [4]}
    json.dumps(r, allow_nan=False)  # plain JSON
    notes = " | ".join(score.notes)
    assert len(score.notes) == 4, notes  # and: no sample 0, read as counted from 0 (said)
    assert "has no sample 0 and ends at 11: read as counted from 0" in notes
    assert "sample 0" in notes and "sample 11" in notes and "sample 4" in notes and "unknown" in notes
    text = report_text(r)
    assert "accuracy 0.625" in text and f"macro AUC {r['macro_auc']:.3f}" in text
    assert "1                 2  1  0" in text.splitlines()[-3]  # confusion matrix row of true class 1


def test_class_names_in_the_table_label_the_output(tmp_path):
    names = np.array(["round", "square", "star"])[PROBA.argmax(1)]
    score = evaluate_tables(table(tmp_path / "pred.csv", class_name=names),
                            truth(tmp_path / "test.csv", {k: TRUTH[k] for k in SCORED}))
    assert score.report["class_names"] == {"1": "round", "2": "square", "5": "star"}
    assert [e["name"] for e in score.report["per_class"]] == ["round", "square", "star"]
    assert "true \\ predicted  round  square  star" in report_text(score.report)


def test_truth_in_the_formats_train_reads(tmp_path):
    # one column, rows in stack order; numbered 1..N (said); a header-less file
    one = tmp_path / "one.csv"
    one.write_text("class\n1\n\n2\n")
    assert [a.tolist() for a in read_truth_table(one)] == [[0, 1, 2], [1, 0, 2]]
    proba = PROBA[:3]
    score = evaluate_tables(table(tmp_path / "p.csv", proba), truth(tmp_path / "t.csv", {1: 1, 2: 1, 3: 2}, ""))
    assert score.report["n"] == 3 and any("numbers the samples from 1" in n for n in score.notes)
    assert score.report["confusion_matrix"] == [[2, 0, 0], [0, 1, 0], [0, 0, 0]]  # samples 0, 1, 2
    assert score.report["per_class"][2]["auc"] is None and any("class 5 has no labelled" in n for n in score.notes)
    # a file,class list (train --classes reads it in stack order) was refused: "'a.tif' is not a number"
    files = tmp_path / "files.csv"
    files.write_text("file,class\na.tif,1\nb.tif,2\nc.tif,5\n")
    assert [a.tolist() for a in read_truth_table(files)] == [[0, 1, 2], [1, 2, 5]]
    from napari_medml.classification.data import read_class_csv

    assert read_class_csv(files, 3).tolist() == [1, 2, 5]  # as train reads it


def test_a_class_column_that_is_not_the_argmax_is_scored_and_said(tmp_path):
    cols = {"sample": np.arange(3), "class": np.array([2, 2, 1]), "prob_1": np.array([0.9, 0.2, 0.3]),
            "prob_2": np.array([0.1, 0.8, 0.7])}
    score = evaluate_tables(write_table(tmp_path / "p.csv", cols), truth(tmp_path / "t.csv", {0: 1, 1: 2, 2: 2}))
    assert score.report["accuracy"] == pytest.approx(1 / 3)  # the class column; the argmax would give 3/3
    assert score.report["per_class"][1]["auc"] == 1.0
    assert any("most probable" in n for n in score.notes)


@pytest.mark.parametrize(
    ("pred_text", "truth_text", "words"),
    [
        ("sample,class\n0,1\n", "0,1\n", ["pred.csv", "not a classifier's prediction table", "napari-medml predict"]),
        (None, "0,1\n1,7\n", ["test.csv", "class 7", "1, 2, 5", "fix the class ids"]),
        (None, "100,1\n101,2\n", ["no sample", "pred.csv", "test.csv", "first column"]),
        (None, "0,0\n1,\n", ["test.csv", "no known class"]),
        (None, "sample,class\n0,round\n", ["test.csv", "'round' is not a number"]),
        (None, "0,1\n0,2\n", ["test.csv", "sample 0 2 times"]),
        (None, "sample,class,prob_1\n0,1,1\n", ["test.csv", "is a prediction table"]),
        # trial 38: a file of objects' classes was scored against a table of samples
        (None, "Object,class\n1,1\n2,2\n", ["test.csv", "a row per object", "pred.csv", "a row per sample"]),
        (None, "tile,class\n1,1\n2,2\n", ["test.csv", "a row per tile", "known classes of its samples"]),
    ],
)  # fmt: skip
def test_bad_inputs_raise_one_line_naming_the_file(tmp_path, pred_text, truth_text, words):
    pred = tmp_path / "pred.csv"
    if pred_text is None:
        table(pred)
    else:
        pred.write_text(pred_text)
    (tmp_path / "test.csv").write_text(truth_text)
    with pytest.raises(InputError) as err:
        evaluate_tables(pred, tmp_path / "test.csv")
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_objects_need_an_id_column(tmp_path):
    cols = {"object": np.array([3, 8]), "class": np.array([1, 2]), "prob_1": np.array([0.9, 0.1]),
            "prob_2": np.array([0.1, 0.9]), "size": np.array([40, 50])}
    pred = write_table(tmp_path / "objects.csv", cols)
    ok = evaluate_tables(pred, truth(tmp_path / "t.csv", {8: 2, 3: 1}, "object,class\n"))
    assert ok.report["level"] == "object" and ok.report["accuracy"] == 1.0 and ok.report["macro_auc"] == 1.0
    (tmp_path / "one.csv").write_text("1\n2\n")
    with pytest.raises(InputError, match="object id"):
        evaluate_tables(pred, tmp_path / "one.csv")


def test_truth_numbered_from_1_with_a_row_missing_is_still_read_from_1(tmp_path):
    # was: read from 0, every class one sample off (accuracy 0.375 for a perfect classifier)
    keys = [k for k in range(1, 9) if k != 5]
    truth_file = tmp_path / "t.csv"
    truth_file.write_text("".join(f"{k},{1 + (k - 1) % 2}\n" for k in keys))
    cols = {"sample": np.arange(8), "class": 1 + np.arange(8) % 2, "prob_1": 1.0 - np.arange(8) % 2,
            "prob_2": 1.0 * (np.arange(8) % 2)}
    score = evaluate_tables(write_table(tmp_path / "p.csv", cols), truth_file)
    assert score.report["accuracy"] == 1.0 and score.report["n"] == 7
    assert any("numbers the samples from 1" in n for n in score.notes)


def test_tab_and_semicolon_separated_truth_is_read(tmp_path):
    cols = {"sample": np.arange(3), "class": np.array([1, 2, 1]), "prob_1": np.array([0.9, 0.2, 0.7]),
            "prob_2": np.array([0.1, 0.8, 0.3])}
    pred = write_table(tmp_path / "p.csv", cols)
    unicode_text = tmp_path / "t.txt"  # Excel's "Unicode text": UTF-16, tab-separated
    unicode_text.write_text("sample\tclass\n0\t1\n1\t2\n2\t1\n", encoding="utf-16")
    semicolons = tmp_path / "t2.csv"  # Excel's CSV where the decimal mark is a comma
    semicolons.write_text("sample;class\n0;1\n1;2\n2;1\n")
    for file in (unicode_text, semicolons):
        assert evaluate_tables(pred, file).report["accuracy"] == 1.0


def test_a_class_predicted_but_absent_from_the_truth_is_named_with_sklearns_macro_f1(tmp_path):
    """Trial 29: macro F1 left out a class with no true sample but predicted ones (0.748 against
    scikit-learn's default 0.673) and no line said so."""
    rows = {k: c for k, c in TRUTH.items() if c != 5 and k in SCORED}  # no true 5; sample 5 is predicted 5
    score = evaluate_tables(table(tmp_path / "p.csv"), truth(tmp_path / "t.csv", rows))
    y = np.array([rows[k] for k in sorted(rows)])
    pred = np.asarray(IDS)[PROBA[sorted(rows)].argmax(1)]
    assert 5 in pred and 5 not in y
    assert score.report["macro_f1"] == pytest.approx(skm.f1_score(y, pred, labels=[1, 2], average="macro"))
    sklearn_default = skm.f1_score(y, pred, average="macro")
    note = next(n for n in score.notes if "class 5 has no labelled" in n)
    assert note.endswith(f"left out of macro AUC and macro F1 (class 5 predicted for 1 sample: scikit-learn's default "
                         f"macro F1 counts it as 0, {sklearn_default:.3f})"), note


def test_rows_the_classifier_learned_from_are_said_with_the_unseen_rows_score(tmp_path):
    """Trial 42: a table whose 'part' column marked 94 of 125 scored rows training or validation
    scored 0.952 without a word; the 31 unseen alone scored 0.968."""
    parts = np.array(["training", "validation", "unlabelled", "training", "unlabelled", "unlabelled", "training",
                      "unlabelled", "training", "unlabelled"])
    pred = table(tmp_path / "pred.csv", part=parts)
    score = evaluate_tables(pred, truth(tmp_path / "test.csv", TRUTH))
    unseen = [k for k in SCORED if parts[k] == "unlabelled"]  # 2, 5, 7, 9
    y = [TRUTH[k] for k in unseen]
    pred_classes = np.asarray(IDS)[np.argmax(PROBA[unseen], 1)]
    expected = skm.accuracy_score(y, pred_classes)
    assert f"4 of the 8 samples scored are marked training or validation in the 'part' column of prediction " \
           f"'{pred}': the classifier learned from them or was chosen on them, so these scores are optimistic; " \
           f"the 4 others alone: accuracy {expected:.3f}" in score.notes, score.notes
    assert score.report["accuracy"] == pytest.approx(skm.accuracy_score(
        [TRUTH[k] for k in SCORED], np.asarray(IDS)[np.argmax(PROBA[SCORED], 1)]))  # still every row
    plain = evaluate_tables(table(tmp_path / "plain.csv"), tmp_path / "test.csv")  # no part column: no note
    assert not any("optimistic" in n for n in plain.notes)
