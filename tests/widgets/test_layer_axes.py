"""Axes travel through napari: File > Open gives one layer with axis labels, File > Save
writes the same axes back, and the Predict widget segments a time-lapse frame by frame and
a multichannel layer by its channel axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
from napari_medml.io import read_volume
from napari_medml.segmentation.task import train

# trains in the GUI: one torch thread keeps the waits steady on a busy 2-core machine (two threads
# spinning against Xvfb and the GUI thread made a step 10-20x slower)
pytestmark = pytest.mark.usefixtures("one_torch_thread")

PLUGIN = "napari-medml"


def _labels(layer) -> tuple[str, ...] | None:
    """The layer's axis labels (napari 0.5.0 cannot take them from a reader: then None)."""
    from napari_medml.layer_data import layer_axes

    axes = layer_axes(layer.data.ndim, layer.axis_labels, layer.metadata, getattr(layer, "rgb", False))
    return tuple(a.lower() for a in axes)
BUNDLE_CHOICE = "bundle folder..."


def test_open_and_save_keep_channels_and_time(make_napari_viewer, tmp_path: Path) -> None:
    zcyx = np.random.default_rng(0).integers(0, 500, (6, 2, 16, 18)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "cells.tif", zcyx, imagej=True,
                     metadata={"axes": "ZCYX", "spacing": 1.5, "unit": "um"})
    tyx = np.random.default_rng(1).integers(0, 255, (5, 16, 18)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "lapse.tif", tyx, imagej=True, metadata={"axes": "TYX", "finterval": 2.0})
    viewer = make_napari_viewer()
    (cells,) = viewer.open(str(tmp_path / "cells.tif"), plugin=PLUGIN)
    assert _labels(cells) == ("c", "z", "y", "x") and cells.data.shape == (2, 6, 16, 18)
    (lapse,) = viewer.open(str(tmp_path / "lapse.tif"), plugin=PLUGIN)
    assert _labels(lapse) == ("t", "y", "x") and lapse.scale[0] == 2.0
    from napari_medml.layer_data import _add_image_takes_axis_labels

    if _add_image_takes_axis_labels():  # napari >= 0.5.1 shows them on the sliders
        assert cells.axis_labels == ("c", "z", "y", "x") and lapse.axis_labels == ("t", "y", "x")
        # and the file's unit on the scale bar (it read "pixel": trial 33); a file naming none keeps napari's,
        # and a frame interval is in seconds (ImageJ's default unit; it read "pixel": trial 42)
        assert tuple(map(str, cells.units)) == ("pixel", "micrometer", "micrometer", "micrometer")
        assert tuple(map(str, lapse.units)) == ("second", "pixel", "pixel")

    viewer.layers.selection = {cells}
    viewer.layers.save(str(tmp_path / "cells_saved.tif"), selected=True, plugin=PLUGIN)
    with tifffile.TiffFile(tmp_path / "cells_saved.tif") as tif:
        assert tif.series[0].axes == "ZCYX" and tif.imagej_metadata["channels"] == 2
        np.testing.assert_array_equal(tif.asarray(), zcyx)
    viewer.layers.selection = {lapse}
    viewer.layers.save(str(tmp_path / "lapse_saved.tif"), selected=True, plugin=PLUGIN)
    saved = read_volume(tmp_path / "lapse_saved.tif")
    assert saved.axes == "TYX" and saved.spacing[0] == 2.0  # still a time-lapse, not a z-stack


def test_a_labels_layer_saves_to_npy_through_napari(make_napari_viewer, tmp_path: Path) -> None:
    """The reader opens .npy, so napari's save finds the plugin's writer for it too."""
    labels = np.zeros((6, 16, 18), np.uint8)
    labels[2:4, 3:9, 4:12] = 2
    viewer = make_napari_viewer()
    layer = viewer.add_labels(labels, name="seg")
    viewer.layers.selection = {layer}
    written = viewer.layers.save(str(tmp_path / "seg.npy"), selected=True)
    assert [Path(p).name for p in written] == ["seg.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "seg.npy"), labels)


def _tiny_2d_model(in_channels: int, folder: Path) -> Path:
    rng = np.random.default_rng(in_channels)
    image = rng.normal(0, 1, (in_channels, 48, 48)).astype(np.float32)
    labels = np.zeros((48, 48), np.uint8)
    labels[10:30, 12:32] = 1
    image[0][labels == 1] += 3
    config = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(32, 32), batch_size=2, val_fraction=0.0),
                         augment=AugmentConfig.none(), model=ModelConfig(channels=4, depth=2),
                         optim=OptimConfig(epochs=1, steps_per_epoch=3), device="cpu")  # fmt: skip
    torch.set_num_threads(1)
    model = train(image, labels, config, channel_axis=0)
    return model.save(folder / f"model{in_channels}")


