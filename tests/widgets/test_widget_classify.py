"""Classify widget, driven as a user would: the shape_classes sample, paint, Start, results."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity

from napari_medml._widgets._forms import parse_size
from napari_medml._widgets.plots import TrainingPlot
from napari_medml.engine.reports import TrainReport

HELD_OUT = 16  # samples left unpainted: the accuracy is measured on them


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def setup(make_napari_viewer, open_widget):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-medml", "shape_classes")  # "shapes" + "shapes [ground truth]" (all painted)
    image, truth_layer = viewer.layers["shapes"], viewer.layers["shapes [ground truth]"]
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


def test_image_mode_classes_layer_plots_and_metrics(setup, qtbot, tmp_path) -> None:
    viewer, widget, truth, held = setup
    before = {layer.name: np.array(layer.data, copy=True) for layer in viewer.layers}
    t0 = time.perf_counter()
    widget["start"].changed.emit(True)
    assert widget.runner.running and widget["stop"].enabled
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=240000)
    seconds = time.perf_counter() - t0
    # the sample's truth is named like every sample's, so the result is the README's name
    result = viewer.layers["shapes [classes]"]
    assert result.data.shape == viewer.layers["shapes"].data.shape
    predicted = result.data[:, 0, 0]  # every sample is filled with its class
    assert all(np.all(result.data[i] == predicted[i]) for i in range(len(truth)))
    accuracy = float(np.mean(predicted[held] == truth[held]))
    print(f"held-out accuracy {accuracy:.3f} on {len(held)} unpainted samples; "
          f"validation {widget.classifier.metrics['accuracy']:.3f} AUC {widget.classifier.metrics['auc']:.3f}; "
          f"{seconds:.1f} s")
    assert accuracy >= 0.9
    table = result.metadata["samples"]  # one row per sample: what 'save table (CSV)' writes
    assert list(table)[:5] == ["sample", "class", "class_name", "prob_1", "prob_2"]
    assert len(table["class"]) == len(truth)
    np.testing.assert_allclose(table["prob_1"] + table["prob_2"], 1.0, rtol=1e-5)
    np.testing.assert_array_equal(table["class"], predicted)
    np.testing.assert_array_equal(table["sample"], np.arange(len(truth)))
    # trial 40: which samples the run trained on, validated on, or only classified
    parts = np.asarray(table["part"])
    assert set(parts[held]) == {"unlabelled"} and "unlabelled" not in set(np.delete(parts, held))
    n_val = widget.classifier.metrics["n"]
    assert (parts == "validation").sum() == n_val and (parts == "training").sum() == len(truth) - len(held) - n_val
    assert f"; {len(truth) - len(held) - n_val} trained on, {n_val} validated on" in widget["status"].value
    # the layer's values are class ids: one features row per class, found by napari through 'index'
    features = result.features
    names = viewer.layers["shapes [ground truth]"].metadata["class_names"]
    assert features["index"].tolist() == [1, 2]
    assert features["class_name"].tolist() == [str(names.get(1, names.get("1"))), str(names.get(2, names.get("2")))]
    assert features["count"].tolist() == [int((predicted == 1).sum()), int((predicted == 2).sum())]
    for c in (1, 2):
        chosen = predicted == c
        np.testing.assert_allclose(features["mean_prob"][c - 1], np.mean(table[f"prob_{c}"][chosen]), rtol=1e-5)
    for i in (0, int(np.flatnonzero(predicted != predicted[0])[0])):  # a sample of each class, hovered
        v = int(predicted[i])
        assert features["index"][result._label_index[v]] == v
        viewer.dims.current_step = (i, *viewer.dims.current_step[1:])  # napari reads the slice on screen
        status = result.get_status((i, 5.0, 5.0), world=False)["coordinates"]
        assert f"class_name: {features['class_name'][v - 1]}, count: {features['count'][v - 1]}" in status, status
    assert widget.plot.epochs == list(range(1, 11))
    assert widget.confusion.matrix is not None and np.sum(widget.confusion.matrix) == widget.classifier.metrics["n"]
    qtbot.waitUntil(lambda: widget.confusion.ready and widget.roc.ready, timeout=120000)  # drawn when they come
    assert widget.confusion.ax.images and widget.confusion.ax.texts
    assert len(widget.roc.ax.lines) >= 2  # chance diagonal + the curve
    assert "accuracy" in widget["metrics"].value and "AUC" in widget["metrics"].value
    assert "smooth: P" in widget["metrics"].value  # per-class precision/recall/F1
    for name, data in before.items():  # no user layer changed
        np.testing.assert_array_equal(viewer.layers[name].data, data)
    # 'save table (CSV)' keeps the class names, and evaluate names the classes by them (c35: the saved
    # table had no class_name column, which the README promised)
    widget["table"].value = tmp_path / "classes.csv"
    widget["save_table"].changed.emit(True)
    header = (tmp_path / "classes.csv").read_text().splitlines()[0]
    assert header.startswith("sample,class,class_name,prob_1,prob_2"), header
    (tmp_path / "truth.csv").write_text("sample,class\n" + "".join(f"{i},{c}\n" for i, c in enumerate(truth)))
    done = subprocess.run([sys.executable, "-m", "napari_medml", "evaluate",
                           "--prediction", str(tmp_path / "classes.csv"),
                           "--labels", str(tmp_path / "truth.csv"), "--report", str(tmp_path / "report.json")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    expected = {str(c): str(names.get(c, names.get(str(c)))) for c in (1, 2)}
    assert json.loads((tmp_path / "report.json").read_text())["class_names"] == expected
    assert all(name in done.stdout for name in expected.values()), done.stdout  # the matrix's rows


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
    assert widget.classifier is not None and "shapes [classes]" in viewer.layers
    assert widget["start"].enabled and not widget["stop"].enabled


def test_a_stop_in_the_first_epoch_says_it_never_validated(setup, qtbot) -> None:
    """Trial 49: it blamed the labels ("no class has two labelled samples") for a Stop."""
    viewer, widget, _, _ = setup
    widget["epochs"].value, widget["steps"].value = 2, 100000
    reports = []
    widget.start()
    widget.runner._on_report_cb = reports.append
    qtbot.waitUntil(lambda: len(reports) >= 2, timeout=60000)
    widget["stop"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30000)
    assert widget.classifier.history == [] and widget.classifier.metrics == {}
    assert widget["metrics"].value == ("stopped before its first epoch ended: never validated, so no metrics; Resume "
                                       "continues the run to measure")


def test_errors_are_notifications(setup, qtbot, notes, tmp_path) -> None:
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
    # a single 2D image with a class CSV: said to be no stack (its 64 rows are not samples)
    flat = viewer.add_image(np.zeros((64, 48), np.float32), name="flat")
    widget["level"].value, widget["image"].value, widget["source"].value = "image", flat, "CSV file"
    (tmp_path / "classes.csv").write_text("1\n2\n")
    widget["csv"].value = tmp_path / "classes.csv"
    widget["start"].changed.emit(True)
    # trial 42: with painted classes it said "spatial_dims 1 is not one of 2, 3"
    widget["source"].value = widget["source"].choices[0]
    widget["classes"].value = viewer.add_labels(np.ones((64, 48), np.uint8), name="flat classes")
    widget["start"].changed.emit(True)
    errors = [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert len(errors) == 5, errors
    assert errors[4] == errors[3]
    assert "only class 1" in errors[0] and "two" in errors[0]
    assert "instance labels" in errors[1]
    assert "tile size" in errors[2]
    assert errors[3] == ("Classification: image 'flat' has shape (64, 48): image-level classification needs a stack "
                         "whose first axis is the sample, (N, Y, X) or (N, Z, Y, X); a single 2D image has no "
                         "sample axis - stack the images, or use tile or object classification")
    assert [layer.name for layer in viewer.layers] == [*before, "one class", "flat", "flat classes"]
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


def test_tile_and_object_modes_make_their_layers(make_napari_viewer, open_widget, qtbot, tmp_path, notes) -> None:
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
    tiles = viewer.layers["tex [classes]"]
    assert tiles.data.shape == (64, 64)
    samples = tiles.metadata["samples"]
    assert list(samples)[:4] == ["tile", "start_y", "start_x", "class"] and len(samples["tile"]) == 16
    assert tiles.features["index"].tolist() == [1, 2] and tiles.features["count"].sum() == 16
    assert viewer.layers["tex [class probabilities]"].data.shape == (2, 64, 64)
    assert widget["metrics"].value == ("no validation samples (validation fraction 0): no metrics; give "
                                       "'validation' 0.2 to measure")
    assert widget["box"].native.isHidden()  # an object-level field (the window is not shown: ask Qt)
    widget["level"].value, widget["instances"].value, widget["input"].value = "object", inst, "16"
    assert not widget["box"].native.isHidden()
    widget["box"].value = "common"  # one box side for every object: size is seen too
    widget["bundle"].value = tmp_path / "bundle"
    widget["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    assert widget.classifier.sample_params["box"] == "common" and widget.classifier.sample_params["box_side"] > 0
    result = viewer.layers["tex [classes]"]  # the plugin's own layer is replaced
    samples = result.metadata["samples"]
    assert list(samples) == ["object", "class", "prob_1", "prob_2", "voxels", "part"] and len(samples["object"]) == 6
    assert np.all(result.data[instances == 0] == 0)
    assert [layer.name for layer in viewer.layers].count("tex [classes]") == 1
    # one features row per value of the layer: 0 (outside the objects), then each class
    assert result.features["index"].tolist() == [0, 1, 2]
    assert result.features["class_name"].tolist() == ["background", "class 1", "class 2"]
    assert result.features["count"].tolist() == [0, int((samples["class"] == 1).sum()),
                                                 int((samples["class"] == 2).sum())]
    objects = viewer.layers["tex [object classes]"]  # outlines whose features are the objects' rows
    np.testing.assert_array_equal(objects.data, instances)
    np.testing.assert_array_equal(inst.data, instances)  # the user's layer: unchanged, no features added
    assert inst.features.shape[1] == 0 and objects.contour == 1
    for k, oid in enumerate(samples["object"]):
        ys, xs = np.nonzero(instances == oid)
        yx = (float(ys[len(ys) // 2]), float(xs[len(xs) // 2]))
        v = int(result.data[int(yx[0]), int(yx[1])])
        assert v == samples["class"][k]
        assert f"class_name: class {v}, count: {result.features['count'][v]}" in result.get_status(yx)["coordinates"]
        hovered = objects.get_status(yx)["coordinates"]
        assert f"object: {oid}, class: {v}, class_name: class {v}, prob_1: " in hovered, hovered
    # 'save table (CSV)' writes what `napari-medml predict` writes for the same bundle and inputs...
    widget["save_table"].changed.emit(True)
    assert "choose the table CSV file" in notes[-1].message
    widget["table"].value = tmp_path / "widget.csv"
    widget["save_table"].changed.emit(True)
    assert "saved 6 rows to" in widget["status"].value
    from napari_medml.cli import main

    np.save(tmp_path / "tex.npy", image)
    np.save(tmp_path / "objects.npy", instances)
    assert main(["predict", "--model", str(tmp_path / "bundle"), "--image", str(tmp_path / "tex.npy"),
                 "--instances", str(tmp_path / "objects.npy"), "--out", str(tmp_path / "cli.npy"),
                 "--device", "cpu"]) == 0
    widget_csv, cli_csv = (tmp_path / "widget.csv").read_text(), (tmp_path / "cli.csv").read_text()
    # ... and, after training, the part of the run each row was in (trial 40)
    assert widget_csv.splitlines()[0] == "object,class,prob_1,prob_2,voxels,part"
    assert [line.rsplit(",", 1)[0] for line in widget_csv.splitlines()] == cli_csv.splitlines()
    assert [line.rsplit(",", 1)[1] for line in widget_csv.splitlines()[1:]] == list(samples["part"])


def test_object_classes_from_a_csv_keyed_by_object_id(make_napari_viewer, open_widget, qtbot, tmp_path,
                                                      notes) -> None:
    """Object level, 'classes from: CSV file': object id and class rows, as a spreadsheet
    (or a saved table) has them; ids the instance layer does not have are one error line."""
    viewer = make_napari_viewer()
    image = np.zeros((64, 64), np.float32)
    instances = np.zeros((64, 64), np.int32)
    for k, (y, x) in enumerate([(2, 4), (2, 36), (20, 4), (20, 36), (40, 20), (40, 52)], start=1):
        instances[y:y + 10, x:x + 8] = k
        image[y:y + 10, x:x + 8] = 1.0 if k % 2 else 0.3  # odd objects are bright
    img = viewer.add_image(image, name="cells")
    inst = viewer.add_labels(instances, name="objects")
    widget = open_widget(viewer, "classify")
    widget["level"].value = "object"
    assert not widget["source"].native.isHidden()  # the viewer's window is not shown: ask Qt
    widget["source"].value = "CSV file"
    assert not widget["csv"].native.isHidden() and widget["classes"].native.isHidden()
    widget["image"].value, widget["instances"].value, widget["input"].value = img, inst, "16"
    widget["channels"].value, widget["epochs"].value, widget["steps"].value = 8, 2, 3
    widget["val_fraction"].value = 0.0
    table = tmp_path / "classes.csv"
    table.write_text("object,class\n1,1\n2,2\n3,1\n4,2\n9,1\n")
    widget["csv"].value = table
    widget["start"].changed.emit(True)
    assert notes[-1].message == ("Classification: class file 'classes.csv' lists object(s) 9 that instances "
                                 "'objects' do not have (6 objects, ids 1..6): give the instance labels the "
                                 "table was made from, or remove those rows")
    assert not widget.runner.running and widget["status"].value == notes[-1].message  # also on the panel
    table.write_text("object,class\n1,1\n2,2\n3,1\n4,2\n")  # objects 5 and 6 unknown
    widget["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    samples = viewer.layers["cells [classes]"].metadata["samples"]
    assert samples["object"].tolist() == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(inst.data, instances)  # the user's layer: unchanged
    # trial 38: 'save table' onto the class CSV replaced the user's classes with the predictions
    widget["table"].value = table
    widget["save_table"].changed.emit(True)
    assert notes[-1].message == (f"Classification: 'table CSV' {table} is the 'class CSV' the classes are read "
                                 "from: outputs never overwrite inputs; choose another file name")
    assert table.read_text() == "object,class\n1,1\n2,2\n3,1\n4,2\n"


def _unet_bundle(folder, task: str, images: np.ndarray):
    """A tiny 2D U-Net bundle, width 4, depth 2, instance norm: Pretrain's or Train's."""
    from napari_medml import api
    from napari_medml.bundles.format import save_model
    from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
    from napari_medml.nn.segmentation import build_network
    from napari_medml.segmentation.model import Model

    model = ModelConfig(channels=4, depth=2)
    if task == "pretraining":
        config = TrainConfig(task="pretraining", data=DataConfig(spatial_dims=2, patch_size=(32, 32), batch_size=2),
                             model=model, augment=AugmentConfig.none(), device="cpu",
                             optim=OptimConfig(epochs=1, steps_per_epoch=2))
        return api.train(list(images[:4]), None, config).save(folder)
    config = TrainConfig(model=model)
    return save_model(Model(build_network(model, 2, 1, 2), config, (0, 1), 1, 2, (32, 32), None,
                            {"method": "none", "channels": [{}]}), folder)


@pytest.mark.parametrize("task", ["pretraining", "segmentation"])
def test_start_from_a_pretrain_or_segmentation_bundle(setup, qtbot, tmp_path, notes, task) -> None:
    """The form says smallcnn, width 8, depth 4 (no depth field), batch norm: the bundle's U-Net
    (width 4, depth 2, instance norm) is taken as 'unet-encoder', all of its encoder loads."""
    viewer, widget, _, _ = setup
    bundle = _unet_bundle(tmp_path / task, task, viewer.layers["shapes"].data)
    widget["init"].value, widget["freeze"].value = bundle, 1
    widget["epochs"].value, widget["steps"].value = 2, 3
    widget["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    assert not [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    clf = widget.classifier
    m = clf.config.model
    assert (m.network, m.channels, m.depth, m.norm) == ("unet-encoder", 4, 2, "instance")
    start = clf.provenance["initial_weights"]
    encoder = [k for k in clf.network.state_dict() if not k.startswith("head")]
    assert start["task"] == task and start["loaded"] == len(encoder) == 10 and start["total"] == 12
    assert widget.plot.epochs == [1, 2] and np.isfinite(clf.history[-1]["train_loss"])
    # the loss curve is each epoch's mean, the value the history keeps
    assert widget.plot.train_loss == pytest.approx([h["train_loss"] for h in clf.history], rel=1e-6)
    assert "network unet-encoder, width 4, depth 2, instance norm: the start bundle's" in widget["status"].value
    # trial 48: what was loaded and frozen was said while it ran, and gone from the result's line
    assert (f"started from 10 of 12 tensors from {bundle}; the output layer starts new (the bundle's network is for "
            f"{task}); the first encoder stage frozen" in widget["status"].value), widget["status"].value
    assert "shapes [classes]" in viewer.layers


def test_a_bundle_no_classifier_shares_is_one_error_line(setup, qtbot, tmp_path, notes) -> None:
    from napari_medml.bundles.format import save_model
    from napari_medml.config import ModelConfig, TrainConfig
    from napari_medml.nn.segmentation import build_network
    from napari_medml.segmentation.model import Model

    viewer, widget, _, _ = setup
    config = TrainConfig(model=ModelConfig(network="segresnet", channels=8, depth=2))
    bundle = save_model(Model(build_network(config.model, 2, 1, 2, patch_size=(32, 32)), config, (0, 1), 1, 2,
                              (32, 32), None, {"method": "none", "channels": [{}]}), tmp_path / "segres")
    widget["init"].value = bundle
    widget["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    errors = [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert f"start bundle {bundle} holds a 'segresnet' network, which no classifier shares: start from a " \
           "classification bundle or a segmentation or pretraining 'unet'" in errors[0]
    assert widget.classifier is None and "shapes [classes]" not in viewer.layers


def test_a_saved_classifier_classifies_new_objects_and_predict_refuses_it(make_napari_viewer, open_widget, qtbot,
                                                                           tmp_path, notes) -> None:
    from dataclasses import replace

    from napari_medml.classification.levels import object_samples
    from napari_medml.classification.model import classification_config
    from napari_medml.classification.task import train_classifier
    from napari_medml.config import AugmentConfig
    from napari_medml.samples import shape_classes

    sc = shape_classes(seed=1, n=6, size=32)
    image = np.concatenate(list(sc.images), axis=1)  # six shapes side by side, one id each
    instances = np.concatenate([(lab > 0) * (i + 1) for i, lab in enumerate(sc.labels)], axis=1).astype(np.int32)
    paint = np.concatenate(list(sc.labels), axis=1).astype(np.uint8)
    cfg = classification_config(2, epochs=1, steps_per_epoch=2)
    cfg = replace(cfg, augment=AugmentConfig.none(), data=replace(cfg.data, val_fraction=0.34),
                  model=replace(cfg.model, channels=4, depth=2))
    samples = object_samples(image, instances, class_labels=paint, input_size=(16, 16), box="common")
    bundle = train_classifier(samples, cfg).save(tmp_path / "objects-model")
    viewer = make_napari_viewer()
    layer = viewer.add_image(image, name="new")
    inst = viewer.add_labels(instances, name="cells")
    widget = open_widget(viewer, "classify")
    widget["image"].value, widget["saved"].value = layer, bundle
    widget["apply"].changed.emit(True)  # level 'image': no instances chosen
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    assert widget["status"].value == ("Classification: 'objects-model' classifies objects: set 'classify' to "
                                      "object and choose the instance labels ('instances')")
    widget["level"].value, widget["instances"].value = "object", inst
    widget["apply"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    result = viewer.layers["new [classes]"]
    assert result.data.shape == image.shape and np.all(result.data[instances == 0] == 0)
    assert set(np.unique(result.data[instances > 0])) <= {1, 2}
    assert widget["status"].value.startswith("6 objects classified") and "trained on" not in widget["status"].value
    # trial 31: the bundle's validation read as a score of this image
    assert widget["metrics"].value.startswith(  # trial 48: it said "use Evaluate", which scores segmentations
        "the bundle's own validation when it was trained (to score this image, save its 'table CSV' and run "
        "napari-medml evaluate --prediction TABLE --labels TRUE_CLASSES):\nvalidation (2 samples")
    assert widget.classifier.sample_params["box"] == "common"
    predict = open_widget(viewer, "predict")
    predict["images"].value = [layer]
    predict["model"].value = "bundle folder..."
    predict["bundle"].value = bundle
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=60000)
    assert predict["status"].value == ("Prediction: 'objects-model' is a classifier: Predict segments images; "
                                       "classify with it in Plugins › MedML › Classify ('classify with bundle') "
                                       "or napari-medml predict")
    assert [l.name for l in viewer.layers] == ["new", "cells", "new [classes]", "new [object classes]"]


def test_a_multichannel_file_classifies_with_its_channels_as_the_command_line_does(
        make_napari_viewer, open_widget, qtbot, tmp_path, notes) -> None:
    """Review 20: a 2-channel CYX TIFF opened by the reader (one layer with a ``c`` axis) was
    taken as a 3D image by Classify (only RGB gave channels); `train --task classification`
    takes the file's C axis as channels. Now both train a 2D classifier of 2 channels, and
    the results lie on the image's (Y, X) grid."""
    import tifffile

    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 64, 64)).astype(np.float32)
    image[:, :, 32:] += 3.0
    classes = np.ones((64, 64), np.uint8)
    classes[:, 32:] = 2
    tifffile.imwrite(tmp_path / "two.tif", image, imagej=True, resolution=(2.0, 2.0), metadata={"axes": "CYX"})
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "two.tif"), plugin="napari-medml")
    from napari_medml.layer_data import layer_axes

    # the layer's axes as the plugin reads them (napari 0.5.0 takes no axis labels from a reader)
    assert layer.data.shape == (2, 64, 64)
    assert layer_axes(layer.data.ndim, layer.axis_labels, layer.metadata, False) == "CYX"
    painted = viewer.add_labels(classes, name="tiles", scale=layer.scale[1:])
    widget = open_widget(viewer, "classify")
    widget["level"].value, widget["image"].value, widget["classes"].value = "tile", layer, painted
    widget["tile"].value, widget["epochs"].value, widget["steps"].value = "16", 1, 2
    widget["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    assert not [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert widget.classifier.in_channels == 2 and widget.classifier.spatial_dims == 2
    result = viewer.layers["two [classes]"]
    assert result.data.shape == (64, 64) and tuple(result.scale) == (0.5, 0.5)
    assert viewer.layers["two [class probabilities]"].data.shape[-2:] == (64, 64)


def test_early_stopping_is_said_with_the_result(setup, qtbot) -> None:
    """Trial 42: a run that stopped early at epoch 10 of 30 said only '240 images classified'
    (the command line prints the reason)."""
    viewer, widget, _, _ = setup
    widget["epochs"].value, widget["steps"].value, widget["patience"].value = 30, 1, 1
    widget["lr"].value = 1e-6  # nothing improves: the run stops at its second epoch
    widget["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    status = widget["status"].value
    assert "classified" in status and status.endswith(")"), status
    assert re.search(r" \(early stopping: no improvement for 1 epoch\w* \(best epoch 1\)\)$", status), status
    assert len(widget.classifier.history) == 2
