"""A layer given new data while a job on it runs gets no result of its old data (trial 49: Predict,
Pretrain and Preprocess laid the old pixels' result on the new ones without a word). Each widget is
opened from the Plugins menu; the data is replaced right after the click, before the job's result
comes back to the GUI thread."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _image() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((40, 48)).astype(np.float32)


def test_predict_shows_no_prediction_of_the_old_data(make_napari_viewer, open_widget, qtbot, tmp_path,
                                                     constant_model):
    from napari_medml._widgets.predict import BUNDLE_CHOICE

    bundle = constant_model(2, (0, 1), 1).save(tmp_path / "m")
    viewer = make_napari_viewer()
    layer = viewer.add_image(_image(), name="img")
    predict = open_widget(viewer, "predict")
    predict["images"].value = [layer]
    predict["model"].value = BUNDLE_CHOICE
    predict["bundle"].value = bundle
    predict["predict"].changed.emit(True)
    new = _image()[::-1].copy()
    layer.data = new
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=60000)
    assert "img [prediction]" not in viewer.layers
    assert predict["status"].value == ("image 'img' got new data while the job ran: its prediction (of the data it "
                                       "had) is not shown; run it again on the new data")
    np.testing.assert_array_equal(layer.data, new)
    predict["predict"].changed.emit(True)  # again: shown
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=60000)
    assert "img [prediction]" in viewer.layers and predict["status"].value.startswith("'img' segmented with")


def test_preprocess_shows_no_result_of_the_old_data(make_napari_viewer, open_widget, qtbot, notes):
    viewer = make_napari_viewer()
    layer = viewer.add_image(_image(), name="img")
    widget = open_widget(viewer, "preprocess")
    widget["image"].value, widget["operation"].value = layer, "zscore"
    widget["apply"].changed.emit(True)
    layer.data = _image() * 3
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30000)
    assert [l.name for l in viewer.layers] == ["img"]
    warnings = [n.message for n in notes if n.severity == NotificationSeverity.WARNING]
    assert warnings == ["Preprocessing: image 'img' got new data while the job ran: its 'z-score' result (of the "
                        "data it had) is not shown; run it again on the new data"], warnings


def test_pretrain_keeps_its_model_but_shows_no_reconstruction_of_the_old_data(make_napari_viewer, open_widget,
                                                                             qtbot, notes):
    viewer = make_napari_viewer()
    layer = viewer.add_image(_image(), name="img")
    pre = open_widget(viewer, "pretrain")
    pre["images"].value = [layer]
    pre["channels"].value, pre["depth"].value = 4, 2
    pre["epochs"].value, pre["steps"].value = 1, 2
    pre["start"].changed.emit(True)
    layer.data = _image() + 5
    qtbot.waitUntil(lambda: not pre.runner.running, timeout=120000)
    assert not [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert [l.name for l in viewer.layers] == ["img"]
    status = pre["status"].value
    assert status.startswith("model 'img pretrained' is ready") and status.endswith(
        "; image 'img' got new data while the job ran: the reconstruction (of the data it had) is not shown; run it "
        "again on the new data"), status


def test_classify_keeps_its_classifier_but_shows_no_classes_of_the_old_data(make_napari_viewer, open_widget, qtbot):
    """Review 49's doubt: Classify had no such guard; its classes of the old pixels were laid on the new."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-medml", "shape_classes")  # "shapes" + "shapes [ground truth]"
    image, truth = viewer.layers["shapes"], viewer.layers["shapes [ground truth]"]
    widget = open_widget(viewer, "classify")
    widget["image"].value, widget["classes"].value = image, truth
    widget["input"].value, widget["channels"].value = "32", 4
    widget["epochs"].value, widget["steps"].value = 1, 2
    before = [l.name for l in viewer.layers]
    widget["start"].changed.emit(True)
    new = np.asarray(image.data)[::-1].copy()
    image.data = new
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    assert [l.name for l in viewer.layers] == before
    assert widget["status"].value == ("image 'shapes' got new data while the job ran: the classifier is kept; its "
                                      "classification (of the data it had) is not shown; run it again on the new data")
    assert widget.classifier is not None and widget.result is None
    # trial 50: the kept classifier's validation was not shown either
    assert widget["metrics"].value.startswith("validation (") and "accuracy" in widget["metrics"].value, \
        widget["metrics"].value
    np.testing.assert_array_equal(image.data, new)
    widget["start"].changed.emit(True)  # again: shown
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    assert "shapes [classes]" in viewer.layers and " classified (" in widget["status"].value
    # review 50: a Resume after new data continues the run on the data it read at Start: not shown either
    from test_widget_resume import stop_at_first_report

    viewer.layers.remove("shapes [classes]")
    widget["epochs"].value, widget["steps"].value = 3, 4
    widget["start"].changed.emit(True)
    stop_at_first_report(widget)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    viewer.layers.remove("shapes [classes]")
    image.data = np.asarray(image.data)[::-1].copy()
    widget["resume"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    assert "shapes [classes]" not in viewer.layers and widget["status"].value.startswith(
        "image 'shapes' got new data while the job ran: the classifier is kept;"), widget["status"].value


def test_the_augmentation_preview_shows_no_samples_of_the_old_labels(make_napari_viewer, open_widget, qtbot, notes):
    viewer = make_napari_viewer()
    image = viewer.add_image(_image(), name="img")
    labels = viewer.add_labels((_image() > 0).astype(np.uint8), name="seg")
    widget = open_widget(viewer, "augment")
    widget.image.value, widget.label_layer.value = image, labels
    widget.preview_button.changed.emit(True)
    labels.data = np.zeros((40, 48), np.uint8)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    assert [l.name for l in viewer.layers] == ["img", "seg"]
    warnings = [n.message for n in notes if n.severity == NotificationSeverity.WARNING]
    assert warnings == ["Augmentation preview: layer 'seg' got new data while the job ran: its preview (of the data "
                        "it had) is not shown; run it again on the new data"], warnings

    # review 50: a layer removed while it draws gets no preview either
    widget.label_layer.value = labels
    widget.preview_button.changed.emit(True)
    viewer.layers.remove(labels)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    assert [l.name for l in viewer.layers] == ["img"]
    assert [n.message for n in notes if n.severity == NotificationSeverity.WARNING][-1] == (
        "Augmentation preview: layer 'seg' was removed while the job ran: its preview is not shown")


def test_classify_never_replaces_its_own_result_chosen_as_its_class_labels(make_napari_viewer, open_widget, qtbot):
    """Trial 50: 'shapes [classes]' chosen as the class labels was overwritten by the run's new result."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-medml", "shape_classes")
    image, truth = viewer.layers["shapes"], viewer.layers["shapes [ground truth]"]
    widget = open_widget(viewer, "classify")
    widget["image"].value, widget["classes"].value = image, truth
    widget["input"].value, widget["channels"].value = "32", 4
    widget["epochs"].value, widget["steps"].value = 1, 2
    widget["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    first = viewer.layers["shapes [classes]"]
    first.data = np.array(truth.data, copy=True)  # a result of every class (two steps learn one or two)
    kept = np.array(first.data, copy=True)
    widget["classes"].reset_choices()
    widget["classes"].value = first
    widget["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    assert viewer.layers["shapes [classes]"] is first
    np.testing.assert_array_equal(first.data, kept)
    assert "shapes [classes] (2)" in viewer.layers


def test_a_classify_result_edited_from_the_console_is_the_users(make_napari_viewer, open_widget, qtbot):
    """Trial 50: ``layer.data[...] = 3`` (no paint event) on 'shapes [classes]' was replaced by the next run;
    an unedited result is still refilled in place."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-medml", "shape_classes")
    image, truth = viewer.layers["shapes"], viewer.layers["shapes [ground truth]"]
    widget = open_widget(viewer, "classify")
    widget["image"].value, widget["classes"].value = image, truth
    widget["input"].value, widget["channels"].value = "32", 4
    widget["epochs"].value, widget["steps"].value = 1, 2
    widget["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    first = viewer.layers["shapes [classes]"]
    widget["start"].changed.emit(True)  # unedited: the plugin's own, refilled
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    assert viewer.layers["shapes [classes]"] is first and "shapes [classes] (2)" not in viewer.layers
    first.data[0, :4, :4] = 3 - first.data[0, 0, 0]  # from the console: no paint event
    first.refresh()
    edited = np.array(first.data, copy=True)
    widget["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    np.testing.assert_array_equal(viewer.layers["shapes [classes]"].data, edited)
    assert "shapes [classes] (2)" in viewer.layers
