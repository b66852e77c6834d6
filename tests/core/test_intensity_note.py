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
