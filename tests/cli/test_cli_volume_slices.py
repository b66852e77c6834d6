"""A 2D network on a volume's slices among 2D images (trial 19): the slices next to the held-out
ones do not train, the plan says so, and the bundle records which samples came from one
volume. The console script, in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile


def _script() -> str:
    path = Path(sys.executable).with_name("napari-medml")
    return str(path) if path.exists() else shutil.which("napari-medml") or "napari-medml"


def test_a_volumes_slices_among_2d_images_keep_a_gap_to_the_held_out_slices(tmp_path) -> None:
    rng = np.random.default_rng(3)
    lab = np.zeros((31, 32, 32), np.uint8)
    for z, y, x in [(4, 8, 8), (14, 20, 22), (26, 10, 22)]:
        lab[z - 2:z + 3, y - 4:y + 4, x - 4:x + 4] = 1  # nuclei spanning 5 slices
    img = (rng.normal(0, 1, lab.shape) + 3 * lab).astype(np.float32)
    tifffile.imwrite(tmp_path / "vol.tif", img, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "vol_seg.tif", lab, imagej=True, metadata={"axes": "ZYX"})
    np.save(tmp_path / "one.npy", img[14])
    np.save(tmp_path / "one_seg.npy", lab[14])
    done = subprocess.run([_script(), "train", "--image", str(tmp_path / "vol.tif"), "--labels",
                           str(tmp_path / "vol_seg.tif"), "--image", str(tmp_path / "one.npy"), "--labels",
                           str(tmp_path / "one_seg.npy"), "--spatial-dims", "2", "--epochs", "1",
                           "--steps-per-epoch", "2", "--features", "4", "--depth", "2", "--device", "cpu",
                           "--seed", "0", "--out", str(tmp_path / "m")],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert f"image '{tmp_path / 'vol.tif'}': 31 slices (axes ZYX) as samples of a 2D network" in done.stderr
    # 32 samples, the last 6 held out (slices 25-30 and the image); round(0.05 * 31) = 2 slices of gap
    assert "validation margin: 2 (2 slices of a volume left out of training" in done.stderr, done.stderr
    assert ("validation on the last 6 of 32 images, 2 slices of the same volume within 2 of them left out "
            "of training") in done.stderr, done.stderr
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["train_config"]["data"]["sample_groups"] == [31, 1]
    assert config["train_config"]["data"]["val_margin"] == 2


def test_a_time_series_of_volumes_under_a_2d_network_groups_each_frames_slices(tmp_path) -> None:
    """Review 21: a (T, Z, Y, X) series was one run of T x Z samples, so the last slice of one frame
    counted as the neighbour of the next frame's first (and the margin left out the wrong slices)."""
    rng = np.random.default_rng(4)
    lab = np.zeros((3, 8, 32, 32), np.uint8)
    lab[:, 2:6, 8:20, 8:20] = 1
    img = (rng.normal(0, 1, lab.shape) + 3 * lab).astype(np.float32)
    np.save(tmp_path / "series.npy", img)
    np.save(tmp_path / "series_seg.npy", lab)
    done = subprocess.run([_script(), "train", "--image", str(tmp_path / "series.npy"), "--labels",
                           str(tmp_path / "series_seg.npy"), "--axes", "TZYX", "--spatial-dims", "2", "--no-plan",
                           "--epochs", "1", "--steps-per-epoch", "2", "--features", "4", "--depth", "2",
                           "--patch-size", "32", "32", "--device", "cpu", "--seed", "0", "--out", str(tmp_path / "m")],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert f"image '{tmp_path / 'series.npy'}': 24 frames/slices (axes TZYX) as samples of a 2D network" in done.stderr
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["train_config"]["data"]["sample_groups"] == [8, 8, 8]


def test_sample_groups_follow_the_last_sample_axis() -> None:
    from napari_medml.io.axes_resolve import sample_groups

    assert sample_groups((3, 8, 32, 32), (3, 8, 32, 32), "TZYX", 2) == (8, 8, 8)
    assert sample_groups((5, 32, 32), (5, 32, 32), "TYX", 2) == (5,)
    assert sample_groups((8, 32, 32), (8, 32, 32), "ZYX", 3) == (1,)
