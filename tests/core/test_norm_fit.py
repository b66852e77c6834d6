"""A classifier whose norm layers would get one value per channel is refused before training,
with the fixes (trial 29: sklearn's 8x8 digits ended in PyTorch's own message at the first step)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sklearn = pytest.importorskip("sklearn")

from napari_medml.classification.levels import make_samples  # noqa: E402
from napari_medml.classification.model import classification_config  # noqa: E402
from napari_medml.classification.task import train_classifier  # noqa: E402
from napari_medml.errors import InputError  # noqa: E402


def _digits(input_size: int | None = None):
    from sklearn.datasets import load_digits

    digits = load_digits()  # real 8x8 scans of handwritten digits, shipped with scikit-learn
    params = {"input_size": input_size} if input_size else {}
    samples = make_samples("image", digits.images[:120].astype(np.float32), params)
    return replace(samples, y=digits.target[:120].astype(np.int64) + 1)


def _config(**model):
    config = classification_config(2)
    config = replace(config, device="cpu", model=replace(config.model, **model),
                     optim=replace(config.optim, epochs=1, steps_per_epoch=1))
    return config


@pytest.mark.parametrize(("model", "batch", "words"), [
    ({"norm": "instance"}, 16, "the 8x8 samples shrink to 1x1 at the network's layer 'blocks.3.0.adn.N', where "
                               "instance norm has one value per channel to normalise: give a larger input size "
                               "(--input-size, or the Classify widget's input size; e.g. 16x16), a smaller depth, or "
                               "batch norm with a batch size of 2 or more"),
    ({"network": "resnet18"}, 1, "where batch norm over a batch of 1 has one value per channel to normalise: give a "
                                 "larger input size (--input-size, or the Classify widget's input size; e.g. 32x32), "
                                 "or a batch size of 2 or more"),
], ids=["instance-norm", "resnet-batch-1"])
def test_a_network_that_pools_the_samples_to_one_value_is_refused_with_fixes_that_work(model, batch, words):
    config = _config(**model)
    config = replace(config, data=replace(config.data, batch_size=batch))
    with pytest.raises(InputError) as caught:
        train_classifier(_digits(), config)
    assert words in str(caught.value)
    size = int(str(caught.value).split("e.g. ")[1].split("x")[0])
    classifier = train_classifier(_digits(size), config)  # the size it suggests trains
    assert classifier.network is not None


def test_a_segmentation_network_whose_bottom_holds_one_voxel_is_refused_before_training():
    """Review 29: a 16x16 patch under five levels is 1x1 at the bottom; with batch norm over a
    batch of one the run ended in PyTorch's message at its first step."""
    from napari_medml.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
    from napari_medml.segmentation.task import train

    rng = np.random.default_rng(0)
    labels = np.zeros((32, 32), np.uint8)
    labels[8:20, 8:20] = 1
    image = rng.normal(0, 1, labels.shape).astype(np.float32) + 2 * labels
    config = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(16, 16), batch_size=1, val_fraction=0.0),
                         model=ModelConfig(channels=4, depth=5, norm="batch"),
                         optim=OptimConfig(epochs=1, steps_per_epoch=2), device="cpu")
    with pytest.raises(InputError, match=r"^the 16x16 patches shrink to 1x1 at the network's layer '.*', where batch "
                                         r"norm over a batch of 1 has one value per channel to normalise: give a "
                                         r"larger patch size \(--patch-size, or the Train widget's patch size; e.g. "
                                         r"32x32\), a smaller depth, or a batch size of 2 or more"):
        train(image, labels, config)
    fixed = replace(config, data=replace(config.data, batch_size=2))
    assert train(image, labels, fixed).network is not None  # the fix it names trains
