"""Instances through the installed ``napari-medml`` console script, in a subprocess:
``train --task instances`` -> ``predict`` (instance image + per-object CSV) ->
``evaluate --instances`` (the instance metrics JSON), in 2D and on an anisotropic 3D
volume; ``train --instances`` keeps meaning object labels of a classifier."""

from __future__ import annotations

import csv
import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_medml.io import Volume, read_volume, write_volume
from napari_medml.samples import touching_objects_2d

TRAIN = ["--features", "8", "--depth", "3", "--batch-size", "4", "--lr", "0.003", "--device", "cpu", "--seed", "0"]


def script() -> str:
    path = Path(sys.executable).with_name("napari-medml")
    return str(path) if path.exists() else shutil.which("napari-medml") or "napari-medml"


def run(*argv: object, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([script(), *map(str, argv)], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def chain_2d(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("instances2d")
    s = touching_objects_2d(2, shape=(128, 128))
    image, labels = folder / "cells.tif", folder / "cells_objects.tif"
    write_volume(image, Volume(s.image, (0.5, 0.5), (0.0, 0.0), axes="YX"))
    write_volume(labels, Volume(s.labels.astype(np.uint16), (0.5, 0.5), (0.0, 0.0), is_labels=True, axes="YX"))
    model, out = folder / "model", folder / "out" / "cells_instances.tif"
    runs = {"train": run("train", "--task", "instances", "--image", image, "--labels", labels, "--out", model,
                         "--epochs", "2", "--steps-per-epoch", "60", "--patch-size", "32", "32",
                         "--val-fraction", "0.25", *TRAIN)}
    runs["predict"] = run("predict", "--model", model, "--image", image, "--out", out, "--device", "cpu")
    runs["evaluate"] = run("evaluate", "--instances", "--prediction", out, "--labels", labels)
    return {"runs": runs, "folder": folder, "out": out, "model": model, "labels": s.labels}


def test_train_predict_evaluate_instances_2d(chain_2d) -> None:
    runs = chain_2d["runs"]
    for name, proc in runs.items():
        assert proc.returncode == 0, (name, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
    assert "validation AP@0.5" in runs["train"].stderr
    epoch_lines = [line for line in runs["train"].stderr.splitlines() if "n_true" in line]
    assert epoch_lines and all(re.search(r"n_true \d+ ", line) for line in epoch_lines), epoch_lines  # counts: whole
    desc = json.loads((chain_2d["model"] / "config.json").read_text())
    assert desc["task"] == "instances" and set(desc["instance_params"]) >= {"seed_height", "min_size"}
    # planned like a segmentation of the objects' foreground; the options given are kept
    assert "plan:" in runs["train"].stderr
    plan = desc.get("plan") or desc["provenance"]["plan"]
    assert {"data.patch_size", "optim.epochs", "optim.steps_per_epoch"} <= set(plan["kept"])
    assert desc["train_config"]["data"]["patch_size"] == [32, 32] and desc["train_config"]["optim"]["epochs"] == 2

    pred = read_volume(chain_2d["out"])
    assert pred.data.dtype == np.uint32 and pred.data.shape == (128, 128)
    assert pred.spacing == (0.5, 0.5)
    ids = np.unique(pred.data[pred.data > 0])
    table_path = chain_2d["out"].with_name("cells_instances.csv")  # default: next to --out
    with open(table_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["index"]) for r in rows] == list(ids)
    assert {"area", "centroid_y", "centroid_x", "mean_intensity"} <= set(rows[0])
    first = int(rows[0]["index"])
    assert float(rows[0]["area"]) == pytest.approx((pred.data == first).sum() * 0.25)

    metrics = json.loads(runs["evaluate"].stdout)  # stdout holds only the JSON
    assert metrics["n_true"] == len(np.unique(chain_2d["labels"])) - 1 and metrics["n_pred"] == len(ids)
    assert [t["threshold"] for t in metrics["thresholds"]] == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9]
    at = metrics["thresholds"][0]
    assert metrics["ap_at_0.5"] == pytest.approx(at["tp"] / (at["tp"] + at["fp"] + at["fn"]))
    assert metrics["mean_ap"] == pytest.approx(np.mean([t["average_precision"] for t in metrics["thresholds"]]))
    assert metrics["f1_at_0.5"] >= 0.6  # a short training on the image it predicts


def test_predict_post_processing_options_and_dsb_thresholds(chain_2d) -> None:
    folder, model = chain_2d["folder"], chain_2d["model"]
    image = folder / "cells.tif"
    merged, table = folder / "merged.tif", folder / "tables" / "merged objects.csv"
    table.parent.mkdir()  # outputs go into existing folders (a missing one is a one-line error)
    proc = run("predict", "--model", model, "--image", image, "--out", merged, "--table", table,
               "--seed-height", "1", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "seed_height 1" in proc.stderr
    fewer = read_volume(merged).data
    assert fewer.max() < read_volume(chain_2d["out"]).data.max()
    assert table.exists()
    proc = run("evaluate", "--instances", "--thresholds", "dsb", "--prediction", merged,
               "--labels", folder / "cells_objects.tif")
    assert proc.returncode == 0 and json.loads(proc.stdout)["thresholds"][-1]["threshold"] == 0.95
    bad = run("predict", "--model", model, "--image", image, "--out", folder / "x.tif", "--probabilities",
              folder / "p.tif")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "--probabilities" in bad.stderr


def test_the_table_named_after_out_keeps_a_users_csv_and_replaces_its_own(chain_2d) -> None:
    folder, model = chain_2d["folder"], chain_2d["model"]
    mine = folder / "counts.csv"
    mine.write_text("cell,count\n1,12\n")  # the user's own table where predict would put its table
    proc = run("predict", "--model", model, "--image", folder / "cells.tif", "--out", folder / "counts.tif")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "--table" in lines[0] and "counts.csv" in lines[0], proc.stderr
    assert mine.read_text() == "cell,count\n1,12\n" and not (folder / "counts.tif").exists()
    # named with --table, it is kept too (trial 40)
    proc = run("predict", "--model", model, "--image", folder / "cells.tif", "--out", folder / "other.tif",
               "--table", mine)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert f"--table '{mine}' is a file predict did not write (its columns: cell, count): it is kept" in lines[0]
    assert mine.read_text() == "cell,count\n1,12\n" and not (folder / "other.tif").exists()
    # a re-run replaces the table predict wrote (the first predict of the chain wrote cells_instances.csv)
    again = run("predict", "--model", model, "--image", folder / "cells.tif", "--out", chain_2d["out"],
                "--device", "cpu")
    assert again.returncode == 0, again.stderr


def test_train_instances_3d_anisotropic(tmp_path) -> None:
    zz, yy, xx = np.mgrid[0:12, 0:32, 0:32]
    labels = np.zeros((12, 32, 32), np.uint16)
    for k, (cy, cx) in enumerate(((10, 10), (10, 19), (21, 10), (21, 21)), start=1):
        inside = ((zz - 6) * 2.0) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 <= 36
        labels[inside & (labels == 0)] = k
    rng = np.random.default_rng(0)
    image = (labels > 0).astype(np.float32) + 0.1 * rng.normal(size=labels.shape).astype(np.float32)
    write_volume(tmp_path / "vol.nii.gz", Volume(image, (2.0, 1.0, 1.0), (0.0,) * 3))
    write_volume(tmp_path / "obj.nii.gz", Volume(labels, (2.0, 1.0, 1.0), (0.0,) * 3, is_labels=True))
    proc = run("train", "--task", "instances", "--image", tmp_path / "vol.nii.gz", "--labels",
               tmp_path / "obj.nii.gz", "--out", tmp_path / "m", "--epochs", "1", "--steps-per-epoch", "3",
               "--patch-size", "8", "16", "16", "--val-fraction", "0", "--features", "4", "--depth", "2",
               "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "m" / "config.json").read_text())["spacing"] == [2.0, 1.0, 1.0]
    proc = run("predict", "--model", tmp_path / "m", "--image", tmp_path / "vol.nii.gz", "--out",
               tmp_path / "pred.nii.gz", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    pred = read_volume(tmp_path / "pred.nii.gz")
    assert pred.data.shape == labels.shape and pred.spacing == (2.0, 1.0, 1.0)
    # the same volume stored LAS (x flipped, the same world space): the same objects at the same
    # world centroids, on the RAS+ grid napari shows both on; bounding boxes index each file
    import nibabel as nib

    ras = nib.load(str(tmp_path / "vol.nii.gz"))
    las = ras.affine.copy()
    las[0, 0], las[0, 3] = -ras.affine[0, 0], ras.affine[0, 3] + ras.affine[0, 0] * (ras.shape[0] - 1)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(np.asarray(ras.dataobj)[::-1]), las), str(tmp_path / "las.nii.gz"))
    tables = {}
    for name in ("vol", "las"):
        proc = run("predict", "--model", tmp_path / "m", "--image", tmp_path / f"{name}.nii.gz", "--out",
                   tmp_path / f"{name}_objects.nii.gz", "--foreground-threshold", "0.3", "--device", "cpu")
        assert proc.returncode == 0, proc.stderr
        with open(tmp_path / f"{name}_objects.csv", encoding="utf-8") as fh:
            tables[name] = list(csv.DictReader(fh))
    columns = {"volume", "centroid_z", "centroid_y", "centroid_x", "bbox_start_x"}
    assert tables["vol"] and columns <= set(tables["vol"][0])
    world = {name: sorted((float(r["volume"]), float(r["centroid_z"]), float(r["centroid_y"]), float(r["centroid_x"]))
                          for r in rows) for name, rows in tables.items()}
    np.testing.assert_allclose(world["las"], world["vol"], atol=1e-6)
    first = {name: min(rows, key=lambda r: float(r["centroid_x"])) for name, rows in tables.items()}
    assert int(first["las"]["bbox_stop_x"]) == 32 - int(first["vol"]["bbox_start_x"])  # x runs the other way there


def test_evaluate_instances_puts_the_prediction_on_the_labels_grid(tmp_path) -> None:
    """Instance labels saved RAS and LAS (x flipped, the same world space): F1 1, as plain
    evaluate reorients; a copy on a grid 5 mm away is refused, never scored as aligned."""
    import nibabel as nib

    zyx = np.zeros((6, 20, 24), np.uint16)
    for k in range(12):
        y, x = divmod(k, 4)
        zyx[1:5, y * 6 + 1:y * 6 + 5, x * 6 + 1:x * 6 + 4 + k % 2] = k + 1
    xyz = zyx.T
    ras = np.diag([0.5, 0.5, 2.0, 1.0])
    ras[:3, 3] = [10, 20, 30]
    las = ras.copy()
    las[0, 0], las[0, 3] = -0.5, 10 + 0.5 * (xyz.shape[0] - 1)
    shifted = ras.copy()
    shifted[0, 3] += 5
    nib.save(nib.Nifti1Image(xyz, ras), str(tmp_path / "truth_ras.nii.gz"))
    nib.save(nib.Nifti1Image(np.ascontiguousarray(xyz[::-1]), las), str(tmp_path / "pred_las.nii.gz"))
    nib.save(nib.Nifti1Image(xyz, shifted), str(tmp_path / "pred_shifted.nii.gz"))
    done = run("evaluate", "--instances", "--prediction", tmp_path / "pred_las.nii.gz", "--labels",
               tmp_path / "truth_ras.nii.gz")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["f1_at_0.5"] == 1.0 and "reoriented" in done.stderr
    refused = run("evaluate", "--instances", "--prediction", tmp_path / "pred_shifted.nii.gz", "--labels",
                  tmp_path / "truth_ras.nii.gz")
    assert refused.returncode == 1 and refused.stdout == "" and "voxel grid" in refused.stderr, refused.stderr
