"""Where two files meet on the command line, their grids are compared in world space;
the split of a single volume keeps every class in training (cases 05 and 14)."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest
import tifffile
from safetensors.numpy import load_file

from napari_medml.cli import main

TINY = ["--epochs", "1", "--steps-per-epoch", "2", "--features", "4", "--depth", "2", "--device", "cpu",
        "--no-augment", "--seed", "3"]  # fmt: skip
RAS = np.diag([1.0, 1.0, 2.0, 1.0])


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def las_copy(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels stored with the x axis flipped, the affine saying so."""
    las = RAS.copy()
    las[0, 0], las[0, 3] = -1.0, data.shape[0] - 1.0
    return np.ascontiguousarray(data[::-1]), las


@pytest.fixture
def truth(tmp_path):
    lab = np.zeros((40, 32, 12), np.uint8)  # NIfTI (X, Y, Z)
    lab[4:14, 8:20, 3:9] = 1  # near the low-x side
    nib.save(nib.Nifti1Image(lab, RAS), tmp_path / "truth_seg.nii.gz")
    return lab


def test_evaluate_scores_a_flipped_copy_as_identical_with_a_note(capsys, tmp_path, truth):
    data, las = las_copy(truth)
    nib.save(nib.Nifti1Image(data, las), tmp_path / "pred_seg.nii.gz")
    code, out, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / "pred_seg.nii.gz",
                             "--labels", tmp_path / "truth_seg.nii.gz")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["classes"]["1"]["dice"] == 1.0
    assert "orientation LAS" in err and "RAS" in err and "reoriented" in err


def test_evaluate_refuses_another_grid_naming_both_files(capsys, tmp_path, truth):
    nib.save(nib.Nifti1Image(truth, np.diag([1.0, 1.0, 3.0, 1.0])), tmp_path / "pred_seg.nii.gz")
    code, out, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / "pred_seg.nii.gz",
                             "--labels", tmp_path / "truth_seg.nii.gz")  # fmt: skip
    assert code == 1 and out == ""
    line = err.strip()
    assert "pred_seg.nii.gz" in line and "truth_seg.nii.gz" in line
    assert "spacing (1, 1, 3)" in line and "spacing (1, 1, 2)" in line  # NIfTI order, as nibabel (trial 47)


def test_train_reorients_mirrored_labels_to_the_image(capsys, tmp_path):
    rng = np.random.default_rng(5)
    img = rng.normal(0, 1, (32, 24, 16)).astype(np.float32)
    lab = np.zeros(img.shape, np.uint8)
    lab[2:12, 4:20, 4:12] = 1
    img[lab == 1] += 3
    nib.save(nib.Nifti1Image(img, RAS), tmp_path / "img.nii.gz")
    nib.save(nib.Nifti1Image(lab, RAS), tmp_path / "ras_seg.nii.gz")
    data, las = las_copy(lab)
    nib.save(nib.Nifti1Image(data, las), tmp_path / "las_seg.nii.gz")
    weights = {}
    for name in ("ras", "las"):
        code, _, err = run_cli(capsys, "train", "--image", tmp_path / "img.nii.gz", "--labels",
                               tmp_path / f"{name}_seg.nii.gz", "--out", tmp_path / name, *TINY)  # fmt: skip
        assert code == 0, err
        assert ("reoriented" in err) == (name == "las")
        weights[name] = load_file(tmp_path / name / "weights.safetensors")
    # trained on the same aligned data: the same weights, bit for bit
    assert all(np.array_equal(weights["ras"][k], weights["las"][k]) for k in weights["ras"])


def test_train_refuses_labels_on_another_grid(capsys, tmp_path, truth):
    img = np.random.default_rng(3).normal(0, 1, truth.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(img, np.diag([0.5, 0.5, 2.0, 1.0])), tmp_path / "img.nii.gz")
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "img.nii.gz", "--labels",
                           tmp_path / "truth_seg.nii.gz", "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 1 and "truth_seg.nii.gz" in err and "img.nii.gz" in err and "spacing" in err
    assert not (tmp_path / "m").exists()


