"""Preprocess widget: new layers, chained recipes, crop geometry, live preview, errors."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from axes_helpers import axis_names
from napari_medml._widgets._session import session_for
from napari_medml.samples import phantom_3d


@pytest.fixture
def setup(make_napari_viewer, open_widget):
    viewer = make_napari_viewer()
    p = phantom_3d(0)
    image = viewer.add_image(p.image[:24] * 1000 - 500, name="ct", scale=p.spacing)
    labels = viewer.add_labels(p.labels[:24], name="seg", scale=p.spacing)
    widget = open_widget(viewer, "preprocess")
    widget["image"].value = image
    return viewer, widget, image, labels


def _apply(widget, qtbot):
    widget["apply"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30000)


def test_chain_makes_new_layers_with_recipe(setup, qtbot, open_widget):
    viewer, widget, image, _ = setup
    before = image.data.copy()
    widget["operation"].value = "ct_window"
    widget["preset"].value = "lung"
    _apply(widget, qtbot)
    windowed = viewer.layers["ct [window lung]"]
    assert windowed.data.min() >= 0 and windowed.data.max() <= 1
    widget["image"].value = windowed
    widget["operation"].value = "zscore"
    _apply(widget, qtbot)
    chained = viewer.layers["ct [window lung] [z-score]"]
    assert [s["operation"] for s in chained.metadata["preprocessing"]] == ["ct_window", "zscore"]
    assert chained.metadata["preprocess_source"] == "ct"
    assert abs(float(chained.data.mean())) < 1e-3
    np.testing.assert_array_equal(image.data, before)  # the input is never modified
    # the train widget takes the chain as its recipe
    train = open_widget(viewer, "train")
    cfg = train.config(recipe=tuple(__import__("napari_medml._widgets._layers", fromlist=["x"])
                                    .layer_recipe(chained)))
    assert [s.operation for s in cfg.data.preprocessing] == ["ct_window", "zscore"]


def test_a_preprocessed_layer_finds_its_raw_layer_renamed_and_not_another_of_its_name(setup, qtbot):
    """Review 20: the raw layer was found by name, so a renamed raw layer broke the chain and
    another image given its old name was trained on in its place."""
    from napari_medml._widgets._layers import raw_layer
    from napari_medml.errors import InputError

    viewer, widget, image, _ = setup
    widget["operation"].value = "zscore"
    _apply(widget, qtbot)
    scored = viewer.layers["ct [z-score]"]
    assert scored.metadata["preprocess_source_shape"] == list(image.data.shape)
    image.name = "ct raw"
    other = viewer.add_image(np.zeros((4, 8, 8), np.float32), name="ct")
    assert raw_layer(viewer, scored) is image  # the same layer, renamed
    viewer.layers.remove(image)
    with pytest.raises(InputError) as info:
        raw_layer(viewer, scored)
    assert str(info.value) == (f"image 'ct [z-score]' was preprocessed from another 'ct' (of shape "
                               f"{image.data.shape}) than the one open now: open that image again, or choose an "
                               "image without preprocessing")
    other.data = image.data  # a reloaded session: new ids, the same name and shape
    assert raw_layer(viewer, scored) is other


def test_resample_and_crop_keep_geometry(setup, qtbot):
    viewer, widget, image, labels = setup
    widget["operation"].value = "resample"
    widget["target_spacing"].value = "4, 2, 2"
    _apply(widget, qtbot)
    res = viewer.layers["ct [resample 4x2x2]"]
    assert tuple(res.scale) == (4.0, 2.0, 2.0) and res.data.shape == (12, 48, 48)
    widget["image"].value = image
    widget["target_spacing"].value = "4"  # one value for every axis, as the patch fields take it (trial 31)
    _apply(widget, qtbot)
    assert tuple(viewer.layers["ct [resample 4x4x4]"].scale) == (4.0, 4.0, 4.0)
    widget["operation"].value = "crop_labels"
    widget["crop_labels"].value = labels
    _apply(widget, qtbot)
    cropped = viewer.layers["ct [crop to seg]"]
    crop_labels = viewer.layers["seg [crop]"]
    assert cropped.data.shape == crop_labels.data.shape
    index = np.nonzero(labels.data)
    offset = np.array([ix.min() for ix in index])
    np.testing.assert_allclose(cropped.translate, offset * np.array(image.scale))
    assert crop_labels.data.all() or crop_labels.data.any()


def test_results_of_a_rotated_image_lie_on_it(setup, qtbot):
    """Trial 21: preprocessing results ignored the image's rotate and affine."""
    viewer, widget, image, labels = setup
    c, s = np.cos(0.3), np.sin(0.3)
    for layer in (image, labels):
        layer.rotate = [[1, 0, 0], [0, c, -s], [0, s, c]]
        layer.affine = [[1, 0, 0, 4.0], [0, 1, 0, -3.0], [0, 0, 1, 1.0], [0, 0, 0, 1]]
    widget["operation"].value = "zscore"
    _apply(widget, qtbot)
    np.testing.assert_allclose(viewer.layers["ct [z-score]"].extent.world, image.extent.world, atol=1e-6)
    widget["image"].value = image
    widget["operation"].value = "crop_labels"
    widget["crop_labels"].value = labels
    _apply(widget, qtbot)
    offset = np.array([ix.min() for ix in np.nonzero(labels.data)])
    for name in ("ct [crop to seg]", "seg [crop]"):
        crop = viewer.layers[name]
        for voxel in ((0, 0, 0), (3, 5, 7)):
            np.testing.assert_allclose(crop.data_to_world(voxel), image.data_to_world(offset + voxel), atol=1e-6)


