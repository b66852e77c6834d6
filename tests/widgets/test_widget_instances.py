"""Instances in the viewer as a user gets them: Train (labels are: instances), Predict
(``<image> [instances]`` with its per-object ``features``; the post-processing controls
re-run only the mask creation on the cached outputs), and Classify's object level on
the predicted instances layer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_medml._widgets.predict import BUNDLE_CHOICE
from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
from napari_medml.instances.metrics import instance_scores
from napari_medml.samples import touching_objects_2d


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sample():
    return touching_objects_2d(1, shape=(128, 128))


@pytest.fixture(scope="module")
def bundle(sample, tmp_path_factory):
    """An instance model trained through the API and saved as a bundle folder."""
    import napari_medml

    config = TrainConfig(task="instances",
                         data=DataConfig(spatial_dims=2, patch_size=(32, 32), batch_size=4, val_fraction=0.0),
                         model=ModelConfig(channels=8, depth=3), augment=AugmentConfig(),
                         optim=OptimConfig(epochs=2, steps_per_epoch=60, learning_rate=3e-3), device="cpu")
    torch.set_num_threads(1)
    model = napari_medml.train(sample.image, sample.labels, config, spacing=(0.5, 0.5))
    return model.save(tmp_path_factory.mktemp("bundle") / "instance model")


def test_an_instance_table_of_a_layer_in_mm_predicted_by_a_um_model_is_in_mm(
        make_napari_viewer, open_widget, qtbot, sample, bundle, tmp_path) -> None:
    """Review 53: the table measured areas with the model's µm voxel size beside centroids from the
    layer's mm origin; also after the post-processing controls re-run it."""
    from napari_medml.api import load_model

    model = load_model(bundle)
    model.provenance["unit"] = "um"
    um_model = model.save(tmp_path / "um model")
    viewer = make_napari_viewer()
    try:
        image = viewer.add_image(sample.image, name="cells", scale=(0.0005, 0.0005), translate=(1.0, 2.0),
                                 units=("mm", "mm"))
    except TypeError:
        pytest.skip("napari 0.5.0 has no layer units")
    predict = open_widget(viewer, "predict")
    predict["images"].value = [image]
    predict["model"].value = BUNDLE_CHOICE
    predict["bundle"].value = um_model
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=120000)
    assert "layer 'cells' names its voxel size in mm" in predict["status"].value, predict["status"].value

    def check(layer) -> None:
        ids = np.unique(layer.data[layer.data > 0])
        assert len(ids) > 1
        biggest = ids[np.argmax([(layer.data == i).sum() for i in ids])]
        row = layer.features[layer.features["index"] == biggest].iloc[0]
        assert row["area"] == pytest.approx((layer.data == biggest).sum() * 0.0005 ** 2)  # mm², the layer's
        ys = np.nonzero(layer.data == biggest)[0]
        assert row["centroid_y"] == pytest.approx(1.0 + ys.mean() * 0.0005)

    check(viewer.layers["cells [instances]"])
    predict["seed_height"].value = 1.0  # the controls re-run the objects and their table
    qtbot.waitUntil(lambda: viewer.layers["cells [instances]"].metadata["instance_params"]["seed_height"] == 1.0,
                    timeout=30000)
    qtbot.waitUntil(lambda: not predict._instances_runner.running, timeout=30000)
    check(viewer.layers["cells [instances]"])