def test_object_only_in_the_held_out_block_is_kept_in_training_and_said(capsys, tmp_path):
    # case 14: one volume, its only object in the last 20 % of the longest axis
    rng = np.random.default_rng(14)
    img = rng.normal(0, 1, (32, 48, 16)).astype(np.float32)  # NIfTI (X, Y, Z): Y is the longest axis
    lab = np.zeros(img.shape, np.uint8)
    lab[8:24, 40:47, 4:12] = 1
    img[lab == 1] += 3
    aff = np.diag([0.8, 0.8, 2.5, 1.0])
    nib.save(nib.Nifti1Image(img, aff), tmp_path / "scan.nii.gz")
    nib.save(nib.Nifti1Image(lab, aff), tmp_path / "scan_seg.nii.gz")
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "scan.nii.gz", "--labels",
                           tmp_path / "scan_seg.nii.gz", "--out", tmp_path / "model", *TINY)  # fmt: skip
    assert code == 0, err
    assert "held every voxel of class 1" in err
    # the last line gives no Dice of a part with nothing to find (it said 'validation mean Dice 0.000')
    assert re.search(r"saved model bundle to .* \(best epoch \d+; the held-out part holds no foreground, so no "
                     r"validation Dice\); trained 2 steps in ", err.strip().splitlines()[-1]), err
    split = json.loads((tmp_path / "model" / "config.json").read_text())["provenance"]["split"]
    # the default block (the last 10 of 48 rows, axis 1) moved: another end or axis
    assert "class 1" in split and "last 10 of 48 voxels along axis 1 (Y)" not in split


def test_the_held_out_block_of_a_nifti_names_its_axis_by_letter(capsys, tmp_path):
    """The split said "along axis 2" in napari's (z, y, x) numbering, which a NIfTI user reads as
    its z (trial 35): it now says the letter, X for a NIfTI's first axis."""
    rng = np.random.default_rng(3)
    img = rng.normal(0, 1, (40, 24, 12)).astype(np.float32)  # NIfTI (X, Y, Z): X is the longest axis
    lab = (img > 0.5).astype(np.uint8)
    nib.save(nib.Nifti1Image(img, np.eye(4)), tmp_path / "scan.nii.gz")
    nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / "scan_seg.nii.gz")
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "scan.nii.gz", "--labels",
                           tmp_path / "scan_seg.nii.gz", "--out", tmp_path / "model", *TINY)  # fmt: skip
    assert code == 0, err
    split = json.loads((tmp_path / "model" / "config.json").read_text())["provenance"]["split"]
    assert split.startswith("validation on the last 8 of 40 voxels along axis 2 (X)"), split