def test_a_result_that_cannot_lie_on_its_image_is_not_shown(setup, qtbot, make_napari_viewer, open_widget):
    """Review 22: the live preview (a plane) of a volume rotated about Y was added unrotated, in
    the wrong place, before the placement was found impossible."""
    viewer, widget, image, _ = setup
    c, s = np.cos(0.4), np.sin(0.4)
    image.rotate = [[c, 0, -s], [0, 1, 0], [s, 0, c]]  # mixes Z into X: no plane of it lies flat
    widget["operation"].value = "minmax"
    widget["live"].value = True
    assert "ct [preview]" not in viewer.layers
    widget["live"].value = False
    _apply(widget, qtbot)  # the whole volume has every axis: placed
    np.testing.assert_allclose(viewer.layers["ct [min-max]"].extent.world, image.extent.world, atol=1e-6)
    rgb_viewer = make_napari_viewer()
    photo = rgb_viewer.add_image(np.random.default_rng(0).integers(0, 255, (24, 32, 3), np.uint8), name="photo",
                                 rgb=True, rotate=30)
    rgb_widget = open_widget(rgb_viewer, "preprocess")
    rgb_widget["image"].value = photo
    rgb_widget["operation"].value = "gaussian"
    _apply(rgb_widget, qtbot)  # an RGB result: its colour axis is no axis to place
    np.testing.assert_allclose(rgb_viewer.layers["photo [gaussian 1]"].extent.world, photo.extent.world, atol=1e-6)


def test_removing_the_image_during_a_live_preview_removes_the_preview(setup, qtbot, notes):
    """Review 22: the image list fell on the preview layer, which was previewed in turn
    ('ct [preview] [preview]'), and selecting the removed image raised."""
    viewer, widget, image, _ = setup
    widget["operation"].value = "minmax"
    widget["live"].value = True
    assert "ct [preview]" in viewer.layers
    viewer.layers.remove(image)
    qtbot.wait(100)
    assert not [layer.name for layer in viewer.layers if "[preview]" in layer.name]
    assert not [n.message for n in notes if "error" in str(n.severity).lower()]


