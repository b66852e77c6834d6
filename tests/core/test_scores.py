"""The channel argmax of blended scores: the same labels as torch.argmax, ties to the first class."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medml.segmentation.scores import argmax_uint8


@pytest.mark.parametrize("shape", [(3, 300, 128, 512), (5, 7, 33, 17), (2, 6, 40), (1, 4, 4)])
def test_argmax_uint8_equals_torch_argmax_in_chunks_and_on_ties(shape) -> None:
    # (3, 300, 128, 512) is cut into two chunks along its first spatial axis (256 slices of 2**24 voxels)
    scores = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    scores[:, :2] = 0.5  # every class tied: class 0
    if shape[0] > 2:
        scores[0, 2:4], scores[1:, 2:4] = 0.1, 0.9  # classes 1 and up tied above class 0: class 1
    labels = argmax_uint8(scores)
    assert labels.dtype == np.uint8 and labels.shape == shape[1:]
    np.testing.assert_array_equal(labels, scores.argmax(0).numpy())
    assert (labels[:2] == 0).all() and (shape[0] < 3 or (labels[2:4] == 1).all())
