"""Augmentation widget: edits the session's AugmentConfig; Preview makes two new layers."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity

import napari_medml.augment.transforms as transforms
from axes_helpers import named
from napari_medml._widgets._session import session_for
from napari_medml.config import AugmentConfig, AugmentSpec
from napari_medml.layer_data import _add_image_takes_axis_labels
from napari_medml.samples import phantom_3d

# trains in the GUI: one torch thread keeps the waits steady on a busy 2-core machine (two threads
# spinning against Xvfb and the GUI thread made a step 10-20x slower)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def setup(make_napari_viewer, open_widget):
    viewer = make_napari_viewer()
    p = phantom_3d(0)
    image = viewer.add_image(p.image[16:32, 16:80, 16:80], name="ct", scale=p.spacing)
    labels = viewer.add_labels(p.labels[16:32, 16:80, 16:80], name="seg", scale=p.spacing)
    widget = open_widget(viewer, "augment")
    return viewer, widget, image, labels


def test_form_is_the_session_config(setup):
    viewer, widget, _, _ = setup
    assert widget.config() == AugmentConfig()
    prob, strength = widget.specs["elastic"]
    prob.value, strength.value = 0.5, 2.0
    cfg = session_for(viewer).augment
    assert cfg.elastic.prob == pytest.approx(0.5) and cfg.elastic.strength == pytest.approx(2.0)
    widget.none_button.changed.emit(True)
    assert session_for(viewer).augment == AugmentConfig.none()
    assert "Gaussian noise" in widget.specs["noise"][0].tooltip


def test_preview_makes_sample_layers(setup, qtbot, notes):
    viewer, widget, image, labels = setup
    before_image, before_labels = image.data.copy(), labels.data.copy()
    widget.image.value, widget.label_layer.value = image, labels
    widget.n.value = 3
    widget.spatial_dims.value = "2D"
    widget.preview_button.changed.emit(True)
    qtbot.waitUntil(lambda: "seg [augmentation preview]" in viewer.layers, timeout=30000)
    imgs = viewer.layers["ct [augmentation preview]"]
    labs = viewer.layers["seg [augmentation preview]"]
    assert imgs.data.shape == (3, *image.data.shape)
    assert labs.data.shape == (3, *labels.data.shape)
    assert tuple(imgs.scale) == (1.0, 2.0, 1.0, 1.0)
    assert set(np.unique(labs.data)) <= {0, 1, 2, 3}
    # a re-run replaces its own layers, never adds duplicates; inputs untouched
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=5000)
    widget.preview_button.changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30000)
    assert len(viewer.layers) == 4
    np.testing.assert_array_equal(image.data, before_image)
    np.testing.assert_array_equal(labels.data, before_labels)
    # trial 43: the defaults previewed are what a planned run scales down, and the preview says so; values set
    # here train as set, and then it says nothing
    from napari_medml._widgets.augment import PLANNED_NOTE

    said = [n.message for n in notes if PLANNED_NOTE in n.message]
    assert len(said) == 2 and "0.25 to 1 of them" in said[0]
    widget.specs["flip"][0].value = 0.9
    widget.preview_button.changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30000)
    assert len([n for n in notes if PLANNED_NOTE in n.message]) == 2


def test_preview_errors_are_notifications(setup, qtbot, notes):
    viewer, widget, image, _ = setup
    bad = viewer.add_labels(np.zeros((5, 5, 5), np.uint8), name="small")
    widget.image.value, widget.label_layer.value = image, bad
    widget.preview_button.changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=5000)
    errors = [n for n in notes if n.severity == NotificationSeverity.ERROR]
    assert errors and "shape" in errors[0].message
    assert "small [augmentation preview]" not in viewer.layers
    # the shapes the user made, both layers named (the cropped preview windows were quoted), no traceback
    movie = viewer.add_image(np.zeros((3, 2, 12, 48, 48), np.float32), name="movie", **named("t", "c", "z", "y", "x"))
    nuclei = viewer.add_labels(np.zeros((12, 48, 48), np.uint8), name="nuclei")
    widget.image.value, widget.label_layer.value = movie, nuclei
    widget.preview_button.changed.emit(True)
    assert notes[-1].message == ("Augmentation preview: labels 'nuclei' have shape (12, 48, 48) but image 'movie' "
                                 "(axes TCZYX) has (3, 12, 48, 48) without channels: choose labels drawn on that "
                                 "image (one frame of labels per time point)")
    widget.image.value, widget.label_layer.value, widget.patch.value = image, viewer.layers["seg"], "0, 0, 0"
    widget.preview_button.changed.emit(True)
    assert notes[-1].message == ("Augmentation preview: patch size '0, 0, 0': sizes must be 1 or more, such as "
                                 "'64' or '16, 64, 64' (or 0 alone: automatic)")
    assert not widget.runner.running
    # NaNs: previewed all the same, and said (training refuses them)
    holes = np.array(image.data, copy=True)
    holes[:, 10:14, 10:14] = np.nan
    holed = viewer.add_image(holes, name="holes", scale=image.scale)
    widget.patch.value = "0"
    _run(widget, qtbot, viewer, holed, viewer.layers["seg"])
    warnings = [n.message for n in notes if n.severity == NotificationSeverity.WARNING]
    assert warnings and warnings[-1].startswith("Augmentation preview: warning: image 'holes' (where the view is) "
                                                "contains ") and "training refuses them" in warnings[-1], warnings


def _objects(shape=(48, 64), offset=0):
    """Bright rectangles with ids 1.. (+ offset) on a dark background; image and labels."""
    lab = np.zeros(shape, np.int64)
    k = 0
    for y in range(3, shape[0] - 10, 14):
        for x in range(4, shape[1] - 12, 17):
            k += 1
            lab[y:y + 6 + k % 4, x:x + 9] = k + offset
    return np.where(lab > 0, 220.0, 20.0), lab


def test_cancel_stops_the_preview_between_samples_and_adds_no_layer(make_napari_viewer, open_widget, qtbot, notes):
    """Note 49: a preview of many elastic 3D samples could not be cancelled; the bar counts the
    samples and Cancel ends it before the last, adding nothing."""
    p = phantom_3d(0)
    viewer = make_napari_viewer()
    image = viewer.add_image(p.image, name="ct", scale=p.spacing)
    labels = viewer.add_labels(p.labels, name="seg", scale=p.spacing)
    widget = open_widget(viewer, "augment")
    widget.image.value, widget.label_layer.value = image, labels
    widget.set_config(only("elastic", "affine", prob=1.0))
    widget.n.value, widget.patch.value = 64, "32,64,64"
    assert not widget.cancel_button.enabled
    widget.preview_button.changed.emit(True)
    assert widget.cancel_button.enabled
    qtbot.waitUntil(lambda: widget.runner.progress.value >= 1, timeout=60000)  # a sample done: the bar moves
    assert widget.runner.progress.max == 64 and "/64" in widget.runner.progress_text
    widget.cancel_button.changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30000)
    assert widget.runner.progress.value < 64  # stopped before the last sample
    assert any("Augmentation preview cancelled." in n.message for n in notes)
    assert [layer.name for layer in viewer.layers] == ["ct", "seg"]
    assert not widget.cancel_button.enabled and widget.preview_button.enabled


def _run(widget, qtbot, viewer, image, labels):
    widget.image.value, widget.label_layer.value = image, labels
    widget.preview_button.changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    return viewer.layers[f"{image.name} [augmentation preview]"], viewer.layers[f"{labels.name} [augmentation preview]"]


def only(*names, prob=0.5):
    import dataclasses

    return dataclasses.replace(AugmentConfig.none(), **{n: AugmentSpec(prob, 1.0) for n in names})


def test_preview_of_an_rgb_layer_is_rgb_and_aligned(make_napari_viewer, open_widget, qtbot, notes):
    viewer = make_napari_viewer()
    bright, lab = _objects()
    rgb = np.stack([bright, 255 - bright, np.full_like(bright, 90)], axis=-1).astype(np.uint8)
    image = viewer.add_image(rgb, name="photo", scale=(0.5, 0.5))
    labels = viewer.add_labels((lab > 0).astype(np.uint8), name="mask", scale=(0.5, 0.5))
    widget = open_widget(viewer, "augment")
    widget.set_config(only("flip", "rotate90"))
    widget.n.value, widget.patch.value = 4, "48, 64"
    shown, samples = _run(widget, qtbot, viewer, image, labels)
    assert not [n for n in notes if n.severity == NotificationSeverity.ERROR]
    assert shown.rgb and shown.data.shape == (4, 48, 64, 3) and samples.data.shape == (4, 48, 64)
    assert tuple(shown.scale) == (1.0, 0.5, 0.5) == tuple(samples.scale)
    assert any(not np.array_equal(s, lab > 0) for s in samples.data)
    for sample, mask in zip(shown.data, samples.data):  # one draw moved colours and labels together
        assert np.all(sample[..., 0][mask > 0] > 200) and np.all(sample[..., 0][mask == 0] < 40)
        np.testing.assert_allclose(sample[..., 0] + sample[..., 1], 255.0, atol=1e-3)
    np.testing.assert_array_equal(image.data, rgb)


def test_a_time_lapse_with_labels_saved_without_its_frame_interval_is_previewed(make_napari_viewer, open_widget,
                                                                                qtbot, notes):
    """Trial 30: an ImageJ time-lapse (frame interval 60 s: t scale 60) and its mask saved without one (t scale 1)
    were refused as not lying on each other, while the command line trained on the same files; frames pair by
    index, and a shifted frame interval still lets the voxels meet. A Y scale that differs is still refused."""
    viewer = make_napari_viewer()
    bright, lab = _objects()
    image = viewer.add_image(np.stack([bright] * 3), name="movie", scale=(60, 0.5, 0.5), **named("t", "y", "x"))
    labels = viewer.add_labels(np.stack([(lab > 0).astype(np.uint8)] * 3), name="mask", scale=(1, 0.5, 0.5),
                               **named("t", "y", "x"))
    widget = open_widget(viewer, "augment")
    widget.n.value, widget.patch.value = 2, "48, 64"
    shown, samples = _run(widget, qtbot, viewer, image, labels)
    assert not [n for n in notes if n.severity == NotificationSeverity.ERROR]
    assert samples.data.shape[-2:] == (48, 64)
    labels.scale = (1, 0.25, 0.5)
    widget.preview()
    errors = [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert errors and "labels 'mask' do not lie on image 'movie' (scale (0.25, 0.5) against (0.5, 0.5))" in errors[-1]


def test_preview_of_a_two_channel_volume_keeps_its_channel_axis(make_napari_viewer, open_widget, qtbot, notes):
    viewer = make_napari_viewer()
    bright, lab = _objects()
    data = np.stack([np.stack([bright] * 6), np.stack([255 - bright] * 6)]).astype(np.float32)
    image = viewer.add_image(data, name="mc", scale=(1.0, 3.0, 1.0, 1.0), **named("c", "z", "y", "x"))
    labels = viewer.add_labels(np.stack([lab] * 6).astype(np.uint16), name="lab", scale=(3.0, 1.0, 1.0))
    widget = open_widget(viewer, "augment")
    widget.set_config(only("flip", "rotate90"))
    widget.n.value, widget.patch.value = 3, "0"  # automatic: the patch training chooses, (8, 48, 64) here
    shown, samples = _run(widget, qtbot, viewer, image, labels)
    assert not [n for n in notes if n.severity == NotificationSeverity.ERROR]
    # 6 slices padded at the end to the patch's 8, as training pads a thin volume (labels 0: unlabeled)
    assert shown.data.shape == (3, 2, 8, 48, 64) and samples.data.shape == (3, 8, 48, 64)
    assert [int(s.any(axis=(1, 2)).sum()) for s in samples.data] == [6, 6, 6]  # (flips in Z move the padding)
    if _add_image_takes_axis_labels():  # napari 0.5.0 shows no axis names
        assert tuple(shown.axis_labels) == ("sample", "c", "z", "y", "x")
    assert tuple(shown.scale) == (1.0, 1.0, 3.0, 1.0, 1.0) and tuple(samples.scale) == (1.0, 3.0, 1.0, 1.0)
    np.testing.assert_allclose(shown.data[:, 0] + shown.data[:, 1], 255.0, atol=1e-3)  # the same draw
    for sample, ids in zip(shown.data, samples.data):
        assert np.all(sample[0][ids > 0] > 200) and set(np.unique(ids)) == set(np.unique(lab))


def test_preview_keeps_huge_instance_ids(make_napari_viewer, open_widget, qtbot):
    viewer = make_napari_viewer()
    bright, lab = _objects(offset=2**25)
    lab[lab > 0] += (np.arange((lab > 0).sum()) % 2)  # neighbours 2**25 + k, + k + 1: apart only as integers
    image, labels = viewer.add_image(bright, name="cells"), viewer.add_labels(lab, name="ids")
    widget = open_widget(viewer, "augment")
    widget.none_button.changed.emit(True)
    widget.n.value, widget.patch.value = 1, "32"
    _, samples = _run(widget, qtbot, viewer, image, labels)
    # a 32 x 32 crop where the viewer looks, placed where it lies in the layer
    y, x = (int(t) for t in samples.translate[-2:])
    np.testing.assert_array_equal(samples.data[0], lab[y:y + 32, x:x + 32])
    widget.set_config(only("flip", "rotate90", "affine"))
    widget.n.value = 4
    _, samples = _run(widget, qtbot, viewer, image, labels)
    assert set(np.unique(samples.data)) <= set(np.unique(lab))
    assert len(np.unique(samples.data)) > 4


def test_preview_builds_the_transforms_training_builds(make_napari_viewer, open_widget, qtbot, monkeypatch):
    calls = []
    builder = transforms.augmentation_transforms

    def spy(*args, **kwargs):
        calls.append((args[1:], {k: v for k, v in kwargs.items() if k != "seed"}))
        return builder(*args, **kwargs)

    monkeypatch.setattr(transforms, "augmentation_transforms", spy)  # the one builder both call
    viewer = make_napari_viewer()
    bright, lab = _objects((40, 56))
    image = viewer.add_image(np.stack([bright] * 12), name="vol", scale=(5.0, 1.0, 1.0))
    labels = viewer.add_labels(np.stack([lab] * 12).astype(np.uint8), name="lvol", scale=(5.0, 1.0, 1.0))
    train = open_widget(viewer, "train")
    train["plan"].value, train["dims"].value, train["patch"].value = False, 3, "8, 32, 32"
    widget = open_widget(viewer, "augment")
    widget.set_config(only("affine", "rotate90", prob=1.0))
    widget.n.value, widget.spatial_dims.value = 1, "3D"  # patch 0: Train segmentation's
    shown, _ = _run(widget, qtbot, viewer, image, labels)
    assert shown.data.shape == (1, 8, 32, 32)
    train["images"].value, train["labels"].value = [image], labels
    train["channels"].value, train["depth"].value = 4, 2
    train["epochs"].value, train["steps"].value, train["val_fraction"].value = 1, 1, 0.0
    train["device"].value = "cpu"
    train["start"].changed.emit(True)
    qtbot.waitUntil(lambda: len(calls) >= 2, timeout=120000)
    qtbot.waitUntil(lambda: not train.runner.running, timeout=120000)
    preview_call, train_call = calls[0], calls[1]
    assert preview_call == train_call
    assert train_call[1]["spacing"] == (5.0, 1.0, 1.0) and tuple(train_call[1]["spatial_shape"]) == (8, 32, 32)