def test_a_closed_preprocess_no_longer_follows_the_slider(setup, qtbot, monkeypatch):
    """Note 45: napari's dock close keeps the form, and its live preview still ran at every
    move of the slider, unseen."""
    import napari_medml._widgets.preprocess as module

    viewer, widget, image, _ = setup
    widget["operation"].value = "minmax"
    widget["live"].value = True
    assert "ct [preview]" in viewer.layers
    viewer.window.remove_dock_widget(widget.native)  # the dock's close button
    qtbot.wait(50)
    assert "ct [preview]" not in viewer.layers
    calls = []
    monkeypatch.setattr(module, "_preview", lambda *a: calls.append(a))
    viewer.dims.set_current_step(0, 3)
    viewer.dims.set_current_step(0, 9)
    qtbot.wait(50)
    assert calls == [] and "ct [preview]" not in viewer.layers
    assert [layer.name for layer in viewer.layers] == ["ct", "seg"]


def test_live_preview_and_errors(setup, qtbot):
    viewer, widget, image, _ = setup
    notes = []
    notification_manager.notification_ready.connect(notes.append)
    widget["operation"].value = "minmax"
    widget["live"].value = True
    preview = viewer.layers["ct [preview]"]
    assert preview.data.ndim == 2 and preview.data.max() == pytest.approx(1.0)
    widget["live"].value = False
    assert "ct [preview]" not in viewer.layers
    widget["operation"].value = "resample"
    widget["target_spacing"].value = "one, two"
    _apply(widget, qtbot)
    notification_manager.notification_ready.disconnect(notes.append)
    assert any(n.severity == NotificationSeverity.ERROR and "target spacing" in n.message
               for n in notes)
    assert [layer.name for layer in viewer.layers] == ["ct", "seg"]
    # trial 46: "crop: the mask is empty; nothing to crop to" named neither the image nor a fix
    notification_manager.notification_ready.connect(notes.append)
    widget["operation"].value, widget["threshold"].value = "crop", 5000.0
    _apply(widget, qtbot)
    notification_manager.notification_ready.disconnect(notes.append)
    top = float(image.data.max())
    assert notes[-1].message == (f"Preprocessing: image 'ct': crop: no voxel is above the threshold 5000 (its "
                                 f"largest value is {top:.4g}): choose a lower threshold")
    assert [layer.name for layer in viewer.layers] == ["ct", "seg"]