@pytest.mark.parametrize("case", ["time-lapse", "two channels"])
def test_predict_widget_reads_axes_from_the_layer(make_napari_viewer, open_widget, qtbot, tmp_path: Path,
                                                  case: str) -> None:
    if case == "time-lapse":
        bundle = _tiny_2d_model(1, tmp_path)
        data = np.random.default_rng(2).normal(0, 1, (4, 48, 48)).astype(np.float32)
        tifffile.imwrite(tmp_path / "movie.tif", data, imagej=True, metadata={"axes": "TYX"})
        expected_shape, expected_labels = (4, 48, 48), ("t", "y", "x")
    else:
        bundle = _tiny_2d_model(2, tmp_path)
        data = np.random.default_rng(3).normal(0, 1, (2, 48, 48)).astype(np.float32)
        tifffile.imwrite(tmp_path / "movie.tif", data, imagej=True, resolution=(2.0, 2.0),
                         metadata={"axes": "CYX"})  # fmt: skip
        expected_shape, expected_labels = (48, 48), ("y", "x")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "movie.tif"), plugin=PLUGIN)
    widget = open_widget(viewer, "predict")
    widget["images"].value = [layer]
    widget["model"].value = BUNDLE_CHOICE
    widget["bundle"].value = bundle
    widget["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    result = viewer.layers["movie [prediction]"]
    assert result.data.shape == expected_shape
    assert _labels(result) == expected_labels
    if case == "two channels":
        np.testing.assert_allclose(result.scale, (0.5, 0.5))


def test_train_widget_takes_the_frames_of_a_time_lapse_as_samples(make_napari_viewer, open_widget, qtbot,
                                                                  tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    frames = rng.normal(0, 1, (4, 48, 48)).astype(np.float32)
    masks = np.zeros((4, 48, 48), np.uint8)
    for t in range(4):
        masks[t, 5 + 4 * t:25 + 4 * t, 10:30] = 1
    frames[masks == 1] += 3
    tifffile.imwrite(tmp_path / "movie.tif", frames, imagej=True, metadata={"axes": "TYX"})
    tifffile.imwrite(tmp_path / "movie_mask.tif", masks, imagej=True, metadata={"axes": "TYX"})
    viewer = make_napari_viewer()
    (movie,) = viewer.open(str(tmp_path / "movie.tif"), plugin=PLUGIN)
    (mask,) = viewer.open(str(tmp_path / "movie_mask.tif"), plugin=PLUGIN)
    assert _labels(mask) == ("t", "y", "x")
    train_widget = open_widget(viewer, "train")
    train_widget["images"].value = [movie]
    train_widget["labels"].value = mask
    train_widget["dims"].value = 2
    train_widget["channels"].value, train_widget["depth"].value = 4, 2
    train_widget["patch"].value = "32, 32"
    train_widget["epochs"].value, train_widget["steps"].value = 1, 3
    train_widget["start"].changed.emit(True)
    qtbot.waitUntil(lambda: train_widget.model is not None, timeout=120000)
    assert train_widget.model.spatial_dims == 2 and train_widget.model.in_channels == 1
    # the last frame is validated; frame 3, next to it, nearly the same image, does not train
    assert train_widget.model.config.data.sample_groups == (4,)
    assert train_widget.model.provenance["split"] == (
        "validation on the last 1 of 4 images, 1 slice of the same volume within 1 of them left out of "
        "training (neighbouring slices or frames are nearly the same image)")


def test_a_time_series_with_channels_opens_as_one_layer_per_channel(make_napari_viewer, open_widget, qtbot,
                                                                    tmp_path: Path) -> None:
    """napari lines layers up from the last axis: a (t, y, x) prediction of one (t, c, y, x)
    layer showed its frames on the channel slider. Each channel opens as a (t, y, x) layer,
    Predict takes the two as channels, and the prediction lies frame on frame."""
    bundle = _tiny_2d_model(2, tmp_path)
    data = np.random.default_rng(4).normal(0, 1, (3, 2, 48, 48)).astype(np.float32)
    tifffile.imwrite(tmp_path / "movie.tif", data, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "TCYX", "finterval": 5.0})
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "movie.tif"), plugin=PLUGIN)
    assert [layer.name for layer in layers] == ["movie [ch0]", "movie [ch1]"]
    for k, layer in enumerate(layers):
        np.testing.assert_array_equal(layer.data, data[:, k])
        assert _labels(layer) == ("t", "y", "x")
        np.testing.assert_allclose(layer.scale, (5.0, 0.5, 0.5))
    widget = open_widget(viewer, "predict")
    widget["images"].value = layers
    widget["model"].value = BUNDLE_CHOICE
    widget["bundle"].value = bundle
    widget["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    result = viewer.layers["movie [ch0] [prediction]"]
    assert result.data.shape == (3, 48, 48) and _labels(result) == ("t", "y", "x")
    # same axes, scale and translate: frame k of the prediction lies on frame k of the image
    assert result.ndim == layers[0].ndim == viewer.dims.ndim == 3
    np.testing.assert_allclose(result.scale, layers[0].scale)
    np.testing.assert_allclose(result.translate, layers[0].translate)


def test_channels_open_and_save_under_the_names_the_file_gives_them(make_napari_viewer, tmp_path: Path) -> None:
    """Trial 39: an OME-TIFF's channel names (DAPI, GFP) were dropped: its channel layers opened
    as '[ch0]', '[ch1]', and a re-saved file had no names. An OME-Zarr's omero labels name them
    too, and a result made on the image does not take the image's names for its class channels."""
    from xml.etree import ElementTree

    import zarr

    from napari_medml.layer_data import FILE_META_KEY

    data = (np.random.default_rng(5).random((3, 2, 4, 16, 16)) * 1000).astype(np.uint16)  # T C Z Y X
    tifffile.imwrite(tmp_path / "movie.ome.tif", data, ome=True,
                     metadata={"axes": "TCZYX", "Channel": {"Name": ["DAPI", "GFP"]}})
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "movie.ome.tif"), plugin=PLUGIN)
    assert [layer.name for layer in layers] == ["movie [DAPI]", "movie [GFP]"]
    np.testing.assert_array_equal(layers[1].data, data[:, 1])
    # one layer with a channel axis keeps its names and saves them back (OME-TIFF and OME-Zarr)
    tifffile.imwrite(tmp_path / "cells.ome.tif", data[0], ome=True,
                     metadata={"axes": "CZYX", "Channel": {"Name": ["DAPI", "GFP"]}})
    (cells,) = viewer.open(str(tmp_path / "cells.ome.tif"), plugin=PLUGIN)
    viewer.layers.selection = {cells}
    viewer.layers.save(str(tmp_path / "saved.ome.tif"), selected=True, plugin=PLUGIN)
    with tifffile.TiffFile(tmp_path / "saved.ome.tif") as tif:
        names = [c.attrib["Name"] for c in ElementTree.fromstring(tif.ome_metadata).iter() if c.tag.endswith("Channel")]
    assert names == ["DAPI", "GFP"]
    viewer.layers.save(str(tmp_path / "saved.ome.zarr"), selected=True, plugin=PLUGIN)
    assert zarr.open_group(str(tmp_path / "saved.ome.zarr"), mode="r").attrs["omero"] == {
        "channels": [{"label": "DAPI"}, {"label": "GFP"}]}
    again = viewer.open(str(tmp_path / "saved.ome.zarr"), plugin=PLUGIN)
    assert again[0].metadata[FILE_META_KEY]["channel_names"] == ["DAPI", "GFP"]
    # another tool's OME-Zarr: its omero labels name the channel layers of a time series
    group = zarr.open_group(str(tmp_path / "other.ome.zarr"), mode="w", zarr_format=2)
    group.create_array("0", data=data, chunks=(1, 1, 4, 16, 16))
    group.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [1.0] * 5}]}], "axes": [{"name": a, "type": t} for a, t in zip(
            "tczyx", ("time", "channel", "space", "space", "space"))]}]
    group.attrs["omero"] = {"channels": [{"label": "nuclei"}, {"label": "membrane"}]}
    assert [layer.name for layer in viewer.open(str(tmp_path / "other.ome.zarr"), plugin=PLUGIN)] == [
        "other [nuclei]", "other [membrane]"]
    # a result's channels are its classes: the image's names are not given to them
    from napari_medml.layer_data import SpatialMeta
    from napari_medml.result_layers import result_layer_data

    meta = SpatialMeta((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), None, None, dict(cells.metadata[FILE_META_KEY]))
    _, kwargs, _ = result_layer_data(np.zeros((2, 4, 16, 16), np.float32), "cells", "probabilities", meta,
                                     source_axes="CZYX")
    assert "channel_names" not in kwargs["metadata"].get(FILE_META_KEY, {})
