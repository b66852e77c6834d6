"""Widgets on dask/zarr-backed layers, opened through the Plugins menu: previews read
only the region the viewer shows; operations that need the whole array refuse a layer
larger than the memory budget with one line naming it and the fix; none loads it."""

from __future__ import annotations

from dataclasses import replace

import dask.array as da
import napari
import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity

from napari_medml._widgets._layers import MEMORY_ENV

# trains in the GUI: one torch thread keeps the waits steady on a busy 2-core machine (two threads
# spinning against Xvfb and the GUI thread made a step 10-20x slower)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Counting:
    """An array that records the largest region read from it (dask reads chunk by chunk)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, array.ndim
        self.largest = 0

    def __getitem__(self, key):
        out = self.array[key]
        self.largest = max(self.largest, int(np.size(out)))
        return out


def _lazy(array: np.ndarray, chunks: tuple[int, ...]) -> tuple[da.Array, Counting]:
    source = Counting(array)
    return da.from_array(source, chunks=chunks, asarray=False), source


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(24, 160, 160)).astype(np.float32)
    labels = (image > 1.0).astype(np.uint8)
    return image, labels


def test_preprocess_previews_one_slice_and_refuses_a_large_layer(make_napari_viewer, open_widget, qtbot, notes,
                                                                 volume, monkeypatch):
    image, _ = volume
    data, source = _lazy(image, (4, 40, 40))
    viewer = make_napari_viewer()
    layer = viewer.add_image(data, name="big")
    widget = open_widget(viewer, "preprocess")
    widget["image"].value = layer
    widget["operation"].value = "minmax"
    widget["live"].value = True
    preview = viewer.layers["big [preview]"]
    assert preview.data.shape == image.shape[1:]
    assert source.largest <= 4 * 40 * 40  # the shown slice, one chunk at a time: never the volume
    widget["live"].value = False
    monkeypatch.setenv(MEMORY_ENV, "1")  # the layer (2.3 MiB) is over the budget
    widget["apply"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30000)
    errors = [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert any("'big' is a 2 MiB on-disk layer: preprocessing needs it whole in memory" in m for m in errors), errors
    assert [lay.name for lay in viewer.layers] == ["big"] and source.largest <= 4 * 40 * 40
    # trial 46: the budget counted the layer's bytes; a uint8 layer's float32 copies are 13 times that
    small, _ = _lazy((image > 0).astype(np.uint8), (4, 40, 40))  # 600 KiB, under the 1 MiB budget
    widget["image"].value = viewer.add_image(small, name="bytes")
    widget["apply"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30000)
    errors = [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert ("Preprocessing: 'bytes' is a 600 KiB on-disk layer: preprocessing needs it whole in memory (about 8 "
            "MiB with the working copies); crop it") in errors[-1], errors[-1]
    assert [lay.name for lay in viewer.layers] == ["big", "bytes"]
    widget["operation"].value = "clahe"  # review 46: CLAHE works in float64, 52 bytes a voxel
    widget["apply"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30000)
    errors = [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert "preprocessing needs it whole in memory (about 31 MiB with the working copies)" in errors[-1], errors[-1]


def test_augment_previews_a_patch_of_a_lazy_layer(make_napari_viewer, open_widget, qtbot, volume):
    image, labels = volume
    data, source = _lazy(image, (8, 32, 32))
    viewer = make_napari_viewer()
    layer = viewer.add_image(data, name="big", scale=(2.0, 1.0, 1.0), translate=(0.0, 5.0, 0.0))
    seg = viewer.add_labels(da.from_array(labels, chunks=(8, 32, 32)), name="seg", scale=(2.0, 1.0, 1.0),
                            translate=(0.0, 5.0, 0.0))  # fmt: skip
    widget = open_widget(viewer, "augment")
    widget.image.value, widget.label_layer.value = layer, seg
    widget.n.value = 2
    widget.patch.value = "24, 96, 96"  # the training patch
    widget.preview_button.changed.emit(True)
    qtbot.waitUntil(lambda: "seg [augmentation preview]" in viewer.layers, timeout=60000)
    shown = viewer.layers["big [augmentation preview]"]
    assert shown.data.shape[-3:] == (24, 96, 96)  # the 3D patch where the viewer looks
    assert source.largest <= 8 * 32 * 32  # read chunk by chunk, the patch only
    # the patch lies where it lies in the layer (centred on the view: rows/columns about 32..128)
    start = np.asarray(shown.translate[-2:]) - (5.0, 0.0)
    assert np.all(np.abs(start - 32) <= 1) and np.all(start == np.round(start)), start


def test_classify_and_pretrain_refuse_a_large_lazy_layer(make_napari_viewer, open_widget, qtbot, notes, volume,
                                                         monkeypatch):
    image, labels = volume
    data, source = _lazy(image, (8, 32, 32))
    viewer = make_napari_viewer()
    layer = viewer.add_image(data, name="big")
    seg = viewer.add_labels(labels, name="seg")
    monkeypatch.setenv(MEMORY_ENV, "1")
    classify = open_widget(viewer, "classify")
    classify["image"].value = layer
    classify["level"].value = "tile"
    classify["tile"].value = "32"
    classify["classes"].value = seg
    classify["start"].changed.emit(True)
    pretrain = open_widget(viewer, "pretrain")
    pretrain["images"].value = [layer]
    pretrain["start"].changed.emit(True)
    qtbot.wait(200)
    errors = [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert any("'big' is a 2 MiB on-disk layer: classification needs" in m for m in errors), errors
    assert any("'big' is a 2 MiB on-disk layer: pretraining needs" in m for m in errors), errors
    assert source.largest == 0 and isinstance(layer.data, da.Array)


def test_live_refuses_a_large_lazy_layer(make_napari_viewer, open_widget, qtbot, notes, volume, monkeypatch):
    image, _ = volume
    data, source = _lazy(image, (8, 32, 32))
    viewer = make_napari_viewer()
    layer = viewer.add_image(data, name="big")
    monkeypatch.setenv(MEMORY_ENV, "1")
    live = open_widget(viewer, "live")
    live["images"].value = [layer]
    live["start"].changed.emit(True)
    qtbot.wait(200)
    errors = [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert any("'big' is a 2 MiB on-disk layer: live segmentation needs it whole in memory; crop it" in m
               for m in errors), errors
    assert live.session is None and not live.runner.running
    assert [lay.name for lay in viewer.layers] == ["big"]  # no scribbles layer made
    assert source.largest == 0 and isinstance(layer.data, da.Array)


@pytest.fixture(scope="module")
def instance_bundle(tmp_path_factory):
    """A small instance model trained through the API, saved as a bundle folder."""
    import torch

    import napari_medml
    from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
    from napari_medml.samples import touching_objects_2d

    sample = touching_objects_2d(1, shape=(160, 128))
    config = TrainConfig(task="instances",
                         data=DataConfig(spatial_dims=2, patch_size=(32, 32), batch_size=4, val_fraction=0.0),
                         model=ModelConfig(channels=8, depth=2), augment=AugmentConfig.none(),
                         optim=OptimConfig(epochs=1, steps_per_epoch=30, learning_rate=3e-3), device="cpu")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = napari_medml.train(sample.image, sample.labels, config, spacing=(0.5, 0.5))
    finally:
        torch.set_num_threads(before)
    return model.save(tmp_path_factory.mktemp("bundle") / "instance model"), sample


def test_predict_widget_runs_an_instance_model_block_by_block_on_a_lazy_layer(
        make_napari_viewer, open_widget, qtbot, instance_bundle, tmp_path, monkeypatch):
    import tempfile

    from napari_medml._widgets.predict import BUNDLE_CHOICE
    from napari_medml.api import load_model

    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the widget's stores go
    monkeypatch.setattr(tempfile, "tempdir", None)
    bundle, sample = instance_bundle
    data, source = _lazy(sample.image, (40, 64))
    viewer = make_napari_viewer()
    layer = viewer.add_image(data, name="cells", scale=(0.5, 0.5))
    predict = open_widget(viewer, "predict")
    predict["images"].value = [layer]
    predict["model"].value = BUNDLE_CHOICE
    predict["bundle"].value = bundle
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=120000)
    shown = viewer.layers["cells [instances]"]
    assert isinstance(shown, napari.layers.Labels) and isinstance(shown.data, da.Array)  # read from Zarr
    assert source.largest <= 40 * 64  # the image was read chunk by chunk
    model = load_model(bundle)
    whole = model.predict(sample.image, spacing=(0.5, 0.5), config=predict.infer_config())
    blocks = np.asarray(shown.data)
    pairs = np.unique(np.stack([whole.labels.ravel(), blocks.ravel()]).astype(np.int64), axis=1)
    assert pairs.shape[1] == len(np.unique(whole.labels)) == len(np.unique(blocks)) > 3  # the same objects
    # a new seed height: the objects again from the maps on disk, no network
    next(iter(predict._session.models.values())).network = None
    predict["seed_height"].value = 0.9
    qtbot.waitUntil(lambda: viewer.layers["cells [instances]"].metadata["instance_params"]["seed_height"] == 0.9,
                    timeout=60000)
    again = viewer.layers["cells [instances]"]
    assert isinstance(again.data, da.Array)
    other = whole.relabel(replace(model.params, seed_height=0.9)).labels
    pairs = np.unique(np.stack([other.ravel(), np.asarray(again.data).ravel()]).astype(np.int64), axis=1)
    assert pairs.shape[1] == len(np.unique(other))


def test_train_refuses_instance_training_and_the_plan_on_a_large_lazy_layer(
        make_napari_viewer, open_widget, qtbot, notes, volume, monkeypatch):
    image, labels = volume
    data, source = _lazy(image, (8, 32, 32))
    viewer = make_napari_viewer()
    layer = viewer.add_image(data, name="big")
    seg = viewer.add_labels(labels, name="seg")
    monkeypatch.setenv(MEMORY_ENV, "1")
    train = open_widget(viewer, "train")
    train["images"].value, train["labels"].value = [layer], seg
    train["mode"].value = "instances"
    train["start"].changed.emit(True)
    train["mode"].value = "dense"
    train["plan"].value = True
    train["start"].changed.emit(True)
    qtbot.wait(200)
    errors = [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert any("'big' is a 2 MiB on-disk layer: instance training needs it whole" in m for m in errors), errors
    assert any("'plan from the data' needs it whole in memory; untick it" in m for m in errors), errors
    assert not train.runner.running and source.largest == 0


def test_predict_widget_splits_instances_of_a_lazy_layer_block_by_block(make_napari_viewer, open_widget, qtbot,
                                                                       tmp_path, monkeypatch):
    import tempfile

    from napari_medml._widgets.predict import BUNDLE_CHOICE
    from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
    from napari_medml.samples import phantom_3d
    from napari_medml.segmentation.task import train

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    p = phantom_3d(0)
    crop = (slice(16, 32), slice(16, 80), slice(16, 80))
    image = p.image[crop]
    config = TrainConfig(data=DataConfig(patch_size=(16, 32, 32), batch_size=2, val_fraction=0.0),
                         augment=AugmentConfig.none(), model=ModelConfig(channels=4, depth=2),
                         optim=OptimConfig(epochs=1, steps_per_epoch=10, learning_rate=3e-3), device="cpu")
    bundle = train(image, p.labels[crop], config, spacing=p.spacing).save(tmp_path / "model")
    data, source = _lazy(image, (8, 32, 32))
    viewer = make_napari_viewer()
    layer = viewer.add_image(data, name="ct", scale=p.spacing)
    predict = open_widget(viewer, "predict")
    predict["images"].value = [layer]
    predict["model"].value = BUNDLE_CHOICE
    predict["bundle"].value = bundle
    predict["instances"].value = "connected"
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=120000)
    shown = viewer.layers["ct [instances]"]
    assert isinstance(shown.data, da.Array) and source.largest <= 8 * 32 * 32
    from napari_medml.api import load_model

    whole = load_model(bundle).predict(image, spacing=p.spacing, config=predict.infer_config()).instances
    blocks = np.asarray(shown.data)
    pairs = np.unique(np.stack([whole.ravel(), blocks.ravel()]).astype(np.int64), axis=1)
    assert pairs.shape[1] == len(np.unique(whole)) == len(np.unique(blocks)) > 1


def test_predict_widget_runs_a_2d_model_on_a_lazy_volume_slice_by_slice(
        make_napari_viewer, open_widget, qtbot, notes, tmp_path):
    """Trial 48: a 2D model on a volume the reader opened lazily was refused ("block-wise prediction
    takes one 2D image ... or predict in memory"), a choice this widget does not offer; the slices
    are predicted one at a time, read one at a time, as for a volume in memory."""
    from napari_medml._widgets.predict import BUNDLE_CHOICE
    from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
    from napari_medml.samples import touching_objects_2d
    from napari_medml.segmentation.task import train

    sample = touching_objects_2d(0, shape=(48, 64))
    config = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(32, 32), val_fraction=0.0),
                         augment=AugmentConfig.none(), model=ModelConfig(channels=4, depth=2),
                         optim=OptimConfig(epochs=1, steps_per_epoch=3), device="cpu")
    model = train(sample.image.astype(np.float32), (sample.labels > 0).astype(np.uint8), config)
    bundle = model.save(tmp_path / "model2d")
    stack = np.stack([sample.image, sample.image[::-1], sample.image[:, ::-1]]).astype(np.float32)
    data, source = _lazy(stack, (1, 48, 64))
    viewer = make_napari_viewer()
    layer = viewer.add_image(data, name="stack")
    predict = open_widget(viewer, "predict")
    predict["images"].value = [layer]
    predict["model"].value = BUNDLE_CHOICE
    predict["bundle"].value = bundle
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=120000)
    assert not [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    shown = viewer.layers["stack [prediction]"]
    assert shown.data.shape == stack.shape and source.largest <= 48 * 64  # read slice by slice
    expected = model.predict(stack, axes="ZYX", config=predict.infer_config()).labels
    np.testing.assert_array_equal(np.asarray(shown.data), expected)
    assert "takes it one slice or frame at a time: predicted in memory" in predict["status"].value
