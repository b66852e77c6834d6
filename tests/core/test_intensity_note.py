"""A model normalizes with its training statistics: an image in other units is said in one line."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medml.config import PreprocessStep
from napari_medml.preprocessing.normalization import fit_normalization, intensity_note

RNG = np.random.default_rng(0)
TRAIN = (100.0 + 20.0 * RNG.standard_normal((1, 16, 32, 32))).astype(np.float32)


@pytest.mark.parametrize("method", ["zscore", "zscore_nonzero", "percentile", "minmax"])
def test_other_units_are_flagged_and_the_same_units_are_not(method):
    stats = fit_normalization([TRAIN], method)
    other = (100.0 + 20.0 * RNG.standard_normal((16, 32, 32))).astype(np.float32)  # another scan, same units
    assert intensity_note(other, None, stats, "image 'b'") is None
    assert intensity_note(other[4:12], None, stats, "image 'b'") is None  # a crop of it
    line = intensity_note(other * 10, None, stats, "image 'b'")  # a x10 gain
    assert line.startswith("image 'b' has intensities far from the training images'") and method in line
    assert intensity_note(other / 10, None, stats, "image 'b'") is not None


def test_channels_ct_and_a_per_image_recipe():
    two = np.stack([TRAIN[0], TRAIN[0] * 2])
    stats = fit_normalization([two], "zscore")
    image = np.stack([TRAIN[0], TRAIN[0] * 40], axis=-1)  # channels last
    assert "(channel 1)" in intensity_note(image, 3, stats, "image 'c'")
    assert intensity_note(TRAIN[0] * 10, None, fit_normalization([TRAIN], "ct"), "x") is None  # HU: absolute
    per_image = (PreprocessStep("zscore", {}),)  # the recipe z-scores each image by itself
    assert intensity_note(TRAIN[0] * 10, None, fit_normalization([TRAIN], "zscore"), "x", per_image) is None


def test_a_prediction_of_background_only_is_said_in_one_line(constant_model):
    import dask.array as da

    from napari_medml.segmentation.prediction import background_note, predict_oriented

    image = RNG.standard_normal((40, 36)).astype(np.float32)
    lines = []
    pred = predict_oriented(constant_model(2, (0, 2, 5), 0), image, spacing=(1.0, 1.0), affine=None,
                            name="layer 'cells'", notes=lines.append)
    assert not pred.labels.any()
    assert lines == ["layer 'cells': the model found background only (class 0), not any of classes 2, 5: check "
                     "that the image looks like the training images (its channel, intensity range and voxel size), "
                     "or label some of it and train again"]
    lines.clear()
    pred = predict_oriented(constant_model(2, (0, 2, 5), 2), image, spacing=(1.0, 1.0), affine=None,
                            notes=lines.append)
    assert (pred.labels == 5).all() and lines == []
    lazy = da.zeros((64, 64, 64), dtype=np.uint8, chunks=16)
    assert background_note(lazy, (0, 1), "x").startswith("x: the model found background only")
    assert background_note(da.where(da.arange(64) == 63, 1, 0).astype(np.uint8), (0, 1)) is None  # one voxel found
    assert background_note(np.zeros((4, 4), np.uint8), (0,)) is None  # one class: nothing else to find


def test_a_background_only_result_of_the_min_size_says_so(constant_model):
    """Review 49: the model found class 1 everywhere, and min size removed it; the line blamed the image."""
    from napari_medml.config import InferConfig
    from napari_medml.segmentation.prediction import predict_oriented

    image = RNG.standard_normal((40, 36)).astype(np.float32)
    blobs = RNG.standard_normal((40, 36)) > 1.5  # the objects min size will remove: a model of them
    lines = []
    model = constant_model(2, (0, 1), 1)
    model.network.register_forward_hook(lambda m, i, o: o * 0 + torch_blobs(blobs, o))
    predict_oriented(model, image, spacing=(1.0, 1.0), affine=None, name="x",
                     config=InferConfig(min_size=1000, tta=False), notes=lines.append)
    assert lines == ["x: background only (class 0) is left, not class 1, after objects under 1000 voxels were "
                     "removed (min size): lower it to see what the model found"], lines


def torch_blobs(blobs, out):
    import torch

    logits = torch.zeros_like(out)
    logits[:, 1] = torch.as_tensor(np.where(blobs, 5.0, -5.0), dtype=out.dtype)[: out.shape[2], : out.shape[3]]
    return logits