def test_train_widget_trains_an_instance_model(make_napari_viewer, open_widget, qtbot, sample) -> None:
    viewer = make_napari_viewer()
    image = viewer.add_image(sample.image, name="cells", scale=(0.5, 0.5))
    objects = viewer.add_labels(sample.labels, name="objects", scale=(0.5, 0.5))
    train = open_widget(viewer, "train")
    train["images"].value, train["labels"].value = [image], objects
    train["mode"].value = "instances"
    train["dims"].value = 2
    train["channels"].value, train["depth"].value, train["patch"].value = 4, 2, "32"
    train["epochs"].value, train["steps"].value, train["val_fraction"].value = 2, 3, 0.25
    train["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not train.runner.running, timeout=120000)
    model = train.model
    assert type(model).__name__ == "InstanceModel" and model.config.task == "instances"
    assert model.spacing == (0.5, 0.5)
    assert train.plot.epochs == [1, 2]
    assert "f1_at_0.5" in model.history[-1]["val_metrics"]
    np.testing.assert_array_equal(objects.data, sample.labels)  # the user's layer is untouched


def test_predict_shows_instances_with_features_and_reruns_only_post_processing(
        make_napari_viewer, open_widget, qtbot, sample, bundle) -> None:
    viewer = make_napari_viewer()
    image = viewer.add_image(sample.image, name="cells", scale=(0.5, 0.5), translate=(10.0, 20.0))
    predict = open_widget(viewer, "predict")
    predict["images"].value = [image]
    predict["model"].value = BUNDLE_CHOICE
    predict["bundle"].value = bundle
    # before predicting, the controls show the post-processing the bundle predicts with
    stored = json.loads((Path(bundle) / "config.json").read_text())["instance_params"]
    assert stored["min_size"] > 0  # not the controls' default (0)
    assert (predict["seed_height"].value, predict["min_distance"].value, predict["min_object_size"].value) == \
        pytest.approx((stored["seed_height"], stored["min_distance"], stored["min_size"]), abs=0.005)  # 2 decimals
    # review 44: an earlier semantic run's layers of this image stayed beside the instances
    from napari_medml.layer_data import PLUGIN_MARK

    stale = viewer.add_image(np.zeros(sample.image.shape, np.float32), name="cells [probability 1]",
                             metadata={PLUGIN_MARK: True})
    mine = viewer.add_image(np.zeros(sample.image.shape, np.float32), name="cells [uncertainty]")  # a user's
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=120000)
    layer = viewer.layers["cells [instances]"]
    assert layer.data.dtype == np.uint32 and layer.data.shape == sample.labels.shape
    assert tuple(layer.scale) == (0.5, 0.5) and tuple(layer.translate) == (10.0, 20.0)
    assert stale not in viewer.layers and mine in viewer.layers
    ids = np.unique(layer.data[layer.data > 0])
    table = layer.features
    assert list(table["index"]) == list(ids)  # one row per label id, napari's lookup column
    assert {"area", "centroid_y", "centroid_x", "mean_intensity", "max_intensity"} <= set(table.columns)
    biggest = ids[np.argmax([(layer.data == i).sum() for i in ids])]
    row = table[table["index"] == biggest].iloc[0]
    assert row["area"] == pytest.approx((layer.data == biggest).sum() * 0.25)
    ys = np.nonzero(layer.data == biggest)[0]
    assert row["centroid_y"] == pytest.approx(10.0 + ys.mean() * 0.5)
    m = instance_scores(sample.labels, layer.data).at(0.5)
    assert m.f1 >= 0.6, m  # a short training, but clearly learned objects (image seen in training)
    # the controls show the bundle's post-processing
    model = next(iter(predict._session.models.values()))
    assert predict["seed_height"].value == pytest.approx(model.params.seed_height)
    assert layer.metadata["instance_params"] == model.params.to_dict()

    # a new value re-runs only the mask creation: no network needed any more
    model.network = None
    before = int(layer.data.max())
    predict["seed_height"].value = 1.0  # no maximum rises that much: one object per component
    qtbot.waitUntil(lambda: not predict._instances_runner.running, timeout=30000)
    qtbot.waitUntil(lambda: viewer.layers["cells [instances]"].metadata["instance_params"]["seed_height"] == 1.0,
                    timeout=30000)
    merged = viewer.layers["cells [instances]"]
    assert int(merged.data.max()) < before and len(merged.features) == int(merged.data.max())
    assert [layer.name for layer in viewer.layers].count("cells [instances]") == 1
    # review 43: the CLI's --foreground-threshold had no control; a higher one shrinks the objects
    assert predict["foreground_threshold"].value == pytest.approx(model.params.foreground_threshold)
    area = int((merged.data > 0).sum())
    predict["foreground_threshold"].value = 0.95
    qtbot.waitUntil(lambda: viewer.layers["cells [instances]"].metadata["instance_params"]["foreground_threshold"]
                    == pytest.approx(0.95), timeout=90000)
    shrunk = viewer.layers["cells [instances]"].data
    assert 0 < int((shrunk > 0).sum()) < area and not (shrunk[merged.data == 0] > 0).any()  # inside the old ones
    predict["min_object_size"].value = 1e9
    qtbot.waitUntil(lambda: viewer.layers["cells [instances]"].data.max() == 0, timeout=30000)


