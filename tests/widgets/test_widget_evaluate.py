"""Evaluate widget, opened from the Plugins menu: the scores of napari-medml evaluate for
two labels layers (classes, foreground, instances), clear refusals, the JSON report."""

from __future__ import annotations

import json

import numpy as np
from napari.utils.notifications import NotificationSeverity
from scipy import ndimage as ndi

from napari_medml.instances.metrics import instance_scores
from napari_medml.samples import phantom_3d, touching_objects_2d
from napari_medml.segmentation.metrics import evaluate


def _run(widget, qtbot) -> None:
    widget["score"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)


def test_class_scores_match_the_core_and_the_report_is_saved(make_napari_viewer, open_widget, qtbot, notes,
                                                             tmp_path):
    viewer = make_napari_viewer()
    p = phantom_3d(0, shape=(24, 48, 48), spacing=(2.0, 1.0, 1.0))
    pred = p.labels.copy()
    pred[ndi.binary_erosion(p.labels == 2, iterations=1) != (p.labels == 2)] = 0  # a thinner class 2
    truth_layer = viewer.add_labels(p.labels, name="truth", scale=p.spacing)
    pred_layer = viewer.add_labels(pred, name="pred", scale=p.spacing)
    widget = open_widget(viewer, "evaluate")
    widget["prediction"].value, widget["truth"].value = pred_layer, truth_layer
    _run(widget, qtbot)
    want = evaluate(pred, p.labels, spacing=p.spacing)
    got = widget.report
    assert got["classes"] == want["classes"] and got["mean_dice"] == want["mean_dice"], got
    assert widget["table"].shape[0] == len(want["classes"])
    assert f"mean Dice {round(want['mean_dice'], 4)}" in widget["summary"].value
    assert "voxel size 2x1x1" in widget["summary"].value  # HD95 in the layer's units
    widget["score_as"].value = "binary"
    _run(widget, qtbot)
    assert list(widget.report["classes"]) == ["1"]
    widget["report_path"].value = str(tmp_path / "scores.json")
    widget["save"].changed.emit(True)
    assert json.loads((tmp_path / "scores.json").read_text())["classes"] == widget.report["classes"]
    assert not [n for n in notes if n.severity == NotificationSeverity.ERROR]
    np.testing.assert_array_equal(pred_layer.data, pred)  # the user's layers are read, never changed


def test_instance_scores_match_the_core(make_napari_viewer, open_widget, qtbot):
    viewer = make_napari_viewer()
    sample = touching_objects_2d(seed=0)
    truth = sample.labels
    merged = np.where(truth == 2, 1, truth)  # two objects predicted as one
    widget = open_widget(viewer, "evaluate")
    widget["truth"].value = viewer.add_labels(truth, name="objects")
    widget["prediction"].value = viewer.add_labels(merged, name="found")
    widget["score_as"].value = "instances"
    _run(widget, qtbot)
    want = instance_scores(truth, merged).at(0.5)
    assert widget.report["f1_at_0.5"] == want.f1 < 1.0 and widget.report["n_true"] == want.n_true
    assert widget["table"].shape[0] == 9  # IoU 0.5 to 0.9
    assert "F1 at IoU 0.5" in widget["summary"].value


