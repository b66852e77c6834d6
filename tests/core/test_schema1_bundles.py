"""Bundles written before the one-engine reshaping (schema 1, committed as fixtures) still
load through ``napari_medml.load_model`` and predict exactly what they predicted then."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import napari_medml as mm  # noqa: E402
from napari_medml.classification.model import Classifier  # noqa: E402
from napari_medml.config import InferConfig  # noqa: E402
from napari_medml.classification.data import image_samples  # noqa: E402
from napari_medml.samples import phantom_3d, shape_classes  # noqa: E402
from napari_medml.segmentation.model import Model  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def expected():
    return np.load(FIXTURES / "schema1_expected.npz")


def test_schema1_segmentation_bundle_loads_and_predicts_the_same(expected):
    model = mm.load_model(FIXTURES / "schema1_segmentation")
    assert isinstance(model, Model)
    s = phantom_3d(seed=0)
    # the fixture was predicted on the CPU in float32: exact equality holds there
    pred = model.predict(s.image[:, :48, :48], spacing=s.spacing, config=InferConfig(device="cpu"))
    np.testing.assert_array_equal(pred.labels, expected["segmentation"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_schema1_segmentation_bundle_predicts_the_same_on_cuda_with_mixed_precision(expected):
    model = mm.load_model(FIXTURES / "schema1_segmentation")
    s = phantom_3d(seed=0)
    pred = model.predict(s.image[:, :48, :48], spacing=s.spacing, config=InferConfig(device="cuda", amp=True))
    # float16 moves a few boundary voxels (36 of 110592 on an H200, 2026-11-30)
    assert np.mean(pred.labels == expected["segmentation"]) > 0.999


def test_schema1_classifier_bundle_loads_and_predicts_the_same(expected):
    clf = mm.load_model(FIXTURES / "schema1_classifier")
    assert isinstance(clf, Classifier)
    sc = shape_classes(seed=0, n=16, size=32)
    samples = image_samples(sc.images, labels=sc.labels, input_size=(32, 32))
    np.testing.assert_allclose(clf.predict_proba(samples), expected["classifier"], rtol=1e-4, atol=1e-5)
