"""Training images of different voxel sizes are resampled to their median spacing (nnU-Net's
target spacing), said in one line; the model resamples every image it predicts the same way
and puts the result back on the image's grid. The console script, in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from napari_medml.config import DataConfig, PreprocessStep, TrainConfig
from napari_medml.segmentation.recipes import common_spacing


def _script() -> str:
    path = Path(sys.executable).with_name("napari-medml")
    return str(path) if path.exists() else shutil.which("napari-medml") or "napari-medml"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([_script(), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_common_spacing_decisions():
    config = TrainConfig()
    same, note = common_spacing(config, [(1.0, 0.5, 0.5), (1.1, 0.55, 0.5)], 2)  # within 1.25
    assert same is config and note is None
    one, note = common_spacing(config, (1.0, 0.5, 0.5), 3)  # one spacing for all
    assert one is config and note is None
    mixed, note = common_spacing(config, [(1.0, 0.5, 0.5), (3.0, 1.5, 1.5), (3.0, 1.5, 1.5)], 3)
    assert mixed.data.preprocessing == (PreprocessStep("resample", {"target_spacing": (3.0, 1.5, 1.5)}),)
    assert "1x0.5x0.5, 3x1.5x1.5" in note and "median 3x1.5x1.5" in note
    own = TrainConfig(data=DataConfig(preprocessing=(PreprocessStep("resample", {"target_spacing": (1, 1, 1)}),)))
    kept, note = common_spacing(own, [(1.0, 0.5, 0.5), (3.0, 1.5, 1.5)], 2)  # the user's own resampling stays
    assert kept is own and note is None
    # trial 27: the median is over cases (files), not over the frames or slices one of them gives
    series = TrainConfig(data=DataConfig(sample_groups=(3, 1)))
    cases, _ = common_spacing(series, [(2.0, 1.0, 1.0)] * 3 + [(1.0, 1.0, 1.0)], 4)
    assert cases.data.preprocessing == (PreprocessStep("resample", {"target_spacing": (1.5, 1.0, 1.0)}),)


def test_images_of_two_voxel_sizes_train_at_their_median(tmp_path):
    rng = np.random.default_rng(0)
    shape = (40, 40, 12)  # NIfTI (x, y, z)
    labels = np.zeros(shape, np.uint8)
    labels[10:30, 12:28, 3:9] = 1
    image = (labels + 0.2 * rng.random(shape)).astype(np.float32)
    args = []
    for name, voxel in (("fine", (1.0, 1.0, 2.0)), ("coarse", (2.0, 2.0, 4.0))):
        affine = np.diag([*voxel, 1.0])
        nib.save(nib.Nifti1Image(image, affine), tmp_path / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(labels, affine), tmp_path / f"{name}_seg.nii.gz")
        args += ["--image", str(tmp_path / f"{name}.nii.gz"), "--labels", str(tmp_path / f"{name}_seg.nii.gz")]
    done = _run("train", *args, "--out", str(tmp_path / "model"), "--epochs", "1", "--steps-per-epoch", "2",
                "--features", "4", "--depth", "2", "--patch-size", "4", "16", "16", "--seed", "0")
    assert done.returncode == 0, done.stderr
    assert "voxel sizes 2x1x1, 4x2x2: each is resampled to their median 3x1.5x1.5" in done.stderr
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    steps = config["train_config"]["data"]["preprocessing"]
    assert steps[0]["operation"] == "resample" and steps[0]["params"]["target_spacing"] == [3.0, 1.5, 1.5]
    # the fine image is resampled for the network, and its prediction comes back on its own grid
    out = tmp_path / "pred.nii.gz"
    done = _run("predict", "--model", str(tmp_path / "model"), "--image", str(tmp_path / "fine.nii.gz"),
                "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "voxel size" not in done.stderr  # the recipe resamples: nothing to warn about
    pred = nib.load(out)
    assert pred.shape == shape and np.allclose(pred.affine, np.diag([1.0, 1.0, 2.0, 1.0]))


def test_image_files_that_store_no_voxel_size_are_named_beside_those_that_do(tmp_path):
    """A trial mixed .npy crops (really 0.65 um) with 0.65 um TIFFs: they were taken as 1x1 and
    upsampled 1.54-fold, and the line named no file."""
    import tifffile

    rng = np.random.default_rng(0)
    args = []
    for name in ("a", "b", "c"):
        labels = np.zeros((48, 48), np.uint8)
        labels[12:30, 10:34] = 1
        image = (labels + 0.2 * rng.random((48, 48))).astype(np.float32)
        if name == "c":
            np.save(tmp_path / "c.npy", image)
            np.save(tmp_path / "c_mask.npy", labels)
            args += ["--image", str(tmp_path / "c.npy"), "--labels", str(tmp_path / "c_mask.npy")]
            continue
        for suffix, data in (("", image), ("_mask", labels)):
            tifffile.imwrite(tmp_path / f"{name}{suffix}.tif", data, imagej=True, resolution=(1 / 0.65, 1 / 0.65),
                             metadata={"unit": "um"})
        args += ["--image", str(tmp_path / f"{name}.tif"), "--labels", str(tmp_path / f"{name}_mask.tif")]
    done = _run("train", *args, "--out", str(tmp_path / "model"), "--epochs", "1", "--steps-per-epoch", "1",
                "--features", "4", "--depth", "2", "--seed", "0", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert (f"image '{tmp_path / 'c.npy'}' stores no voxel size and is taken as 1 per axis, while the other files "
            "store theirs (0.65x0.65): if that is wrong, give theirs with --spacing (e.g. --spacing 0.65 0.65), or "
            "save them with their voxel size (a TIFF's resolution, as ImageJ writes it, or NIfTI)"
            ) in done.stderr, done.stderr
    assert "each is resampled to their median" in done.stderr
    # the fix the line names: the .npy files take 0.65, the TIFFs keep their own; nothing is resampled
    done = _run("train", *args, "--spacing", "0.65", "0.65", "--out", str(tmp_path / "model2"), "--epochs", "1",
                "--steps-per-epoch", "1", "--features", "4", "--depth", "2", "--seed", "0", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert "stores no voxel size" not in done.stderr and "resampled" not in done.stderr, done.stderr
    config = json.loads((tmp_path / "model2" / "config.json").read_text())
    assert config["spacing"] == [0.65, 0.65] and config["train_config"]["data"]["preprocessing"] == []


def test_files_in_other_length_units_train_in_the_first_files_unit_and_predict_compares_units(tmp_path):
    """Trial 51: a TIFF in µm and a NIfTI in mm were resampled to the median of their numbers as one
    unit, and a model trained in µm ran on an image in mm without a word."""
    import tifffile

    rng = np.random.default_rng(0)
    labels = np.zeros((48, 48), np.uint8)
    labels[12:30, 10:34] = 1
    image = (labels + 0.2 * rng.random((48, 48))).astype(np.float32)
    args = []
    for name, size, unit in (("um", 0.5, "um"), ("mm", 0.0005, "mm")):  # the same voxels, in two units
        for suffix, data in (("", image), ("_mask", labels)):
            tifffile.imwrite(tmp_path / f"{name}{suffix}.tif", data, imagej=True, resolution=(1 / size, 1 / size),
                             metadata={"unit": unit})
        args += ["--image", str(tmp_path / f"{name}.tif"), "--labels", str(tmp_path / f"{name}_mask.tif")]
    done = _run("train", *args, "--out", str(tmp_path / "model"), "--epochs", "1", "--steps-per-epoch", "1",
                "--features", "4", "--depth", "2", "--seed", "0", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert (f"image '{tmp_path / 'mm.tif'}' names its voxel size in mm (0.0005x0.0005 mm), the first image "
            f"'{tmp_path / 'um.tif'}' in um: it is trained at 0.5x0.5 um") in done.stderr, done.stderr
    assert "resampled" not in done.stderr  # one voxel size once in one unit
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["provenance"]["unit"] == "um" and config["spacing"] == [0.5, 0.5]
    tifffile.imwrite(tmp_path / "big.tif", image, imagej=True, resolution=(2, 2), metadata={"unit": "mm"})
    done = _run("predict", "--model", str(tmp_path / "model"), "--image", str(tmp_path / "big.tif"),
                "--out", str(tmp_path / "pred.tif"))
    assert done.returncode == 0, done.stderr
    assert (f"image '{tmp_path / 'big.tif'}' names its voxel size in mm (0.5 x 0.5 mm) and the model's training "
            "images in um: it is predicted at 500 x 500 um, and its outputs are written in mm"
            ) in done.stderr, done.stderr
    assert "has voxel size 500 x 500, about 1000 times larger than the model's training voxel size 0.5 x 0.5" \
        in done.stderr, done.stderr
    done = _run("predict", "--model", str(tmp_path / "model"), "--image", str(tmp_path / "mm.tif"),
                "--out", str(tmp_path / "pred2.tif"))
    assert done.returncode == 0, done.stderr
    assert "it is predicted at 0.5 x 0.5 um" in done.stderr and "has voxel size" not in done.stderr, done.stderr
    from napari_medml.io import read_volume

    written = read_volume(tmp_path / "pred2.tif")  # on the image, in its own unit
    assert written.meta.get("unit") == "mm" and np.allclose(written.spacing, (0.0005, 0.0005)), written
    same = _run("predict", "--model", str(tmp_path / "model"), "--image", str(tmp_path / "um.tif"),
                "--out", str(tmp_path / "pred3.tif"))
    assert same.returncode == 0 and "names its voxel size" not in same.stderr
    pre = _run("pretrain", "--image", str(tmp_path / "um.tif"), "--image", str(tmp_path / "mm.tif"), "--out",
               str(tmp_path / "pre"), "--epochs", "1", "--steps-per-epoch", "1", "--features", "4", "--depth", "2",
               "--patch-size", "16", "16", "--device", "cpu")
    assert pre.returncode == 0, pre.stderr
    assert "names its voxel size in mm (0.0005x0.0005 mm)" in pre.stderr and "resampled" not in pre.stderr
    assert json.loads((tmp_path / "pre" / "config.json").read_text())["provenance"]["unit"] == "um"