def test_post_processing_set_before_the_first_predict_is_what_it_predicts_with(
        make_napari_viewer, open_widget, qtbot, sample, bundle) -> None:
    """Review 20: the values set before pressing Predict were ignored (the bundle's were used)
    and then overwritten in the controls by the bundle's."""
    viewer = make_napari_viewer()
    image = viewer.add_image(sample.image, name="cells", scale=(0.5, 0.5))
    predict = open_widget(viewer, "predict")
    predict["images"].value = [image]
    predict["model"].value = BUNDLE_CHOICE
    predict["bundle"].value = bundle
    predict["seed_height"].value, predict["min_object_size"].value = 0.95, 1e9  # larger than the image
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=120000)
    layer = viewer.layers["cells [instances]"]
    assert layer.data.max() == 0  # every object is under the minimum size
    assert layer.metadata["instance_params"]["min_size"] == 1e9
    assert layer.metadata["instance_params"]["seed_height"] == pytest.approx(0.95)
    assert (predict["seed_height"].value, predict["min_object_size"].value) == (pytest.approx(0.95), 1e9)


def test_an_instance_ensemble_is_refused_in_one_line(make_napari_viewer, open_widget, qtbot, sample, notes) -> None:
    """Review 20: instances with ensemble (folds) 3 trained one model that claimed 3 folds."""
    viewer = make_napari_viewer()
    image = viewer.add_image(sample.image, name="cells")
    objects = viewer.add_labels(sample.labels, name="objects")
    train = open_widget(viewer, "train")
    train["images"].value, train["labels"].value = [image], objects
    train["mode"].value, train["dims"].value, train["folds"].value = "instances", 2, 3
    train["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not train.runner.running, timeout=60000)
    assert train.model is None
    said = [n.message for n in notes if "folds 3" in n.message]
    assert said and "task 'instances' trains one model: set folds to 1" in said[0], [n.message for n in notes]
    with pytest.raises(Exception, match="is for task 'segmentation'"):
        TrainConfig(task="instances", data=DataConfig(folds=3))


def test_classify_object_level_takes_the_predicted_instances(
        make_napari_viewer, open_widget, qtbot, sample, bundle) -> None:
    viewer = make_napari_viewer()
    image = viewer.add_image(sample.image, name="cells")
    predict = open_widget(viewer, "predict")
    predict["images"].value = [image]
    predict["model"].value = BUNDLE_CHOICE
    predict["bundle"].value = bundle
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=120000)
    instances = viewer.layers["cells [instances]"]
    # paint a class on some objects: left half class 1, right half class 2
    paint = np.zeros(sample.labels.shape, np.uint8)
    paint[::8, 10:50] = 1
    paint[::8, 78:118] = 2
    paint[instances.data == 0] = 0
    classes = viewer.add_labels(paint, name="paint")
    classify = open_widget(viewer, "classify")
    classify["image"].value, classify["classes"].value = image, classes
    classify["level"].value, classify["instances"].value, classify["input"].value = "object", instances, "16"
    classify["channels"].value, classify["epochs"].value, classify["steps"].value = 8, 1, 2
    classify["val_fraction"].value = 0.0
    classify["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not classify.runner.running, timeout=60000)
    result = viewer.layers["cells [classes]"]
    assert len(result.metadata["samples"]["object"]) == int(instances.data.max())  # one row per predicted object
    objects = viewer.layers["cells [object classes]"]  # hovering an object shows its own row
    assert list(objects.features["index"]) == list(range(1, int(instances.data.max()) + 1))
    assert np.all(result.data[instances.data == 0] == 0)