def test_layers_that_cannot_be_scored_are_refused_with_one_line(make_napari_viewer, open_widget, qtbot, notes):
    viewer = make_napari_viewer()
    a = viewer.add_labels(np.zeros((16, 16), np.uint8), name="a")
    b = viewer.add_labels(np.zeros((16, 20), np.uint8), name="b")
    c = viewer.add_labels(np.zeros((16, 16), np.uint8), name="c", scale=(2.0, 2.0))
    d = viewer.add_labels(np.ones((16, 16), np.uint8), name="d")
    widget = open_widget(viewer, "evaluate")
    widget["prediction"].value, widget["truth"].value = d, a
    _run(widget, qtbot)
    assert widget.report is not None and widget["table"].shape[0] > 0 and "Dice" in widget["summary"].value
    for pred, truth in ((a, a), (a, b), (a, c)):
        widget["prediction"].value, widget["truth"].value = pred, truth
        _run(widget, qtbot)
        # the last pair's numbers are gone: the error, not an old score, is what the panel shows
        assert widget["table"].shape[0] == 0 and widget["summary"].value.startswith("Evaluation: ")
    errors = [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert len(errors) == 3 and widget.report is None, errors
    assert widget["summary"].value == errors[2]
    assert "both 'a'" in errors[0]
    assert "shape (16, 16)" in errors[1] and "(16, 20)" in errors[1]
    assert "does not lie on ground truth 'c'" in errors[2] and "scale" in errors[2]
    widget["save"].changed.emit(True)
    assert "nothing scored yet" in [n.message for n in notes][-1]
    # trial 21: a prediction rotated against the truth scored Dice 1.0 (the check ignored rotation)
    turned = viewer.add_labels(np.ones((16, 16), np.uint8), name="turned", rotate=90)
    widget["prediction"].value, widget["truth"].value = turned, d
    _run(widget, qtbot)
    errors = [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert widget.report is None and errors[-1] == (
        "Evaluation: prediction 'turned' does not lie on ground truth 'd' (another rotate, shear or affine): set its "
        "scale and translate (rotate, shear, affine) to the ground truth's")
    turned.rotate = 0  # the fix the line gives
    _run(widget, qtbot)
    assert widget.report is not None



def test_a_time_series_is_scored_frame_by_frame(make_napari_viewer, open_widget, qtbot, notes):
    viewer = make_napari_viewer()
    truth = np.zeros((3, 20, 20), np.uint8)
    truth[:, 5:10, 5:10] = 1
    pred = truth.copy()
    pred[1, 5:10, 5:8] = 0
    widget = open_widget(viewer, "evaluate")
    widget["truth"].value = viewer.add_labels(truth, name="truth", axis_labels=("t", "y", "x"), scale=(60, 0.5, 0.5))
    # the prediction saved without the frame interval (t scale 1): frames pair by index, as the command line scores
    widget["prediction"].value = viewer.add_labels(pred, name="pred", axis_labels=("t", "y", "x"), scale=(1, 0.5, 0.5))
    _run(widget, qtbot)
    assert widget.report["classes"]["1"]["hd95"] == 1.5  # frame 1's own (3 pixels of 0.5); across frames it read 0.5
    # trial 30: the frame interval was shown as a voxel size ("voxel size 60x0.5x0.5")
    assert widget.report["spacing"] == [0.5, 0.5] and "(voxel size 0.5x0.5)" in widget["summary"].value
    widget["score_as"].value = "instances"
    _run(widget, qtbot)
    errors = [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert len(errors) == 1 and "time series" in errors[0] and "frames one at a time" in errors[0]
    # a 3D time series (t, z, y, x) is scored as the command line scores it (it was refused: trial 43), in the
    # unit napari shows on layers made in napari (it said none)
    from napari_medml.api import evaluate
    from napari_medml.layer_data import _add_image_takes_axis_labels

    truth4 = np.zeros((2, 6, 20, 20), np.uint8)
    truth4[:, 1:5, 5:12, 5:12] = 1
    pred4 = truth4.copy()
    pred4[1, 1:5, 5:12, 5:9] = 0
    units = {"units": ("s", "um", "um", "um")} if _add_image_takes_axis_labels() else {}
    for name, data in (("truth4", truth4), ("pred4", pred4)):
        widget["truth" if name == "truth4" else "prediction"].value = viewer.add_labels(
            data, name=name, axis_labels=("t", "z", "y", "x"), scale=(60, 2.0, 0.5, 0.5), **units)
    widget["score_as"].value = "classes"
    _run(widget, qtbot)
    want = evaluate(pred4, truth4, spacing=(60, 2.0, 0.5, 0.5), frames_axis=0)
    assert widget.report["classes"]["1"]["dice"] == want["classes"]["1"]["dice"] < 1.0
    assert widget.report["classes"]["1"]["hd95"] == want["classes"]["1"]["hd95"] > 0
    assert widget.report["spacing"] == [2.0, 0.5, 0.5]
    assert widget.report["unit"] == ("um" if units else None), widget.report["unit"]


def test_layers_opened_from_a_file_in_um_are_scored_in_um_as_the_command_line_says(make_napari_viewer, open_widget,
                                                                                   qtbot, tmp_path):
    """Trial 34: the widget's JSON had no "unit" (the command line's has it) and its summary named none."""
    import tifffile

    truth = np.zeros((40, 40), np.uint8)
    truth[10:30, 10:30] = 1
    pred = np.roll(truth, 2, axis=1)
    for name, data in (("truth_mask.tif", truth), ("pred_mask.tif", pred)):
        tifffile.imwrite(tmp_path / name, data, imagej=True, resolution=(1 / 0.3, 1 / 0.3), metadata={"unit": "um"})
    viewer = make_napari_viewer()
    (truth_layer,) = viewer.open(str(tmp_path / "truth_mask.tif"), plugin="napari-medml")
    (pred_layer,) = viewer.open(str(tmp_path / "pred_mask.tif"), plugin="napari-medml")
    widget = open_widget(viewer, "evaluate")
    widget["prediction"].value, widget["truth"].value = pred_layer, truth_layer
    _run(widget, qtbot)
    assert widget.report["unit"] == "um"
    hd95 = round(widget.report["mean_hd95"], 4)
    assert f"mean HD95 {hd95} um (voxel size 0.3x0.3 um)" in widget["summary"].value, widget["summary"].value
    widget["report_path"].value = str(tmp_path / "report.json")
    widget["save"].changed.emit(True)
    assert json.loads((tmp_path / "report.json").read_text())["unit"] == "um"
    # a ground truth painted in napari on the predicted file's grid: the prediction's file names the unit
    painted = viewer.add_labels(truth, name="painted", scale=pred_layer.scale, translate=pred_layer.translate)
    widget["truth"].value = painted
    _run(widget, qtbot)
    assert widget.report["unit"] == "um" and round(widget.report["mean_hd95"], 4) == hd95


def test_the_prediction_choice_follows_a_result_layer_a_rerun_replaces(make_napari_viewer, open_widget, qtbot):
    """Trial 39: a re-run whose result could not be refilled in place (another number of axes)
    replaced the layer, and Evaluate's prediction choice jumped to another Labels layer and scored
    it (Dice 0.0) without a word. It follows the new layer of the same name; a layer the user
    removes is not followed."""
    from napari_medml._widgets._results import show_result
    from napari_medml.layer_data import PLUGIN_MARK

    viewer = make_napari_viewer()
    p = phantom_3d(0, shape=(16, 24, 24))
    truth = viewer.add_labels(p.labels, name="truth")
    other = viewer.add_labels(np.zeros_like(p.labels), name="other")
    made = viewer.add_labels(p.labels.copy(), name="ct [prediction]", metadata={PLUGIN_MARK: True})
    widget = open_widget(viewer, "evaluate")
    widget["prediction"].value, widget["truth"].value = made, truth
    # the re-run's result has a time axis: it cannot go into the 3D layer, which is replaced
    show_result(viewer, (p.labels[None].copy(), {"name": "ct [prediction]", "metadata": {PLUGIN_MARK: True}},
                         "labels"))
    new = viewer.layers["ct [prediction]"]
    assert new is not made and new.ndim == 4
    assert widget["prediction"].value is new and widget["truth"].value is truth
    # the user removes the layer: the choice goes where magicgui puts it, and a later layer of that
    # name is not taken for it
    viewer.layers.remove(new)
    assert widget["prediction"].value is not new
    chosen = widget["prediction"].value
    viewer.add_labels(p.labels.copy(), name="unrelated")
    viewer.add_labels(p.labels.copy(), name="ct [prediction]")
    assert widget["prediction"].value is chosen and other in viewer.layers


def test_the_saved_report_is_the_command_lines_json(make_napari_viewer, open_widget, qtbot, tmp_path):
    """Trial 41: the widget's JSON had "notes" (classes) and "unit" (instances) that the command
    line's lacked; a class mask scored as instances now says so in both, as the same line."""
    import subprocess
    import sys
    from pathlib import Path

    import tifffile

    truth = np.zeros((48, 48), np.uint16)
    for k in range(9):
        y, x = divmod(k, 3)
        truth[y * 16 + 3:y * 16 + 12, x * 16 + 3:x * 16 + 12] = k + 1
    mask = (np.roll(truth, 1, axis=1) > 0).astype(np.uint8)
    for name, data in (("truth.tif", truth), ("mask.tif", mask)):
        tifffile.imwrite(tmp_path / name, data, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "um"})
    viewer = make_napari_viewer()
    (truth_layer,) = viewer.open(str(tmp_path / "truth.tif"), plugin="napari-medml")
    (mask_layer,) = viewer.open(str(tmp_path / "mask.tif"), plugin="napari-medml")
    widget = open_widget(viewer, "evaluate")
    widget["prediction"].value, widget["truth"].value = mask_layer, truth_layer
    script = str(Path(sys.executable).with_name("napari-medml"))
    for level, flags in (("classes", ()), ("instances", ("--instances",))):
        widget["score_as"].value = level
        _run(widget, qtbot)
        widget["report_path"].value = str(tmp_path / f"{level}.json")
        widget["save"].changed.emit(True)
        saved = json.loads((tmp_path / f"{level}.json").read_text())
        cli = subprocess.run([script, "evaluate", "--prediction", str(tmp_path / "mask.tif"), "--labels",
                              str(tmp_path / "truth.tif"), *flags], capture_output=True, text=True, timeout=300)
        assert cli.returncode == 0, cli.stderr
        printed = json.loads(cli.stdout)
        assert list(saved) == list(printed), (level, list(saved), list(printed))
        assert saved["unit"] == printed["unit"] == "um" and len(saved["notes"]) == len(printed["notes"])
    assert saved["n_pred"] == 1 and saved["notes"][0].startswith("warning: prediction 'mask' hold 1 id over 9 "
                                                                 "separate objects")
    assert "(Evaluate: score as 'classes')" in saved["notes"][0] and saved["notes"][0] in widget["summary"].value


def test_cancel_stops_scoring_between_classes_and_shows_no_numbers(make_napari_viewer, open_widget, qtbot, notes):
    """Note 49: Evaluate's HD95 (seconds a class on a noisy volume) could not be cancelled; the
    bar counts the classes and Cancel ends the scoring before the last, with no table."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, (48, 192, 192)).astype(np.uint8)
    pred = rng.integers(0, 5, (48, 192, 192)).astype(np.uint8)
    viewer = make_napari_viewer()
    widget = open_widget(viewer, "evaluate")
    widget["truth"].value = viewer.add_labels(truth, name="truth")
    widget["prediction"].value = viewer.add_labels(pred, name="pred")
    assert not widget["cancel"].enabled
    widget["score"].changed.emit(True)
    assert widget["cancel"].enabled
    qtbot.waitUntil(lambda: widget.runner.progress.value >= 1, timeout=60000)  # a class done: the bar moves
    assert widget.runner.progress.max == 4 and "/4" in widget.runner.progress_text
    widget["cancel"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30000)
    assert widget.runner.progress.value < 4  # stopped before the last class
    assert any("Evaluation cancelled." in n.message for n in notes)
    assert widget.report is None and widget["table"].shape[0] == 0 and "mean Dice" not in widget["summary"].value
    assert not widget["cancel"].enabled and widget["score"].enabled
