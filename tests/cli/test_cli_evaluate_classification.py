"""``napari-medml evaluate`` on a classifier's prediction table, through the installed console
script in a subprocess: a tiny classifier is trained and run on a held-out stack, and its
table is scored against the test classes (confusion matrix and AUC as scikit-learn computes
them from the same files); bad inputs end with one line (status 2 for the options, 1 for the files)."""

from __future__ import annotations

import csv
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from sklearn import metrics as skm

from test_console_script import run as run_script


def run(*argv: object) -> subprocess.CompletedProcess[str]:
    return run_script(*argv, tmp=Path(tempfile.gettempdir()))


def shapes(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Discs (class 1) and squares (class 2) in noise, 32 x 32."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    images, classes = [], []
    for i in range(n):
        r, (cy, cx) = rng.uniform(5, 10), rng.uniform(12, 20, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        square = (abs(yy - cy) < 0.8 * r) & (abs(xx - cx) < 0.8 * r)
        images.append((disc if i % 2 == 0 else square) + rng.normal(0, 0.3, (32, 32)))
        classes.append(1 + i % 2)
    return np.asarray(images, np.float32), classes


@pytest.fixture(scope="module")
def predicted(tmp_path_factory) -> Path:
    """A classifier trained for one step, and its prediction table of a 10-image test stack."""
    d = tmp_path_factory.mktemp("clf")
    train, y = shapes(20, 0)
    test, y_test = shapes(10, 1)
    tifffile.imwrite(d / "train.tif", train)
    tifffile.imwrite(d / "test.tif", test)
    (d / "train.csv").write_text("".join(f"{i},{c}\n" for i, c in enumerate(y)))
    # the test classes: shuffled rows, sample 3 unknown (0), sample 7 without a row
    rows = [(i, 0 if i == 3 else c) for i, c in enumerate(y_test) if i != 7][::-1]
    (d / "test.csv").write_text("sample,class\n" + "".join(f"{i},{c}\n" for i, c in rows))
    done = run("train", "--task", "classification", "--image", d / "train.tif", "--classes", d / "train.csv",
               "--out", d / "model", "--epochs", "1", "--steps-per-epoch", "1", "--features", "4",
               "--device", "cpu", "--seed", "0")  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = run("predict", "--model", d / "model", "--image", d / "test.tif", "--out", d / "pred.tif",
               "--device", "cpu")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (d / "pred.csv").exists()
    return d


def test_evaluate_scores_a_classifier_on_a_test_set(predicted) -> None:
    d = predicted
    done = run("evaluate", "--prediction", d / "pred.csv", "--labels", d / "test.csv", "--report", d / "report.json")
    assert done.returncode == 0, done.stderr
    # the same scores from the files, by scikit-learn
    with (d / "pred.csv").open() as fh:
        table = {int(r["sample"]): r for r in csv.DictReader(fh)}
    truth = {int(k): int(c) for k, c in (line.split(",") for line in (d / "test.csv").read_text().split()[1:])}
    keys = sorted(k for k in table if truth.get(k, 0) > 0)
    assert keys == [0, 1, 2, 4, 5, 6, 8, 9]
    y = np.array([truth[k] for k in keys])
    pred = np.array([int(table[k]["class"]) for k in keys])
    p1, p2 = (np.array([float(table[k][f"prob_{c}"]) for k in keys]) for c in (1, 2))
    matrix = skm.confusion_matrix(y, pred, labels=[1, 2])
    auc = skm.roc_auc_score(y == 2, p2)
    macro_auc = (skm.roc_auc_score(y == 1, p1) + auc) / 2  # one-vs-rest per class, then the mean
    out = done.stdout.splitlines()
    assert out[0].startswith("8 samples scored")
    at = out.index("confusion matrix (rows: true class, columns: predicted class)")
    assert out[at + 1].split() == ["true", "\\", "predicted", "1", "2"]
    assert [line.split() for line in out[at + 2:at + 4]] == [["1", *map(str, matrix[0])], ["2", *map(str, matrix[1])]]
    assert f"macro AUC {macro_auc:.3f}" in out[1]
    assert f"accuracy {skm.accuracy_score(y, pred):.3f}" in out[1]
    class2 = next(line.split() for line in out if line.startswith("2 "))
    assert class2[-1] == f"{auc:.3f}" and class2[-2] == str(int((y == 2).sum()))
    # what was left out, one line each, on stderr
    assert "sample 7" in done.stderr and "sample 3" in done.stderr and "unknown" in done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads((d / "report.json").read_text())
    assert report["confusion_matrix"] == matrix.tolist()
    assert report["macro_auc"] == pytest.approx(macro_auc, abs=1e-12)
    fpr, tpr, _ = skm.roc_curve(y == 2, p2)
    roc2 = next(c for c in report["roc"] if c["class"] == 2)
    assert roc2["fpr"] == pytest.approx(fpr.tolist()) and roc2["tpr"] == pytest.approx(tpr.tolist())
    assert report["left_out"] == {"no_truth": [7], "no_prediction": [], "unknown_class": [3]}
    assert not [p for p in d.iterdir() if p.name.startswith(".report.json")]  # no temporary left
    # against chance (trial 40): the line when the accuracy is not clearly above the most frequent class's
    from scipy.stats import binomtest

    correct, majority = int(np.trace(matrix)), matrix.sum(axis=1).max() / 8
    p = binomtest(correct, 8, majority, alternative="greater").pvalue
    said = [line for line in done.stderr.splitlines() if "clearly above" in line or "in one class" in line]
    if len(set(pred)) == 1:
        assert said == ["napari-medml: every scored sample was put in one class (class "
                        f"{pred[0]}): the network does not tell the classes apart yet: train longer (more epochs) "
                        "or label more samples of each class"], said
    elif p > 0.05:
        assert said == [f"napari-medml: accuracy {correct / 8:.3f} on 8 scored samples is not clearly above the "
                        f"{majority:.3f} that putting every sample in the most frequent class scores (one-sided "
                        f"binomial test p = {p:.2g}): the classifier may not tell the classes apart yet: train "
                        "longer, label more samples of each class, or check the classes"], said
    else:
        assert said == []


def test_evaluate_help_tells_of_classification() -> None:
    done = run("evaluate", "--help")
    assert done.returncode == 0
    for word in ("prediction table", "confusion matrix", "AUC", "--report"):
        assert word in done.stdout


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("image", 2, ["--labels", "truth.npy", "is an image", "CSV"]),
        ("image_prediction", 2, ["--prediction", "seg.npy", "is an image", "napari-medml predict"]),
        ("not_a_table", 1, ["test.csv", "not a classifier's prediction table", "napari-medml predict"]),
        ("unknown_class", 1, ["test.csv", "class 9", "fix the class ids"]),
        ("binary", 2, ["--binary", "drop --binary"]),
    ],
)  # fmt: skip
def test_bad_inputs_end_in_one_line(tmp_path, case, status, words) -> None:
    # the options' conflicts are usage errors (2); a wrong file is an input error (1), as for segmentations
    pred, test = tmp_path / "pred.csv", tmp_path / "test.csv"
    pred.write_text("sample,class,prob_1,prob_2\n0,1,0.8,0.2\n1,2,0.3,0.7\n")
    test.write_text("0,1\n1,9\n" if case == "unknown_class" else "0,1\n1,2\n")
    np.save(tmp_path / "truth.npy", np.zeros((4, 4), np.uint8))
    np.save(tmp_path / "seg.npy", np.zeros((4, 4), np.uint8))
    argv = {
        "image": ["--prediction", pred, "--labels", tmp_path / "truth.npy"],
        "image_prediction": ["--prediction", tmp_path / "seg.npy", "--labels", test],
        "not_a_table": ["--prediction", test, "--labels", test],
        "unknown_class": ["--prediction", pred, "--labels", test],
        "binary": ["--prediction", pred, "--labels", test, "--binary"],
    }[case]
    done = run("evaluate", *argv)
    assert done.returncode == status, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("napari-medml: error: "), done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert done.stdout == ""
