"""Channels named by their files, in napari (Plugins menu widgets, files opened through the reader):
Train segmentation records the layer's channel names, and Predict takes a layer whose file stores
the same channels in another order in the model's order (trial 48: Dice 0.18 for 0.97, unsaid)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from napari.utils.notifications import NotificationSeverity

from napari_medml.samples import touching_objects_2d

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_layer_of_swapped_channels_is_predicted_in_the_models_order(make_napari_viewer, open_widget, qtbot, notes,
                                                                      tmp_path) -> None:
    s = touching_objects_2d(0, shape=(64, 64))
    nuclei = s.image.astype(np.float32)
    membrane = np.random.default_rng(1).normal(0, 1, nuclei.shape).astype(np.float32) + 0.3 * nuclei[::-1]
    for name, channels, names in (("a", [membrane, nuclei], ["Membrane", "Nuclei"]),
                                  ("b", [nuclei, membrane], ["Nuclei", "Membrane"])):
        tifffile.imwrite(tmp_path / f"{name}.ome.tif", np.stack(channels), ome=True,
                         metadata={"axes": "CYX", "Channel": {"Name": names}})
    viewer = make_napari_viewer()
    a = viewer.open(str(tmp_path / "a.ome.tif"), plugin="napari-medml")[0]
    seg = viewer.add_labels((s.labels > 0).astype(np.uint8), name="seg")
    train = open_widget(viewer, "train")
    train["images"].value, train["labels"].value = [a], seg
    train["dims"].value, train["plan"].value = 2, False
    train["channels"].value, train["depth"].value, train["patch"].value = 8, 2, "32, 32"
    train["epochs"].value, train["steps"].value = 2, 6
    train["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not train.runner.running, timeout=120000)
    assert not [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert train.model.config.data.channel_names == ("Membrane", "Nuclei")
    b = viewer.open(str(tmp_path / "b.ome.tif"), plugin="napari-medml")[0]
    predict = open_widget(viewer, "predict")
    shown = {}
    for layer in (a, b):
        predict["images"].value = [layer]
        predict["predict"].changed.emit(True)
        qtbot.waitUntil(lambda: not predict.runner.running, timeout=120000)
        shown[layer.name] = np.asarray(viewer.layers[f"{layer.name} [prediction]"].data).copy()
    assert ("image 'b' stores its channels as Nuclei, Membrane; the model was trained on Membrane, Nuclei: taken in "
            "that order") in predict["status"].value, predict["status"].value
    np.testing.assert_array_equal(shown["b"], shown["a"])
    assert not [n.message for n in notes if n.severity == NotificationSeverity.ERROR]


def test_a_lazy_volume_of_swapped_channels_says_both_lines(make_napari_viewer, open_widget, qtbot, notes,
                                                          tmp_path) -> None:
    """Review 48: a 2D model on a lazily read OME-Zarr volume said it predicted in memory, and the line that
    its channels were put in the model's order was replaced by it."""
    from napari_medml._widgets.predict import BUNDLE_CHOICE
    from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
    from napari_medml.io import Volume, write_volume
    from napari_medml.segmentation.task import train

    s = touching_objects_2d(0, shape=(48, 64))
    nuclei = s.image.astype(np.float32)
    other = np.random.default_rng(1).normal(0, 1, nuclei.shape).astype(np.float32)
    config = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(32, 32), val_fraction=0.0,
                                         channel_names=("GFP", "DAPI")),
                         augment=AugmentConfig.none(), model=ModelConfig(channels=4, depth=2),
                         optim=OptimConfig(epochs=1, steps_per_epoch=3), device="cpu")
    bundle = train(np.stack([other, nuclei]), (s.labels > 0).astype(np.uint8), config, channel_axis=0).save(
        tmp_path / "m2d")
    volume = np.stack([np.stack([nuclei, other])] * 3, axis=1)  # (C, Z, Y, X), stored DAPI, GFP
    write_volume(tmp_path / "b.ome.zarr", Volume(volume, (1.0,) * 4, (0.0,) * 4, None,
                                                 meta={"channel_names": ["DAPI", "GFP"]}, axes="CZYX"))
    viewer = make_napari_viewer()
    layer = viewer.open(str(tmp_path / "b.ome.zarr"), plugin="napari-medml")[0]
    predict = open_widget(viewer, "predict")
    predict["images"].value = [layer]
    predict["model"].value = BUNDLE_CHOICE
    predict["bundle"].value = bundle
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=120000)
    assert not [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    status = predict["status"].value
    assert "stores its channels as DAPI, GFP; the model was trained on GFP, DAPI: taken in that order" in status, status
    assert "takes it one slice or frame at a time: predicted in memory" in status, status
