"""Augmentation widget: edits the session's AugmentConfig; Preview makes two new layers."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_medml._widgets._session import session_for
from napari_medml.config import AugmentConfig
from napari_medml.samples import phantom_3d


@pytest.fixture
def notes():
    records = []
    notification_manager.notification_ready.connect(records.append)
    yield records
    notification_manager.notification_ready.disconnect(records.append)


@pytest.fixture
def setup(make_napari_viewer, open_widget):
    viewer = make_napari_viewer()
    p = phantom_3d(0)
    image = viewer.add_image(p.image[16:32, 16:80, 16:80], name="ct", scale=p.spacing)
    labels = viewer.add_labels(p.labels[16:32, 16:80, 16:80], name="seg", scale=p.spacing)
    widget = open_widget(viewer, "augment")
    return viewer, widget, image, labels


def test_form_is_the_session_config(setup):
    viewer, widget, _, _ = setup
    assert widget.config() == AugmentConfig()
    prob, strength = widget.specs["elastic"]
    prob.value, strength.value = 0.5, 2.0
    cfg = session_for(viewer).augment
    assert cfg.elastic.prob == pytest.approx(0.5) and cfg.elastic.strength == pytest.approx(2.0)
    widget.none_button.changed.emit(True)
    assert session_for(viewer).augment == AugmentConfig.none()
    assert "Gaussian noise" in widget.specs["noise"][0].tooltip


def test_preview_makes_sample_layers(setup, qtbot):
    viewer, widget, image, labels = setup
    before_image, before_labels = image.data.copy(), labels.data.copy()
    widget.image.value, widget.label_layer.value = image, labels
    widget.n.value = 3
    widget.spatial_dims.value = "2D"
    widget.preview_button.changed.emit(True)
    qtbot.waitUntil(lambda: "seg [augmentation preview]" in viewer.layers, timeout=30000)
    imgs = viewer.layers["ct [augmentation preview]"]
    labs = viewer.layers["seg [augmentation preview]"]
    assert imgs.data.shape == (3, *image.data.shape)
    assert labs.data.shape == (3, *labels.data.shape)
    assert tuple(imgs.scale) == (1.0, 2.0, 1.0, 1.0)
    assert set(np.unique(labs.data)) <= {0, 1, 2, 3}
    # a re-run replaces its own layers, never adds duplicates; inputs untouched
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=5000)
    widget.preview_button.changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30000)
    assert len(viewer.layers) == 4
    np.testing.assert_array_equal(image.data, before_image)
    np.testing.assert_array_equal(labels.data, before_labels)


def test_preview_errors_are_notifications(setup, qtbot, notes):
    viewer, widget, image, _ = setup
    bad = viewer.add_labels(np.zeros((5, 5, 5), np.uint8), name="small")
    widget.image.value, widget.label_layer.value = image, bad
    widget.preview_button.changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=5000)
    errors = [n for n in notes if n.severity == NotificationSeverity.ERROR]
    assert errors and "shape" in errors[0].message
    assert "small [augmentation preview]" not in viewer.layers
