"""The console script, as a user runs it: pretrain -> train --init-from -> predict, and
train --folds 2 -> predict --uncertainty (an ensemble)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_medml.io import Volume, read_volume, write_volume
from napari_medml.samples import phantom_3d

NET = ["--features", "4", "--depth", "2", "--device", "cpu", "--seed", "0"]


def script() -> str:
    path = Path(sys.executable).with_name("napari-medml")
    return str(path) if path.exists() else shutil.which("napari-medml") or "napari-medml"


def run(*argv: object, tmp: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    return subprocess.run([script(), *map(str, argv)], capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrain")
    (folder / "tmp").mkdir()
    p, q = phantom_3d(seed=0, shape=(16, 32, 32)), phantom_3d(seed=1, shape=(16, 32, 32))
    write_volume(folder / "ct.nii.gz", Volume(p.image, p.spacing, (0.0,) * 3))
    write_volume(folder / "ct2.nii.gz", Volume(q.image, q.spacing, (0.0,) * 3))
    write_volume(folder / "seg.nii.gz", Volume(p.labels, p.spacing, (0.0,) * 3, is_labels=True))
    return folder


def test_pretrain_train_init_from_predict(files):
    tmp = files / "tmp"
    pre = run("pretrain", "--image", files / "ct.nii.gz", "--image", files / "ct2.nii.gz", "--out",
              files / "pretrained", "--loss", "mae", "--epochs", "2", "--steps-per-epoch", "4", "--patch-size",
              "8", "16", "16", "--reconstruction", files / "rec.nii.gz", "--error", files / "err.nii.gz", *NET,
              tmp=tmp)
    assert pre.returncode == 0, pre.stderr
    assert "pretraining on 2 unlabeled image(s)" in pre.stderr and "MAE loss" in pre.stderr
    desc = json.loads((files / "pretrained" / "config.json").read_text())
    assert desc["task"] == "pretraining" and desc["train_config"]["pretrain"]["loss"] == "mae"
    assert not (files / "pretrained" / "checkpoints").exists()
    image = read_volume(files / "ct.nii.gz")
    for name in ("rec.nii.gz", "err.nii.gz"):
        out = read_volume(files / name)
        assert out.data.shape == image.data.shape and np.allclose(out.spacing, image.spacing)
    train = run("train", "--image", files / "ct.nii.gz", "--labels", files / "seg.nii.gz", "--init-from",
                files / "pretrained", "--freeze-stages", "1", "--epochs", "1", "--steps-per-epoch", "3",
                "--patch-size", "8", "16", "16", "--no-plan", "--out", files / "seg_model", *NET, tmp=tmp)
    assert train.returncode == 0, train.stderr
    assert "tensors of" in train.stderr and "(pretraining)" in train.stderr
    seg = json.loads((files / "seg_model" / "config.json").read_text())
    assert seg["provenance"]["initial_weights"]["task"] == "pretraining"
    pred = run("predict", "--model", files / "seg_model", "--image", files / "ct.nii.gz", "--out",
               files / "pred.nii.gz", "--device", "cpu", tmp=tmp)
    assert pred.returncode == 0, pred.stderr
    assert read_volume(files / "pred.nii.gz").data.shape == image.data.shape
    # the pretraining bundle itself, on a new image: its reconstruction and anomaly map, as pretrain wrote them
    again = run("predict", "--model", files / "pretrained", "--image", files / "ct.nii.gz", "--out",
                files / "rec_again.nii.gz", "--error", files / "err_again.nii.gz", "--device", "cpu", tmp=tmp)
    assert again.returncode == 0, again.stderr
    assert again.stderr.strip().splitlines()[-1] == \
        f"napari-medml: wrote {files / 'rec_again.nii.gz'}, {files / 'err_again.nii.gz'}", again.stderr
    for first, second in (("rec.nii.gz", "rec_again.nii.gz"), ("err.nii.gz", "err_again.nii.gz")):
        a, b = read_volume(files / first), read_volume(files / second)
        np.testing.assert_allclose(b.data, a.data, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(b.affine, image.affine)
        np.testing.assert_allclose(b.spacing, image.spacing)
    # an image at twice the voxel size: said, as for a segmentation model (review 26)
    write_volume(files / "coarse.nii.gz", Volume(image.data, (4.0, 2.0, 2.0), (0.0,) * 3))
    coarse = run("predict", "--model", files / "pretrained", "--image", files / "coarse.nii.gz", "--out",
                 files / "rec_coarse.nii.gz", "--device", "cpu", tmp=tmp)
    assert coarse.returncode == 0, coarse.stderr
    assert "has voxel size 4 x 2 x 2 but the model was trained at 2 x 1 x 1" in coarse.stderr, coarse.stderr
    assert "voxel size" not in again.stderr
    # an image in other units (x100): its anomaly map shows the contrast everywhere, and the run says so
    write_volume(files / "bright.nii.gz", Volume(image.data * 100, image.spacing, (0.0,) * 3))
    bright = run("predict", "--model", files / "pretrained", "--image", files / "bright.nii.gz", "--out",
                 files / "rec_bright.nii.gz", "--device", "cpu", tmp=tmp)
    assert bright.returncode == 0, bright.stderr
    assert f"image '{files / 'bright.nii.gz'}' has intensities far from the training images'" in bright.stderr
    assert "intensities far" not in again.stderr
    for extra, line in ((["--probabilities", files / "p.nii.gz"], "--probabilities: not for a pretraining bundle"),
                        (["--overlap", "0"], "--overlap: not for a pretraining bundle"),
                        (["--out", files / "x.zarr"], "a pretraining bundle's reconstruction is written whole")):
        out = [] if "--out" in extra else ["--out", files / "x.nii.gz"]
        wrong = run("predict", "--model", files / "pretrained", "--image", files / "ct.nii.gz", *out, *extra,
                    "--device", "cpu", tmp=tmp)
        assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
        assert line in wrong.stderr, wrong.stderr
    wrong = run("predict", "--model", files / "seg_model", "--image", files / "ct.nii.gz", "--out",
                files / "x.nii.gz", "--error", files / "e.nii.gz", "--device", "cpu", tmp=tmp)
    assert wrong.returncode == 2 and "--error is for pretraining bundles" in wrong.stderr, wrong.stderr
    assert not any((files / n).exists() for n in ("x.nii.gz", "p.nii.gz", "x.zarr", "e.nii.gz"))
    assert not [p for p in tmp.iterdir() if "medml" in p.name]  # nothing of ours left (torch keeps its caches)


def test_pretrain_options_are_checked_before_work(files):
    tmp = files / "tmp"
    bad = run("pretrain", "--image", files / "ct.nii.gz", "--out", files / "x", "--loss", "huber", tmp=tmp)
    assert bad.returncode == 2 and "--loss" in bad.stderr
    bad = run("pretrain", "--image", files / "ct.nii.gz", "--out", files / "x", "--mask-ratio", "0", tmp=tmp)
    assert bad.returncode == 2 and "--mask-ratio" in bad.stderr
    same = run("pretrain", "--image", files / "ct.nii.gz", "--out", files / "x", "--error", files / "ct.nii.gz",
               tmp=tmp)
    assert same.returncode == 1 and "is one of the inputs" in same.stderr and not (files / "x").exists()


def test_folds_train_an_ensemble_that_predicts_with_uncertainty(files):
    tmp = files / "tmp"
    train = run("train", "--image", files / "ct.nii.gz", "--labels", files / "seg.nii.gz", "--folds", "2",
                "--epochs", "1", "--steps-per-epoch", "3", "--patch-size", "8", "16", "16", "--no-plan",
                "--out", files / "ensemble", *NET, tmp=tmp)
    assert train.returncode == 0, train.stderr
    assert "fold 1 of 2" in train.stderr and "fold 2 of 2" in train.stderr and "ensemble of 2 models" in train.stderr
    assert sorted(p.name for p in (files / "ensemble" / "members").iterdir()) == ["fold-1", "fold-2"]
    pred = run("predict", "--model", files / "ensemble", "--image", files / "ct.nii.gz", "--out",
               files / "ens.nii.gz", "--uncertainty", files / "ens_unc.nii.gz", "--device", "cpu", tmp=tmp)
    assert pred.returncode == 0, pred.stderr
    uncertainty = read_volume(files / "ens_unc.nii.gz").data
    assert uncertainty.min() >= 0 and uncertainty.max() > 0
    assert not [p for p in tmp.iterdir() if "medml" in p.name]


def test_init_from_takes_the_bundles_network_and_a_network_that_does_not_fit_is_refused(files):
    """The pretrained bundle is width 4, depth 2: train --init-from without --features takes them
    (the plan says so); another width or 2D from a 3D bundle stop with the options that fit."""
    tmp = files / "tmp"
    small = ["--epochs", "1", "--steps-per-epoch", "2", "--patch-size", "8", "16", "16", "--device", "cpu"]
    pre = run("pretrain", "--image", files / "ct.nii.gz", "--out", files / "pre42", "--features", "4", "--depth",
              "2", *small, tmp=tmp)
    assert pre.returncode == 0, pre.stderr
    base = ["train", "--image", files / "ct.nii.gz", "--labels", files / "seg.nii.gz", "--init-from",
            files / "pre42", *small]
    taken = run(*base, "--out", files / "taken", tmp=tmp)
    assert taken.returncode == 0, taken.stderr
    assert "width (channels): 4 (the start model's)" in taken.stderr
    assert "depth (levels): 2 (the start model's)" in taken.stderr
    model = json.loads((files / "taken" / "config.json").read_text())["network"]["arguments"]
    assert (model["channels"], model["depth"]) == (4, 2)
    wide = run(*base, "--features", "8", "--out", files / "wide", tmp=tmp)
    assert wide.returncode == 1 and "the bundle's network has width 4 and depth 2: train with the same " \
                                   "(--features 4 --depth 2" in wide.stderr, wide.stderr
    flat = run(*base, "--spatial-dims", "2", "--patch-size", "16", "16", "--out", files / "flat", tmp=tmp)
    assert flat.returncode == 1 and "the bundle's network is 3D and this one 2D" in flat.stderr, flat.stderr
    assert not (files / "wide").exists() and not (files / "flat").exists()
    # the start bundle is an input: the new model never replaces it (a trial: it did, without a word)
    over = run(*base, "--out", files / "pre42", tmp=tmp)
    assert over.returncode == 1 and over.stderr.strip().splitlines() == [
        f"napari-medml: error: --out '{files / 'pre42'}' is one of the inputs: outputs never overwrite inputs"]
    assert json.loads((files / "pre42" / "config.json").read_text())["task"] == "pretraining"
    # --no-plan takes them too (it said to train with --features 4 --depth 2)
    unplanned = run(*base, "--no-plan", "--out", files / "unplanned", tmp=tmp)
    assert unplanned.returncode == 0, unplanned.stderr
    assert ("napari-medml: network unet, width 4, depth 2, norm layers instance: the start model's (its weights fit "
            "only the same network)") in unplanned.stderr.splitlines(), unplanned.stderr


def test_init_from_a_batch_norm_bundle_keeps_its_norm_layers(files):
    """A trial: a batch-norm U-Net started an instance-norm one, its 30 norm tensors dropped, and the
    line said 'started from 26 of 26 tensors'."""
    tmp = files / "tmp"
    small = ["--epochs", "1", "--steps-per-epoch", "2", "--patch-size", "8", "16", "16", "--device", "cpu"]
    data = ["--image", files / "ct.nii.gz", "--labels", files / "seg.nii.gz"]
    bn = run("train", *data, "--norm", "batch", "--features", "4", "--depth", "2", "--no-plan", *small,
             "--out", files / "bn", tmp=tmp)
    assert bn.returncode == 0, bn.stderr
    started = run("train", *data, "--init-from", "bn", *small, "--out", files / "from_bn", tmp=tmp, cwd=files)
    assert started.returncode == 0, started.stderr
    assert "norm layers: batch (the start model's)" in started.stderr, started.stderr
    assert "do not fit this network" not in started.stderr
    model = json.loads((files / "from_bn" / "config.json").read_text())["train_config"]["model"]
    assert model["norm"] == "batch"
    assert model["init_from"] == str(files / "bn")  # given as 'bn': the bundle's config names it from anywhere
    # the user's own norm wins, and the line says what was left out
    other = run("train", *data, "--init-from", files / "bn", "--norm", "instance", *small, "--out",
                files / "other", tmp=tmp)
    assert other.returncode == 0, other.stderr
    assert re.search(r"started from \d+ of \d+ tensors of .*; \d+ of the bundle's \d+ tensors do not fit this "
                     r"network \(another norm, width or depth\) and are not used", other.stderr), other.stderr


def test_pretraining_on_a_constant_image_is_refused(files):
    tmp = files / "tmp"
    write_volume(files / "flat.nii.gz", Volume(np.full((8, 16, 16), 5.0, np.float32), (1.0,) * 3, (0.0,) * 3))
    out = run("pretrain", "--image", files / "flat.nii.gz", "--out", files / "flat_pre", "--epochs", "1",
              "--steps-per-epoch", "1", *NET, tmp=tmp)
    assert out.returncode == 1 and f"image '{files / 'flat.nii.gz'}' is constant (every voxel is 5)" in out.stderr
    assert not (files / "flat_pre").exists()


@pytest.mark.parametrize("command", ["pretrain", "train"])
def test_the_bundle_is_saved_while_the_run_holds_its_folder(files, monkeypatch, command):
    """A second run may take --out only after the first has saved its bundle: pretraining saved after
    letting the folder go."""
    import napari_medml.bundles.checkpoints as checkpoints
    from napari_medml.cli import main

    out = files / f"held-{command}"
    lock = out / "checkpoints" / "run.lock"
    saw: list[dict] = []
    save_run = checkpoints.save_run

    def checked(model, path, **kw):
        saw.append(json.loads(lock.read_text()) if lock.exists() else {})
        return save_run(model, path, **kw)

    monkeypatch.setattr(checkpoints, "save_run", checked)
    extra = ["--labels", files / "seg.nii.gz", "--no-plan"] if command == "train" else []
    assert main([command, "--image", str(files / "ct.nii.gz"), *map(str, extra), "--out", str(out), "--epochs", "1",
                 "--steps-per-epoch", "2", "--patch-size", "8", "16", "16", *NET]) == 0
    assert saw == [{"pid": os.getpid()}]
    assert not lock.exists() and (out / "config.json").is_file()


def test_pretrain_names_files_without_a_voxel_size_and_resamples_mixed_ones(files):
    # a .npy beside NIfTIs of 2 x 1 x 1 mm was taken as 1 mm without a word, and the first file's
    # spacing was used for all; a NaN was refused without naming its file
    tmp = files / "tmp"
    np.save(files / "plain.npy", phantom_3d(seed=2, shape=(16, 32, 32)).image)
    out = run("pretrain", "--image", files / "ct.nii.gz", "--image", files / "plain.npy", "--image",
              files / "ct2.nii.gz", "--out", files / "mixed_pre", "--epochs", "1", "--steps-per-epoch", "1", *NET,
              tmp=tmp)
    assert out.returncode == 0, out.stderr
    assert (f"image '{files / 'plain.npy'}' stores no voxel size and is taken as 1 per axis, while the other "
            "files store theirs (2x1x1): if that is wrong, give theirs with --spacing (e.g. --spacing 2 1 1)"
            ) in out.stderr
    assert "voxel sizes 1x1x1, 2x1x1: each is resampled to their median 2x1x1" in out.stderr
    config = json.loads((files / "mixed_pre" / "config.json").read_text())
    assert config["preprocessing"] == [{"operation": "resample", "params": {"target_spacing": [2.0, 1.0, 1.0]}}]
    assert config["spacing"] == [2.0, 1.0, 1.0]
    bad = phantom_3d(seed=3, shape=(16, 32, 32)).image
    bad[3, 4, 5] = np.nan
    np.save(files / "nan.npy", bad)
    out = run("pretrain", "--image", files / "ct.nii.gz", "--image", files / "nan.npy", "--out", files / "nan_pre",
              *NET, tmp=tmp)
    assert out.returncode == 1 and f"image '{files / 'nan.npy'}'" in out.stderr and "NaN" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and not (files / "nan_pre").exists()
    out = run("predict", "--model", files / "mixed_pre", "--image", files / "nan.npy", "--out", files / "nan_rec.npy",
              "--device", "cpu", tmp=tmp)  # trial 27: this one said "image contains 1 NaN", no file
    assert out.returncode == 1 and f"image '{files / 'nan.npy'}' contains 1 NaN" in out.stderr, out.stderr


def test_the_reconstruction_of_an_rgb_tiff_keeps_its_three_channels(files):
    # it was written as a stack of 32 channels of 32 x 3 pixels (axes CYX over the YXC data)
    import tifffile

    rgb = (np.random.default_rng(0).random((32, 48, 3)) * 255).astype(np.uint8)
    tifffile.imwrite(files / "rgb.tif", rgb, photometric="rgb")
    out = run("pretrain", "--image", files / "rgb.tif", "--out", files / "rgb_pre", "--epochs", "1",
              "--steps-per-epoch", "1", "--reconstruction", files / "rgb_rec.tif", "--corruption", "mask",
              "--noise-std", "0.3", *NET, tmp=files / "tmp")
    assert out.returncode == 0, out.stderr
    rec = read_volume(files / "rgb_rec.tif")
    assert rec.axes == "CYX" and rec.data.shape == (3, 32, 48)
    # an option that the corruption does not read was dropped without a word
    assert ("--noise-std 0.3 is not used: --corruption mask adds no noise (--corruption mask_noise does both)"
            in out.stderr)
    # a patch larger than the image was padded without a word; train refuses it (one number: every axis)
    out = run("pretrain", "--image", files / "rgb.tif", "--out", files / "rgb_big", "--patch-size", "64",
              "--corruption", "noise", "--mask-ratio", "0.3", "--mask-block", "4", *NET, tmp=files / "tmp")
    assert out.returncode == 1 and not (files / "rgb_big").exists()
    assert ("--mask-ratio 0.3 and --mask-block 4 are not used: --corruption noise blanks no blocks" in out.stderr)
    assert ("patch size (64, 64) is larger than the smallest image (32, 48): use a patch of at most (32, 48), or "
            "leave it out to choose one automatically") in out.stderr, out.stderr


def test_a_volume_and_a_2d_image_pretrain_a_2d_network_in_either_order(files):
    # trial 27: a volume first refused the 2D image after it; a 2D image first took the volume's slices
    import tifffile

    tifffile.imwrite(files / "flat.tif", phantom_3d(seed=4, shape=(16, 64, 64)).image[8])
    out = run("pretrain", "--image", files / "ct.nii.gz", "--image", files / "flat.tif", "--out", files / "mix_pre",
              "--epochs", "1", "--steps-per-epoch", "1", *NET, tmp=files / "tmp")
    assert out.returncode == 0, out.stderr
    assert (f"image '{files / 'flat.tif'}' is 2D and the others volumes: a 2D network trains on the 2D images and "
            "the volumes' slices") in out.stderr
    assert f"image '{files / 'ct.nii.gz'}': 16 slices (axes ZYX) as samples of a 2D network" in out.stderr
    assert json.loads((files / "mix_pre" / "config.json").read_text())["spatial_dims"] == 2


def test_the_reconstruction_of_a_colour_npy_keeps_its_colours_last(tmp_path):
    """Review 33: a (Y, X, 3) .npy, read as colour with or without --axes YXC, got its
    reconstruction back as (3, Y, X); outputs keep the input's voxel order."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "rgb.npy", rng.integers(0, 255, (40, 48, 3)).astype(np.uint8))
    for k, axes in enumerate(([], ["--axes", "YXC"])):
        r = run("pretrain", "--image", tmp_path / "rgb.npy", *axes, "--reconstruction", tmp_path / f"rec{k}.npy",
                "--error", tmp_path / f"err{k}.npy", "--out", tmp_path / f"pre{k}", "--epochs", 1,
                "--steps-per-epoch", 1, "--features", 4, "--depth", 2, "--device", "cpu", tmp=tmp_path)
        assert r.returncode == 0, r.stderr
        assert np.load(tmp_path / f"rec{k}.npy").shape == (40, 48, 3)
        assert np.load(tmp_path / f"err{k}.npy").shape == (40, 48)


def test_an_image_too_small_for_the_depth_is_told_a_fix_pretrain_has(tmp_path):
    """Review 33: the refusal told pretrain to use --norm batch, an option it does not have."""
    np.save(tmp_path / "tiny.npy", np.random.default_rng(0).normal(size=(6, 6)).astype(np.float32))
    common = ["--epochs", 1, "--steps-per-epoch", 1, "--features", 4, "--device", "cpu"]
    r = run("pretrain", "--image", tmp_path / "tiny.npy", "--out", tmp_path / "p", *common, "--depth", 4, tmp=tmp_path)
    assert r.returncode != 0 and "--norm" not in r.stderr, r.stderr
    assert r.stderr.strip().endswith("use a smaller depth (--depth 2; the widget's depth) or a larger image")
    r = run("pretrain", "--image", tmp_path / "tiny.npy", "--out", tmp_path / "p", *common, "--depth", 2, tmp=tmp_path)
    assert r.returncode == 0, r.stderr
