"""Zarr/OME-Zarr in a real viewer: File › Open through our reader gives lazily loaded
(multiscale) layers, and a large TIFF a layer read plane by plane; File › Save writes OME-Zarr;
the Predict widget segments a dask-backed layer block by block into Zarr and shows the result
as a lazily loaded Labels layer."""

from __future__ import annotations

import dask.array as da
import napari
import numpy as np
import pytest
import torch
import zarr

from napari_medml._widgets.predict import BUNDLE_CHOICE
from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
from napari_medml.io import Volume, read_volume, write_volume
from napari_medml.io.memory import LAZY_ENV
from napari_medml.samples import phantom_3d
from napari_medml.segmentation.metrics import dice
from napari_medml.segmentation.task import train

PLUGIN = "napari-medml"
CROP = (slice(16, 32), slice(16, 80), slice(16, 80))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pyramid(path, full: np.ndarray) -> None:
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    datasets = []
    for k, factor in enumerate((1, 2)):
        group.create_array(str(k), data=full[:, ::factor, ::factor], chunks=(4, 16, 16))
        datasets.append({"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": [2.0, 0.5 * factor, 0.5 * factor]}, {"type": "translation",
                                                                            "translation": [1.0, 0.0, 0.0]}]})
    group.attrs["multiscales"] = [{"version": "0.4", "datasets": datasets, "axes": [
        {"name": "z", "type": "space", "unit": "micrometer"}, {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"}]}]  # fmt: skip


def test_open_ome_zarr_pyramid_as_a_lazy_multiscale_layer(make_napari_viewer, tmp_path):
    full = np.random.default_rng(0).random((8, 32, 32), dtype=np.float32)
    _pyramid(tmp_path / "cells.ome.zarr", full)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "cells.ome.zarr"), plugin=PLUGIN)
    assert isinstance(layer, napari.layers.Image) and layer.name == "cells" and layer.multiscale
    assert [level.shape for level in layer.data] == [(8, 32, 32), (8, 16, 16)]
    assert all(isinstance(level, da.Array) for level in layer.data)  # nothing loaded whole
    np.testing.assert_allclose(layer.scale, (2.0, 0.5, 0.5))
    np.testing.assert_allclose(layer.translate, (1.0, 0.0, 0.0))
    from napari_medml.layer_data import _add_image_takes_axis_labels

    if _add_image_takes_axis_labels():  # napari >= 0.5.1 shows them on the sliders; 0.5.0 keeps them in metadata
        assert tuple(layer.axis_labels) == ("z", "y", "x")
    assert layer.metadata["axes"] == "ZYX"
    np.testing.assert_array_equal(np.asarray(layer.data[0][3]), full[3])


def test_an_ome_zarr_time_series_with_channels_opens_one_layer_per_channel(make_napari_viewer, tmp_path):
    """Trial 40: an OME-Zarr TCZYX opened as one (T, C, Z, Y, X) layer, while an OME-TIFF TCZYX opens one
    layer per channel (napari lines layers up from their last axis: a (T, Z, Y, X) prediction would show
    its frames on the channel slider). Both levels of the pyramid are split."""
    full = np.random.default_rng(0).random((3, 2, 4, 16, 16), dtype=np.float32)  # T C Z Y X
    group = zarr.open_group(str(tmp_path / "movie.ome.zarr"), mode="w", zarr_format=2)
    datasets = []
    for k, factor in enumerate((1, 2)):
        group.create_array(str(k), data=full[..., ::factor, ::factor], chunks=(1, 1, 4, 16, 16))
        datasets.append({"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": [5.0, 1.0, 2.0, 0.5 * factor, 0.5 * factor]}]})
    group.attrs["multiscales"] = [{"version": "0.4", "datasets": datasets, "axes": [
        {"name": "t", "type": "time", "unit": "second"}, {"name": "c", "type": "channel"},
        {"name": "z", "type": "space", "unit": "micrometer"}, {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"}]}]  # fmt: skip
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "movie.ome.zarr"), plugin=PLUGIN)
    assert [layer.name for layer in layers] == ["movie [ch0]", "movie [ch1]"]
    for k, layer in enumerate(layers):
        assert layer.multiscale and [level.shape for level in layer.data] == [(3, 4, 16, 16), (3, 4, 8, 8)]
        assert all(isinstance(level, da.Array) for level in layer.data)  # still lazy
        np.testing.assert_allclose(layer.scale, (5.0, 2.0, 0.5, 0.5))
        assert layer.metadata["axes"] == "TZYX"
        np.testing.assert_array_equal(np.asarray(layer.data[0][2]), full[2, k])
        np.testing.assert_array_equal(np.asarray(layer.data[1][1]), full[1, k, :, ::2, ::2])


def test_a_uint16_pyramid_with_a_translation_opens_with_its_values_range(make_napari_viewer, tmp_path):
    """napari's own guess gave (0, 1) for uint16 levels with a translation (two thirds of the
    canvas white); the reader gives the coarsest level's range."""
    full = np.random.default_rng(0).integers(0, 1000, (8, 32, 32)).astype(np.uint16)
    _pyramid(tmp_path / "counts.ome.zarr", full)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "counts.ome.zarr"), plugin=PLUGIN)
    coarse = full[:, ::2, ::2]
    assert tuple(layer.contrast_limits) == (coarse.min(), coarse.max())


