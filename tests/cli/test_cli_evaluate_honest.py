"""What ``evaluate`` and ``predict`` tell a user about inputs that look right but are not
what they seem, through the installed console script in a subprocess: a missed class
(mean HD95 null, not perfect), float files holding instance ids, a 0/255 mask scored
against a 0/1 prediction, and a one-slice volume given to a 3D model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

PROG = "napari-medml"
TINY = ["--epochs", "1", "--steps-per-epoch", "2", "--features", "4", "--depth", "2", "--device", "cpu",
        "--no-augment", "--seed", "0", "--patch-size", "8", "16", "16"]  # fmt: skip


def script() -> str:
    path = Path(sys.executable).with_name(PROG)
    return str(path) if path.exists() else shutil.which(PROG) or PROG


def run(*argv: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([script(), *map(str, argv)], capture_output=True, text=True, timeout=600, env=env)


def save_nii(path: Path, zyx: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(np.ascontiguousarray(zyx.T), np.diag([1.0, 1.0, 2.0, 1.0])), str(path))


def test_a_missed_class_makes_mean_hd95_null_and_says_so(tmp_path) -> None:
    gt = np.zeros((8, 20, 20), np.uint8)
    gt[2:6, 5:10, 5:10] = 1
    gt[2:6, 12:18, 12:18] = 2
    pred = np.where(gt == 2, 0, gt).astype(np.uint8)  # class 1 perfect, class 2 missed
    save_nii(tmp_path / "gt.nii.gz", gt)
    save_nii(tmp_path / "pred.nii.gz", pred)
    r = run("evaluate", "--prediction", tmp_path / "pred.nii.gz", "--labels", tmp_path / "gt.nii.gz")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["mean_dice"] == 0.5 and result["mean_iou"] == 0.5
    assert result["mean_hd95"] is None
    assert result["classes"]["1"]["hd95"] == 0.0 and result["classes"]["2"]["hd95"] is None
    assert r.stderr.strip() == (
        f"{PROG}: class 2 (only in labels '{tmp_path / 'gt.nii.gz'}'): HD95 infinite, so hd95 and mean_hd95 "
        "are null; mean_dice and mean_iou count such a class as 0")


def test_instances_accept_whole_number_float_ids_and_refuse_fractions(tmp_path) -> None:
    ids = np.zeros((40, 40), np.uint16)
    ids[5:15, 5:15] = 1
    ids[20:30, 20:30] = 2
    tifffile.imwrite(tmp_path / "truth.tif", ids)
    tifffile.imwrite(tmp_path / "pred_f32.tif", ids.astype(np.float32))
    tifffile.imwrite(tmp_path / "half.tif", ids.astype(np.float32) / 2)
    ok = run("evaluate", "--instances", "--prediction", tmp_path / "pred_f32.tif", "--labels", tmp_path / "truth.tif")
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)
    assert (result["n_true"], result["n_pred"], result["f1_at_0.5"], result["mean_ap"]) == (2, 2, 1.0, 1.0)
    bad = run("evaluate", "--instances", "--prediction", tmp_path / "half.tif", "--labels", tmp_path / "truth.tif")
    assert bad.returncode != 0
    assert bad.stderr.strip() == (
        f"{PROG}: error: predicted labels '{tmp_path / 'half.tif'}' hold non-integer values (float32, e.g. 0.5): "
        "labels must be integer object ids; a probability map becomes labels by a threshold, e.g. p > 0.5")


def test_a_0_255_mask_against_a_0_1_prediction_warns_and_binary_scores_it(tmp_path) -> None:
    gt = np.zeros((30, 30), np.uint8)
    gt[5:20, 5:20] = 255
    tifffile.imwrite(tmp_path / "gt.tif", gt)
    tifffile.imwrite(tmp_path / "pred.tif", (gt > 0).astype(np.uint8))
    r = run("evaluate", "--prediction", tmp_path / "pred.tif", "--labels", tmp_path / "gt.tif")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0] == (
        f"{PROG}: warning: labels '{tmp_path / 'gt.tif'}' use id 255 and prediction '{tmp_path / 'pred.tif'}' id 1, "
        "no foreground id in common, so every class scores Dice 0. A 0/255 mask against a 0/1 prediction? Score "
        "foreground against background with --binary, or write the labels with the prediction's ids (255 -> 1)")
    assert json.loads(r.stdout)["mean_dice"] == 0.0
    fixed = run("evaluate", "--binary", "--prediction", tmp_path / "pred.tif", "--labels", tmp_path / "gt.tif")
    assert fixed.returncode == 0 and fixed.stderr == "", fixed.stderr
    result = json.loads(fixed.stdout)
    assert list(result["classes"]) == ["1"]
    assert (result["mean_dice"], result["mean_iou"], result["mean_hd95"]) == (1.0, 1.0, 0.0)
    refused = run("evaluate", "--binary", "--instances", "--prediction", tmp_path / "pred.tif",
                  "--labels", tmp_path / "gt.tif")
    assert refused.returncode != 0
    assert "--binary is for class labels; --instances matches objects, whatever their ids" in refused.stderr


@pytest.fixture(scope="module")
def model_3d(tmp_path_factory) -> tuple[Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("m3d")
    rng = np.random.default_rng(0)
    lab = np.zeros((12, 24, 24), np.uint8)
    lab[3:9, 6:18, 6:18] = 1
    img = (rng.normal(0, 1, lab.shape) + 3 * lab).astype(np.float32)
    save_nii(folder / "img.nii.gz", img)
    save_nii(folder / "lab.nii.gz", lab)
    r = run("train", "--image", folder / "img.nii.gz", "--labels", folder / "lab.nii.gz", "--out", folder / "m",
            *TINY)
    assert r.returncode == 0, r.stderr
    return folder / "m", img


def test_a_one_slice_volume_is_predicted_by_a_3d_model_in_every_format(model_3d, tmp_path) -> None:
    model, img = model_3d
    one = img[6:7]  # (1, 24, 24)
    np.save(tmp_path / "one.npy", one)
    save_nii(tmp_path / "one.nii.gz", one)
    cases = [("one.npy", []), ("one.npy", ["--axes", "ZYX"]), ("one.nii.gz", [])]
    for name, axes in cases:
        out = tmp_path / f"p{len(axes)}_{name}"
        r = run("predict", "--model", model, "--image", tmp_path / name, *axes, "--out", out, "--device", "cpu")
        assert r.returncode == 0, (name, axes, r.stderr)
        assert (f"{PROG}: image '{tmp_path / name}' has one slice: taken as a volume of 1 slice (axes ZYX) for the "
                "3D network") in r.stderr
        got = np.load(out) if name.endswith(".npy") else np.asarray(nib.load(str(out)).dataobj)
        assert got.shape == ((1, 24, 24) if name.endswith(".npy") else (24, 24, 1))
    # an ImageJ TIFF of one slice reads as a 2D image (tifffile keeps no length-1 Z): refused, no --axes offered
    tifffile.imwrite(tmp_path / "one.tif", one, imagej=True, metadata={"axes": "ZYX"})
    r = run("predict", "--model", model, "--image", tmp_path / "one.tif", "--out", tmp_path / "p.tif", "--device", "cpu")
    assert r.returncode != 0
    assert r.stderr.strip() == (
        f"{PROG}: error: image '{tmp_path / 'one.tif'}' is one 2D slice (axes YX, shape (24, 24)) but the "
        "network "
        "is 3D: it needs a volume of several slices; give the volume, or use a 2D network (train --spatial-dims 2; "
        "the widget's 2D/3D)")
    # frames of one slice each (ImageJ TZYX, Z of 1): no --axes CYX, which has 2 spatial axes too (case 34 x02)
    tifffile.imwrite(tmp_path / "movie.tif", np.stack([one] * 4), imagej=True, metadata={"axes": "TZYX"})
    r = run("predict", "--model", model, "--image", tmp_path / "movie.tif", "--out", tmp_path / "m.tif",
            "--device", "cpu")
    assert r.returncode != 0 and "CYX" not in r.stderr
    assert r.stderr.strip().endswith(
        "has axes TYX (2 spatial) but the network is 3D: use a 2D network; its time axis is not slices: a 3D "
        "network would mix them, so only if it really holds the slices of one volume, name it Z (--axes ZYX on "
        "the command line, the layer's axis labels in napari)"), r.stderr


def test_distances_take_the_voxel_size_of_the_file_that_has_one(tmp_path) -> None:
    import json

    import tifffile

    truth = np.zeros((12, 24, 24), np.uint8)
    truth[3:9, 6:18, 6:18] = 1
    pred = np.roll(truth, 2, axis=0)  # two slices off: 2 voxels of 2 mm
    tifffile.imwrite(tmp_path / "pred.tif", pred, imagej=True, resolution=(1.0, 1.0),
                     metadata={"spacing": 2.0, "unit": "mm", "axes": "ZYX"})
    tifffile.imwrite(tmp_path / "truth.tif", truth, imagej=True, resolution=(1.0, 1.0),
                     metadata={"spacing": 2.0, "unit": "mm", "axes": "ZYX"})
    np.save(tmp_path / "truth.npy", truth)  # the same labels, no voxel size
    both = run("evaluate", "--prediction", tmp_path / "pred.tif", "--labels", tmp_path / "truth.tif")
    bare = run("evaluate", "--prediction", tmp_path / "pred.tif", "--labels", tmp_path / "truth.npy")
    assert both.returncode == 0 and bare.returncode == 0, bare.stderr
    a, b = json.loads(both.stdout), json.loads(bare.stdout)
    assert a["spacing"] == b["spacing"] == [2.0, 1.0, 1.0]
    assert a["mean_hd95"] == b["mean_hd95"] and a["mean_hd95"] >= 4.0  # in mm: 2 slices of 2 mm


def test_instance_label_files_scored_as_classes_point_to_instances(tmp_path) -> None:
    """Two instance label files (the same 60 objects, ids numbered differently, as two tools
    number them): plain evaluate scores each id as a class, near 0; it says so and names
    --instances, which scores the objects (F1 1)."""
    truth = np.zeros((60, 64), np.uint16)
    for k in range(60):
        y, x = divmod(k, 10)
        truth[y * 10 + 1:y * 10 + 8, x * 6 + 1:x * 6 + 5] = k + 1
    other = np.where(truth > 0, 61 - truth, 0).astype(np.uint16)
    tifffile.imwrite(tmp_path / "truth_objects.tif", truth)
    tifffile.imwrite(tmp_path / "pred.tif", other)
    plain = run("evaluate", "--prediction", tmp_path / "pred.tif", "--labels", tmp_path / "truth_objects.tif")
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["mean_dice"] < 0.1
    warning = [line for line in plain.stderr.splitlines() if "--instances" in line]
    assert len(warning) == 1 and "60 ids" in warning[0], plain.stderr
    objects = run("evaluate", "--instances", "--prediction", tmp_path / "pred.tif", "--labels",
                  tmp_path / "truth_objects.tif")
    assert objects.returncode == 0 and json.loads(objects.stdout)["f1_at_0.5"] == 1.0, objects.stderr


def _nii_in(path: Path, zyx: np.ndarray, zooms: tuple, unit: str) -> None:
    img = nib.Nifti1Image(np.ascontiguousarray(zyx.T), np.diag([*zooms[::-1], 1.0]))
    img.header.set_xyzt_units(xyz=unit)
    nib.save(img, str(path))


def test_files_in_mm_and_in_um_are_compared_in_one_unit_which_the_json_names(tmp_path) -> None:
    """Cases 32: the same grid saved in mm and in micron was refused as another grid ('resample one
    onto the other'), and HD95 came without its unit; files whose numbers agree under two unit
    names (3D Slicer writes every file in mm) are compared as their numbers say, as before."""
    gt = np.zeros((10, 24, 30), np.uint8)
    gt[3:7, 5:15, 8:20] = 1
    pred = np.roll(gt, 1, axis=2)  # one voxel off along x: HD95 one x step
    _nii_in(tmp_path / "gt.nii.gz", gt, (2.0, 0.5, 0.5), "micron")
    _nii_in(tmp_path / "pred_mm.nii.gz", pred, (0.002, 0.0005, 0.0005), "mm")
    _nii_in(tmp_path / "pred_slicer.nii.gz", pred, (2.0, 0.5, 0.5), "mm")
    for name, note in (("pred_mm.nii.gz", True), ("pred_slicer.nii.gz", False)):
        r = run("evaluate", "--prediction", tmp_path / name, "--labels", tmp_path / "gt.nii.gz")
        assert r.returncode == 0, r.stderr
        result = json.loads(r.stdout)
        assert result["unit"] == "um" and result["classes"]["1"]["hd95"] == pytest.approx(0.5)
        assert result["mean_dice"] == pytest.approx(2 * (gt & pred).sum() / (gt.sum() + pred.sum()))
        said = "its voxel size and position in mm were compared in um" in r.stderr
        assert said == note, r.stderr
        # the same numbers under two unit names: scored as the numbers say, never silently (c35: an ImageJ
        # TIFF in um beside a NIfTI in mm gave HD95 in mm without a word)
        warned = (f"warning: prediction '{tmp_path / name}' names its voxel size in mm, labels "
                  f"'{tmp_path / 'gt.nii.gz'}' the same numbers in um: taken as the same grid, with lengths in um")
        assert (warned in r.stderr) == (not note), r.stderr
    np.save(tmp_path / "gt.npy", gt)
    np.save(tmp_path / "pred.npy", pred)
    bare = json.loads(run("evaluate", "--prediction", tmp_path / "pred.npy", "--labels", tmp_path / "gt.npy").stdout)
    assert bare["unit"] is None  # a .npy names none: the distances are in voxels
    # a TIFF of 1 um voxels names its unit: HD95 is in um (it was read as storing no voxel size)
    tifffile.imwrite(tmp_path / "gt.tif", gt, imagej=True, resolution=(1.0, 1.0), metadata={"unit": "um",
                                                                                            "spacing": 1.0})
    tifffile.imwrite(tmp_path / "pred.tif", pred, imagej=True, resolution=(1.0, 1.0), metadata={"unit": "um",
                                                                                                "spacing": 1.0})
    for other in ("pred.tif", "pred.npy"):
        one = run("evaluate", "--prediction", tmp_path / other, "--labels", tmp_path / "gt.tif")
        assert one.returncode == 0, one.stderr
        assert json.loads(one.stdout)["unit"] == "um" and json.loads(one.stdout)["classes"]["1"]["hd95"] == 1.0


def test_a_transposed_npy_beside_a_file_not_stored_in_ras_gets_the_fix_that_scores_it_right(tmp_path) -> None:
    """Case 33 r05: a .npy of nibabel's (X, Y, Z) array beside an LAS prediction was told to save
    it transposed; a .npy lies on the RAS grid napari shows, so the transposed array scored Dice 0.
    Its fix is now the NIfTI file with the prediction's affine, and following it scores right."""
    truth = np.zeros((26, 30, 8), np.uint8)  # nibabel's order: (X, Y, Z) as the LAS file stores it
    truth[2:10, 5:20, 2:6] = 1
    pred = np.roll(truth, 1, axis=1)
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    affine[0, 3] = 25
    nib.save(nib.Nifti1Image(pred, affine), str(tmp_path / "pred.nii.gz"))
    np.save(tmp_path / "truth.npy", truth)
    r = run("evaluate", "--prediction", tmp_path / "pred.nii.gz", "--labels", tmp_path / "truth.npy")
    assert r.returncode == 1 and "not RAS, so a transpose may not line them up" in r.stderr, r.stderr
    assert "nibabel.save(nibabel.Nifti1Image(a, img.affine)" in r.stderr and "np.save(path, a.T)" not in r.stderr
    nib.save(nib.Nifti1Image(truth, affine), str(tmp_path / "labels.nii.gz"))  # the fix, as it reads
    r = run("evaluate", "--prediction", tmp_path / "pred.nii.gz", "--labels", tmp_path / "labels.nii.gz")
    assert r.returncode == 0, r.stderr
    expected = 2 * np.count_nonzero(pred & truth) / (np.count_nonzero(pred) + np.count_nonzero(truth))
    assert json.loads(r.stdout)["classes"]["1"]["dice"] == pytest.approx(expected, abs=1e-6)


def test_a_tiff_without_a_position_beside_a_truth_not_stored_in_ras_is_taken_as_stored_with_a_warning(tmp_path):
    """Case 35 p50: a plain TIFF (origin 0: no position) beside an LPS NIfTI whose origin is 0
    fits the stored grid by its origin alone; it was taken as stored without a word, and a layer
    saved from napari (RAS order) scored Dice 0 silently. The README promises a warning."""
    truth = np.zeros((26, 30, 8), np.uint8)  # nibabel's (X, Y, Z)
    truth[2:10, 5:20, 2:6] = 1
    pred = np.roll(truth, 1, axis=1)
    nib.save(nib.Nifti1Image(truth, np.diag([-1.0, -1.0, 1.0, 1.0])), str(tmp_path / "truth.nii.gz"))
    tifffile.imwrite(tmp_path / "stored.tif", np.ascontiguousarray(pred.T))  # predict's order: as stored
    r = run("evaluate", "--prediction", tmp_path / "stored.tif", "--labels", tmp_path / "truth.nii.gz")
    assert r.returncode == 0, r.stderr
    expected = 2 * np.count_nonzero(pred & truth) / (np.count_nonzero(pred) + np.count_nonzero(truth))
    assert json.loads(r.stdout)["classes"]["1"]["dice"] == pytest.approx(expected, abs=1e-6)
    said = (f"warning: prediction '{tmp_path / 'stored.tif'}' has no position (origin 0) and fits the grid labels "
            f"'{tmp_path / 'truth.nii.gz'}' is stored on (LPS): taken as stored, as predict writes its outputs; "
            "napari shows")
    assert said in r.stderr and "save it as .nii.gz" in r.stderr, r.stderr
    # a RAS truth: napari shows it as stored, nothing to say
    nib.save(nib.Nifti1Image(truth, np.eye(4)), str(tmp_path / "ras.nii.gz"))
    r = run("evaluate", "--prediction", tmp_path / "stored.tif", "--labels", tmp_path / "ras.nii.gz")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr


def test_report_writes_the_printed_scores_of_a_segmentation_and_of_instances(tmp_path) -> None:
    """--report was refused for label images ("redirect stdout") while the Evaluate widget saves its
    report: it writes the JSON that is printed, for classes and for --instances, atomically."""
    gt = np.zeros((24, 30), np.uint16)
    gt[3:9, 4:12], gt[14:20, 16:26] = 1, 2
    pred = np.roll(gt, 1, axis=1)
    np.save(tmp_path / "gt.npy", gt)
    np.save(tmp_path / "pred.npy", pred)
    for extra, name in (((), "classes.json"), (("--instances",), "objects.json")):
        r = run("evaluate", "--prediction", tmp_path / "pred.npy", "--labels", tmp_path / "gt.npy", *extra,
                "--report", tmp_path / name)
        assert r.returncode == 0, r.stderr
        assert json.loads((tmp_path / name).read_text()) == json.loads(r.stdout)
        assert f"wrote {tmp_path / name}" in r.stderr
    assert json.loads((tmp_path / "classes.json").read_text())["classes"]["1"]["dice"] == pytest.approx(
        2 * ((gt == 1) & (pred == 1)).sum() / ((gt == 1).sum() + (pred == 1).sum()))
    assert json.loads((tmp_path / "objects.json").read_text())["n_true"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    r = run("evaluate", "--prediction", tmp_path / "pred.npy", "--labels", tmp_path / "gt.npy",
            "--report", tmp_path / "r.txt")
    assert r.returncode == 2 and "must be a .json file" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert np.array_equal(np.load(tmp_path / "gt.npy"), gt)


def test_a_tiff_in_pixels_per_centimetre_is_not_scored_on_another_grid(tmp_path) -> None:
    """Case y07: a plain TIFF of 40 px/cm (0.25 mm pixels) was read as storing no size and scored
    on a 0.5 mm NIfTI's grid without a word; at 20 px/cm it is that grid, and HD95 is in mm."""
    gt = np.zeros((40, 36), np.uint8)
    gt[5:20, 8:30] = 1
    pred = np.roll(gt, 2, axis=0)
    truth = nib.Nifti1Image(np.ascontiguousarray(gt.T), np.diag([0.5, 0.5, 1.0, 1.0]))
    truth.header.set_xyzt_units("mm")
    nib.save(truth, str(tmp_path / "gt.nii.gz"))
    for per_cm, same in ((40.0, False), (20.0, True)):
        tifffile.imwrite(tmp_path / "p.tif", pred, resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
        r = run("evaluate", "--prediction", tmp_path / "p.tif", "--labels", tmp_path / "gt.nii.gz")
        assert "Traceback" not in r.stderr and "no voxel size" not in r.stderr, r.stderr
        if same:
            assert r.returncode == 0 and json.loads(r.stdout)["unit"] == "mm", r.stderr
            assert json.loads(r.stdout)["classes"]["1"]["hd95"] == pytest.approx(1.0)
        else:
            assert r.returncode == 1 and "spacing (0.25, 0.25)" in r.stderr and "spacing (0.5, 0.5)" in r.stderr


def test_a_nifti_without_orientation_codes_is_scored_and_trains_on_the_other_files_grid(tmp_path) -> None:
    """Cases 38 s41, s46: a prediction (or labels) saved with nibabel.Nifti1Image(a, None), codes 0, was
    refused beside a RAS file of the same voxels: nibabel's made-up affine flips x and centres the origin."""
    truth = np.zeros((30, 24, 8), np.uint8)  # X, Y, Z as nibabel holds them
    truth[5:20, 4:15, 2:6] = 1
    pred = np.roll(truth, 1, axis=0)
    ras = nib.Nifti1Image(truth, np.diag([1.0, 1.0, 2.0, 1.0]))
    ras.header.set_xyzt_units("mm")
    nib.save(ras, str(tmp_path / "truth.nii.gz"))
    bare = nib.Nifti1Image(pred, None)
    bare.header.set_zooms((1.0, 1.0, 2.0))
    nib.save(bare, str(tmp_path / "pred.nii.gz"))
    r = run("evaluate", "--prediction", tmp_path / "pred.nii.gz", "--labels", tmp_path / "truth.nii.gz")
    assert r.returncode == 0, r.stderr
    want = 2 * (truth & pred).sum() / (truth.sum() + pred.sum())
    assert json.loads(r.stdout)["classes"]["1"]["dice"] == pytest.approx(want)
    image = nib.Nifti1Image(np.random.default_rng(0).normal(size=truth.shape).astype(np.float32) + 2.0 * truth,
                            np.diag([1.0, 1.0, 2.0, 1.0]))
    nib.save(image, str(tmp_path / "image.nii.gz"))
    t = run("train", "--image", tmp_path / "image.nii.gz", "--labels", tmp_path / "pred.nii.gz", *TINY,
            "--out", tmp_path / "model")
    assert t.returncode == 0 and "Traceback" not in t.stderr, t.stderr
    # review 37: a model trained on the file without codes recorded nibabel's made-up LAS, and mirrored x of
    # every RAS image it predicted
    bare_image = nib.Nifti1Image(np.asarray(image.dataobj), None)
    bare_image.header.set_zooms((1.0, 1.0, 2.0))
    nib.save(bare_image, str(tmp_path / "bare_image.nii.gz"))
    t = run("train", "--image", tmp_path / "bare_image.nii.gz", "--labels", tmp_path / "pred.nii.gz", *TINY,
            "--out", tmp_path / "bare_model")
    assert t.returncode == 0, t.stderr
    config = json.loads((tmp_path / "bare_model" / "config.json").read_text())
    assert config["provenance"].get("orientation") is None, config["provenance"]


def test_a_class_mask_scored_as_instances_says_its_objects_share_one_id(tmp_path) -> None:
    """Trial 41: a 0/1 mask of many nuclei given to --instances scored AP 0 (one huge object)
    without a word; true instance labels get no such line."""
    truth = np.zeros((60, 64), np.uint16)
    for k in range(30):
        y, x = divmod(k, 6)
        truth[y * 12 + 2:y * 12 + 9, x * 10 + 2:x * 10 + 8] = k + 1
    tifffile.imwrite(tmp_path / "objects.tif", truth)
    tifffile.imwrite(tmp_path / "mask.tif", (truth > 0).astype(np.uint8))
    r = run("evaluate", "--instances", "--prediction", tmp_path / "mask.tif", "--labels", tmp_path / "objects.tif")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["n_pred"] == 1 and report["ap_at_0.5"] == 0.0
    said = (f"warning: prediction '{tmp_path / 'mask.tif'}' hold 1 id over 30 separate objects, each id scored as "
            "one object")
    assert said in r.stderr and "or score classes without --instances" in r.stderr, r.stderr
    assert len(report["notes"]) == 1 and report["notes"][0].startswith(said) and report["notes"][0] in r.stderr
    fine = run("evaluate", "--instances", "--prediction", tmp_path / "objects.tif", "--labels",
               tmp_path / "objects.tif")
    assert fine.returncode == 0 and "warning" not in fine.stderr and json.loads(fine.stdout)["notes"] == []


def test_two_files_without_objects_score_1_by_convention_and_say_so(tmp_path) -> None:
    """Review 43: `evaluate --instances` of two empty files gave AP 1.0 with no note."""
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros((32, 32), np.uint16))
    r = run("evaluate", "--instances", "--prediction", tmp_path / "empty.tif", "--labels", tmp_path / "empty.tif")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["ap_at_0.5"] == report["f1_at_0.5"] == 1.0
    said = (f"note: labels '{tmp_path / 'empty.tif'}' hold no object, nor does prediction "
            f"'{tmp_path / 'empty.tif'}': precision, recall, F1 and AP are 1 by this report's convention")
    assert report["notes"][0].startswith(said) and said in r.stderr, r.stderr