def test_an_image_with_nans_is_processed_with_a_warning(make_napari_viewer, open_widget, qtbot, notes):
    """NaNs pass through (a filter spreads them) and training refuses them: said at once."""
    viewer = make_napari_viewer()
    data = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    data[10:20, 10:30] = np.nan
    image = viewer.add_image(data, name="scan")
    widget = open_widget(viewer, "preprocess")
    widget["image"].value, widget["operation"].value = image, "zscore"
    _apply(widget, qtbot)
    assert len(viewer.layers) == 2 and viewer.layers[1].name.startswith("scan [")  # the result, made all the same
    warnings = [n.message for n in notes if n.severity == NotificationSeverity.WARNING]
    assert warnings == ["Preprocessing: warning: image 'scan' contains 200 NaN or infinite value(s): fill them "
                        "first (napari: Preprocess > fill NaN/inf, a step that models trained on its layer replay; "
                        "Python: "
                        "napari_medml.preprocessing.ops.fill_nonfinite); preprocessing keeps them (a filter "
                        "spreads them) and training refuses them"], warnings
    assert np.isnan(image.data).sum() == 200  # the user's layer is unchanged
    # trial 28: no operation filled them, so the fix could not be done here; it can now, and Live takes the result
    notes.clear()
    widget["operation"].value = "fill_nan"
    _apply(widget, qtbot)
    filled = viewer.layers[-1]
    assert filled.name == "scan [fill NaN]" and np.isfinite(filled.data).all()
    np.testing.assert_array_equal(filled.data[10:20, 10:30], np.nanmin(data))
    np.testing.assert_array_equal(filled.data[30:], data[30:])
    assert not [n for n in notes if n.severity >= NotificationSeverity.WARNING]
    assert np.isnan(image.data).sum() == 200
    live = open_widget(viewer, "live")
    live["images"].value, live["network"].value = [filled], False
    live["start"].changed.emit(True)
    qtbot.waitUntil(lambda: live.session is not None, timeout=60000)
    live["stop"].changed.emit(True)
    qtbot.waitUntil(lambda: not live.runner.running, timeout=30000)
    assert not [n for n in notes if n.severity == NotificationSeverity.ERROR]
    # trial 29: the fill was a new image, so a model trained on 'scan [fill NaN] [z-score]' kept only the z-score
    # and refused the raw scan; the fill is now the recipe's first step, which training and prediction replay
    widget["image"].reset_choices()
    widget["image"].value, widget["operation"].value = filled, "zscore"
    _apply(widget, qtbot)
    scored = viewer.layers[-1]
    assert scored.name == "scan [fill NaN] [z-score]"
    labels = viewer.add_labels((scored.data > 0).astype(np.uint8) + 1, name="seg")
    train = open_widget(viewer, "train")
    train["images"].value, train["labels"].value = [scored], labels
    train["channels"].value, train["depth"].value, train["epochs"].value, train["steps"].value = 4, 2, 1, 1
    train["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not train.runner.running, timeout=120000)
    assert not [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    (model,) = session_for(viewer).models.values()
    assert [s.operation for s in model.config.data.preprocessing] == ["fill_nan", "zscore"]
    predict = open_widget(viewer, "predict")
    predict["images"].value = [image]  # the raw scan, NaNs and all
    predict["model"].reset_choices()
    predict["model"].value = next(iter(session_for(viewer).models))
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=120000)
    assert not [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert viewer.layers["scan [prediction]"].data.shape == data.shape


# --- channels, RGB and time series: per channel and per frame, as training replays the recipe ---


def _open(viewer, path):
    return viewer.open(str(path), plugin="napari-medml")[0]


def _choose(widget, layer, operation):
    widget["image"].reset_choices()
    widget["image"].value = layer
    widget["operation"].value = operation


def test_multichannel_hyperstack_is_processed_per_channel(make_napari_viewer, open_widget, qtbot, tmp_path):
    import tifffile

    from napari_medml.preprocessing.recipe import apply_step

    rng = np.random.default_rng(0)
    zcyx = rng.normal(100, 20, (6, 2, 24, 20)).astype(np.float32)
    zcyx[:, 1] = zcyx[:, 1] * 10 + 2000  # another range: one shared statistic would mix the channels
    tifffile.imwrite(tmp_path / "two.tif", zcyx, imagej=True, resolution=(2, 2),
                     metadata={"axes": "ZCYX", "spacing": 3.0})
    viewer = make_napari_viewer()
    layer = _open(viewer, tmp_path / "two.tif")
    assert axis_names(layer) == ("c", "z", "y", "x")
    before = np.array(layer.data, copy=True)
    widget = open_widget(viewer, "preprocess")
    for operation, name in (("percentile", "two [percentile 1-99]"), ("gaussian", "two [gaussian 1]")):
        _choose(widget, layer, operation)
        _apply(widget, qtbot)
        out = viewer.layers[name]
        assert out.data.shape == layer.data.shape
        assert axis_names(out) == ("c", "z", "y", "x")
        np.testing.assert_allclose(out.scale, layer.scale)
        np.testing.assert_allclose(out.translate, layer.translate)
        for k in range(2):
            expected, _ = apply_step(layer.data[k], tuple(layer.scale[1:]), widget.step())
            np.testing.assert_allclose(out.data[k], expected, atol=1e-5)
    # crop to a labels layer (Z, Y, X): both channels get the same box
    mask = np.zeros(layer.data.shape[1:], np.uint8)
    mask[2:4, 5:9, 6:10] = 1
    seg = viewer.add_labels(mask, name="seg", scale=tuple(layer.scale[1:]), translate=tuple(layer.translate[1:]))
    _choose(widget, layer, "crop_labels")
    widget["crop_labels"].reset_choices()
    widget["crop_labels"].value = seg
    _apply(widget, qtbot)
    cropped, cropped_seg = viewer.layers["two [crop to seg]"], viewer.layers["seg [crop]"]
    np.testing.assert_array_equal(cropped.data, layer.data[:, 2:4, 5:9, 6:10])
    assert cropped_seg.data.shape == (2, 4, 4) and cropped_seg.data.all()
    assert axis_names(cropped) == ("c", "z", "y", "x")
    np.testing.assert_allclose(cropped.translate[1:], cropped_seg.translate)
    np.testing.assert_allclose(cropped_seg.translate, np.array(seg.translate) + np.array([2, 5, 6]) * seg.scale)
    np.testing.assert_array_equal(layer.data, before)


def test_rgb_layer_is_processed_per_colour_and_previewed_in_colour(make_napari_viewer, open_widget, qtbot,
                                                                   tmp_path):
    import tifffile
    from scipy import ndimage

    rgb = np.random.default_rng(1).integers(0, 255, (40, 48, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "photo.tif", rgb)
    viewer = make_napari_viewer()
    layer = _open(viewer, tmp_path / "photo.tif")
    assert layer.rgb
    widget = open_widget(viewer, "preprocess")
    _choose(widget, layer, "gaussian")
    widget["sigma"].value = 1.5
    _apply(widget, qtbot)
    out = viewer.layers["photo [gaussian 1.5]"]
    assert out.rgb and out.data.shape == rgb.shape
    for k in range(3):
        np.testing.assert_allclose(out.data[..., k],
                                   ndimage.gaussian_filter(rgb[..., k].astype(np.float32), 1.5, mode="nearest"),
                                   atol=1e-4)
    _choose(widget, layer, "minmax")
    widget["live"].value = True
    preview = viewer.layers["photo [preview]"]
    assert preview.rgb and preview.data.shape == rgb.shape
    for k in range(3):
        channel = rgb[..., k].astype(np.float32)
        np.testing.assert_allclose(preview.data[..., k], (channel - channel.min()) / np.ptp(channel), atol=1e-6)
    widget["live"].value = False
    _choose(widget, layer, "resample")
    assert widget["target_spacing"].value == "1, 1"  # the field offers the image's two spatial axes
    widget["target_spacing"].value = "2, 2"
    _apply(widget, qtbot)
    half = viewer.layers["photo [resample 2x2]"]
    assert half.rgb and half.data.shape == (20, 24, 3) and tuple(half.scale) == (2.0, 2.0)


def test_time_series_is_processed_frame_by_frame(make_napari_viewer, open_widget, qtbot, tmp_path, notes):
    import tifffile
    from scipy import ndimage

    from napari_medml._widgets._layers import layer_recipe, model_input
    from napari_medml.preprocessing.inputs import run_recipe_channels

    tyx = np.random.default_rng(2).normal(100, 30, (4, 32, 28)).astype(np.float32)
    tifffile.imwrite(tmp_path / "tyx.tif", tyx, imagej=True, metadata={"axes": "TYX"})
    viewer = make_napari_viewer()
    layer = _open(viewer, tmp_path / "tyx.tif")
    assert axis_names(layer) == ("t", "y", "x")
    widget = open_widget(viewer, "preprocess")
    _choose(widget, layer, "gaussian")
    widget["sigma"].value = 2.0
    _apply(widget, qtbot)
    blurred = viewer.layers["tyx [gaussian 2]"]
    assert axis_names(blurred) == ("t", "y", "x")
    for t in range(4):
        np.testing.assert_allclose(blurred.data[t], ndimage.gaussian_filter(tyx[t], 2.0, mode="nearest"), atol=1e-4)
    _choose(widget, layer, "resample")
    widget["target_spacing"].value = "0.5, 0.5"
    _apply(widget, qtbot)
    finer = viewer.layers["tyx [resample 0.5x0.5]"]
    assert finer.data.shape == (4, 64, 56) and axis_names(finer) == ("t", "y", "x")
    np.testing.assert_allclose(finer.scale, (layer.scale[0], 0.5, 0.5))
    # training replays that recipe on the raw frames without complaint
    inputs = model_input(viewer, [finer])
    images, _, spacings, channel = inputs.samples(np.zeros((4, 32, 28), np.uint8), 2)
    replayed, _, _ = run_recipe_channels(images[0][None], spacings[0], layer_recipe(finer))
    np.testing.assert_allclose(replayed[0], finer.data[0], atol=1e-5)
    # a value for the time axis too: refused with the fix, nothing added
    count = len(viewer.layers)
    widget["target_spacing"].value = "0.5, 0.5, 0.5"
    _apply(widget, qtbot)
    assert len(viewer.layers) == count
    assert any(n.severity == NotificationSeverity.ERROR and "'tyx' has 2 spatial axes (y, x)" in n.message
               and "give 2 values" in n.message for n in notes)
    # review 46: a crop finding nothing in one frame named "the image's largest value", that frame's
    _choose(widget, layer, "crop")
    widget["threshold"].value = float(tyx[0].max()) + 1.0  # above frame 1's largest value
    _apply(widget, qtbot)
    assert len(viewer.layers) == count
    top = next(t for t in range(4) if tyx[t].max() <= widget["threshold"].value)
    assert notes[-1].message.startswith(f"Preprocessing: image 'tyx': {top + 1} of the 4 frames: crop: no voxel is "
                                        f"above the threshold"), notes[-1].message
    assert notes[-1].message.endswith(f"(its largest value is {tyx[top].max():.4g}): choose a lower threshold")


def test_a_target_spacing_not_above_0_is_refused_before_any_work(setup, qtbot, notes):
    viewer, widget, image, _ = setup
    widget["operation"].value = "resample"
    widget["target_spacing"].value = "0, 1, 1"
    widget["apply"].changed.emit(True)
    assert not widget.runner.running  # said at the click: no job waits on MONAI's import first
    assert any(n.severity == NotificationSeverity.ERROR and "target spacing (0.0, 1.0, 1.0) must be above 0 on "
               "every axis, e.g. '" in n.message for n in notes)
    assert [layer.name for layer in viewer.layers] == ["ct", "seg"]


def test_cancel_stops_between_frames_shows_progress_and_adds_nothing(make_napari_viewer, open_widget, qtbot,
                                                                    tmp_path, notes):
    import tifffile

    tyx = np.random.default_rng(3).normal(100, 30, (60, 96, 96)).astype(np.float32)
    tifffile.imwrite(tmp_path / "movie.tif", tyx, imagej=True, metadata={"axes": "TYX"})
    viewer = make_napari_viewer()
    layer = _open(viewer, tmp_path / "movie.tif")
    widget = open_widget(viewer, "preprocess")
    _choose(widget, layer, "median")
    widget["size"].value = 9
    assert not widget["cancel"].enabled
    widget["apply"].changed.emit(True)
    assert widget["cancel"].enabled
    qtbot.waitUntil(lambda: widget.runner.progress.value >= 1, timeout=60000)  # frames done: the bar moves
    assert widget.runner.progress.max == 60 and "/60" in widget.runner.progress_text
    widget["cancel"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30000)
    assert [lay.name for lay in viewer.layers] == ["movie"]
    assert any("Preprocessing cancelled." in n.message for n in notes)
    assert not widget["cancel"].enabled and widget["apply"].enabled


def test_cancel_stops_a_one_volume_median_between_slabs(make_napari_viewer, open_widget, qtbot, notes):
    """Note 48: a median of 7 on one 64x256x256 volume held Cancel (and napari's closing) for 16 s;
    it runs slab by slab, the bar counts the slabs, and Cancel ends it before the last."""
    volume = np.random.default_rng(3).normal(100, 30, (48, 256, 256)).astype(np.float32)
    viewer = make_napari_viewer()
    layer = viewer.add_image(volume, name="vol")
    widget = open_widget(viewer, "preprocess")
    _choose(widget, layer, "median")
    widget["size"].value = 7
    widget["apply"].changed.emit(True)
    qtbot.waitUntil(lambda: widget.runner.progress.value >= 1, timeout=60000)  # a slab done: the bar moves
    total = widget.runner.progress.max
    assert total > 1 and f"/{total}" in widget.runner.progress_text
    widget["cancel"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30000)
    assert widget.runner.progress.value < total  # stopped before the last slab
    assert [lay.name for lay in viewer.layers] == ["vol"]
    assert any("Preprocessing cancelled." in n.message for n in notes)
    np.testing.assert_array_equal(layer.data, volume)


def test_a_large_slice_is_previewed_in_a_worker_and_unused_fields_change_nothing(make_napari_viewer, open_widget,
                                                                                 qtbot):
    """Trial 46: a 4000x4000 image's preview held the GUI thread 1.5 s, on every change of a box,
    the high percentile's too while the operation was a z-score, which does not use it."""
    from napari_medml.preprocessing.ops import percentile_rescale

    image = np.random.default_rng(0).gamma(2.0, 100.0, size=(1024, 1024)).astype(np.float32)
    viewer = make_napari_viewer()
    layer = viewer.add_image(image, name="big")
    widget = open_widget(viewer, "preprocess")
    widget["image"].value, widget["operation"].value = layer, "percentile"
    widget["live"].value = True
    assert "big [preview]" not in viewer.layers  # the GUI thread went on: the worker computes it
    qtbot.waitUntil(lambda: "big [preview]" in viewer.layers, timeout=30000)
    np.testing.assert_allclose(viewer.layers["big [preview]"].data, percentile_rescale(image, 1.0, 99.0), atol=1e-6)
    widget["high"].value = 90.0  # while that runs, two changes: the last one is shown
    widget["high"].value = 80.0
    qtbot.waitUntil(lambda: widget._preview_worker is None, timeout=30000)
    np.testing.assert_allclose(viewer.layers["big [preview]"].data, percentile_rescale(image, 1.0, 80.0), atol=1e-6)
    widget["operation"].value = "zscore"
    qtbot.waitUntil(lambda: widget._preview_worker is None, timeout=30000)
    shown = viewer.layers["big [preview]"].data
    assert abs(float(shown.mean())) < 1e-3 and abs(float(shown.std()) - 1.0) < 1e-3
    widget["high"].value = 70.0  # not a z-score's parameter: nothing is recomputed
    assert widget._preview_worker is None and viewer.layers["big [preview]"].data is shown
    # review 46: what the worker computes is shown only if the form and the viewer still ask for it
    widget["operation"].value = "minmax"  # a worker starts...
    assert widget._preview_worker is not None
    widget["operation"].value = "gaussian"  # ...and the operation is no longer previewed
    qtbot.waitUntil(lambda: widget._preview_worker is None, timeout=30000)
    assert "big [preview]" not in viewer.layers
    widget["operation"].value = "minmax"
    qtbot.waitUntil(lambda: widget._preview_worker is None and "big [preview]" in viewer.layers, timeout=30000)
    widget["low"].value = 5.0  # not used by min-max: nothing runs
    assert widget._preview_worker is None
    widget["operation"].value = "percentile"
    viewer.layers.remove("big [preview]")  # the user removes the preview while it is computed
    qtbot.waitUntil(lambda: widget._preview_worker is None, timeout=30000)
    assert "big [preview]" not in viewer.layers
    small = viewer.add_image(image[:64, :64], name="small")  # another image: the big one's preview goes
    widget["high"].value = 95.0
    assert widget._preview_worker is not None
    widget["image"].value = small
    assert [lay.name for lay in viewer.layers] == ["big", "small", "small [preview]"]
    qtbot.waitUntil(lambda: widget._preview_worker is None, timeout=30000)
    assert [lay.name for lay in viewer.layers] == ["big", "small", "small [preview]"]
    widget["live"].value = False
    qtbot.waitUntil(lambda: widget._preview_worker is None, timeout=30000)
    assert [lay.name for lay in viewer.layers] == ["big", "small"] and np.array_equal(layer.data, image)
