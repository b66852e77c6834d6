"""One builder turns command-line options into a TrainConfig for every training command."""

from __future__ import annotations

from dataclasses import replace

from napari_medml.classification.model import classification_config
from napari_medml.cli import classify, pretrain, train
from napari_medml.cli.main import build_parser
from napari_medml.config import AugmentConfig, TrainConfig


def _args(*argv: str):
    return build_parser().parse_args(list(argv))


def test_segmentation_options_land_in_their_fields_and_the_rest_keeps_defaults():
    args = _args("train", "--image", "a.tif", "--labels", "b.tif", "--out", "m", "--features", "24",
                 "--lr", "0.003", "--patch-size", "32", "48", "--sparse", "--background-id", "4",
                 "--patience", "7", "--no-augment", "--seed", "5", "--init-from", "pre")
    cfg = train.train_config(args, 2)
    default = TrainConfig()
    assert cfg.task == "segmentation" and cfg.data.spatial_dims == 2
    assert cfg.model.channels == 24 and cfg.optim.learning_rate == 0.003
    assert cfg.data.patch_size == (32, 48) and cfg.data.label_mode == "sparse" and cfg.data.background_id == 4
    assert cfg.optim.early_stopping_patience == 7 and cfg.seed == 5 and cfg.model.init_from == "pre"
    assert cfg.augment == AugmentConfig.none()
    assert cfg.optim.epochs == default.optim.epochs and cfg.model.depth == default.model.depth
    assert set(train.planned_options(args)) >= {"model.channels", "optim.learning_rate", "data.patch_size",
                                                "augment"}


def test_instances_and_classification_start_from_their_own_defaults():
    inst = train.train_config(_args("train", "--task", "instances", "--image", "a", "--labels", "b",
                                    "--out", "m", "--epochs", "3"), 3)
    assert inst.task == "instances" and inst.optim.epochs == 3
    args = _args("train", "--task", "classification", "--image", "a", "--classes", "c.csv", "--out", "m",
                 "--label-smoothing", "0.1", "--class-weights", "1", "2", "--epochs", "4")
    cfg = classify.train_config(args, 2)
    base = classification_config(2)
    assert cfg.task == "classification" and cfg.model.network == base.model.network
    assert cfg.optim.label_smoothing == 0.1 and cfg.optim.class_weights == (1.0, 2.0) and cfg.optim.epochs == 4
    assert cfg.optim.steps_per_epoch == base.optim.steps_per_epoch and cfg.augment == base.augment


def test_pretrain_loss_is_the_reconstruction_loss():
    cfg = pretrain._config(_args("pretrain", "--image", "a", "--out", "m", "--loss", "mae",
                                 "--mask-ratio", "0.4", "--depth", "3"), 3)
    assert cfg.task == "pretraining" and cfg.pretrain.loss == "mae" and cfg.pretrain.mask_ratio == 0.4
    assert cfg.model.depth == 3 and cfg.optim.loss == TrainConfig().optim.loss
    assert cfg.augment == replace(AugmentConfig.none(), flip=AugmentConfig().flip)  # the corruption is the task
