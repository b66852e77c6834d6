"""``napari-medml predict`` warns about a voxel size far from the training spacing only when
the model's recipe does not resample: a recipe that resamples sets the spacing the network
sees (the installed console script, in a subprocess, as a user runs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_medml.api import train
from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, PreprocessStep, TrainConfig

RAW = np.diag([2.0, 2.0, 4.0, 1.0])  # NIfTI (x, y, z): 4 mm slices, 2 mm in plane


def _script() -> str:
    path = Path(sys.executable).with_name("napari-medml")
    return str(path) if path.exists() else shutil.which("napari-medml") or "napari-medml"


def _model(tmp_path: Path, recipe: tuple, image: np.ndarray, labels: np.ndarray, spacing: tuple) -> Path:
    config = TrainConfig(data=DataConfig(spatial_dims=3, patch_size=(8, 16, 16), batch_size=1, val_fraction=0.0,
                                         preprocessing=recipe),
                         augment=AugmentConfig.none(), model=ModelConfig(channels=4, depth=2),
                         optim=OptimConfig(epochs=1, steps_per_epoch=1), device="cpu", seed=0,
                         checkpoint_dir=str(tmp_path / "checkpoints"))  # fmt: skip
    model = train(image, labels, config, spacing=spacing)
    return model.save(tmp_path / "model")


@pytest.fixture
def raw(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (8, 16, 16)).astype(np.float32)  # napari (Z, Y, X)
    labels = np.zeros(image.shape, np.uint8)
    labels[2:6, 4:12, 4:12] = 1
    image[labels == 1] += 3
    nib.save(nib.Nifti1Image(np.ascontiguousarray(image.transpose(2, 1, 0)), RAW), tmp_path / "raw.nii.gz")
    return image, labels


def _predict(tmp_path: Path, model: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([_script(), "predict", "--model", str(model), "--image", str(tmp_path / "raw.nii.gz"),
                           "--out", str(tmp_path / "pred.nii.gz"), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip


def test_no_spacing_warning_when_the_recipe_resamples_to_the_training_spacing(tmp_path, raw):
    image, labels = raw
    recipe = (PreprocessStep("resample", {"target_spacing": [2.0, 2.0, 2.0]}), PreprocessStep("zscore"))
    model = _model(tmp_path, recipe, image, labels, (4.0, 2.0, 2.0))  # trained at 2 x 2 x 2 after the recipe
    done = _predict(tmp_path, model)
    assert done.returncode == 0, done.stderr
    assert "voxel size" not in done.stderr + done.stdout
    assert nib.load(tmp_path / "pred.nii.gz").shape == (16, 16, 8)  # back on the raw grid


def test_spacing_warning_kept_when_the_recipe_does_not_resample(tmp_path, raw):
    image, labels = raw
    fine = image.repeat(2, axis=0)  # trained on a 2 x 2 x 2 image, recipe without a resample
    model = _model(tmp_path, (PreprocessStep("zscore"),), fine, labels.repeat(2, axis=0), (2.0, 2.0, 2.0))
    done = _predict(tmp_path, model)
    assert done.returncode == 0, done.stderr
    assert "voxel size 4 x 2 x 2" in done.stderr and "trained at 2 x 2 x 2" in done.stderr
