"""Bundles written before the one-engine reshaping (schema 1, committed as fixtures) still
load through ``napari_medml.load_model`` and predict exactly what they predicted then."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import napari_medml as mm  # noqa: E402
from napari_medml.classification.model import Classifier  # noqa: E402
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
    pred = model.predict(s.image[:, :48, :48], spacing=s.spacing)
    np.testing.assert_array_equal(pred.labels, expected["segmentation"])


def test_schema1_classifier_bundle_loads_and_predicts_the_same(expected):
    clf = mm.load_model(FIXTURES / "schema1_classifier")
    assert isinstance(clf, Classifier)
    sc = shape_classes(seed=0, n=16, size=32)
    samples = image_samples(sc.images, labels=sc.labels, input_size=(32, 32))
    np.testing.assert_allclose(clf.predict_proba(samples), expected["classifier"], rtol=1e-4, atol=1e-5)
