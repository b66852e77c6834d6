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