def test_predict_puts_an_input_in_the_training_orientation_and_the_output_back(capsys, tmp_path, truth):
    """A model trained on RAS data, given the same scan stored x-flipped (LAS): the network
    sees it as RAS, and the labels come back on the LAS file's own grid."""
    rng = np.random.default_rng(0)
    img = rng.normal(0, 1, truth.shape).astype(np.float32)
    img[truth == 1] += 3
    nib.save(nib.Nifti1Image(img, RAS), tmp_path / "scan.nii.gz")
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "scan.nii.gz", "--labels",
                           tmp_path / "truth_seg.nii.gz", "--out", tmp_path / "model", *TINY)  # fmt: skip
    assert code == 0, err
    desc = json.loads((tmp_path / "model" / "config.json").read_text())
    assert desc["provenance"]["orientation"] == "RAS"
    data, las = las_copy(img)
    nib.save(nib.Nifti1Image(data, las), tmp_path / "scan_las.nii.gz")
    outs = {}
    for name in ("scan", "scan_las"):
        code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "model", "--image",
                               tmp_path / f"{name}.nii.gz", "--out", tmp_path / f"{name}_pred.nii.gz",
                               "--device", "cpu")  # fmt: skip
        assert code == 0, err
        outs[name] = (np.asarray(nib.load(tmp_path / f"{name}_pred.nii.gz").dataobj), err)
    assert "orientation LAS" in outs["scan_las"][1] and "reoriented" in outs["scan_las"][1]
    assert "reoriented" not in outs["scan"][1]
    np.testing.assert_array_equal(outs["scan_las"][0], outs["scan"][0][::-1])  # the same labels in world space
    # a TIFF or NumPy output holds the stored voxel order but no orientation: said, for a file not in RAS order
    for name in ("scan", "scan_las"):
        code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "model", "--image", tmp_path / f"{name}.nii.gz",
                               "--out", tmp_path / f"{name}_pred.tif", "--probabilities", tmp_path / f"{name}_p.npy",
                               "--device", "cpu")  # fmt: skip
        assert code == 0, err
        np.testing.assert_array_equal(tifffile.imread(tmp_path / f"{name}_pred.tif"), outs[name][0].T)
        said = [line for line in err.splitlines() if "holds no orientation" in line]
        if name == "scan":
            assert not said
        else:
            files = f"{tmp_path / 'scan_las_pred.tif'}, {tmp_path / 'scan_las_p.npy'}"
            assert said == [f"napari-medml: {files}: the voxels "
                            "are in the order 'scan_las' stores them (LAS), but the file type holds no orientation, so "
                            "napari shows them flipped against the image; write .nii.gz to keep it"]


def test_predict_warns_when_the_voxel_size_is_far_from_the_training_spacing(capsys, tmp_path, truth):
    rng = np.random.default_rng(1)
    img = rng.normal(0, 1, truth.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(img, RAS), tmp_path / "scan.nii.gz")
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "scan.nii.gz", "--labels",
                           tmp_path / "truth_seg.nii.gz", "--out", tmp_path / "model", *TINY)  # fmt: skip
    assert code == 0, err
    nib.save(nib.Nifti1Image(img, np.diag([0.4, 0.4, 2.0, 1.0])), tmp_path / "fine.nii.gz")
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "model", "--image", tmp_path / "fine.nii.gz",
                           "--out", tmp_path / "fine_pred.nii.gz", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    assert "voxel size 2 x 0.4 x 0.4" in err and "trained at 2 x 1 x 1" in err and "resample" in err


def test_a_two_channel_nifti_stored_psl_trains_with_labels_stored_ras(tmp_path):
    """Review 25: a 2-channel NIfTI image (X, Y, Z, 2) stored PSL with labels stored RAS was refused
    ("labels have shape ... but image ... has shape ..."): its fourth axis (time or channels?) was
    told from the labels' shape before the labels were put on its grid."""
    from napari_medml.cli.training_files import read_pairs

    o = nib.orientations
    lab = np.zeros((20, 24, 12), np.uint8)  # RAS (X, Y, Z)
    lab[3:9, 5:15, 2:8] = 1
    ras = np.diag([1.0, 1.0, 2.0, 1.0])
    to_psl = o.ornt_transform(o.axcodes2ornt(tuple("RAS")), o.axcodes2ornt(tuple("PSL")))
    stored = o.apply_orientation(lab, to_psl)
    image = np.stack([stored * 5.0 + 1, stored * 2.0], axis=-1).astype(np.float32)  # (X', Y', Z', 2)
    nib.save(nib.Nifti1Image(image, ras @ o.inv_ornt_aff(to_psl, lab.shape)), tmp_path / "img.nii.gz")
    nib.save(nib.Nifti1Image(lab, ras), tmp_path / "seg.nii.gz")
    images, labels, _, channel_axis, dims, _, _ = read_pairs([tmp_path / "img.nii.gz"], [tmp_path / "seg.nii.gz"], None)
    assert dims == 3 and channel_axis == 0 and images[0].shape == (2, *stored.T.shape)
    np.testing.assert_array_equal(labels[0], stored.T)  # on the image's voxels: napari order (Z, Y, X)
    np.testing.assert_array_equal(images[0][1] > 0, labels[0] > 0)


