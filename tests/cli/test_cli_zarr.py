"""``napari-medml predict ... --out pred.zarr`` through the installed console script:
block-wise prediction from an OME-Zarr or a NIfTI image, the plan printed first,
Ctrl-C and resume, and the same labels as an in-memory prediction."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("zarr")

from napari_medml.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402
from napari_medml.io import Volume, read_volume, write_volume  # noqa: E402
from napari_medml.io.memory import LAZY_ENV  # noqa: E402
from napari_medml.nn.segmentation import build_network  # noqa: E402
from napari_medml.segmentation.model import Model  # noqa: E402


def script() -> str:
    path = Path(sys.executable).with_name("napari-medml")
    return str(path) if path.exists() else "napari-medml"


def start(*argv: object, tmp: Path) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([script(), *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip


def run(*argv: object, tmp: Path) -> subprocess.CompletedProcess:
    proc = start(*argv, tmp=tmp)
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("zarr-cli")
    torch.manual_seed(0)
    cfg = TrainConfig(data=DataConfig(spatial_dims=3), model=ModelConfig(channels=4, depth=2))
    net = build_network(cfg.model, 3, 1, 3, patch_size=(16, 16, 16), spacing=(1.0, 1.0, 1.0))
    model = Model(net, cfg, (0, 2, 5), 1, 3, (16, 16, 16), (1.0, 1.0, 1.0),
                  {"method": "zscore", "channels": [{"mean": 0.1, "std": 1.5}]})  # fmt: skip
    z, y, x = np.mgrid[:40, :96, :96]
    image = (np.sin(z / 4.0) + np.cos(y / 5.0) * np.sin(x / 3.0)).astype(np.float32)
    write_volume(folder / "big.ome.zarr", Volume(image, (2.0, 1.0, 1.0), (3.0, 0.0, 0.0), axes="ZYX",
                                                 meta={"unit": "um"}))  # fmt: skip
    write_volume(folder / "ct.nii.gz", Volume(image, (2.0, 1.0, 1.0), (3.0, 0.0, 0.0), axes="ZYX"))
    tmp = folder / "tmp"
    tmp.mkdir()
    return {"folder": folder, "bundle": model.save(folder / "model"), "image": image, "tmp": tmp}


def test_predict_an_ome_zarr_into_zarr_prints_the_plan(files):
    folder, tmp = files["folder"], files["tmp"]
    done = run("predict", "--model", files["bundle"], "--image", folder / "big.ome.zarr", "--out",
               folder / "pred.zarr", "--probabilities", folder / "probs.zarr", "--device", "cpu", tmp=tmp)
    assert done.returncode == 0, done.stderr
    assert "block plan for 40x96x96 voxels: 1 block(s)" in done.stderr and "MiB working memory" in done.stderr
    # stderr is a pipe here, as in a log file: no bar, but a line each tenth of the windows
    said = re.findall(r"predicted (\d+) of (\d+) windows \((\d+)%\)", done.stderr)
    assert said and said[-1][2] == "100" and said[-1][0] == said[-1][1], done.stderr
    assert [int(p) for _, _, p in said] == sorted({int(p) for _, _, p in said})
    labels = read_volume(folder / "pred.zarr")
    assert labels.is_labels and labels.spacing == (2.0, 1.0, 1.0) and labels.origin == (3.0, 0.0, 0.0)
    assert labels.meta["unit"] == "um"
    from napari_medml.api import load_model

    whole = load_model(files["bundle"]).predict(files["image"])
    np.testing.assert_array_equal(np.asarray(labels.data), whole.labels)
    assert read_volume(folder / "probs.zarr").data.shape == (3, 40, 96, 96)
    assert not any(tmp.iterdir())


def test_a_large_tiff_is_predicted_block_by_block_without_reading_it_whole(files, monkeypatch):
    folder, tmp = files["folder"], files["tmp"]
    write_volume(folder / "big.tif", Volume(files["image"], (2.0, 1.0, 1.0), (3.0, 0.0, 0.0), axes="ZYX",
                                            meta={"unit": "um"}))  # fmt: skip
    monkeypatch.setenv(LAZY_ENV, "0.5")  # the 1.4 MiB file counts as large: read plane by plane
    done = run("predict", "--model", files["bundle"], "--image", folder / "big.tif", "--out",
               folder / "tif_pred.zarr", "--device", "cpu", tmp=tmp)
    assert done.returncode == 0, done.stderr
    assert "block plan for 40x96x96 voxels" in done.stderr
    labels = read_volume(folder / "tif_pred.zarr")
    assert labels.spacing == (2.0, 1.0, 1.0) and labels.origin == (3.0, 0.0, 0.0)
    from napari_medml.api import load_model

    np.testing.assert_array_equal(np.asarray(labels.data), load_model(files["bundle"]).predict(files["image"]).labels)


def test_ctrl_c_then_the_same_command_resumes(files):
    folder, tmp = files["folder"], files["tmp"]
    # large enough for many blocks at 16 MB: Ctrl-C lands mid-run even on a busy machine
    z, y, x = np.mgrid[:40, :256, :256]
    image = (np.sin(z / 4.0) + np.cos(y / 5.0) * np.sin(x / 3.0)).astype(np.float32)
    write_volume(folder / "ct_big.nii.gz", Volume(image, (2.0, 1.0, 1.0), (3.0, 0.0, 0.0), axes="ZYX"))
    out = folder / "ct_pred.zarr"
    argv = ["predict", "--model", files["bundle"], "--image", folder / "ct_big.nii.gz", "--out", out,
            "--block-memory", "16", "--device", "cpu"]
    proc = start(*argv, tmp=tmp)
    attrs = out / ".zattrs"
    deadline = time.monotonic() + 300
    done: list = []
    while time.monotonic() < deadline and proc.poll() is None:
        if attrs.exists():
            try:
                done = json.loads(attrs.read_text())["napari_medml"]["prediction"]["done"]
            except (ValueError, KeyError):
                done = []
            if done:
                proc.send_signal(signal.SIGINT)  # Ctrl-C
                break
        time.sleep(0.02)
    _, err = proc.communicate(timeout=300)
    assert done, "no block finished before the time limit"
    # the handler trips the run's stop token (checked at every window), so nothing can swallow the signal
    assert proc.returncode == 130 and "run the same command again to resume" in err, err
    assert "stopping at the next window; the finished blocks are kept (Ctrl-C again to abort)" in err, err
    progress = json.loads(attrs.read_text())["napari_medml"]["prediction"]
    finished, total = len(progress["done"]), int(err.split(" block(s) of")[0].rsplit(" ", 1)[-1])
    kept = f"the {finished} finished block{'s are' if finished > 1 else ' is'} kept in '{out}'"  # trial 50: counted
    assert err.count("interrupted") == 1 and f"napari-medml: error: interrupted: {kept}" in err, err
    assert 0 < finished < total and not progress["complete"]

    again = run(*argv, tmp=tmp)
    assert again.returncode == 0, again.stderr
    assert f"resumed: {finished} of {total} block(s) were already done" in again.stderr
    from napari_medml.api import load_model

    whole = load_model(files["bundle"]).predict(image)
    np.testing.assert_array_equal(np.asarray(read_volume(out).data), whole.labels)


def test_outputs_that_are_not_resumable_are_refused(files):
    folder, tmp = files["folder"], files["tmp"]
    write_volume(folder / "mine.zarr", Volume(files["image"], (1.0,) * 3, (0.0,) * 3, axes="ZYX"))
    refused = run("predict", "--model", files["bundle"], "--image", folder / "ct.nii.gz", "--out",
                  folder / "mine.zarr", "--device", "cpu", tmp=tmp)
    assert refused.returncode != 0 and "remove it or choose another output name" in refused.stderr
    assert "Traceback" not in refused.stderr
    np.testing.assert_array_equal(np.asarray(read_volume(folder / "mine.zarr").data), files["image"])
    mixed = run("predict", "--model", files["bundle"], "--image", folder / "ct.nii.gz", "--out",
                folder / "p.zarr", "--probabilities", folder / "p.nii.gz", tmp=tmp)
    assert mixed.returncode != 0 and "must be a .zarr store" in mixed.stderr


def test_a_model_with_a_z_score_recipe_is_predicted_block_by_block(files):
    """A model trained on a z-scored layer (Preprocess > z-score, replayed on every image it
    predicts) writes the labels of an in-memory prediction into Zarr; a step that needs the whole
    image in memory is refused in one line, before anything is written."""
    from dataclasses import replace

    from napari_medml.api import load_model
    from napari_medml.config import PreprocessStep

    folder, tmp = files["folder"], files["tmp"]
    model = load_model(files["bundle"])
    model.config = replace(model.config, data=replace(model.config.data, preprocessing=(PreprocessStep("zscore"),)))
    bundle = model.save(folder / "zscored")
    raw = files["image"] * 900 + 12000  # 16-bit-like values: the recipe's z-score brings them back
    write_volume(folder / "raw.ome.zarr", Volume(raw.astype(np.float32), (2.0, 1.0, 1.0), (3.0, 0.0, 0.0),
                                                 axes="ZYX"))  # fmt: skip
    done = run("predict", "--model", bundle, "--image", folder / "raw.ome.zarr", "--out", folder / "z.zarr",
               "--device", "cpu", tmp=tmp)
    assert done.returncode == 0, done.stderr
    assert ("the model's preprocessing recipe (z-score) is replayed block by block, with the whole image's "
            "statistics: 1 pass(es) over the image first") in done.stderr
    whole = load_model(bundle).predict(raw.astype(np.float32)).labels
    assert len(np.unique(whole)) > 1
    np.testing.assert_array_equal(np.asarray(read_volume(folder / "z.zarr").data), whole)

    # a percentile clip of 16-bit values (exact bounds from a histogram) and a median filter (each block with
    # its neighbours' voxels): the in-memory labels too
    model.config = replace(model.config, data=replace(model.config.data, preprocessing=(
        PreprocessStep("percentile", {"low": 1, "high": 99.5}), PreprocessStep("median", {"size": 3}))))
    clipped = model.save(folder / "clipped")
    raw16 = np.clip(raw, 0, 65535).astype(np.uint16)
    write_volume(folder / "raw16.ome.zarr", Volume(raw16, (2.0, 1.0, 1.0), (3.0, 0.0, 0.0), axes="ZYX"))
    done = run("predict", "--model", clipped, "--image", folder / "raw16.ome.zarr", "--out", folder / "c16.zarr",
               "--device", "cpu", tmp=tmp)
    assert done.returncode == 0, done.stderr
    assert ("the model's preprocessing recipe (percentile 1-99.5, median 3) is replayed block by block, with the "
            "whole image's statistics: 1 pass(es) over the image first") in done.stderr
    whole = load_model(clipped).predict(raw16).labels
    assert len(np.unique(whole)) > 1
    np.testing.assert_array_equal(np.asarray(read_volume(folder / "c16.zarr").data), whole)

    model.config = replace(model.config, data=replace(model.config.data, preprocessing=(
        PreprocessStep("zscore"), PreprocessStep("clahe"))))
    refused = run("predict", "--model", model.save(folder / "clahe"), "--image", folder / "raw.ome.zarr", "--out",
                  folder / "c.zarr", "--device", "cpu", tmp=tmp)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert ("need the whole image in memory (clahe): block-wise prediction replays only fill NaN, z-score, min-max, "
            "CT window, gaussian and median steps, and a percentile clip as the first step of an integer image; "
            "train without those steps, or predict in memory (command line: a NIfTI/TIFF --out)"
            ) in refused.stderr, refused.stderr
    assert not (folder / "c.zarr").exists()


def test_a_model_that_fills_nans_first_predicts_an_image_with_nans_in_memory_and_in_blocks(files):
    from dataclasses import replace

    from napari_medml.api import load_model
    from napari_medml.config import PreprocessStep

    folder, tmp = files["folder"], files["tmp"]
    model = load_model(files["bundle"])
    model.config = replace(model.config, data=replace(model.config.data, preprocessing=(
        PreprocessStep("fill_nan"), PreprocessStep("zscore"))))
    bundle = model.save(folder / "fills")
    raw = (files["image"] * 900 + 12000).astype(np.float32)
    raw[:4, :10, :10] = np.nan  # outside the field of view
    write_volume(folder / "nan.nii.gz", Volume(raw, (2.0, 1.0, 1.0), (3.0, 0.0, 0.0), axes="ZYX"))
    memory = run("predict", "--model", bundle, "--image", folder / "nan.nii.gz", "--out", folder / "nan_pred.nii.gz",
                 "--device", "cpu", tmp=tmp)
    assert memory.returncode == 0, memory.stderr
    blocks = run("predict", "--model", bundle, "--image", folder / "nan.nii.gz", "--out", folder / "nan_pred.zarr",
                 "--device", "cpu", tmp=tmp)
    assert blocks.returncode == 0, blocks.stderr
    filled = np.where(np.isnan(raw), np.nanmin(raw), raw)
    whole = load_model(bundle).predict(filled).labels
    np.testing.assert_array_equal(np.asarray(read_volume(folder / "nan_pred.nii.gz").data), whole)
    np.testing.assert_array_equal(np.asarray(read_volume(folder / "nan_pred.zarr").data), whole)
    # the model without the fill refuses it, naming the file
    refused = run("predict", "--model", files["bundle"], "--image", folder / "nan.nii.gz", "--out",
                  folder / "no.nii.gz", "--device", "cpu", tmp=tmp)
    assert refused.returncode != 0 and f"image '{folder / 'nan.nii.gz'}' contains 400 NaN" in refused.stderr
