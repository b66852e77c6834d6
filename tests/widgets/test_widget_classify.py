"""Classify widget, driven as a user would: the shape_classes sample, paint, Start, results."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_medml._widgets._forms import parse_size
from napari_medml._widgets.plots import TrainingPlot
from napari_medml.engine.reports import TrainReport

HELD_OUT = 16  # samples left unpainted: the accuracy is measured on them


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny networks: one thread is faster, and immune to a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def notes():
    records = []
    notification_manager.notification_ready.connect(records.append)
    yield records
    notification_manager.notification_ready.disconnect(records.append)


@pytest.fixture
def setup(make_napari_viewer, open_widget):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-medml", "shape_classes")  # "shapes" + "shapes [classes]" (all painted)
    image, truth_layer = viewer.layers["shapes"], viewer.layers["shapes [classes]"]
    truth = np.asarray(truth_layer.metadata["sample_classes"])
    paint = np.array(truth_layer.data, copy=True)
    rng = np.random.default_rng(0)
    held = np.sort(rng.choice(len(truth), HELD_OUT, replace=False))
    paint[held] = 0  # as if the user painted only the other samples
    painted = viewer.add_labels(paint, name="paint", scale=image.scale,
                                metadata={"class_names": truth_layer.metadata["class_names"]})
    widget = open_widget(viewer, "classify")
    widget["image"].value = image
    widget["classes"].value = painted
    widget["input"].value = "32"
    widget["channels"].value = 8
    widget["epochs"].value, widget["steps"].value = 10, 10
    widget["lr"].value = 3e-3
    widget["val_fraction"].value = 0.25
    return viewer, widget, truth, held


def test_network_choices_are_the_registry(setup) -> None:
    from napari_medml.nn.classification import CLASSIFIER_NETWORKS

    _, widget, _, _ = setup
    assert list(widget["network"].choices) == list(CLASSIFIER_NETWORKS)


def test_parse_size() -> None:
    assert parse_size("0", 2, "input size") is None
    assert parse_size("32", 2, "tile size") == (32, 32)
    with pytest.raises(ValueError, match="tile size"):
        parse_size("8, 8, 8", 2, "tile size")


def test_image_mode_classes_layer_plots_and_metrics(setup, qtbot) -> None:
    viewer, widget, truth, held = setup
    before = {layer.name: np.array(layer.data, copy=True) for layer in viewer.layers}
    t0 = time.perf_counter()
    widget["start"].changed.emit(True)
    assert widget.runner.running and widget["stop"].enabled
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=240000)
    seconds = time.perf_counter() - t0
    # The sample's own labels layer is already called "shapes [classes]" and is not the
    # plugin's: the result takes the next free name instead of overwriting it.
    result = viewer.layers["shapes [classes] (2)"]
    assert result.data.shape == viewer.layers["shapes"].data.shape
    predicted = result.data[:, 0, 0]  # every sample is filled with its class
    assert all(np.all(result.data[i] == predicted[i]) for i in range(len(truth)))
    accuracy = float(np.mean(predicted[held] == truth[held]))
    print(f"held-out accuracy {accuracy:.3f} on {len(held)} unpainted samples; "
          f"validation {widget.classifier.metrics['accuracy']:.3f} AUC {widget.classifier.metrics['auc']:.3f}; "
          f"{seconds:.1f} s")
    assert accuracy >= 0.9
    table = result.features
    assert list(table.columns[:4]) == ["sample", "class", "prob_1", "prob_2"] and len(table) == len(truth)
    np.testing.assert_allclose(table["prob_1"] + table["prob_2"], 1.0, rtol=1e-5)
    np.testing.assert_array_equal(table["class"], predicted)
    assert widget.plot.epochs == list(range(1, 11))
    assert widget.confusion.matrix is not None and np.sum(widget.confusion.matrix) == widget.classifier.metrics["n"]
    assert widget.confusion.ax.images and widget.confusion.ax.texts
    assert len(widget.roc.ax.lines) >= 2  # chance diagonal + the curve
    assert "accuracy" in widget["metrics"].value and "AUC" in widget["metrics"].value
    assert "smooth: P" in widget["metrics"].value  # per-class precision/recall/F1
    for name, data in before.items():  # no user layer changed
        np.testing.assert_array_equal(viewer.layers[name].data, data)


def test_stop_keeps_the_classifier(setup, qtbot) -> None:
    viewer, widget, _, _ = setup
    widget["epochs"].value = 1000
    reports = []
    widget.start()
    widget.runner._on_report_cb = reports.append  # observe (the plots are then not fed)
    qtbot.waitUntil(lambda: len(reports) >= 2, timeout=60000)
    t0 = time.perf_counter()
    widget["stop"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30000)
    assert time.perf_counter() - t0 < 10.0
    assert widget.classifier is not None and "shapes [classes] (2)" in viewer.layers
    assert widget["start"].enabled and not widget["stop"].enabled


def test_errors_are_notifications(setup, qtbot, notes) -> None:
    viewer, widget, _, _ = setup
    before = [layer.name for layer in viewer.layers]
    one_class = np.zeros_like(viewer.layers["paint"].data)
    one_class[:10] = 1
    widget["classes"].value = viewer.add_labels(one_class, name="one class")
    widget["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30000)
    widget["level"].value = "object"
    widget["instances"].value = None
    widget["start"].changed.emit(True)
    widget["level"].value = "tile"
    widget["tile"].value = "8, 8"  # the stack is 3D here
    widget["image"].value = viewer.layers["shapes"]
    widget["start"].changed.emit(True)
    errors = [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    print(errors)
    assert len(errors) == 3
    assert "only class 1" in errors[0] and "two" in errors[0]
    assert "instance labels" in errors[1]
    assert "tile size" in errors[2]
    assert [layer.name for layer in viewer.layers] == [*before, "one class"]
    assert widget.classifier is None


def test_late_report_after_close_is_ignored(qtbot) -> None:
    plot = TrainingPlot(metric="accuracy")
    plot.close()
    plot.deleteLater()
    qtbot.wait(50)
    report = TrainReport(step=5, epoch=1, total_steps=10, train_loss=0.5, learning_rate=1e-3,
                         elapsed_s=1.0, eta_s=1.0, epoch_end=True, val_loss=0.4,
                         val_metrics={"accuracy": 0.8})
    plot.add(report)  # must not raise "wrapped C/C++ object ... has been deleted"
    assert plot.val_dice == [0.8]


def test_tile_and_object_modes_make_their_layers(make_napari_viewer, open_widget, qtbot) -> None:
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 0.1, (64, 64)).astype(np.float32)
    image[:, 32:] += np.sin(np.arange(32) * 1.5)[None, :]
    paint = np.zeros((64, 64), np.uint8)
    paint[4:60:16, 8], paint[4:60:16, 40] = 1, 2
    instances = np.zeros((64, 64), np.int32)
    for k, (y, x) in enumerate([(0, 4), (0, 36), (16, 4), (16, 36), (40, 20), (40, 52)], start=1):  # 4 painted
        instances[y:y + 10, x:x + 8] = k
    img = viewer.add_image(image, name="tex")
    painted = viewer.add_labels(paint, name="paint")
    inst = viewer.add_labels(instances, name="objects")
    widget = open_widget(viewer, "classify")
    widget["image"].value, widget["classes"].value = img, painted
    widget["channels"].value, widget["epochs"].value, widget["steps"].value = 8, 2, 3
    widget["val_fraction"].value = 0.0
    widget["level"].value, widget["tile"].value = "tile", "16"
    widget["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    assert viewer.layers["tex [classes]"].data.shape == (64, 64)
    assert len(viewer.layers["tex [classes]"].features) == 16
    assert viewer.layers["tex [class probabilities]"].data.shape == (2, 64, 64)
    widget["level"].value, widget["instances"].value, widget["input"].value = "object", inst, "16"
    widget["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    result = viewer.layers["tex [classes]"]  # the plugin's own layer is replaced
    assert list(result.features.columns[:2]) == ["object", "class"] and len(result.features) == 6
    assert np.all(result.data[instances == 0] == 0)
    assert [layer.name for layer in viewer.layers].count("tex [classes]") == 1