def test_training_images_stored_in_other_orientations_train_in_the_first_ones(capsys, tmp_path):
    """Trial 47: one anisotropic scan stored RAS and PIR was taken as two voxel sizes, 1x3x1 and 3x1x1,
    and resampled to their 'median' along the wrong axes (and planned isotropic)."""
    from nibabel.orientations import axcodes2ornt, ornt_transform

    rng = np.random.default_rng(0)
    lab = np.zeros((40, 36, 12), np.uint8)  # NIfTI (X, Y, Z), 1x1x3 mm
    lab[8:30, 6:28, 3:9] = 1
    img = (lab + 0.3 * rng.random(lab.shape)).astype(np.float32)
    aniso = np.diag([1.0, 1.0, 3.0, 1.0])
    to_pir = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt("PIR"))
    args = []
    for name, make in (("ras", lambda a: nib.Nifti1Image(a, aniso)),
                       ("pir", lambda a: nib.Nifti1Image(a, aniso).as_reoriented(to_pir))):
        nib.save(make(img), tmp_path / f"{name}.nii.gz")
        nib.save(make(lab), tmp_path / f"{name}_seg.nii.gz")
        args += ["--image", tmp_path / f"{name}.nii.gz", "--labels", tmp_path / f"{name}_seg.nii.gz"]
    assert nib.aff2axcodes(nib.load(tmp_path / "pir.nii.gz").affine) == ("P", "I", "R")
    code, out, err = run_cli(capsys, "train", *args, "--max-minutes", "1", "--device", "cpu", "--plan-only")
    assert code == 0, err
    assert (f"image '{tmp_path / 'pir.nii.gz'}': stored in PIR voxel order, trained in RAS as the first image "
            f"'{tmp_path / 'ras.nii.gz'}' (predict puts images in it too)") in err
    assert out.startswith("plan: 2 image(s) of 12x36x40 voxels, spacing 3x1x1 (anisotropy 3"), out
    assert "resampled" not in err


def test_evaluate_of_a_time_series_against_labels_of_one_frame_says_what_works(capsys, tmp_path, truth):
    """Trial 47: "they must match", without a fix."""
    series = nib.Nifti1Image(np.stack([truth] * 3, -1), RAS)
    series.header.set_xyzt_units("mm", "sec")
    nib.save(series, tmp_path / "series_seg.nii.gz")
    for pred, labels in (("series", "truth"), ("truth", "series")):
        code, out, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / f"{pred}_seg.nii.gz", "--labels",
                                 tmp_path / f"{labels}_seg.nii.gz")
        who = "labels are" if pred == "series" else "prediction is"
        assert code == 1 and err.strip().endswith(
            f"the {who} for one of the frames: give {who.split()[0]} for every one (shape (3, 12, 32, 40)), or save "
            "the one it belongs to as a file of its own and score that"), err


