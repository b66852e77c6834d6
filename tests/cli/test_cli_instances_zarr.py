"""``napari-medml predict --model <instance bundle> --image big.ome.zarr --out pred.zarr``
through the installed console script: the plan printed first, instances block by block
(the same objects as the in-memory prediction), the maps next to them, resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("zarr")

import napari_medml  # noqa: E402
from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig  # noqa: E402
from napari_medml.instances.metrics import instance_scores  # noqa: E402
from napari_medml.io import Volume, read_volume, write_volume  # noqa: E402
from napari_medml.samples import touching_objects_2d  # noqa: E402


def run(*argv: object) -> subprocess.CompletedProcess:
    path = Path(sys.executable).with_name("napari-medml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(path) if path.exists() else "napari-medml", *map(str, argv)], capture_output=True,
                          text=True, timeout=600, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("instances-zarr")
    sample = touching_objects_2d(3, shape=(160, 144))
    config = TrainConfig(task="instances", data=DataConfig(spatial_dims=2, patch_size=(32, 32), batch_size=4,
                                                           val_fraction=0.0),
                         model=ModelConfig(channels=8, depth=2), optim=OptimConfig(epochs=1, steps_per_epoch=30),
                         augment=AugmentConfig.none(), seed=0)  # fmt: skip
    model = napari_medml.train(sample.image, sample.labels, config, spacing=(0.5, 0.5))
    write_volume(folder / "cells.ome.zarr", Volume(sample.image, (0.5, 0.5), (1.0, 2.0), axes="YX"))
    return {"folder": folder, "bundle": model.save(folder / "model"), "image": sample.image}


def test_instances_into_zarr_print_the_plan_and_match_memory(files):
    folder = files["folder"]
    done = run("predict", "--model", files["bundle"], "--image", folder / "cells.ome.zarr", "--out",
               folder / "pred.zarr", "--device", "cpu", "--block-memory", "16", "--halo", "40",
               "--seed-height", "0.2")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    plan_line = done.stderr.index("block plan for 160x144 voxels")
    assert plan_line < done.stderr.index("object(s)") and "halo of 40x40" in done.stderr
    labels = read_volume(folder / "pred.zarr")
    assert labels.is_labels and labels.spacing == (0.5, 0.5) and labels.origin == (1.0, 2.0)
    assert (folder / "pred.foreground.zarr").is_dir() and (folder / "pred.distance.zarr").is_dir()
    from dataclasses import replace

    model = napari_medml.load_model(files["bundle"])
    whole = model.predict(files["image"], spacing=(0.5, 0.5), params=replace(model.params, seed_height=0.2))
    blocks = np.asarray(labels.data)
    m = instance_scores(whole.labels, blocks).at(0.5)
    assert m.n_true > 3 and (m.f1, m.n_pred) == (1.0, m.n_true)
    assert f"{m.n_true} object(s)" in done.stderr
    # the per-object table, measured block by block: the in-memory table's values
    import csv

    from napari_medml.instances.measure import measure_image_instances

    with open(folder / "pred.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    table = measure_image_instances(blocks, files["image"], spacing=(0.5, 0.5), origin=(1.0, 2.0))
    assert [int(r["index"]) for r in rows] == list(table["index"])
    for name in ("area", "centroid_y", "centroid_x", "mean_intensity", "max_intensity"):
        np.testing.assert_allclose([float(r[name]) for r in rows], table[name], rtol=1e-6, err_msg=name)
    # the same command again: everything is found finished
    again = run("predict", "--model", files["bundle"], "--image", folder / "cells.ome.zarr", "--out",
                folder / "pred.zarr", "--device", "cpu", "--block-memory", "16", "--halo", "40",
                "--seed-height", "0.2")  # fmt: skip
    assert again.returncode == 0 and "resumed" in again.stderr, again.stderr[-2000:]
    bad = run("predict", "--model", files["bundle"], "--image", folder / "cells.ome.zarr", "--out",
              folder / "p2.zarr", "--probabilities", folder / "probs.zarr", "--device", "cpu")  # fmt: skip
    assert bad.returncode != 0 and "not used with an instance model" in bad.stderr


def test_other_post_processing_on_a_finished_zarr_is_told_how_to_label_again_from_the_maps(files):
    """Review 33: the README promised that new post-processing options re-run only the labelling;
    the same command with another --seed-height was refused as "not an interrupted run", and
    another --out ran the network again. The refusal now says how, and following it works."""
    import shutil

    folder = files["folder"]
    common = ["predict", "--model", files["bundle"], "--image", folder / "cells.ome.zarr", "--out",
              folder / "relabel.zarr", "--device", "cpu", "--block-memory", "16", "--halo", "40"]
    first = run(*common, "--seed-height", "0.2")
    assert first.returncode == 0, first.stderr[-2000:]
    refused = run(*common, "--seed-height", "0.6")
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert refused.stderr.strip().splitlines()[-1].endswith(
        f"'{folder / 'relabel.zarr'}' holds objects labelled from these maps with other post-processing options "
        f"(seed_height 0.2): remove it and run the same command again to label anew from the network's maps kept "
        f"in '{folder / 'relabel.foreground.zarr'}' and '{folder / 'relabel.distance.zarr'}' (the network does "
        "not run again), or choose another output name")
    shutil.rmtree(folder / "relabel.zarr")  # the fix, as it reads
    again = run(*common, "--seed-height", "0.6")
    assert again.returncode == 0 and "resumed: the network's maps of" in again.stderr, again.stderr[-2000:]
    from dataclasses import replace

    model = napari_medml.load_model(files["bundle"])
    whole = model.predict(files["image"], spacing=(0.5, 0.5), params=replace(model.params, seed_height=0.6))
    m = instance_scores(whole.labels, np.asarray(read_volume(folder / "relabel.zarr").data)).at(0.5)
    assert (m.f1, m.n_pred) == (1.0, m.n_true)  # the objects of the new options
