"""Inputs a run cannot learn from as given: labels whose values are not class ids, labels for
one frame of a time series, a constant image, instance labels given to a segmentation, a
folder as --out. One line naming the file and a fix that works (or a warning), in `train`,
`predict` and `evaluate`."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_medml.cli import main

TINY = ["--epochs", "1", "--steps-per-epoch", "2", "--features", "4", "--depth", "2", "--device", "cpu",
        "--no-augment", "--seed", "0", "--patch-size", "8", "16", "16"]  # fmt: skip


def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("napari-medml: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(0)
    lab = np.zeros((12, 24, 24), np.uint8)
    lab[3:9, 6:18, 6:18] = 1
    img = rng.normal(0, 1, lab.shape).astype(np.float32) + 3 * lab
    save = lambda a, name: nib.save(nib.Nifti1Image(np.ascontiguousarray(a.T), np.eye(4)), tmp_path / name)  # noqa: E731
    save(img, "img.nii.gz")
    save(lab, "lab.nii.gz")
    return tmp_path, img, lab, save


def test_label_values_that_are_not_class_ids_name_the_file_and_the_fix(capsys, pair) -> None:
    tmp_path, img, lab, save = pair
    negative = lab.astype(np.int16)
    negative[:, :, 12:] *= -1
    save(negative, "neg.nii.gz")
    save(lab.astype(np.float32) * 0.9, "prob.nii.gz")
    scaled = nib.Nifti1Image(np.ascontiguousarray(lab.T), np.eye(4))
    scaled.header.set_slope_inter(0.5, 0)
    nib.save(scaled, tmp_path / "scl.nii.gz")
    expected = {"neg.nii.gz": "contain negative ids (-1): class ids must be 0 (background) or more; set the negative",
                "prob.nii.gz": "hold non-integer values (float32, e.g. 0.9): labels must be integer class ids; a "
                               "probability map becomes labels by a threshold",
                "scl.nii.gz": "scl_slope 0.5, scl_inter 0): save the labels unscaled"}
    for name, words in expected.items():
        # the second pair is the faulty one: the line names its file, not an index
        code, _, err = run_cli(capsys, "train", "--image", tmp_path / "img.nii.gz", "--labels",
                               tmp_path / "lab.nii.gz", "--image", tmp_path / "img.nii.gz", "--labels",
                               tmp_path / name, "--out", tmp_path / "m", *TINY)  # fmt: skip
        line = one_line(err)
        assert code != 0 and f"labels '{tmp_path / name}'" in line and words in line, line
    assert not (tmp_path / "m").exists()
    # instance labels: the line speaks of object ids (it said class ids)
    code, _, err = run_cli(capsys, "train", "--task", "instances", "--image", tmp_path / "img.nii.gz", "--labels",
                           tmp_path / "neg.nii.gz", "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code != 0 and one_line(err).endswith(
        f"labels '{tmp_path / 'neg.nii.gz'}' contain negative ids (-1): object ids must be 0 (background) or more; "
        "set the negative voxels to 0, or to an object id of their own"), err
    # the fix the line gives works: negative voxels set to 0
    save(np.clip(negative, 0, None), "fixed.nii.gz")
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "img.nii.gz", "--labels", tmp_path / "fixed.nii.gz",
                           "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0, err


def test_evaluate_refuses_a_negative_ignore_id_instead_of_scoring_it(capsys, pair) -> None:
    tmp_path, img, lab, save = pair
    truth = lab.astype(np.int16)
    truth[0] = -1  # an "ignore" slice, as some datasets mark it
    save(truth, "truth.nii.gz")
    code, out, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / "lab.nii.gz", "--labels",
                             tmp_path / "truth.nii.gz")  # fmt: skip
    line = one_line(err)
    assert code != 0 and out == "" and f"labels '{tmp_path / 'truth.nii.gz'}' contain negative ids (-1)" in line


def test_labels_for_one_frame_of_a_time_series_say_so(capsys, tmp_path) -> None:
    rng = np.random.default_rng(1)
    lab = np.zeros((8, 24, 24), np.uint8)
    lab[2:6, 6:18, 6:18] = 1
    frame = (rng.integers(0, 100, lab.shape) + 300 * lab.astype(np.int64)).astype(np.uint16)
    movie = np.stack([np.stack([frame, frame // 2])] * 3)  # (T, C, Z, Y, X)
    tifffile.imwrite(tmp_path / "movie.ome.tif", movie, ome=True, metadata={"axes": "TCZYX"})
    tifffile.imwrite(tmp_path / "lab.tif", lab, imagej=True, metadata={"axes": "ZYX"})
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "movie.ome.tif", "--labels", tmp_path / "lab.tif",
                           "--out", tmp_path / "m", *TINY)  # fmt: skip
    line = one_line(err)
    assert code != 0 and "are for one frame" in line and "holds 3 time frames" in line
    assert "give labels for every frame, shape (3, 8, 24, 24)" in line and "--axes" not in line
    # the fix works: labels for every frame
    tifffile.imwrite(tmp_path / "labs.tif", np.stack([lab] * 3), imagej=True, metadata={"axes": "TZYX"})
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "movie.ome.tif", "--labels", tmp_path / "labs.tif",
                           "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0, err


def test_a_2d_network_trains_on_a_volume_with_blank_slices_and_pretrains_on_it(capsys, pair) -> None:
    """Trial 43: a 2D network on an MRI with blank slices (the air above the head) was refused,
    'image 1 of 80 is constant', by the CLI and the widget; a volume blank everywhere still is."""
    tmp_path, img, lab, save = pair
    blank = img.copy()
    blank[:2] = 0  # two slices of air, unlabelled
    save(blank, "air.nii.gz")
    two_d = ["--spatial-dims", "2", "--epochs", "1", "--steps-per-epoch", "2", "--features", "4", "--depth", "2",
             "--device", "cpu", "--no-augment", "--seed", "0", "--patch-size", "16", "16"]
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "air.nii.gz", "--labels", tmp_path / "lab.nii.gz",
                           "--out", tmp_path / "m2d", *two_d)  # fmt: skip
    assert code == 0 and "constant" not in err, err
    code, _, err = run_cli(capsys, "pretrain", "--image", tmp_path / "air.nii.gz", "--out", tmp_path / "p2d",
                           *two_d[:8], "--patch-size", "16", "16")  # fmt: skip
    assert code == 0 and "constant" not in err, err
    from napari_medml.preprocessing.inputs import check_volumes_not_constant

    check_volumes_not_constant([0.0, None, 0.0], (3,))  # a volume of blank and other slices
    check_volumes_not_constant([None, 0.0, 0.0, 0.0], (1, 3))  # a blank volume beside an image (the CLI refuses
    # a blank file as it reads each; a dark frame of a series, or slices fine-tuned with no groups, train)
    check_volumes_not_constant([0.0, 1.0], (2,))  # two blank slices of different values: an edge between them
    with pytest.raises(Exception, match="^image is constant \\(every voxel is 0\\)"):
        check_volumes_not_constant([0.0, 0.0, 0.0], (3,))  # a volume blank in every slice
    with pytest.raises(Exception, match="^each of the 2 images is constant \\(every voxel is 4\\)"):
        check_volumes_not_constant([4.0, 4.0], None)


def test_a_constant_image_is_refused_and_many_ids_get_a_warning(capsys, pair) -> None:
    tmp_path, img, lab, save = pair
    save(np.full(img.shape, 7.0, np.float32), "flat.nii.gz")
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "flat.nii.gz", "--labels", tmp_path / "lab.nii.gz",
                           "--out", tmp_path / "m", *TINY)  # fmt: skip
    line = one_line(err)
    assert code != 0 and f"image '{tmp_path / 'flat.nii.gz'}' is constant (every voxel is 7)" in line
    assert not (tmp_path / "m").exists()
    objects = np.zeros(lab.shape, np.uint16)
    for k in range(40):  # one id per object, as instance labels are
        objects[k % 12, (k // 12) * 6:(k // 12) * 6 + 4, 2:6] = k + 1
    save(objects, "objects.nii.gz")
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "img.nii.gz", "--labels",
                           tmp_path / "objects.nii.gz", "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0, err
    assert "hold 40 ids, trained as 40 classes" in err and "train an instance model (--task instances)" in err
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "img.nii.gz", "--labels", tmp_path / "lab.nii.gz",
                           "--out", tmp_path / "m2", *TINY)  # fmt: skip
    assert code == 0 and "--task instances" not in err, err


def test_predict_into_a_folder_names_a_file_to_give(capsys, pair) -> None:
    tmp_path, img, lab, save = pair
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "img.nii.gz", "--labels", tmp_path / "lab.nii.gz",
                           "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0, err
    (tmp_path / "out").mkdir()
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "m", "--image", tmp_path / "img.nii.gz",
                           "--out", tmp_path / "out", "--device", "cpu")  # fmt: skip
    line = one_line(err)
    assert code != 0 and f"--out '{tmp_path / 'out'}' is a folder: give a file name in it, e.g." in line
    fix = line.split("e.g. ")[1]
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "m", "--image", tmp_path / "img.nii.gz",
                           "--out", fix, "--device", "cpu")  # fmt: skip
    assert code == 0 and (tmp_path / "out" / "pred.nii.gz").exists(), err


def test_a_nifti_saved_with_an_extra_leading_axis_is_read_without_it(capsys, pair) -> None:
    """Case 08's other form: numpy's a[None] saved as NIfTI, (1, X, Y, Z), where X has length 1."""
    tmp_path, img, lab, save = pair
    nib.save(nib.Nifti1Image(np.ascontiguousarray(lab.T)[None], np.diag([0.8, 0.8, 2.5, 1.0])),
             tmp_path / "lead_seg.nii.gz")
    code, out, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / "lab.nii.gz", "--labels",
                             tmp_path / "lead_seg.nii.gz")  # fmt: skip
    assert code == 0 and '"mean_dice": 1.0' in out, err
    assert f"labels '{tmp_path / 'lead_seg.nii.gz'}' is stored with shape (12, 24, 24, 1): read as (12, 24, 24)" in err
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "img.nii.gz", "--labels",
                           tmp_path / "lead_seg.nii.gz", "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0 and "its extra length-1 axes dropped" in err, err


def test_a_numpy_file_in_nibabels_axis_order_is_named_with_the_transpose_fix(capsys, pair) -> None:
    tmp_path, img, lab, save = pair
    xyz = np.asarray(nib.load(tmp_path / "lab.nii.gz").dataobj)  # (X, Y, Z), as nibabel gives it
    np.save(tmp_path / "pred.npy", xyz)
    code, out, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / "pred.npy", "--labels",
                             tmp_path / "lab.nii.gz")  # fmt: skip
    line = one_line(err)
    assert code != 0 and f"'{tmp_path / 'pred.npy'}' holds shape (24, 24, 12), the other file's (12, 24, 24)" in line
    np.save(tmp_path / "pred.npy", xyz.T)  # the fix the line gives
    code, out, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / "pred.npy", "--labels",
                             tmp_path / "lab.nii.gz")  # fmt: skip
    assert code == 0 and '"mean_dice": 1.0' in out, err


def test_a_4d_nifti_marked_time_that_holds_channels_is_told_the_axes_that_say_so(capsys, tmp_path) -> None:
    """Case 34 v01: dcm2niix marks every 4th axis as time (xyzt_units 'sec'); two contrasts with 3D
    labels were told only to give labels for every frame. The refusal names --axes CZYX, and it works."""
    rng = np.random.default_rng(2)
    lab = np.zeros((20, 24, 6), np.uint8)  # nibabel's (X, Y, Z)
    lab[5:15, 6:18, 1:5] = 1
    contrasts = np.stack([rng.normal(0, 1, lab.shape) + 3 * lab, rng.normal(0, 1, lab.shape) - 2 * lab], -1)
    image = nib.Nifti1Image(contrasts.astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, tmp_path / "mc.nii.gz")
    nib.save(nib.Nifti1Image(lab, np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "mc_seg.nii.gz")
    args = ["train", "--image", tmp_path / "mc.nii.gz", "--labels", tmp_path / "mc_seg.nii.gz", "--out", tmp_path / "m"]
    code, _, err = run_cli(capsys, *args, *TINY)
    line = one_line(err)
    assert code != 0 and line.endswith("; or, if that axis holds channels (contrasts) rather than frames, say so "
                                       "with --axes CZYX"), line
    code, _, err = run_cli(capsys, *args, "--axes", "CZYX", *TINY[:-4])  # the fix, as it reads (a 6-slice volume)
    assert code == 0, err
