"""Options a command would ignore without a word are refused in one line (review 20): block-wise
options without a .zarr --out, segmentation post-processing with an instance model, sliding
window options with a classifier, and on --resume the options that set no field of their own."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from napari_medml.cli.common import UsageError
from napari_medml.cli.main import build_parser
from napari_medml.cli.predict import _refuse_unused
from napari_medml.cli.resume import resumed_config
from napari_medml.config import AugmentConfig, TrainConfig, to_dict


def _predict_args(*options: str) -> argparse.Namespace:
    return build_parser().parse_args(["predict", "--model", "m", "--image", "img.tif", "--out", "out.tif",
                                      *options])


@pytest.mark.parametrize(("kind", "options", "words"), [
    ("segmentation", ["--block-memory", "64"], "--block-memory: for a .zarr --out (block-wise prediction); "
                                                "'out.tif' is written whole"),
    ("segmentation", ["--halo", "7"], "--halo is for instance models with a .zarr --out"),
    ("instances", ["--halo", "7", "--block-memory", "64"], "--halo and --block-memory: for a .zarr --out"),
    ("instances", ["--min-size", "5", "--keep-largest"], "--min-size, --keep-largest: for segmentation models; an "
                                                         "instance model removes small objects with --min-object-size"),
    ("instances", ["--level", "2"], "--level is for multiscale Zarr images; 'img.tif' has one level"),
    ("classifier", ["--no-tta", "--overlap", "0.5"], "--overlap, --no-tta: for segmentation and instance models; "
                                                     "'m' is a classifier (drop the option)"),
])
def test_predict_refuses_options_the_model_and_output_would_ignore(kind, options, words) -> None:
    args = _predict_args(*options)
    args.image = args.image[0]
    with pytest.raises(UsageError) as caught:
        _refuse_unused(args, kind=kind, blockwise=False)
    assert words in str(caught.value)


def test_predict_keeps_the_options_that_apply() -> None:
    for kind, options in (("segmentation", ["--overlap", "0.5", "--min-size", "3", "--tta"]),
                          ("instances", ["--overlap", "0.5", "--min-object-size", "3"])):
        args = _predict_args(*options)
        args.image = args.image[0]
        _refuse_unused(args, kind=kind, blockwise=False)
    args = build_parser().parse_args(["predict", "--model", "m", "--image", "img.zarr", "--out", "o.zarr",
                                      "--halo", "4", "--block-memory", "64", "--level", "1"])
    args.image = args.image[0]
    _refuse_unused(args, kind="instances", blockwise=True)


def test_resume_refuses_no_augment_and_another_network_dimension(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints" / "last"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"train_config": to_dict(TrainConfig())}))  # augmentation on
    base = ["train", "--image", "a.nii.gz", "--labels", "b.nii.gz", "--out", str(tmp_path), "--resume"]
    args = build_parser().parse_args([*base, "--no-augment", "--spatial-dims", "2"])
    with pytest.raises(UsageError) as caught:
        resumed_config(args, TrainConfig(augment=AugmentConfig.none()), tmp_path / "checkpoints")
    assert str(caught.value) == (
        "--resume continues the stopped run with its own settings: --no-augment is given, the run trained with "
        "augmentation; --spatial-dims is 2, the run's 3: drop those options, or train a new run without --resume")
    same = resumed_config(build_parser().parse_args([*base, "--spatial-dims", "3"]), TrainConfig(),
                          tmp_path / "checkpoints")
    assert same.augment == TrainConfig().augment


def test_resuming_a_timed_ensemble_needs_the_runs_whole_budget(tmp_path: Path) -> None:
    """Review 37: fold 1's checkpoint holds its share of --max-minutes (10 of 30), taken as the whole
    budget by a --resume without the option: the folds left got about 1.7 minutes each."""
    from dataclasses import replace

    from napari_medml.config import DataConfig, OptimConfig

    stored = TrainConfig(data=DataConfig(folds=3, fold=0), optim=OptimConfig(max_minutes=10.0))
    folder = tmp_path / "checkpoints" / "fold-1" / "last"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"train_config": to_dict(stored)}))
    base = ["train", "--image", "a.nii.gz", "--labels", "b.nii.gz", "--out", str(tmp_path), "--resume"]
    with pytest.raises(UsageError) as caught:
        resumed_config(build_parser().parse_args(base), TrainConfig(), tmp_path / "checkpoints")
    assert str(caught.value) == (
        "--resume: the stopped ensemble of 3 folds had a time limit, and its checkpoints keep only each fold's "
        "share of it: give --max-minutes as the run started with it (the same command with --resume)")
    asked = replace(TrainConfig(), optim=OptimConfig(max_minutes=30.0))
    resumed = resumed_config(build_parser().parse_args([*base, "--max-minutes", "30"]), asked,
                             tmp_path / "checkpoints")
    assert resumed.optim.max_minutes == 30.0 and resumed.data.folds == 3 and resumed.data.fold is None


def test_an_instance_run_stopped_with_val_loss_resumes_with_the_metric_its_refusal_names(tmp_path: Path) -> None:
    """Review 32: val_loss is now refused for instances, and --resume refused another --stop-metric, so an
    instance run stopped with val_loss (accepted before) could be resumed by no command."""
    from dataclasses import replace

    from napari_medml.config import OptimConfig

    stored = TrainConfig(task="instances", optim=OptimConfig(early_stopping_metric="val_loss"))
    folder = tmp_path / "checkpoints" / "last"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"train_config": to_dict(stored)}))
    base = ["train", "--task", "instances", "--image", "a.tif", "--labels", "b.tif", "--out", str(tmp_path),
            "--resume", "--stop-metric", "val_dice"]
    asked = replace(stored, optim=OptimConfig(early_stopping_metric="val_dice"))
    resumed = resumed_config(build_parser().parse_args(base), asked, tmp_path / "checkpoints")
    assert resumed.optim.early_stopping_metric == "val_dice" and resumed.task == "instances"
    (folder / "config.json").write_text(json.dumps({"train_config": to_dict(replace(stored, task="segmentation"))}))
    with pytest.raises(UsageError, match="--stop-metric is val_dice, the run's val_loss"):  # others keep theirs
        resumed_config(build_parser().parse_args(base[:2] + ["segmentation"] + base[3:]),
                       replace(asked, task="segmentation"), tmp_path / "checkpoints")


def test_an_instance_ensemble_is_refused_before_training(tmp_path: Path, capsys) -> None:
    """Review 20: `--task instances --folds 3` trained one model whose epochs said "fold 1/3", then
    failed on KeyError: 'ensemble' after saving it."""
    import numpy as np

    from napari_medml.cli.main import main

    labels = np.zeros((32, 32), np.uint16)
    labels[4:12, 4:12], labels[16:28, 16:28] = 1, 2
    np.save(tmp_path / "cells.npy", (labels > 0).astype(np.float32) + 0.1 * np.arange(32)[None])
    np.save(tmp_path / "cells_label.npy", labels)
    code = main(["train", "--task", "instances", "--folds", "3", "--image", str(tmp_path / "cells.npy"), "--labels",
                 str(tmp_path / "cells_label.npy"), "--epochs", "1", "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code != 0 and [line for line in err.splitlines() if line.strip()] == [
        "napari-medml: error: folds 3 (an ensemble of 3 models) is for task 'segmentation'; task 'instances' trains "
        "one model: set folds to 1"], err
    assert not (tmp_path / "m").exists()
