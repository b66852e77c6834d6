"""A preprocessed layer as the user sees it: labels painted on its grid train, and live
segmentation of a crop segments the crop; both models record the recipe, so Predict
puts the raw image through it. Widgets opened from the Plugins menu."""

from __future__ import annotations

import numpy as np
import pytest


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    raw = np.zeros((16, 48, 48), np.float32)  # a bright body on 0: 'crop to threshold' cuts it out
    raw[3:13, 8:40, 10:38] = 1.0 + rng.random((10, 32, 28))
    raw[6:10, 16:30, 16:30] += 2.0
    return raw


def _preprocess(viewer, open_widget, qtbot, layer, operation, **fields):
    widget = open_widget(viewer, "preprocess")
    widget["image"].value = layer
    widget["operation"].value = operation
    for key, value in fields.items():
        widget[key].value = value
    widget["apply"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    return viewer.layers[-1]


def test_labels_painted_on_a_resampled_layer_train_and_predict_the_raw_layer(make_napari_viewer, open_widget,
                                                                             qtbot, notes):
    viewer = make_napari_viewer()
    raw = viewer.add_image(_volume(), name="vol", scale=(4.0, 1.0, 1.0))
    iso = _preprocess(viewer, open_widget, qtbot, raw, "resample", target_spacing="2, 2, 2")
    assert iso.data.shape == (32, 24, 24)
    # napari's new-labels button on the resampled layer gives its grid; the user paints there
    painted = viewer.add_labels((iso.data > 2.5).astype(np.uint8), name="painted", scale=iso.scale,
                                translate=iso.translate)
    train = open_widget(viewer, "train")
    train["images"].value = [iso]
    train["labels"].value = painted
    train["channels"].value, train["depth"].value = 4, 2
    train["patch"].value = "16, 16, 16"
    train["epochs"].value, train["steps"].value = 1, 3
    train["plan"].value = False
    train["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not train.runner.running, timeout=120000)
    assert not [n.message for n in notes if "error" in str(n.severity).lower()]
    model = train.model
    # trained on the layer as shown (its spacing), and the recipe is recorded for raw images
    assert [s.operation for s in model.config.data.preprocessing] == ["resample"]
    assert tuple(model.spacing) == (2.0, 2.0, 2.0)
    predict = open_widget(viewer, "predict")
    predict["images"].value = [raw]
    predict["model"].value = "vol [resample 2x2x2] model"
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=120000)
    out = viewer.layers["vol [prediction]"]
    assert out.data.shape == raw.data.shape and tuple(out.scale) == tuple(raw.scale)
    # the resampled layer chosen: the model replays its recipe, so the raw layer is predicted
    viewer.layers.remove(out)
    predict["images"].value = [iso]
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=120000)
    assert viewer.layers["vol [prediction]"].data.shape == raw.data.shape
    assert "predicted as shown" not in predict["status"].value


def test_a_crop_made_after_training_is_predicted_as_shown(make_napari_viewer, open_widget, qtbot, notes):
    """Review 20: a model trained on raw images, given '<image> [crop ...]', segmented the whole
    raw image instead; the crop is now predicted where it lies, and the status says so."""
    import napari_medml as mm
    from napari_medml._widgets._session import session_for
    from napari_medml.config import DataConfig, ModelConfig, OptimConfig, TrainConfig

    volume = _volume()
    config = TrainConfig(data=DataConfig(patch_size=(16, 16, 16)), model=ModelConfig(channels=4, depth=2),
                         optim=OptimConfig(epochs=1, steps_per_epoch=2), device="cpu")
    model = mm.train(volume, (volume > 2.5).astype(np.uint8), config)
    assert model.config.data.preprocessing == ()
    viewer = make_napari_viewer()
    raw = viewer.add_image(volume, name="vol", scale=(2.0, 1.0, 1.0))
    crop = _preprocess(viewer, open_widget, qtbot, raw, "crop", threshold=0.5, margin=0)
    assert crop.data.shape == (10, 32, 28) and tuple(crop.translate) == (6.0, 8.0, 10.0)
    session_for(viewer).add_model(model, "raw model")
    predict = open_widget(viewer, "predict")
    predict["images"].value = [crop]
    predict["model"].value = "raw model"
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=120000)
    assert not [n.message for n in notes if "error" in str(n.severity).lower()]
    out = viewer.layers[f"{crop.name} [prediction]"]
    assert out.data.shape == crop.data.shape
    assert tuple(out.translate) == tuple(crop.translate) and tuple(out.scale) == tuple(crop.scale)
    assert "predicted as shown: the model was not trained with its preprocessing" in predict["status"].value
    assert "vol [prediction]" not in viewer.layers
    # review 21: with its raw layer closed, the crop was refused, though it is predicted as shown
    viewer.layers.remove(raw)
    viewer.layers.remove(out)
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=120000)
    assert not [n.message for n in notes if "error" in str(n.severity).lower()]
    assert f"{crop.name} [prediction]" in viewer.layers
    assert "it cannot replay it on 'vol'" in predict["status"].value


def test_live_segmentation_of_a_crop_segments_the_crop(make_napari_viewer, open_widget, qtbot):
    viewer = make_napari_viewer()
    raw = viewer.add_image(_volume(), name="vol", scale=(4.0, 1.0, 1.0))
    crop = _preprocess(viewer, open_widget, qtbot, raw, "crop", threshold=0.5)
    assert crop.data.shape == (10, 32, 28)
    live = open_widget(viewer, "live")
    live["images"].value = [crop]
    live["start"].changed.emit(True)
    qtbot.waitUntil(lambda: live.session is not None, timeout=60000)
    scribbles = viewer.layers[f"{crop.name} [scribbles]"]
    # the crop as shown: its shape and place, not the raw volume's
    assert scribbles.data.shape == crop.data.shape and live.session.shape == crop.data.shape
    np.testing.assert_allclose(scribbles.translate, crop.translate)
    np.testing.assert_allclose(scribbles.scale, crop.scale)
    live["stop"].changed.emit(True)
    qtbot.waitUntil(lambda: not live.runner.running, timeout=60000)
