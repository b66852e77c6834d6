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
    assert f"image '{tmp_path / 'img_x10.npy'}' has intensities far from the training images'" in other.stderr
