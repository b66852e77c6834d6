"""Labels made with napari's new-labels button on a CZYX image (one layer with a channel
slider) cover its channel axis too: Train reads them as labels of the image's voxels, and
the layer saved from napari opens again where it was and trains from the command line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

PLUGIN = "napari-medml"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def console_script() -> str:
    path = Path(sys.executable).with_name("napari-medml")
    return str(path) if path.exists() else shutil.which("napari-medml") or "napari-medml"


def test_new_labels_on_a_czyx_image_train_save_and_open_again(make_napari_viewer, open_widget, qtbot, notes,
                                                               tmp_path) -> None:
    """Widget trial 24 (F3): Train refused labels of shape (2, 6, 48, 48) for an image of axes
    CZYX, with no fix a GUI user could carry out; saved as TIFF they opened again transposed
    (written as ZTYX, stored T first)."""
    rng = np.random.default_rng(3)
    zz, yy, xx = np.mgrid[:6, :48, :48]
    truth = ((zz - 3) ** 2 * 4 + (yy - 20) ** 2 + (xx - 24) ** 2 < 90).astype(np.uint8)
    cell = (rng.normal(100, 10, truth.shape) + 80 * truth).astype(np.uint16)
    path = tmp_path / "czyx.ome.tif"
    tifffile.imwrite(path, np.stack([cell, cell // 2]), ome=True,
                     metadata={"axes": "CZYX", "PhysicalSizeZ": 2.0, "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(path), plugin=PLUGIN)
    assert image.data.shape == (2, 6, 48, 48)
    viewer.layers.selection.active = image
    viewer.window._qt_viewer.layerButtons.newLabelsButton.click()  # the button under the layer list
    labels = viewer.layers[-1]
    assert labels.data.shape == image.data.shape
    labels.data[1] = truth  # painted with the channel slider at 1
    labels.refresh()
    train = open_widget(viewer, "train")
    train["images"].value, train["labels"].value = [image], labels
    train["channels"].value, train["depth"].value = 4, 2
    train["epochs"].value, train["steps"].value = 1, 2
    train["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not train.runner.running, timeout=120000)
    assert train.model is not None, [n.message for n in notes]
    assert "cover the channel axis of image 'czyx'" in train["status"].value
    assert "painted on channel 1" in train["status"].value
    augment = open_widget(viewer, "augment")  # the preview takes them too
    augment.image.value, augment.label_layer.value = image, labels
    augment.n.value, augment.patch.value = 2, "4, 32, 32"
    augment.preview_button.changed.emit(True)
    qtbot.waitUntil(lambda: f"{labels.name} [augmentation preview]" in viewer.layers, timeout=60000)
    assert viewer.layers[f"{labels.name} [augmentation preview]"].data.max() == 1
    # File > Save, File > Open: the same array on the same axes (no transposition)
    viewer.layers.selection = {labels}
    viewer.layers.save(str(tmp_path / "painted.tif"), selected=True, plugin=PLUGIN)
    (back,) = viewer.open(str(tmp_path / "painted.tif"), plugin=PLUGIN)
    np.testing.assert_array_equal(np.asarray(back.data), np.asarray(labels.data))
    np.testing.assert_allclose(back.scale, labels.scale)
    run = subprocess.run([console_script(), "train", "--image", str(path), "--labels", str(tmp_path / "painted.tif"),
                          "--out", str(tmp_path / "model"), "--epochs", "1", "--steps-per-epoch", "1",
                          "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "cover the channel axis of image" in run.stderr and (tmp_path / "model" / "config.json").exists()
