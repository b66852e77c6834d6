"""The installed ``napari-medml`` console script, run as a user runs it: in a subprocess.

train -> predict -> evaluate on a tiny phantom in files, ``--help`` and a bad command
line. The in-process tests of every option live in test_cli.py; these check what only
the real entry point shows: the script is installed and runs, exit codes, what goes to
stdout (results) and stderr (progress, errors), and that nothing is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_medml.io import Volume, read_volume, write_volume
from napari_medml.samples import phantom_3d

SHAPE = (24, 48, 48)
TRAIN_OPTIONS = ["--epochs", "3", "--steps-per-epoch", "8", "--patch-size", "16", "32", "32",
                 "--features", "8", "--depth", "3", "--batch-size", "2", "--lr", "0.003",
                 "--no-augment", "--device", "cpu", "--seed", "0"]  # fmt: skip


def script() -> str:
    """The console script installed next to this Python (the environment under test)."""
    path = Path(sys.executable).with_name("napari-medml")
    return str(path) if path.exists() else shutil.which("napari-medml") or "napari-medml"


def run(*argv: object, tmp: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    # TMPDIR: a folder of the test's own, to see what a run leaves in the temp folder
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    return subprocess.run([script(), *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> dict[str, object]:
    """One train -> predict -> evaluate chain through the console script."""
    folder = tmp_path_factory.mktemp("console")
    tmp = folder / "tmp"
    tmp.mkdir()
    p = phantom_3d(seed=0, shape=SHAPE)
    image, labels = folder / "ct.nii.gz", folder / "ct_seg.nii.gz"
    write_volume(image, Volume(p.image, p.spacing, (0.0,) * 3))
    write_volume(labels, Volume(p.labels, p.spacing, (0.0,) * 3, is_labels=True))
    model, pred = folder / "model", folder / "out" / "ct_pred.nii.gz"
    runs = {
        "train": run("train", "--image", image, "--labels", labels, "--out", model, *TRAIN_OPTIONS,
                     tmp=tmp),
    }
    runs["predict"] = run("predict", "--model", model, "--image", image, "--out", pred,
                          "--device", "cpu", tmp=tmp)
    runs["evaluate"] = run("evaluate", "--prediction", pred, "--labels", labels, tmp=tmp)
    return {"runs": runs, "image": image, "labels": labels, "model": model, "pred": pred,
            "tmp": tmp}


def test_train_predict_evaluate(session) -> None:
    runs = session["runs"]
    for name, done in runs.items():
        assert done.returncode == 0, f"{name}: {done.stderr}"
        assert "Traceback" not in done.stderr
    # train: a bundle, progress on stderr, nothing on stdout
    assert (session["model"] / "config.json").is_file()
    assert (session["model"] / "weights.safetensors").is_file()
    assert runs["train"].stdout == ""
    assert "epoch 3" in runs["train"].stderr
    # predict: labels on the image's grid
    pred, source = read_volume(session["pred"]), read_volume(session["image"])
    assert pred.data.shape == SHAPE and np.issubdtype(pred.data.dtype, np.integer)
    assert pred.spacing == pytest.approx(source.spacing)
    np.testing.assert_allclose(pred.affine, source.affine)
    # evaluate: JSON on stdout, and 24 CPU steps learn the body
    result = json.loads(runs["evaluate"].stdout)
    assert result["classes"]["1"]["dice"] > 0.6, result


def test_runs_leave_nothing_in_the_temp_folder(session) -> None:
    assert all(done.returncode == 0 for done in session["runs"].values())
    # (torch may keep its own caches there, such as torchinductor_<user>)
    assert sorted(p.name for p in session["tmp"].iterdir() if "medml" in p.name) == []


def test_help(tmp_path) -> None:
    done = run("--help", tmp=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: napari-medml")
    for command in ("train", "predict", "evaluate", "classify"):
        assert command in done.stdout
    sub = run("predict", "--help", tmp=tmp_path, timeout=60)
    assert sub.returncode == 0 and "--model" in sub.stdout


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["train", "--image", "missing.nii.gz", "--labels", "missing_seg.nii.gz", "--out", "m"],
         1, ["missing.nii.gz", "does not exist"]),
        (["predict", "--image", "ct.nii.gz"], 2, ["--model"]),
        (["segment"], 2, ["segment"]),
    ],
)  # fmt: skip
def test_errors_are_one_line_with_an_exit_code(tmp_path, argv, code, words) -> None:
    done = run(*argv, tmp=tmp_path, timeout=120)
    assert done.returncode == code, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("napari-medml: error: ")
    for word in words:
        assert word in lines[0]
    assert done.stdout == ""


def test_output_into_a_closed_pipe_ends_quietly(tmp_path) -> None:
    """``napari-medml evaluate ... | head -2``: the reader goes away before the JSON is written;
    the command ends as a program killed by SIGPIPE would (141), without an error line."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 300, (64, 64)).astype(np.uint16)  # many ids: a long JSON
    write_volume(tmp_path / "a.tif", Volume(truth, (1.0, 1.0), (0.0, 0.0), is_labels=True, axes="YX"))
    write_volume(tmp_path / "b.tif", Volume(np.roll(truth, 1, 0), (1.0, 1.0), (0.0, 0.0), is_labels=True, axes="YX"))
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes anything
    try:
        done = subprocess.run([script(), "evaluate", "--prediction", tmp_path / "a.tif", "--labels",
                               tmp_path / "b.tif"], stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 141, done.stderr
    assert "error" not in done.stderr and "Traceback" not in done.stderr, done.stderr
