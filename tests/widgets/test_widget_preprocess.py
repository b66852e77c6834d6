"""Preprocess widget: new layers, chained recipes, crop geometry, live preview, errors."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_medml.samples import phantom_3d


@pytest.fixture
def setup(make_napari_viewer, open_widget):
    viewer = make_napari_viewer()
    p = phantom_3d(0)
    image = viewer.add_image(p.image[:24] * 1000 - 500, name="ct", scale=p.spacing)
    labels = viewer.add_labels(p.labels[:24], name="seg", scale=p.spacing)
    widget = open_widget(viewer, "preprocess")
    widget["image"].value = image
    return viewer, widget, image, labels


def _apply(widget, qtbot):
    widget["apply"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30000)


def test_chain_makes_new_layers_with_recipe(setup, qtbot, open_widget):
    viewer, widget, image, _ = setup
    before = image.data.copy()
    widget["operation"].value = "ct_window"
    widget["preset"].value = "lung"
    _apply(widget, qtbot)
    windowed = viewer.layers["ct [window lung]"]
    assert windowed.data.min() >= 0 and windowed.data.max() <= 1
    widget["image"].value = windowed
    widget["operation"].value = "zscore"
    _apply(widget, qtbot)
    chained = viewer.layers["ct [window lung] [z-score]"]
    assert [s["operation"] for s in chained.metadata["preprocessing"]] == ["ct_window", "zscore"]
    assert chained.metadata["preprocess_source"] == "ct"
    assert abs(float(chained.data.mean())) < 1e-3
    np.testing.assert_array_equal(image.data, before)  # the input is never modified
    # the train widget takes the chain as its recipe
    train = open_widget(viewer, "train")
    cfg = train.config(recipe=tuple(__import__("napari_medml._widgets._layers", fromlist=["x"])
                                    .layer_recipe(chained)))
    assert [s.operation for s in cfg.data.preprocessing] == ["ct_window", "zscore"]


def test_resample_and_crop_keep_geometry(setup, qtbot):
    viewer, widget, image, labels = setup
    widget["operation"].value = "resample"
    widget["target_spacing"].value = "4, 2, 2"
    _apply(widget, qtbot)
    res = viewer.layers["ct [resample 4x2x2]"]
    assert tuple(res.scale) == (4.0, 2.0, 2.0) and res.data.shape == (12, 48, 48)
    widget["image"].value = image
    widget["operation"].value = "crop_labels"
    widget["crop_labels"].value = labels
    _apply(widget, qtbot)
    cropped = viewer.layers["ct [crop to seg]"]
    crop_labels = viewer.layers["seg [crop]"]
    assert cropped.data.shape == crop_labels.data.shape
    index = np.nonzero(labels.data)
    offset = np.array([ix.min() for ix in index])
    np.testing.assert_allclose(cropped.translate, offset * np.array(image.scale))
    assert crop_labels.data.all() or crop_labels.data.any()


def test_live_preview_and_errors(setup, qtbot):
    viewer, widget, image, _ = setup
    notes = []
    notification_manager.notification_ready.connect(notes.append)
    widget["operation"].value = "minmax"
    widget["live"].value = True
    preview = viewer.layers["ct [preview]"]
    assert preview.data.ndim == 2 and preview.data.max() == pytest.approx(1.0)
    widget["live"].value = False
    assert "ct [preview]" not in viewer.layers
    widget["operation"].value = "resample"
    widget["target_spacing"].value = "one, two"
    _apply(widget, qtbot)
    notification_manager.notification_ready.disconnect(notes.append)
    assert any(n.severity == NotificationSeverity.ERROR and "target spacing" in n.message
               for n in notes)
    assert [layer.name for layer in viewer.layers] == ["ct", "seg"]
