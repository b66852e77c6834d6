"""``napari-medml predict`` says when an image's intensities are far from the training
images' (the model normalizes with the training statistics); the console script in a
subprocess, as a user runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np


def _run(*args: str) -> subprocess.CompletedProcess:
    path = Path(sys.executable).with_name("napari-medml")
    script = str(path) if path.exists() else shutil.which("napari-medml") or "napari-medml"
    return subprocess.run([script, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_x10_image_gets_one_line(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.zeros((64, 64), np.uint8)
    labels[16:48, 20:44] = 1
    image = (100 + 50 * labels + 10 * rng.standard_normal(labels.shape)).astype(np.float32)
    np.save(tmp_path / "img.npy", image)
    np.save(tmp_path / "img_seg.npy", labels)
    np.save(tmp_path / "img_x10.npy", image * 10)
    done = _run("train", "--image", str(tmp_path / "img.npy"), "--labels", str(tmp_path / "img_seg.npy"),
                "--out", str(tmp_path / "model"), "--epochs", "1", "--steps-per-epoch", "2", "--features", "4",
                "--depth", "2", "--no-plan", "--normalization", "zscore")
    assert done.returncode == 0, done.stderr
    same = _run("predict", "--model", str(tmp_path / "model"), "--image", str(tmp_path / "img.npy"),
                "--out", str(tmp_path / "p.npy"))
    assert same.returncode == 0 and "intensities" not in same.stderr, same.stderr
    other = _run("predict", "--model", str(tmp_path / "model"), "--image", str(tmp_path / "img_x10.npy"),
                 "--out", str(tmp_path / "p10.npy"))
    assert other.returncode == 0, other.stderr
    line = f"image '{tmp_path / 'img_x10.npy'}' has intensities far from the training images'"
    assert other.stderr.count(line) == 1
    blocks = _run("predict", "--model", str(tmp_path / "model"), "--image", str(tmp_path / "img_x10.npy"),
                  "--out", str(tmp_path / "p10.zarr"))  # block by block: the same line
    assert blocks.returncode == 0 and blocks.stderr.count(line) == 1, blocks.stderr


def test_an_ensemble_is_not_a_start_bundle_but_its_member_is(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.zeros((48, 48), np.uint8)
    labels[10:30, 12:36] = 1
    np.save(tmp_path / "img.npy", (labels + 0.3 * rng.random(labels.shape)).astype(np.float32))
    np.save(tmp_path / "img_seg.npy", labels)
    common = ["--image", str(tmp_path / "img.npy"), "--labels", str(tmp_path / "img_seg.npy"), "--epochs", "1",
              "--steps-per-epoch", "1", "--features", "4", "--depth", "2", "--no-plan"]
    assert _run("train", *common, "--folds", "2", "--out", str(tmp_path / "ens")).returncode == 0
    done = _run("train", *common, "--init-from", str(tmp_path / "ens"), "--out", str(tmp_path / "again"))
    member = tmp_path / "ens" / "members" / "fold-1"
    assert done.returncode != 0
    assert f"'{tmp_path / 'ens'}' is an ensemble of 2 models: start from one of them, e.g. '{member}'" in done.stderr
    done = _run("train", *common, "--init-from", str(member), "--out", str(tmp_path / "again"))
    assert done.returncode == 0, done.stderr


def test_a_prediction_of_background_only_is_said_in_memory_and_block_by_block(tmp_path, constant_model):
    constant_model(2, (0, 1)).save(tmp_path / "model")
    np.save(tmp_path / "img.npy", np.random.default_rng(0).standard_normal((40, 36)).astype(np.float32))
    line = (f"image '{tmp_path / 'img.npy'}': the model found background only (class 0), not class 1: "
            "check that the image looks like the training images")
    for out in ("p.npy", "p.zarr"):
        done = _run("predict", "--model", str(tmp_path / "model"), "--image", str(tmp_path / "img.npy"),
                    "--out", str(tmp_path / out))
        assert done.returncode == 0 and done.stderr.count(line) == 1, done.stderr