def test_save_a_layer_as_ome_zarr_and_open_it_again(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels = (np.random.default_rng(1).random((5, 12, 10)) * 3).astype(np.uint8)
    layer = viewer.add_labels(labels, name="organs", scale=(3.0, 0.5, 0.5), translate=(1.0, 2.0, 3.0))
    viewer.layers.selection = {layer}
    written = viewer.layers.save(str(tmp_path / "organs.zarr"), selected=True, plugin=PLUGIN)  # File › Save
    assert written == [str(tmp_path / "organs.zarr")]
    back = read_volume(tmp_path / "organs.zarr")
    assert back.is_labels and back.spacing == (3.0, 0.5, 0.5) and back.origin == (1.0, 2.0, 3.0)
    (again,) = viewer.open(str(tmp_path / "organs.zarr"), plugin=PLUGIN)
    assert isinstance(again, napari.layers.Labels)
    np.testing.assert_array_equal(np.asarray(again.data), labels)


def test_an_rgb_layer_saved_as_zarr_opens_as_rgb_again(make_napari_viewer, tmp_path):
    """OME-Zarr stores the colours as channels; this reader puts them last again: the same RGB
    layer comes back (it came back as a grey 3-channel image with a channel slider)."""
    viewer = make_napari_viewer()
    photo = np.random.default_rng(2).integers(0, 255, (32, 40, 3)).astype(np.uint8)
    layer = viewer.add_image(photo, name="photo", rgb=True, scale=(0.3, 0.3))
    viewer.layers.selection = {layer}
    viewer.layers.save(str(tmp_path / "photo.zarr"), selected=True, plugin=PLUGIN)
    (again,) = viewer.open(str(tmp_path / "photo.zarr"), plugin=PLUGIN)
    assert again.rgb and again.data.shape == (32, 40, 3) and tuple(again.scale) == pytest.approx((0.3, 0.3))
    np.testing.assert_array_equal(np.asarray(again.data), photo)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    p = phantom_3d(0)
    config = TrainConfig(
        data=DataConfig(patch_size=(16, 32, 32), batch_size=2, val_fraction=0.0),
        augment=AugmentConfig.none(), model=ModelConfig(channels=8, depth=3),
        optim=OptimConfig(epochs=1, steps_per_epoch=30, learning_rate=3e-3), device="cpu",
    )
    torch.set_num_threads(1)
    model = train(p.image[CROP], p.labels[CROP], config, spacing=p.spacing)
    return model.save(tmp_path_factory.mktemp("bundle") / "phantom model")


@pytest.mark.parametrize("name", ["ct.ome.zarr", "ct.tif"])
def test_predict_widget_segments_a_lazy_layer_into_zarr(make_napari_viewer, open_widget, qtbot, tmp_path,
                                                        bundle, monkeypatch, name):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the widget's stores go (the temp folder)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setenv(LAZY_ENV, "0.01")  # the TIFF counts as large: napari gets it plane by plane
    p = phantom_3d(0)
    image, truth = p.image[CROP], p.labels[CROP]
    write_volume(tmp_path / name, Volume(image, p.spacing, (0.0,) * 3, axes="ZYX"))
    viewer = make_napari_viewer()
    (ct,) = viewer.open(str(tmp_path / name), plugin=PLUGIN)
    assert isinstance(ct.data, da.Array) and ct.name == "ct"
    np.testing.assert_allclose(ct.scale, p.spacing)
    np.testing.assert_array_equal(np.asarray(ct.data[5]), image[5])
    widget = open_widget(viewer, "predict")
    widget["images"].value = [ct]
    widget["model"].value = BUNDLE_CHOICE
    widget["bundle"].value = bundle
    widget["probabilities"].value = "one layer"
    widget["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=180000)
    pred = viewer.layers["ct [prediction]"]
    assert isinstance(pred, napari.layers.Labels) and isinstance(pred.data, da.Array)  # read lazily from Zarr
    assert pred.data.shape == image.shape
    np.testing.assert_allclose(pred.scale, p.spacing)
    session_temp = widget._session.temp_folder  # the session's temp folder, removed with the viewer
    assert session_temp is not None and tmp_path in session_temp.parents
    stores = list((session_temp / "predictions").glob("*/labels.zarr"))
    assert len(stores) == 1 and zarr.open_group(str(stores[0]), mode="r").attrs["napari_medml"]["prediction"][
        "complete"]  # fmt: skip
    labels = np.asarray(pred.data)
    scores = dice(labels, truth)
    assert scores[1] > 0.8 and scores[2] > 0.6, scores
    # the same labels as the in-memory prediction of the same image
    from napari_medml.api import load_model

    whole = load_model(bundle).predict(image, spacing=p.spacing, config=widget.infer_config())
    np.testing.assert_array_equal(labels, whole.labels)
    probs = viewer.layers["ct [probabilities]"].data
    assert isinstance(probs, da.Array) and probs.shape == (4, *image.shape)
    viewer.close()
    qtbot.waitUntil(lambda: not session_temp.exists(), timeout=10000)  # nothing left behind


def test_predict_widget_segments_a_lazy_layer_in_mm_with_a_um_model_into_stores_in_mm(
        make_napari_viewer, open_widget, qtbot, tmp_path, bundle, monkeypatch):
    """Note 50: block by block, the stores recorded the model's µm voxel size without a unit, so that
    they opened 1000 times larger than the image they were predicted from."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    from napari_medml.api import load_model
    from napari_medml.io.zarr import read_zarr

    monkeypatch.setattr(tempfile, "tempdir", None)
    model = load_model(bundle)
    model.provenance["unit"] = "um"
    um_model = model.save(tmp_path / "um model")
    p = phantom_3d(0)
    image, mm = p.image[CROP], tuple(s / 1000 for s in p.spacing)
    write_volume(tmp_path / "ct.ome.zarr", Volume(image, mm, (0.001, 0.0, 0.0), axes="ZYX", meta={"unit": "mm"}))
    viewer = make_napari_viewer()
    (ct,) = viewer.open(str(tmp_path / "ct.ome.zarr"), plugin=PLUGIN)
    assert isinstance(ct.data, da.Array)
    widget = open_widget(viewer, "predict")
    widget["images"].value = [ct]
    widget["model"].value = BUNDLE_CHOICE
    widget["bundle"].value = um_model
    widget["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=180000)
    assert "layer 'ct' names its voxel size in mm" in widget["status"].value, widget["status"].value
    pred = viewer.layers["ct [prediction]"]
    assert isinstance(pred.data, da.Array)
    np.testing.assert_allclose(pred.scale, mm)
    whole = model.predict(image, spacing=p.spacing, config=widget.infer_config())  # compared in µm
    np.testing.assert_array_equal(np.asarray(pred.data), whole.labels)
    (store,) = list((widget._session.temp_folder / "predictions").glob("*/labels.zarr"))
    saved = read_zarr(store)
    assert saved.meta.get("unit") == "mm", saved.meta
    np.testing.assert_allclose(saved.spacing, mm)  # the image's own, so the store opens on it
    np.testing.assert_allclose(saved.origin, (0.001, 0.0, 0.0))
    viewer.close()


def test_predict_widget_says_a_prediction_of_background_only(make_napari_viewer, open_widget, qtbot, tmp_path,
                                                              monkeypatch, constant_model):
    """A model that finds nothing, on a layer in memory and on a lazy OME-Zarr layer (block by block)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    bundle = constant_model(3, (0, 1)).save(tmp_path / "empty model")
    image = np.random.default_rng(0).standard_normal((12, 20, 20)).astype(np.float32)
    write_volume(tmp_path / "cells.ome.zarr", Volume(image, (1.0,) * 3, (0.0,) * 3, axes="ZYX"))
    viewer = make_napari_viewer()
    (lazy,) = viewer.open(str(tmp_path / "cells.ome.zarr"), plugin=PLUGIN)
    here = viewer.add_image(image, name="here")
    widget = open_widget(viewer, "predict")
    widget["model"].value = BUNDLE_CHOICE
    widget["bundle"].value = bundle
    for layer in (here, lazy):
        widget["images"].value = [layer]
        widget["predict"].changed.emit(True)
        qtbot.waitUntil(lambda: not widget.runner.running, timeout=180000)
        assert not np.asarray(viewer.layers[f"{layer.name} [prediction]"].data).any()
        status = widget["status"].value
        assert status.startswith(f"layer '{layer.name}': the model found background only (class 0), not class 1: "
                                 "check that the image looks like the training images"), status
        assert status.endswith(f"'{layer.name}' segmented with 'empty model'"), status
