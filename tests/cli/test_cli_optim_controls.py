"""Optimizer, norm and width options through the ``napari-medml`` console script: they
reach the bundle and the network, the plan names the optimizer as it runs, and options
that would do nothing are refused with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile

from napari_medml.samples import phantom_3d, shape_classes

from test_console_script import run

OPTIONS = ["--spatial-dims", "2", "--epochs", "1", "--steps-per-epoch", "2", "--patch-size", "32", "32",
           "--depth", "3", "--device", "cpu", "--no-augment"]


def _files(tmp: Path) -> tuple[Path, Path]:
    ph = phantom_3d(1, shape=(16, 48, 48))
    tifffile.imwrite(tmp / "img.tif", ph.image[8].astype(np.float32))
    tifffile.imwrite(tmp / "lab.tif", ph.labels[8].astype(np.uint8))
    return tmp / "img.tif", tmp / "lab.tif"


def test_momentum_weight_decay_norm_and_channels_reach_the_bundle(tmp_path):
    image, labels = _files(tmp_path)
    done = run("train", "--image", image, "--labels", labels, "--out", tmp_path / "m", *OPTIONS,
               "--optimizer", "rmsprop", "--momentum", "0.5", "--weight-decay", "0.001", "--norm", "batch",
               "--channels", "4", "--dropout", "0.2", tmp=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "optimizer: RMSprop, momentum 0.5, weight decay 0.001" in done.stderr
    assert "learning rate: 0.001 (RMSprop's usual rate)" in done.stderr
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())["train_config"]
    assert cfg["optim"]["momentum"] == 0.5 and cfg["optim"]["weight_decay"] == 0.001
    assert cfg["model"]["norm"] == "batch" and cfg["model"]["channels"] == 4 and cfg["model"]["dropout"] == 0.2
    from napari_medml.api import load_model

    net = load_model(tmp_path / "m").network
    assert any(isinstance(m, __import__("torch").nn.BatchNorm2d) for m in net.modules())
    assert not any(isinstance(m, __import__("torch").nn.InstanceNorm2d) for m in net.modules())


def test_sgd_is_planned_nnunets_rate_and_rmsprop_no_longer_gets_sgds_momentum(tmp_path):
    image, labels = _files(tmp_path)
    done = run("train", "--image", image, "--labels", labels, "--out", tmp_path / "m", *OPTIONS,
               "--optimizer", "sgd", tmp=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "optimizer: SGD, momentum 0.99 (Nesterov)" in done.stderr
    assert "learning rate: 0.01 (SGD: nnU-Net's rate, with its Nesterov momentum 0.99)" in done.stderr


def test_options_that_would_do_nothing_are_refused_with_one_line(tmp_path):
    image, labels = _files(tmp_path)
    frozen = run("train", "--image", image, "--labels", labels, "--out", tmp_path / "m", *OPTIONS,
                 "--freeze-stages", "1", tmp=tmp_path)
    assert frozen.returncode == 1 and not (tmp_path / "m").exists()
    assert "Traceback" not in frozen.stderr and frozen.stderr.count("error:") == 1
    assert "--freeze-stages is 1, but there is no start model" in frozen.stderr and "--init-from" in frozen.stderr
    plateau = run("train", "--image", image, "--labels", labels, "--out", tmp_path / "m", *OPTIONS,
                  "--schedule", "plateau", "--warmup", "0.1", tmp=tmp_path)
    assert plateau.returncode == 1 and "plateau schedule has no warm-up" in plateau.stderr
    hasty = run("train", "--image", image, "--labels", labels, "--out", tmp_path / "m", *OPTIONS,
                "--schedule", "plateau", "--patience", "1", tmp=tmp_path)
    assert hasty.returncode == 1 and hasty.stderr.count("error:") == 1 and not (tmp_path / "m").exists()
    assert "with a patience of 1 the run stops on the epoch the rate would be halved" in hasty.stderr
    sc = shape_classes(seed=0, n=12, size=32)
    tifffile.imwrite(tmp_path / "stack.tif", sc.images.astype(np.float32))
    (tmp_path / "classes.csv").write_text("".join(f"{i},{c}\n" for i, c in enumerate(sc.classes)))
    fixed = run("train", "--task", "classification", "--image", tmp_path / "stack.tif", "--classes",
                tmp_path / "classes.csv", "--out", tmp_path / "c", "--network", "resnet18", "--channels", "8",
                "--epochs", "1", "--steps-per-epoch", "1", "--device", "cpu", tmp=tmp_path)
    assert fixed.returncode == 1 and "Traceback" not in fixed.stderr
    assert "resnet18 has a fixed width and depth, so channels would be ignored" in fixed.stderr


def test_momentum_for_an_optimizer_without_one_is_refused(tmp_path):
    image, labels = _files(tmp_path)
    done = run("train", "--image", image, "--labels", labels, "--out", tmp_path / "m", *OPTIONS,
               "--momentum", "0.9", tmp=tmp_path)  # the default optimizer, AdamW, has none
    assert done.returncode == 1 and not (tmp_path / "m").exists(), done.stderr
    assert "--momentum is for SGD and RMSprop, and the optimizer is adamw" in done.stderr
    set_by_you = run("train", "--image", image, "--labels", labels, "--out", tmp_path / "m2", *OPTIONS,
                     "--optimizer", "sgd", "--momentum", "0.5", tmp=tmp_path)
    assert set_by_you.returncode == 0, set_by_you.stderr
    assert "learning rate: 0.01 (SGD: nnU-Net's rate)" in set_by_you.stderr  # not "momentum 0.99" any more
    assert "optimizer: SGD, momentum 0.5 (Nesterov)" in set_by_you.stderr
    # trial 44: Nesterov's momentum could not be turned off
    plain = run("train", "--image", image, "--labels", labels, "--out", tmp_path / "m3", *OPTIONS,
                "--optimizer", "sgd", "--momentum", "0.9", "--no-nesterov", tmp=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "optimizer: SGD, momentum 0.9," in plain.stderr and "Nesterov" not in plain.stderr
    assert json.loads((tmp_path / "m3" / "config.json").read_text())["train_config"]["optim"]["nesterov"] is False
    adam = run("train", "--image", image, "--labels", labels, "--out", tmp_path / "m4", *OPTIONS,
               "--no-nesterov", tmp=tmp_path)
    assert adam.returncode == 1 and "--no-nesterov is for SGD, and the optimizer is adamw" in adam.stderr


def test_stop_metric_chooses_what_picks_the_best_epoch(tmp_path):
    # early_stopping_metric was in the Python API only
    image, labels = _files(tmp_path)
    options = [*OPTIONS[:2], "--epochs", "4", *OPTIONS[4:]]
    done = run("train", "--image", image, "--labels", labels, "--out", tmp_path / "m", *options,
               "--stop-metric", "val_loss", tmp=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    desc = json.loads((tmp_path / "m" / "config.json").read_text())
    assert desc["train_config"]["optim"]["early_stopping_metric"] == "val_loss"
    losses = [h["val_loss"] for h in desc["history"]]
    assert desc["provenance"]["best_epoch"] == 1 + int(np.argmin(losses)), losses
    bad = run("train", "--image", image, "--labels", labels, "--out", tmp_path / "x", *OPTIONS,
              "--stop-metric", "dice", tmp=tmp_path)
    assert bad.returncode == 2 and "--stop-metric: invalid choice: 'dice'" in bad.stderr


def test_sgd_without_a_rate_takes_sgds_usual_rate_where_nothing_plans_it(tmp_path):
    """Trial 50: a classifier (no plan) and an unplanned segmentation run trained SGD at Adam's 0.001."""
    sc = shape_classes(seed=0, n=12, size=32)
    tifffile.imwrite(tmp_path / "stack.tif", sc.images.astype(np.float32))
    (tmp_path / "classes.csv").write_text("".join(f"{i},{c}\n" for i, c in enumerate(sc.classes)))
    common = ["--task", "classification", "--image", tmp_path / "stack.tif", "--classes", tmp_path / "classes.csv",
              "--epochs", "1", "--steps-per-epoch", "1", "--device", "cpu"]
    for out, extra, rate in (("sgd", [], 0.01), ("sgd-lr", ["--lr", "0.003"], 0.003)):
        done = run("train", *common, "--out", tmp_path / out, "--optimizer", "sgd", *extra, tmp=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        optim = json.loads((tmp_path / out / "config.json").read_text())["train_config"]["optim"]
        assert (optim["optimizer"], optim["learning_rate"]) == ("sgd", rate)
    image, labels = _files(tmp_path)
    done = run("train", "--image", image, "--labels", labels, "--out", tmp_path / "m", *OPTIONS, "--no-plan",
               "--optimizer", "sgd", tmp=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "m" / "config.json").read_text())["train_config"]["optim"]["learning_rate"] == 0.01
