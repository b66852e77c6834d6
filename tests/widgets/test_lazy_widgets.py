"""Widgets on dask/zarr-backed layers, opened through the Plugins menu: previews read
only the region the viewer shows; operations that need the whole array refuse a layer
larger than the memory budget with one line naming it and the fix; none loads it."""

from __future__ import annotations

import dask.array as da
import napari
import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity

from napari_medml._widgets._layers import MEMORY_ENV


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
