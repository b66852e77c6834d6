"""A new user's mistakes in configs and spacings give one ConfigError/InputError line that
names the value and the fix, at construction or before any work starts."""

from __future__ import annotations

import numpy as np
import pytest

import napari_medml
from napari_medml.config import (AugmentConfig, DataConfig, InferConfig, ModelConfig, OptimConfig, TrainConfig,
                                 from_dict)
from napari_medml.errors import ConfigError, InputError

pytest.importorskip("torch")

SIZE = "must give one positive voxel size per spatial axis"


@pytest.mark.parametrize(("make", "message"), [
    (lambda: DataConfig(label_mode="scribble"), "label_mode 'scribble' is not one of 'dense', 'sparse'"),
    (lambda: OptimConfig(optimizer="adamm"),
     "optimizer 'adamm' is not one of 'sgd', 'adam', 'adamw', 'rmsprop'; did you mean 'adam'?"),
    (lambda: OptimConfig(loss="dice+ce"), "loss 'dice+ce' is not one of 'ce', 'dice', 'dice_ce', 'focal'; "
                                          "did you mean 'dice_ce'?"),
    (lambda: ModelConfig(network="unett"), "network 'unett' is not one of 'unet', 'dynunet', 'segresnet', "
     "'smallcnn', 'resnet18', 'resnet34', 'resnet50', 'densenet121', 'efficientnet-b0', 'unet-encoder'; "
     "did you mean 'unet'?"),
    (lambda: ModelConfig(norm="group"), "norm 'group' is not one of 'batch', 'instance'"),
    (lambda: TrainConfig(device="gpu"), "device 'gpu' is not one of 'auto', 'cpu', 'cuda', 'mps' or 'cuda:N' "
                                        "(GPU number N)"),
    (lambda: TrainConfig(task="segmentaton"), "task 'segmentaton' is not one of 'segmentation', 'classification', "
                                              "'pretraining', 'instances'; did you mean 'segmentation'?"),
    (lambda: InferConfig(instances="yes"), "instances 'yes' is not one of 'none', 'connected', 'watershed'"),
    (lambda: InferConfig(blend="linear"), "blend 'linear' is not one of 'gaussian', 'constant'"),
    (lambda: DataConfig(normalization="z-score"), "normalization 'z-score' is not one of 'zscore', "
     "'zscore_nonzero', 'ct', 'percentile', 'minmax', 'none'; did you mean 'zscore'?"),
    (lambda: DataConfig(spatial_dims=4), "spatial_dims 4 is not one of 2, 3"),
    (lambda: OptimConfig(epochs="10"), "epochs '10' must be an integer"),
    (lambda: OptimConfig(epochs=True), "epochs True must be an integer"),
    (lambda: OptimConfig(learning_rate="0.01"), "learning_rate '0.01' must be a number"),
    (lambda: OptimConfig(nesterov="yes"), "nesterov 'yes' must be True or False"),
    (lambda: DataConfig(patch_size=(32, 32.5), spatial_dims=2), "patch_size (32, 32.5) must hold integers only"),
    (lambda: TrainConfig(optim={"epochs": 1}), "optim must be OptimConfig(...), got dict {'epochs': 1}"),
])
def test_bad_config_values_fail_at_construction_with_one_line(make, message):
    with pytest.raises(ConfigError) as caught:
        make()
    assert str(caught.value) == message


def test_good_values_still_pass_and_saved_configs_round_trip():
    config = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(32, 32), fold=None),
                         model=ModelConfig(network="resnet18", norm="batch"),
                         optim=OptimConfig(learning_rate=1, momentum=None, class_weights=(1, 2.5)),
                         device="cuda:1")
    assert TrainConfig.from_json(config.to_json()) == config
    assert InferConfig(device="cuda:0", blend="constant").device == "cuda:0"
    assert DataConfig(spatial_dims=np.int64(2)).spatial_dims == 2  # e.g. from an array's ndim
    with pytest.raises(ConfigError, match="label_mode 'scribble'"):
        TrainConfig.from_json('{"data": {"label_mode": "scribble"}}')


@pytest.fixture(scope="module")
def image_2d():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(32, 32)).astype(np.float32)
    labels = np.zeros((32, 32), np.uint8)
    labels[8:20, 10:24] = 1
    return image + 2 * labels, labels


def small_config(spatial_dims: int = 2) -> TrainConfig:
    return TrainConfig(data=DataConfig(spatial_dims=spatial_dims, patch_size=(16,) * spatial_dims, batch_size=1),
                       augment=AugmentConfig.none(), model=ModelConfig(channels=4, depth=2),
                       optim=OptimConfig(epochs=1, steps_per_epoch=1), device="cpu")


@pytest.fixture(scope="module")
def model_2d(image_2d):
    image, labels = image_2d
    return napari_medml.train(image, labels, small_config(), spacing=(1.5, 1.5))