def test_review_47_a_4d_pair_in_another_orientation_a_tiff_beside_a_nifti_and_an_unnamed_4d_axis(capsys, tmp_path,
                                                                                                truth):
    """Review 47: the 4D labels of a PIR series were left in PIR beside their reoriented image (refused); a
    TIFF's shape (Z, Y, X) stood beside a NIfTI's (x, y, z); a 4D file without time units was named "axes Q"."""
    from nibabel.orientations import axcodes2ornt, ornt_transform

    rng = np.random.default_rng(0)
    image = (truth + 0.3 * rng.random(truth.shape)).astype(np.float32)
    to_pir = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt("PIR"))
    args = []
    for name in ("ras", "pir"):
        for kind, data in (("", image), ("_seg", truth)):
            made = nib.Nifti1Image(np.stack([data] * 2, -1), RAS)
            made.header.set_xyzt_units("mm", "sec")
            nib.save(made if name == "ras" else made.as_reoriented(to_pir), tmp_path / f"{name}4d{kind}.nii.gz")
        args += ["--image", tmp_path / f"{name}4d.nii.gz", "--labels", tmp_path / f"{name}4d_seg.nii.gz"]
    code, out, err = run_cli(capsys, "train", *args, "--max-minutes", "1", "--device", "cpu", "--plan-only")
    assert code == 0 and out.startswith("plan: 4 image(s) of 12x32x40 voxels"), err
    tifffile.imwrite(tmp_path / "pred.tif", np.ascontiguousarray(truth.T[:6]))  # (Z, Y, X), 6 slices of 12
    code, _, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / "pred.tif", "--labels",
                           tmp_path / "truth_seg.nii.gz")
    assert code == 1 and "(shape (6, 32, 40), " in err and "(shape (12, 32, 40), " in err, err
    nib.save(nib.Nifti1Image(np.stack([truth] * 2, -1), RAS), tmp_path / "two_seg.nii.gz")  # no time unit
    code, _, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / "two_seg.nii.gz", "--labels",
                           tmp_path / "truth_seg.nii.gz")
    assert code == 1 and err.strip().endswith(
        "have (12, 32, 40): the labels are for one of the 2 volumes or images along its first axis: give labels "
        "for every one (shape (2, 12, 32, 40)), or save the one it belongs to as a file of its own and score that"), err


def test_an_image_without_a_voxel_size_takes_its_labels_grid(capsys, tmp_path):
    """Trial 48: a channel-last TIFF without a voxel size, beside labels in 0.26 µm, was said to lie on the
    labels' grid, yet the model recorded voxels of 1 x 1 (and every prediction on 0.26 µm images warned)."""
    rng = np.random.default_rng(0)
    lab = np.zeros((48, 64), np.uint8)
    lab[8:24, 10:30] = lab[30:44, 36:60] = 1
    img = np.stack([lab * 3.0 + rng.normal(0, 1, lab.shape), rng.normal(0, 1, lab.shape)], -1).astype(np.float32)
    tifffile.imwrite(tmp_path / "yxc.tif", img, metadata={"axes": "YXC"})
    tifffile.imwrite(tmp_path / "seg.tif", lab, imagej=True, resolution=(1 / 0.26, 1 / 0.26),
                     metadata={"axes": "YX", "unit": "um"})
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "yxc.tif", "--labels", tmp_path / "seg.tif",
                           "--patch-size", "32", "32", "--out", tmp_path / "m", *TINY)
    assert code == 0, err
    assert "has no voxel size or position: taken to lie on the grid of labels" in err
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["spacing"] == pytest.approx([0.26, 0.26])
    # review 48: labels with a voxel size and no unit (a KeyError), and NIfTI labels (they kept voxels of 1)
    tifffile.imwrite(tmp_path / "seg_nounit.tif", lab, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"axes": "YX"})
    nib.save(nib.Nifti1Image(np.ascontiguousarray(lab.T), np.diag([0.7, 0.7, 1.0, 1.0])), tmp_path / "seg.nii.gz")
    for labels, spacing in (("seg_nounit.tif", [0.5, 0.5]), ("seg.nii.gz", [0.7, 0.7])):
        code, _, err = run_cli(capsys, "train", "--image", tmp_path / "yxc.tif", "--labels", tmp_path / labels,
                               "--patch-size", "32", "32", "--out", tmp_path / labels.split(".")[0], *TINY)
        assert code == 0, err
        config = json.loads((tmp_path / labels.split(".")[0] / "config.json").read_text())
        assert config["spacing"] == pytest.approx(spacing), labels
