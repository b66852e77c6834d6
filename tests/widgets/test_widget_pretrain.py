"""Pretrain widget, opened from Plugins › MedML › Pretrain: pretrains on unlabeled layers,
writes reconstruction and error layers, and Train segmentation starts from its model."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medml._widgets._session import session_for
from napari_medml.samples import phantom_3d

# trains in the GUI: one torch thread keeps the waits steady on a busy 2-core machine (two threads
# spinning against Xvfb and the GUI thread made a step 10-20x slower)
pytestmark = pytest.mark.usefixtures("one_torch_thread")

CROP = (slice(16, 32), slice(16, 64), slice(16, 64))


def test_pretrain_then_train_from_it(make_napari_viewer, open_widget, qtbot, notes):
    viewer = make_napari_viewer()
    p = phantom_3d(0)
    other = phantom_3d(1)
    ct = viewer.add_image(p.image[CROP], name="ct", scale=p.spacing)
    second = viewer.add_image(other.image[CROP], name="ct2", scale=p.spacing)
    seg = viewer.add_labels(p.labels[CROP], name="seg", scale=p.spacing)
    original = ct.data.copy()
    pre = open_widget(viewer, "pretrain")
    pre["images"].value = [ct, second]
    pre["channels"].value, pre["depth"].value = 4, 2
    pre["epochs"].value, pre["steps"].value = 2, 4
    pre["loss"].value = "mae"
    pre["start"].changed.emit(True)
    assert pre.runner.running and pre["stop"].enabled
    assert pre["status"].value.startswith("running: the bar below shows the step and the loss")
    qtbot.waitUntil(lambda: not pre.runner.running, timeout=180000)
    assert not [n for n in notes if "error" in str(n.severity).lower()], [n.message for n in notes]
    assert pre["status"].value.startswith("model 'ct pretrained' is ready: start Train segmentation from it "
                                          "(trained 8 steps in "), pre["status"].value
    for name in ("ct", "ct2"):
        rec = viewer.layers[f"{name} [reconstruction]"]
        err = viewer.layers[f"{name} [reconstruction error]"]
        assert rec.data.shape == err.data.shape == ct.data.shape
        assert tuple(rec.scale) == tuple(ct.scale) and np.isfinite(err.data).all() and err.data.min() >= 0
    np.testing.assert_array_equal(ct.data, original)  # the user's layer is untouched
    session = session_for(viewer)
    assert "ct pretrained" in session.models
    assert session.models["ct pretrained"].config.pretrain.loss == "mae"

    # Predict does not offer the pretrained model; Train segmentation starts from it
    predict = open_widget(viewer, "predict")
    assert "ct pretrained" not in predict["model"].choices
    train = open_widget(viewer, "train")
    train["images"].value = [ct]
    train["labels"].value = seg
    train["channels"].value, train["depth"].value = 4, 2
    train["patch"].value = "16, 32, 32"
    train["epochs"].value, train["steps"].value = 1, 3
    assert "ct pretrained" in train["init"].choices
    train["init"].value = "ct pretrained"
    train["freeze"].value = 1
    train["start"].changed.emit(True)
    status = train["status"].value  # not the last run's result
    assert status.startswith("running on image 'ct' with labels "), status
    qtbot.waitUntil(lambda: not train.runner.running, timeout=180000)
    start = train.model.provenance["initial_weights"]
    assert start["task"] == "pretraining" and start["loaded"] >= start["total"] - 4
    assert train.model.config.model.freeze_stages == 1 and start["frozen_stages"] == 1
    # what was taken and frozen is said, as on the command line's first line of training
    # the session model went to a bundle in the session's temp folder, which goes with the viewer; the
    # status and the provenance name it as the user knows it, not by that folder (trial 26)
    temp = session.temp_folder.resolve()
    assert start["source"] == "model 'ct pretrained'"
    assert (f"(started from {start['loaded']} of {start['total']} tensors of model 'ct pretrained' (pretraining)"
            in train["status"].value and "; the first encoder stage frozen" in train["status"].value), \
        train["status"].value
    assert str(temp) not in train["status"].value and "train-start" not in train["status"].value
    # without the plan, width and depth left at 'planned': the start model's are taken (the weights fit
    # no other network; it was refused, "only 5 of 37 learned tensors fit"); two folds say where they
    # started once (the status said it once per fold)
    train["plan"].value = False
    train["channels"].value, train["depth"].value = train["channels"].min, train["depth"].min
    train["folds"].value, train["patch"].value = 2, "16, 16, 32"
    train["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not train.runner.running, timeout=180000)
    assert train["status"].value.startswith("model 'ct model"), train["status"].value
    assert train["status"].value.count("started from") == 1, train["status"].value
    assert all(m.provenance["initial_weights"]["source"] == "model 'ct pretrained'" for m in train.model.members)
    assert (train.model.members[0].config.model.channels, train.model.members[0].config.model.depth) == (4, 2)
    assert not [n for n in notes if "error" in str(n.severity).lower()], [n.message for n in notes]
    viewer.close()
    qtbot.waitUntil(lambda: not temp.exists(), timeout=5000)


def test_no_layer_chosen_is_a_notification(make_napari_viewer, open_widget, notes):
    viewer = make_napari_viewer()
    pre = open_widget(viewer, "pretrain")
    pre["start"].changed.emit(True)
    assert not pre.runner.running
    assert any("choose at least one image" in n.message for n in notes)



def test_only_the_settings_the_corruption_reads_can_be_edited(make_napari_viewer, open_widget):
    viewer = make_napari_viewer()
    pre = open_widget(viewer, "pretrain")

    def editable():
        return {name for name in ("mask_ratio", "mask_block", "noise_std") if pre[name].enabled}

    assert pre["corruption"].value == "mask_noise" and editable() == {"mask_ratio", "mask_block", "noise_std"}
    pre["corruption"].value = "mask"
    assert editable() == {"mask_ratio", "mask_block"}
    pre["corruption"].value = "noise"
    assert editable() == {"noise_std"}


def _pretrain_briefly(viewer, open_widget, qtbot, layer):
    """The Pretrain widget, from the Plugins menu, after a 2-step run on ``layer``."""
    pre = open_widget(viewer, "pretrain")
    pre["images"].value = [layer]
    pre["channels"].value, pre["depth"].value = 4, 2
    pre["epochs"].value, pre["steps"].value = 1, 2
    pre["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not pre.runner.running, timeout=180000)
    return pre


def test_rgb_layer_reconstruction_is_rgb(make_napari_viewer, open_widget, qtbot, notes):
    from skimage import data

    viewer = make_napari_viewer()
    rgb = viewer.add_image(data.astronaut()[::4, ::4], name="astro", rgb=True, scale=(0.5, 0.5))
    _pretrain_briefly(viewer, open_widget, qtbot, rgb)
    assert not [n for n in notes if "error" in str(n.severity).lower()], [n.message for n in notes]
    rec = viewer.layers["astro [reconstruction]"]
    err = viewer.layers["astro [reconstruction error]"]
    # colour stays the last axis of an RGB layer that lies over its input (not 3 slices)
    assert rec.rgb and rec.data.shape == rgb.data.shape and rec.data.dtype == np.uint8
    assert tuple(rec.scale) == tuple(err.scale) == (0.5, 0.5) and err.data.shape == rgb.data.shape[:2]
    assert viewer.dims.ndim == 2


@pytest.mark.parametrize("kind", ["pretrain", "train"])
def test_a_bundle_folder_of_the_users_files_is_refused_before_the_run(make_napari_viewer, open_widget, qtbot, notes,
                                                                      tmp_path, kind):
    """Trial 37: Pretrain and Train trained to the end, then refused 'save bundle to' (it held the
    user's notes.txt), the run lost and its checkpoints left in the user's folder."""
    viewer = make_napari_viewer()
    p = phantom_3d(0)
    ct = viewer.add_image(p.image[CROP], name="ct", scale=p.spacing)
    widget = open_widget(viewer, kind)
    widget["images"].value = [ct]
    if kind == "train":
        widget["labels"].value = viewer.add_labels(p.labels[CROP], name="seg", scale=p.spacing)
    widget["channels"].value, widget["depth"].value = 4, 2
    widget["epochs"].value, widget["steps"].value = 1, 200
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    widget["bundle"].value = tmp_path / "mine"
    widget["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    errors = [n.message for n in notes if "error" in str(n.severity).lower()]
    assert len(errors) == 1 and "holds other files (notes.txt): choose a new or empty folder" in errors[0], errors
    assert sorted(f.name for f in (tmp_path / "mine").iterdir()) == ["notes.txt"]
    assert session_for(viewer).models == {}  # refused before the run: nothing trained


def test_an_image_removed_while_it_pretrains_gets_no_orphan_layers(make_napari_viewer, open_widget, qtbot, notes):
    """Review 20: the reconstruction layers of an image removed during the run were added all
    the same, lying on nothing."""
    viewer = make_napari_viewer()
    p = phantom_3d(0)
    ct = viewer.add_image(p.image[CROP], name="ct", scale=p.spacing)
    kept = viewer.add_image(phantom_3d(1).image[CROP], name="kept", scale=p.spacing)
    pre = open_widget(viewer, "pretrain")
    pre["images"].value = [ct, kept]
    pre["channels"].value, pre["depth"].value = 4, 2
    pre["epochs"].value, pre["steps"].value = 1, 2
    pre["start"].changed.emit(True)
    assert pre.runner.running
    viewer.layers.remove(ct)
    qtbot.waitUntil(lambda: not pre.runner.running, timeout=180000)
    assert not [n for n in notes if "error" in str(n.severity).lower()], [n.message for n in notes]
    assert [layer.name for layer in viewer.layers] == ["kept", "kept [reconstruction]", "kept [reconstruction error]"]
    assert "removed while it ran, so not shown: the reconstruction of 'ct'" in pre["status"].value


def test_reconstruct_applies_a_session_model_or_a_saved_bundle_to_new_layers(make_napari_viewer, open_widget,
                                                                              qtbot, notes, tmp_path):
    """A saved pretraining bundle could not be applied to a new layer in napari (the command
    line's predict could)."""
    from napari_medml._widgets.pretrain import FROM_BUNDLE

    viewer = make_napari_viewer()
    p = phantom_3d(0)
    ct = viewer.add_image(p.image[CROP], name="ct", scale=p.spacing)
    pre = _pretrain_briefly(viewer, open_widget, qtbot, ct)
    model = session_for(viewer).models["ct pretrained"]
    bundle = model.save(tmp_path / "pretrained")
    new = viewer.add_image(phantom_3d(2).image[CROP], name="new", scale=p.spacing)
    # twice the voxel size, and in other units (x100)
    coarse = viewer.add_image(phantom_3d(3).image[CROP] * 100, name="coarse", scale=[2 * s for s in p.spacing])
    original = new.data.copy()
    # the model the run made is listed at once (the session tells the widget)
    assert pre["use"].value == "ct pretrained" and set(pre["use"].choices) == {"ct pretrained", FROM_BUNDLE}
    pre["images"].value = [new]
    pre["reconstruct"].changed.emit(True)
    assert pre["status"].value == "reconstructing 'new'..."  # not the pretraining's result (review 33)
    qtbot.waitUntil(lambda: not pre.runner.running, timeout=60000)
    expected = model.reconstruct(new.data, spacing=p.spacing)
    np.testing.assert_allclose(viewer.layers["new [reconstruction]"].data, expected.image, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(viewer.layers["new [reconstruction error]"].data, expected.error, rtol=1e-4, atol=1e-5)
    assert tuple(viewer.layers["new [reconstruction error]"].scale) == tuple(new.scale)
    np.testing.assert_array_equal(new.data, original)
    assert pre["status"].value == "reconstructed 'new'", pre["status"].value
    # a saved bundle, on a layer of twice the voxel size and other intensities: both said
    pre["use"].value = FROM_BUNDLE
    pre["reconstruct"].changed.emit(True)
    assert any("choose the folder of a pretraining bundle" in n.message for n in notes)
    pre["use_bundle"].value = bundle
    pre["images"].value = [coarse]
    pre["reconstruct"].changed.emit(True)
    qtbot.waitUntil(lambda: not pre.runner.running, timeout=60000)
    assert "coarse [reconstruction]" in viewer.layers
    assert "layer 'coarse' has voxel size 4 x 2 x 2 but the model was trained at 2 x 1 x 1" in pre["status"].value
    assert "layer 'coarse' has intensities far from the training images'" in pre["status"].value
    errors = [n.message for n in notes if "error" in str(n.severity).lower()]
    assert len(errors) == 1 and "choose the folder of a pretraining bundle" in errors[0], errors
    from pathlib import Path

    segmentation = Path(__file__).parents[1] / "core" / "fixtures" / "schema1_segmentation"
    # trial 39: Predict with the pretraining bundle gave a traceback
    predict = open_widget(viewer, "predict")
    predict["images"].value = [new]
    predict["model"].value = "bundle folder..."
    predict["bundle"].value = bundle
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=60000)
    assert predict["status"].value == ("Prediction: 'pretrained' is a pretraining bundle, which segments nothing: "
                                       "Plugins › MedML › Pretrain ('reconstruct with') gives its reconstruction "
                                       "and anomaly map, and Train segmentation starts from it ('start bundle')")
    assert "new [prediction]" not in viewer.layers
    notes.clear()
    pre["use_bundle"].value = segmentation
    pre["reconstruct"].changed.emit(True)
    qtbot.waitUntil(lambda: not pre.runner.running, timeout=60000)
    assert pre["status"].value.endswith(f"'{segmentation}' holds a segmentation model: Reconstruct takes a "
                                        "pretraining bundle (Predict applies trained models)"), pre["status"].value


def test_a_stop_in_the_first_epoch_keeps_a_model_that_says_it_was_never_validated(make_napari_viewer, open_widget,
                                                                                  qtbot, notes, tmp_path):
    """Review 33: a Stop in the first epoch kept the model and called it ready as if it had trained."""
    viewer = make_napari_viewer()
    ct = viewer.add_image(phantom_3d(0).image[CROP], name="ct")
    pre = open_widget(viewer, "pretrain")
    pre["images"].value = [ct]
    pre["channels"].value, pre["depth"].value = 4, 2
    pre["epochs"].value, pre["steps"].value = 1, 100000
    pre["start"].changed.emit(True)
    qtbot.waitUntil(lambda: pre.runner.progress.value > 0, timeout=180000)  # its first step is reported
    pre["stop"].changed.emit(True)
    qtbot.waitUntil(lambda: not pre.runner.running, timeout=180000)
    model = session_for(viewer).models["ct pretrained"]
    assert model.history == [] and model.provenance["steps"] >= 1 and model.provenance["stopped_in_first_epoch"]
    assert f"(trained {model.provenance['steps']} step" in pre["status"].value, pre["status"].value
    assert "stopped before its first epoch ended: never validated, so these are its last weights" in \
        pre["status"].value and pre["status"].value.endswith("(stopped: Resume continues the run)")
    assert pre["resume"].enabled
    # review 37: a Start refused for its bundle folder left Resume on, to take up the stopped run's
    # checkpoints with the refused run's settings
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    pre["bundle"].value = mine
    pre["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not pre.runner.running, timeout=60000)
    assert any("holds other files (notes.txt)" in n.message for n in notes)
    assert not pre["resume"].enabled and sorted(f.name for f in mine.iterdir()) == ["notes.txt"]


def test_a_saved_pretrained_model_is_recorded_by_its_folder(make_napari_viewer, open_widget, qtbot, notes, tmp_path):
    """Trial 48: Train from a pretrained model the user had saved recorded the session's temp folder
    (gone with the viewer) as init_from; it records the folder the user saved it to."""
    viewer = make_napari_viewer()
    p = phantom_3d(0)
    ct = viewer.add_image(p.image[CROP], name="ct", scale=p.spacing)
    seg = viewer.add_labels(p.labels[CROP], name="seg", scale=p.spacing)
    pre = open_widget(viewer, "pretrain")
    pre["images"].value = [ct]
    pre["channels"].value, pre["depth"].value = 4, 2
    pre["epochs"].value, pre["steps"].value = 1, 2
    pre["bundle"].value = str(tmp_path / "pre")
    pre["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not pre.runner.running, timeout=180000)
    assert (tmp_path / "pre" / "config.json").is_file(), pre["status"].value
    train = open_widget(viewer, "train")
    train["images"].value, train["labels"].value = [ct], seg
    train["channels"].value, train["depth"].value = 4, 2
    train["patch"].value = "16, 32, 32"
    train["epochs"].value, train["steps"].value = 1, 2
    train["init"].value = "ct pretrained"
    train["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not train.runner.running, timeout=180000)
    saved = str((tmp_path / "pre").resolve())
    assert train.model.config.model.init_from == saved
    assert train.model.provenance["initial_weights"]["source"] == saved
    assert "train-start" not in train["status"].value and f"tensors of {saved}" in train["status"].value
    assert not [n for n in notes if "error" in str(n.severity).lower()], [n.message for n in notes]