@pytest.mark.parametrize(("spacing", "message"), [
    (2.0, f"spacing 2.0 {SIZE} (2 for this 2D image), e.g. (2.0, 1.0)"),
    ((1.0,), f"spacing (1.0,) {SIZE} (2 for this 2D image), e.g. (1.0, 1.0)"),
    ((2.0, 1.0, 1.0, 7.0), f"spacing (2.0, 1.0, 1.0, 7.0) {SIZE} (2 for this 2D image), e.g. (1.0, 7.0)"),
    ((-1.0, 1.0), f"spacing (-1.0, 1.0) {SIZE} (2 for this 2D image), e.g. (1.0, 1.0)"),
    ((0, 1), f"spacing (0.0, 1.0) {SIZE} (2 for this 2D image), e.g. (1.0, 1.0)"),
    ((float("nan"), 1.0), f"spacing (nan, 1.0) {SIZE} (2 for this 2D image), e.g. (1.0, 1.0)"),
    ([(1.0, 1.0), (1.0, -2.0)], f"spacing of image 2 of 2 (1.0, -2.0) {SIZE} (2 for this 2D image), e.g. (1.0, 1.0)"),
])
def test_train_refuses_a_bad_spacing_before_any_work(image_2d, spacing, message):
    image, labels = image_2d
    images, labelss = ([image, image], [labels, labels]) if isinstance(spacing, list) else (image, labels)
    with pytest.raises(InputError) as caught:
        napari_medml.train(images, labelss, small_config(), spacing=spacing)
    assert str(caught.value) == message


def test_a_3d_run_refuses_a_2d_spacing():
    image = np.zeros((8, 16, 16), np.float32)
    with pytest.raises(InputError) as caught:
        napari_medml.train(image, image.astype(np.uint8), small_config(3), spacing=(1.0, 1.0))
    assert str(caught.value) == f"spacing (1.0, 1.0) {SIZE} (3 for this 3D image), e.g. (1.0, 1.0, 1.0)"


def test_a_dict_config_says_to_build_a_train_config(image_2d):
    image, labels = image_2d
    with pytest.raises(InputError) as caught:
        napari_medml.train(image, labels, {"task": "segmentation"})
    assert str(caught.value) == ("config must be a TrainConfig, got a dict: build one with TrainConfig(task=..., "
                                 "optim=OptimConfig(...)), TrainConfig.from_json(text) or "
                                 "napari_medml.config.from_dict(TrainConfig, a_dict)")
    assert from_dict(TrainConfig, {"task": "segmentation", "optim": {"epochs": 1}}).optim.epochs == 1  # the fix works


@pytest.mark.parametrize(("spacing", "message"), [
    (2.0, f"spacing 2.0 {SIZE} (2 for this 2D model), e.g. (2.0, 1.0)"),
    ((-1, 1), f"spacing (-1.0, 1.0) {SIZE} (2 for this 2D model), e.g. (1.0, 1.0)"),
    ((0, 1), f"spacing (0.0, 1.0) {SIZE} (2 for this 2D model), e.g. (1.0, 1.0)"),
    ((float("nan"), 1.0), f"spacing (nan, 1.0) {SIZE} (2 for this 2D model), e.g. (1.0, 1.0)"),
    ((1.0, 1.0, 1.0), f"spacing (1.0, 1.0, 1.0) {SIZE} (2 for this 2D model), e.g. (1.0, 1.0)"),
])
def test_predict_refuses_a_bad_spacing(model_2d, image_2d, spacing, message):
    with pytest.raises(InputError) as caught:
        model_2d.predict(image_2d[0], spacing=spacing)
    assert str(caught.value) == message


def test_good_spacings_are_kept_and_a_stack_may_name_its_own_axis(model_2d, image_2d):
    assert model_2d.spacing == (1.5, 1.5)
    image = image_2d[0]
    assert model_2d.predict(image, spacing=(1.5, 1.5)).labels.shape == (32, 32)
    stack = np.stack([image, image])  # a 2D model segments a (Z, Y, X) stack slice by slice
    assert model_2d.predict(stack, spacing=(3.0, 1.5, 1.5)).labels.shape == (2, 32, 32)


def test_instances_refuse_val_loss_as_the_stop_metric_before_training():
    """Instances with val_loss silently picked the best epoch by the training loss: their validation
    scores objects and has no loss. The config check (CLI and Train widget alike) refuses it."""
    from napari_medml.instances.task import fit

    config = TrainConfig(task="instances", data=DataConfig(spatial_dims=2, patch_size=(32, 32)),
                         optim=OptimConfig(early_stopping_metric="val_loss"), device="cpu")
    line = ("early_stopping_metric val_loss is not computed for instances (their validation scores the objects "
            "found): choose val_dice (the Train widget's 'best epoch by'), which picks the best epoch by the "
            "held-out AP at IoU 0.5")
    with pytest.raises(ConfigError) as info:
        config.check_new_run()
    assert str(info.value) == line
    labels = np.zeros((64, 64), np.uint16)
    labels[8:20, 8:20], labels[30:44, 30:44] = 1, 2
    with pytest.raises(ConfigError, match="val_loss is not computed for instances"):
        next(fit((labels > 0).astype(np.float32), labels, config))
    TrainConfig(task="segmentation", optim=OptimConfig(early_stopping_metric="val_loss")).check_new_run()
