"""The command line keeps the meaning of axes: ImageJ hyperstacks, one-slice NIfTI,
labels with a trailing length-1 axis, LZW TIFFs, a 2D model on a stack, time series and
``--axes`` for files that do not say. Run in-process through ``main()``; training is tiny."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_medml.cli import main
from napari_medml.io import read_volume

TINY = ["--epochs", "1", "--steps-per-epoch", "2", "--features", "4", "--depth", "2", "--device", "cpu",
        "--no-augment", "--seed", "0"]  # fmt: skip


def _lzw_tiff(path: Path, arr: np.ndarray) -> None:
    """A valid LZW TIFF (literal codes only, a Clear code every 200), as scanners write."""
    import struct

    codes: list[int] = []
    data = arr.tobytes()
    for i in range(0, len(data), 200):
        codes += [256, *data[i:i + 200]]
    codes.append(257)
    acc = nbits = 0
    strip = bytearray()
    for c in codes:
        acc, nbits = (acc << 9) | c, nbits + 9
        while nbits >= 8:
            nbits -= 8
            strip.append((acc >> nbits) & 0xFF)
    if nbits:
        strip.append((acc << (8 - nbits)) & 0xFF)
    h, w = arr.shape
    tags = [(256, 3, w), (257, 3, h), (258, 3, 8), (259, 3, 5), (262, 3, 1), (273, 4, 8 + 2 + 9 * 12 + 4),
            (277, 3, 1), (278, 3, h), (279, 4, len(strip))]  # fmt: skip
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(tags)))
    for tag, typ, val in tags:
        out += struct.pack("<HHI", tag, typ, 1) + (struct.pack("<HH", val, 0) if typ == 3 else struct.pack("<I", val))
    path.write_bytes(bytes(out + struct.pack("<I", 0) + strip))


def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def model_2d(tmp_path_factory) -> Path:
    """A 2D model trained on one 48x48 ImageJ slice (0.3 um pixels)."""
    folder = tmp_path_factory.mktemp("m2d")
    rng = np.random.default_rng(16)
    img = rng.integers(0, 1000, (48, 48)).astype(np.uint16)
    lab = np.zeros((48, 48), np.uint8)
    lab[10:30, 10:30] = 1
    img[lab == 1] += 2000
    tifffile.imwrite(folder / "slice.tif", img, imagej=True, resolution=(1 / 0.3, 1 / 0.3))
    tifffile.imwrite(folder / "slice_mask.tif", lab, imagej=True, resolution=(1 / 0.3, 1 / 0.3))
    assert main(["train", "--image", str(folder / "slice.tif"), "--labels", str(folder / "slice_mask.tif"),
                 "--out", str(folder / "model"), *TINY]) == 0  # fmt: skip
    return folder / "model"


def test_pseudo_2d_nifti_trains_as_2d_and_predicts_its_own_shape(tmp_path, capsys) -> None:
    rng = np.random.default_rng(2)
    img = rng.normal(0, 1, (64, 48)).astype(np.float32)
    lab = np.zeros((64, 48), np.uint8)
    lab[10:30, 8:28] = 1
    img[lab == 1] += 3
    aff = np.diag([0.7, 0.7, 1.0, 1.0])
    nib.save(nib.Nifti1Image(img[:, :, None], aff), tmp_path / "case.nii.gz")
    nib.save(nib.Nifti1Image(lab[:, :, None], aff), tmp_path / "case_seg.nii.gz")
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "case.nii.gz", "--labels",
                           tmp_path / "case_seg.nii.gz", "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "m" / "config.json").read_text())["spatial_dims"] == 2
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "m", "--image", tmp_path / "case.nii.gz",
                           "--out", tmp_path / "pred.nii.gz", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    assert nib.load(tmp_path / "pred.nii.gz").shape == (64, 48, 1)
    code, out, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / "pred.nii.gz", "--labels",
                             tmp_path / "case_seg.nii.gz")  # fmt: skip
    assert code == 0, err and "mean_dice" in json.loads(out)


def test_a_one_slice_nifti_time_series_keeps_its_slice_axis_in_the_prediction(model_2d, tmp_path, capsys) -> None:
    """Case 33 j06: (X, Y, Z=1, T=4) with no time unit: once the length-1 Z came off, the unnamed
    4th axis was read as Z, and the prediction was written (X, Y, 4): frames as slices 8 mm apart."""
    rng = np.random.default_rng(3)
    img = rng.normal(0, 1, (48, 48, 1, 4)).astype(np.float32)
    affine = np.diag([0.3, 0.3, 8.0, 1.0])
    nib.save(nib.Nifti1Image(img, affine), tmp_path / "cine.nii.gz")
    code, _, err = run_cli(capsys, "predict", "--model", model_2d, "--image", tmp_path / "cine.nii.gz",
                           "--out", tmp_path / "pred.nii.gz", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    pred = nib.load(tmp_path / "pred.nii.gz")
    assert pred.shape == (48, 48, 1, 4) and np.allclose(pred.affine, affine)
    # the same layout holding two contrasts (no vector intent) still trains as 2 channels (review 33)
    contrasts = np.zeros((48, 48, 1, 2), np.float32)
    contrasts[..., 0], contrasts[..., 1] = img[..., 0], -img[..., 1]
    nib.save(nib.Nifti1Image(contrasts, affine), tmp_path / "mc.nii.gz")
    mask = np.zeros((48, 48, 1), np.uint8)
    mask[10:30, 10:30] = 1
    nib.save(nib.Nifti1Image(mask, affine), tmp_path / "mc_seg.nii.gz")
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "mc.nii.gz", "--labels", tmp_path / "mc_seg.nii.gz",
                           "--out", tmp_path / "mc_model", "--spatial-dims", "2", *TINY)  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "mc_model" / "config.json").read_text())["in_channels"] == 2


def test_imagej_zcyx_hyperstack_trains_on_two_channels(tmp_path, capsys) -> None:
    rng = np.random.default_rng(6)
    img = rng.integers(0, 500, (10, 2, 48, 48)).astype(np.uint16)
    lab = np.zeros((10, 48, 48), np.uint8)
    lab[3:8, 10:30, 10:30] = 1
    img[:, 0][lab == 1] += 2000
    meta = {"spacing": 1.5, "unit": "um"}
    tifffile.imwrite(tmp_path / "cells.tif", img, imagej=True, resolution=(5.0, 5.0), metadata={"axes": "ZCYX", **meta})
    tifffile.imwrite(tmp_path / "cells_mask.tif", lab, imagej=True, resolution=(5.0, 5.0), metadata={"axes": "ZYX", **meta})
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "cells.tif", "--labels", tmp_path / "cells_mask.tif",
                           "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0, err
    assert "2 channels" in err
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["in_channels"] == 2 and config["spatial_dims"] == 3
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "m", "--image", tmp_path / "cells.tif",
                           "--out", tmp_path / "pred.tif", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    with tifffile.TiffFile(tmp_path / "pred.tif") as tif:
        assert tif.series[0].axes == "ZYX" and tif.series[0].shape == (10, 48, 48)
        assert tif.imagej_metadata["spacing"] == 1.5
    # trial 30: the same stack told TZYX suggested --axes TCYX (2 spatial axes for a 3D model), whose own
    # refusal then suggested ZYX or CYX; the fix keeps 3 spatial axes, and following it predicts
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "m", "--image", tmp_path / "cells.tif",
                           "--axes", "TZYX", "--out", tmp_path / "pred2.tif", "--device", "cpu")  # fmt: skip
    assert code == 1 and "if axis 1 (length 2) holds them, say so with --axes ZCYX" in err, err
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "m", "--image", tmp_path / "cells.tif",
                           "--axes", "ZCYX", "--out", tmp_path / "pred2.tif", "--device", "cpu")  # fmt: skip
    assert code == 0, err


def test_a_zcyx_stack_saved_without_its_axes_is_refused_naming_both_readings(tmp_path, capsys) -> None:
    """Case 06's stack written by a plain ``tifffile.imwrite`` (its shape stored, not its axes; review 31): it
    was read as 6 time frames of a 2D network (TCYX, the one reading in our order that fits the labels) in
    silence, where ImageJ's order reads a Z-stack of 2 channels. Both readings are named, and --axes trains
    and predicts either."""
    rng = np.random.default_rng(62)
    img = rng.integers(0, 400, (6, 2, 40, 40)).astype(np.uint16)
    lab = np.zeros((6, 40, 40), np.uint8)
    lab[1:5, 8:25, 8:25] = 1
    img[:, 0][lab == 1] += 2000
    tifffile.imwrite(tmp_path / "zc.tif", img, resolution=(2.0, 2.0))
    tifffile.imwrite(tmp_path / "zc_mask.tif", lab, resolution=(2.0, 2.0))
    assert read_volume(tmp_path / "zc.tif").axes == "QQYX"
    args = ["--image", tmp_path / "zc.tif", "--labels", tmp_path / "zc_mask.tif", "--out", tmp_path / "m", *TINY]
    code, _, err = run_cli(capsys, "train", *args)
    assert code == 1 and ("(could be TCYX: 6 frames of 2 channels for a 2D network, or ZCYX: a Z-stack of 2 "
                          "channels in ImageJ's order, for a 3D network)") in err and "--axes" in err, err
    code, _, err = run_cli(capsys, "train", *args, "--axes", "ZCYX", "--spacing", "3", "0.5", "0.5")
    assert code == 0, err
    assert f"image '{tmp_path / 'zc.tif'}': 2 channels (axes CZYX, shape (2, 6, 40, 40))" in err, err
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["in_channels"] == 2 and config["spatial_dims"] == 3 and config["spacing"] == [3.0, 0.5, 0.5]
    predict = ["predict", "--model", tmp_path / "m", "--image", tmp_path / "zc.tif", "--out", tmp_path / "pred.tif",
               "--device", "cpu"]
    code, _, err = run_cli(capsys, *predict)  # the 3D model of 2 channels: only ImageJ's order fits it
    assert code == 1 and "it fits as ZCYX, a Z-stack of 2 channels in ImageJ's order" in err, err
    code, _, err = run_cli(capsys, *predict, "--axes", "ZCYX", "--spacing", "3", "0.5", "0.5")
    assert code == 0, err
    with tifffile.TiffFile(tmp_path / "pred.tif") as tif:
        assert tif.series[0].shape == (6, 40, 40)
    code, _, err = run_cli(capsys, "train", *args, "--axes", "TCYX")  # or frames of a 2D network
    assert code == 0 and "6 frames (axes TCYX) as samples of a 2D network" in err, err


def test_a_stack_of_slices_and_channels_saved_as_flat_pages_gets_a_fix_that_works(tmp_path, capsys) -> None:
    """The stack written with ``metadata=None``: 12 flat pages that no option can split (review 31). The line
    says what the pages may be and how to save them with their axes; following it trains on 2 channels."""
    rng = np.random.default_rng(9)
    img = rng.normal(100, 10, (6, 2, 40, 40))  # float64: ImageJ's format would not take it
    lab = np.zeros((6, 40, 40), np.uint8)
    lab[1:5, 8:25, 8:25] = 1
    tifffile.imwrite(tmp_path / "raw.tif", img, metadata=None)
    tifffile.imwrite(tmp_path / "raw_mask.tif", lab, metadata=None)
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "raw.tif", "--labels", tmp_path / "raw_mask.tif",
                           "--out", tmp_path / "m", *TINY)  # fmt: skip
    fix = re.search(r"tifffile\.imwrite\(path, image\.reshape\(([0-9, ]+)\), metadata=\{'axes': 'ZCYX'\}\)", err)
    assert code == 1 and "if its 12 planes are 6 slices of 2 channels saved without their axes" in err and fix, err
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "raw.tif", "--labels", tmp_path / "raw_mask.tif",
                           "--axes", "ZCYX", "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 1 and err.strip().endswith("has 3 axes but 'ZCYX' names 4; give one letter per axis of the "
                                              "stored array (3), e.g. ZYX"), err
    stored = tifffile.imread(tmp_path / "raw.tif")
    shape = tuple(int(n) for n in fix.group(1).split(","))
    tifffile.imwrite(tmp_path / "raw.tif", stored.reshape(shape), metadata={"axes": "ZCYX"})
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "raw.tif", "--labels", tmp_path / "raw_mask.tif",
                           "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0 and "2 channels (axes CZYX, shape (2, 6, 40, 40))" in err, err


def test_labels_with_trailing_length_one_axis(tmp_path, capsys) -> None:
    rng = np.random.default_rng(8)
    lab = np.zeros((32, 32, 16), np.uint8)
    lab[8:20, 8:20, 4:12] = 1
    img = rng.normal(0, 1, lab.shape).astype(np.float32)
    img[lab == 1] += 3
    aff = np.diag([0.8, 0.8, 2.5, 1.0])
    nib.save(nib.Nifti1Image(img, aff), tmp_path / "scan.nii.gz")
    nib.save(nib.Nifti1Image(lab, aff), tmp_path / "pred_seg.nii.gz")
    nib.save(nib.Nifti1Image(lab[..., None], aff), tmp_path / "scan_seg.nii.gz")
    code, out, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / "pred_seg.nii.gz", "--labels",
                             tmp_path / "scan_seg.nii.gz")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["classes"]["1"]["dice"] == 1.0
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "scan.nii.gz", "--labels",
                           tmp_path / "scan_seg.nii.gz", "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0, err


@pytest.mark.parametrize("labels_shape", [(12, 40, 40, 1), (1, 12, 40, 40)])
def test_npy_labels_with_an_extra_length_one_axis(tmp_path, capsys, labels_shape) -> None:
    """A plain array saved with one more length-1 axis than its image holds the same voxels."""
    rng = np.random.default_rng(9)
    lab = np.zeros((12, 40, 40), np.uint8)
    lab[3:9, 8:30, 8:30] = 1
    img = rng.normal(0, 1, lab.shape).astype(np.float32)
    img[lab == 1] += 3
    np.save(tmp_path / "img.npy", img)
    np.save(tmp_path / "lab.npy", lab)
    np.save(tmp_path / "lab_extra.npy", lab.reshape(labels_shape))
    code, out, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / "lab.npy", "--labels",
                             tmp_path / "lab_extra.npy")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["classes"]["1"]["dice"] == 1.0
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "img.npy", "--labels", tmp_path / "lab_extra.npy",
                           "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "m" / "config.json").read_text())["spatial_dims"] == 3


def test_npy_image_with_a_trailing_length_one_axis_is_a_2d_image(tmp_path, capsys) -> None:
    """NumPy's (Y, X, 1) is one grey channel, not a volume one voxel thick."""
    rng = np.random.default_rng(10)
    lab = np.zeros((48, 56), np.uint8)
    lab[10:30, 12:40] = 1
    img = rng.normal(0, 1, lab.shape).astype(np.float32)
    img[lab == 1] += 3
    np.save(tmp_path / "img.npy", img[..., None])
    np.save(tmp_path / "lab.npy", lab[..., None])
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "img.npy", "--labels", tmp_path / "lab.npy",
                           "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0, err
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["spatial_dims"] == 2 and len(config["patch_size"]) == 2


def test_rgb_stacks_and_rgb_npy_train_and_predict_with_their_colour_as_channels(tmp_path, capsys) -> None:
    """A stack of RGB tiles (N, Y, X, 3) in a TIFF and an RGB .npy (Y, X, 3): the colour is the
    channels (napari shows them so), the tiles are samples of a 2D network. Both were refused,
    and the first with fixes that could not work (--axes ZYX or CYX for a 4-axis file)."""
    rng = np.random.default_rng(32)
    lab = np.zeros((4, 48, 48), np.uint8)
    lab[:, 10:30, 12:40] = 1
    rgb = rng.integers(0, 80, (4, 48, 48, 3)).astype(np.uint8)
    rgb[lab == 1] += np.array([120, 60, 0], np.uint8)
    tifffile.imwrite(tmp_path / "tiles.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "tiles_seg.tif", lab)
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "tiles.tif", "--labels", tmp_path / "tiles_seg.tif",
                           "--spatial-dims", "2", "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0, err
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["spatial_dims"] == 2 and config["in_channels"] == 3
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "m", "--image", tmp_path / "tiles.tif",
                           "--out", tmp_path / "pred.tif")  # fmt: skip
    assert code == 0, err
    assert tifffile.imread(tmp_path / "pred.tif").shape == (4, 48, 48)
    np.save(tmp_path / "photo.npy", rgb[0])
    np.save(tmp_path / "photo_seg.npy", lab[0])
    photo = read_volume(tmp_path / "photo.npy")
    assert photo.axes == "YXC" and photo.meta.get("rgb")
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "photo.npy", "--labels", tmp_path / "photo_seg.npy",
                           "--out", tmp_path / "m2", *TINY)  # fmt: skip
    assert code == 0, err
    assert "3 channels (axes YXC" in err
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "m2", "--image", tmp_path / "photo.npy",
                           "--out", tmp_path / "photo_pred.npy")  # fmt: skip
    assert code == 0, err
    assert np.load(tmp_path / "photo_pred.npy").shape == (48, 48)
    # a volume of 3 slices last is not colour when its other sides are small (napari's rule)
    np.save(tmp_path / "thin.npy", np.zeros((20, 24, 3), np.float32))
    assert read_volume(tmp_path / "thin.npy").axes == "QYX"
    # and labels are never colour: a labels file of 3 slices last stays a labels volume
    np.save(tmp_path / "cells_seg.npy", np.zeros((40, 40, 3), np.uint8))
    cells = read_volume(tmp_path / "cells_seg.npy")
    assert cells.is_labels and cells.axes == "QYX" and not cells.meta.get("rgb")


@pytest.mark.parametrize("suffix", [".npy", ".tif"])
def test_boolean_labels_are_class_one(tmp_path, capsys, suffix) -> None:
    rng = np.random.default_rng(11)
    lab = np.zeros((48, 56), bool)
    lab[10:30, 12:40] = True
    img = rng.normal(0, 1, lab.shape).astype(np.float32)
    img[lab] += 3
    np.save(tmp_path / "img.npy", img)
    if suffix == ".npy":
        np.save(tmp_path / "lab.npy", lab)
    else:
        tifffile.imwrite(tmp_path / "lab.tif", lab)
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "img.npy", "--labels", tmp_path / f"lab{suffix}",
                           "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "m" / "config.json").read_text())["class_ids"] == [0, 1]


def test_a_fold_without_foreground_names_a_fix_that_works(tmp_path, capsys) -> None:
    """With --folds, the validation fraction does not apply: the line says so."""
    rng = np.random.default_rng(12)
    img = rng.normal(0, 1, (12, 40, 56)).astype(np.float32)
    lab = np.zeros(img.shape, np.uint8)
    lab[3:9, 10:30, 48:55] = 1  # only in the last block along the longest axis
    img[lab == 1] += 3
    np.save(tmp_path / "img.npy", img)
    np.save(tmp_path / "lab.npy", lab)
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "img.npy", "--labels", tmp_path / "lab.npy",
                           "--out", tmp_path / "m", "--folds", "2", *TINY)  # fmt: skip
    assert code != 0 and "train one model (--folds 1)" in err and "--val-fraction" not in err
    assert "epoch " not in err, err  # refused before any fold trains, not after the others took their time
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "img.npy", "--labels", tmp_path / "lab.npy",
                           "--out", tmp_path / "m", "--folds", "1", *TINY)  # fmt: skip
    assert code == 0, err


def test_predict_names_the_channels_and_the_axes_option_before_any_work(model_2d, tmp_path, capsys) -> None:
    rng = np.random.default_rng(13)
    two = rng.integers(0, 1000, (2, 48, 48)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "two.tif", two, imagej=True, metadata={"axes": "CYX"})
    code, _, err = run_cli(capsys, "predict", "--model", model_2d, "--image", tmp_path / "two.tif",
                           "--out", tmp_path / "two_pred.tif", "--device", "cpu")  # fmt: skip
    assert code != 0
    assert ("the model was trained on 1 channel(s) but image" in err and "has 2 (axes CYX" in err
            and "--axes" in err and "channel_axis" not in err), err
    assert "predicted one by one" not in err and not (tmp_path / "two_pred.tif").exists()


def test_an_imagej_stack_without_axes_is_fixed_with_the_axes_option(tmp_path, capsys) -> None:
    """Written without axes, a CZYX stack reads as ZCYX: the line names --axes, which fixes it
    and keeps the file's Z step (the labels are on the 1.5 um grid)."""
    rng = np.random.default_rng(14)
    lab = np.zeros((8, 40, 40), np.uint8)
    lab[2:6, 10:30, 10:30] = 1
    img = rng.integers(0, 100, (3, 8, 40, 40)).astype(np.uint16)
    img[:, lab == 1] += 300
    tifffile.imwrite(tmp_path / "img.tif", img, imagej=True, resolution=(5.0, 5.0), metadata={"spacing": 1.5})
    tifffile.imwrite(tmp_path / "mask.tif", lab, imagej=True, resolution=(5.0, 5.0),
                     metadata={"axes": "ZYX", "spacing": 1.5})
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "img.tif", "--labels", tmp_path / "mask.tif",
                           "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code != 0 and "--axes" in err and "CZYX" in err, err
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "img.tif", "--labels", tmp_path / "mask.tif",
                           "--axes", "CZYX", "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0, err
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["in_channels"] == 3 and config["spatial_dims"] == 3


def test_one_sagittal_nifti_slice_is_never_cut_into_strips(tmp_path, capsys) -> None:
    """A NIfTI holding one slice along X (1 x Y x Z on disk): a 2D network would see 1-voxel
    strips, so --spatial-dims 2 is refused with a fix; the default 3D network trains and
    predicts it with the input's shape."""
    rng = np.random.default_rng(15)
    lab = np.zeros((1, 48, 56), np.uint8)
    lab[0, 10:30, 12:40] = 1
    img = rng.normal(0, 1, lab.shape).astype(np.float32)
    img[lab == 1] += 3
    aff = np.diag([1.0, 0.8, 0.8, 1.0])
    nib.save(nib.Nifti1Image(img, aff), tmp_path / "sag.nii.gz")
    nib.save(nib.Nifti1Image(lab, aff), tmp_path / "sag_seg.nii.gz")
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "sag.nii.gz", "--labels", tmp_path / "sag_seg.nii.gz",
                           "--spatial-dims", "2", "--out", tmp_path / "m2", *TINY)  # fmt: skip
    assert code != 0 and "is one slice along X" in err and "1-voxel-wide strips" in err and "3D network" in err, err
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "sag.nii.gz", "--labels", tmp_path / "sag_seg.nii.gz",
                           "--out", tmp_path / "m3", *TINY)  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "m3", "--image", tmp_path / "sag.nii.gz",
                           "--out", tmp_path / "pred.nii.gz", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    pred = nib.load(tmp_path / "pred.nii.gz")
    assert pred.shape == (1, 48, 56) and np.allclose(pred.affine, aff)


def test_image_level_classification_reads_the_axes_option(tmp_path, capsys) -> None:
    """A plain TIFF stack of 6 two-channel samples says nothing of its axes: --axes TCYX makes
    it so in train and predict, and the labels come back one filled frame per sample."""
    rng = np.random.default_rng(17)
    classes = np.array([1, 2] * 3)
    stack = rng.normal(0, 1, (6, 2, 24, 32)).astype(np.float32)
    stack[classes == 2] += 2
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    (tmp_path / "classes.csv").write_text("sample,class\n" + "".join(f"{i},{c}\n" for i, c in enumerate(classes)))
    code, _, err = run_cli(capsys, "train", "--task", "classification", "--level", "image", "--image",
                           tmp_path / "stack.tif", "--classes", tmp_path / "classes.csv", "--axes", "TCYX",
                           "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "m" / "config.json").read_text())["in_channels"] == 2
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "m", "--image", tmp_path / "stack.tif",
                           "--axes", "TCYX", "--out", tmp_path / "pred.tif", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    labels = tifffile.imread(tmp_path / "pred.tif")
    assert labels.shape == (6, 24, 32)
    assert all(len(np.unique(frame)) == 1 for frame in labels)  # each sample filled with its class


def test_block_wise_zarr_output_refuses_another_orientation_than_the_model(tmp_path, capsys) -> None:
    rng = np.random.default_rng(18)
    lab = np.zeros((40, 32, 12), np.uint8)
    lab[10:30, 8:20, 3:9] = 1
    img = rng.normal(0, 1, lab.shape).astype(np.float32)
    img[lab == 1] += 3
    ras = np.diag([1.0, 1.0, 2.0, 1.0])
    lps = np.diag([-1.0, -1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(img, ras), tmp_path / "ras.nii.gz")
    nib.save(nib.Nifti1Image(lab, ras), tmp_path / "ras_seg.nii.gz")
    nib.save(nib.Nifti1Image(img, lps), tmp_path / "lps.nii.gz")
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "ras.nii.gz", "--labels", tmp_path / "ras_seg.nii.gz",
                           "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "m", "--image", tmp_path / "lps.nii.gz",
                           "--out", tmp_path / "p.zarr", "--device", "cpu")  # fmt: skip
    assert code != 0 and "stored in orientation LPS but the model was trained in RAS" in err, err
    assert "--out pred.nii.gz" in err and not (tmp_path / "p.zarr").exists()
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "m", "--image", tmp_path / "lps.nii.gz",
                           "--out", tmp_path / "p.nii.gz", "--device", "cpu")  # fmt: skip
    assert code == 0 and "reoriented for the network" in err, err


def test_a_3d_imagej_stack_read_as_channels_gets_a_fix_that_works(tmp_path, capsys) -> None:
    """tifffile writes a ZYX stack given no axes as channels (CYX); the line suggests --axes ZYX,
    and with it the file's Z step (2.0, ImageJ's 'spacing') goes to Z."""
    rng = np.random.default_rng(19)
    lab = np.zeros((6, 32, 40), np.uint8)
    lab[1:5, 8:24, 10:30] = 1
    img = rng.integers(0, 100, lab.shape).astype(np.uint16)
    img[lab == 1] += 300
    tifffile.imwrite(tmp_path / "stack.tif", img, imagej=True, resolution=(2.0, 2.0), metadata={"spacing": 2.0})
    tifffile.imwrite(tmp_path / "mask.tif", lab, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZYX", "spacing": 2.0})
    if read_volume(tmp_path / "stack.tif").axes != "CYX":
        pytest.skip("this tifffile writes the stack with its axes")
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "stack.tif", "--labels", tmp_path / "mask.tif",
                           "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code != 0 and "e.g. --axes ZYX" in err and "save the painted channel's labels only" in err, err
    assert read_volume(tmp_path / "stack.tif", "ZYX").spacing == pytest.approx((2.0, 0.5, 0.5))
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "stack.tif", "--labels", tmp_path / "mask.tif",
                           "--axes", "ZYX", "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0, err


def _box_volume(shape: tuple, box: tuple, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy float32 volume with a bright box and the box's labels (class 1)."""
    lab = np.zeros(shape, np.uint8)
    lab[box] = 1
    return (np.random.default_rng(seed).random(shape) + 2.0 * lab).astype(np.float32), lab


def _train_and_predict(capsys, tmp_path: Path, image: str, labels: str, axes: str, out: str, *more) -> None:
    """Train a tiny model on files in ``tmp_path`` read with ``--axes``, then predict the image into ``out``."""
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / image, "--labels", tmp_path / labels,
                           "--axes", axes, "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "m", "--image", tmp_path / image, "--axes", axes,
                           "--out", tmp_path / out, *more, "--device", "cpu")  # fmt: skip
    assert code == 0, err


def test_a_thin_volume_read_as_rgba_gets_a_fix_that_works(tmp_path, capsys) -> None:
    """Cases 32: tifffile stores a (96, 4, 4) ZYX stack given no axes as RGBA (YXS); the line
    suggested --axes YXZ (the colour read as Z), which trains on a transposed volume; it now
    suggests ZYX, and the prediction has the stored shape."""
    img, lab = _box_volume((96, 4, 4), (slice(20, 70), slice(1, 3), slice(1, 3)), seed=3)
    tifffile.imwrite(tmp_path / "v.tif", img)
    tifffile.imwrite(tmp_path / "v_mask.tif", lab)
    if not read_volume(tmp_path / "v.tif").meta.get("rgb"):
        pytest.skip("this tifffile writes the stack with its axes")
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "v.tif", "--labels", tmp_path / "v_mask.tif",
                           "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code != 0 and "(it reads as YXC, shape (96, 4, 4))" in err and "e.g. --axes ZYX" in err, err
    _train_and_predict(capsys, tmp_path, "v.tif", "v_mask.tif", "ZYX", "p.tif")
    assert tifffile.imread(tmp_path / "p.tif").shape == (96, 4, 4)


def test_a_npy_stored_in_another_order_is_predicted_in_that_order(tmp_path, capsys) -> None:
    """Cases 32: a .npy stored Y, X, Z (as MATLAB users save it) trained and predicted with
    --axes YXZ gave its prediction in Z, Y, X order, against predict's promise to keep the
    input's voxel order: it now comes back in the order --axes named, as do the probabilities."""
    img, lab = _box_volume((40, 36, 6), (slice(10, 30), slice(8, 20), slice(1, 5)), seed=4)
    np.save(tmp_path / "v.npy", img)
    np.save(tmp_path / "v_seg.npy", lab)
    _train_and_predict(capsys, tmp_path, "v.npy", "v_seg.npy", "YXZ", "p.npy", "--probabilities",
                       tmp_path / "probs.npy")  # fmt: skip
    pred, probs = np.load(tmp_path / "p.npy"), np.load(tmp_path / "probs.npy")
    assert pred.shape == (40, 36, 6) and probs.shape == (2, 40, 36, 6)
    assert np.mean(pred == np.argmax(probs, axis=0)) > 0.99  # the same order (a stored tie may go either way)
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "m", "--image", tmp_path / "v.npy", "--axes",
                           "YXZ", "--out", tmp_path / "p.tif", "--probabilities", tmp_path / "probs.tif",
                           "--device", "cpu")  # fmt: skip
    assert code == 0, err
    tif = read_volume(tmp_path / "p.tif")  # a TIFF names its axes: stored Z, Y, X, and read so
    assert tif.axes == "ZYX" and tif.data.shape == (6, 40, 36)
    np.testing.assert_array_equal(pred, np.moveaxis(tif.data, 0, 2))


def test_lzw_compressed_tiff_is_read(tmp_path, capsys) -> None:
    mask = np.zeros((40, 56), np.uint8)
    mask[5:25, 10:40] = 1
    mask[28:36, 4:20] = 2
    _lzw_tiff(tmp_path / "mask_lzw.tif", mask)
    tifffile.imwrite(tmp_path / "mask_plain.tif", mask)
    code, out, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / "mask_lzw.tif", "--labels",
                             tmp_path / "mask_plain.tif")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["mean_dice"] == 1.0


def test_2d_model_predicts_a_stack_slice_by_slice(model_2d, tmp_path, capsys) -> None:
    rng = np.random.default_rng(16)
    img = rng.integers(0, 1000, (48, 48)).astype(np.uint16)
    img[10:30, 10:30] += 2000
    stack = np.stack([img] * 8)
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, resolution=(1 / 0.3, 1 / 0.3),
                     metadata={"axes": "ZYX", "spacing": 2.0, "unit": "um"})  # fmt: skip
    code, _, err = run_cli(capsys, "predict", "--model", model_2d, "--image", tmp_path / "stack.tif",
                           "--out", tmp_path / "stack_pred.tif", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    assert "8 slices" in err
    pred = tifffile.imread(tmp_path / "stack_pred.tif")
    assert pred.shape == stack.shape
    assert all((pred[k] == pred[0]).all() for k in range(8))  # the same slice gives the same answer


def test_time_lapse_is_predicted_frame_by_frame_and_stays_a_time_lapse(model_2d, tmp_path, capsys) -> None:
    frames = np.random.default_rng(3).integers(0, 1000, (5, 48, 48)).astype(np.uint16)
    frames[:, 10:30, 10:30] += 2000
    tifffile.imwrite(tmp_path / "lapse.tif", frames, imagej=True, metadata={"axes": "TYX", "finterval": 3.0})
    code, _, err = run_cli(capsys, "predict", "--model", model_2d, "--image", tmp_path / "lapse.tif",
                           "--out", tmp_path / "lapse_pred.tif", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    assert "5 frames" in err
    with tifffile.TiffFile(tmp_path / "lapse_pred.tif") as tif:
        assert tif.series[0].axes == "TYX" and tif.series[0].shape == (5, 48, 48)
        assert tif.imagej_metadata["finterval"] == 3.0


def test_time_series_trains_on_frames(tmp_path, capsys) -> None:
    rng = np.random.default_rng(4)
    frames = rng.normal(0, 1, (4, 40, 40)).astype(np.float32)
    labels = np.zeros((4, 40, 40), np.uint8)
    for t in range(4):
        labels[t, 5 + 3 * t:20 + 3 * t, 8:24] = 1
    frames[labels == 1] += 3
    tifffile.imwrite(tmp_path / "movie.tif", frames, imagej=True, metadata={"axes": "TYX"})
    tifffile.imwrite(tmp_path / "movie_mask.tif", labels, imagej=True, metadata={"axes": "TYX"})
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "movie.tif", "--labels",
                           tmp_path / "movie_mask.tif", "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0, err
    assert "4 frames" in err
    assert json.loads((tmp_path / "m" / "config.json").read_text())["spatial_dims"] == 2


def test_axes_option_tells_apart_what_the_file_does_not_say(model_2d, tmp_path, capsys) -> None:
    two = np.random.default_rng(5).normal(size=(2, 2, 32, 32)).astype(np.float32)
    labels = np.zeros((2, 32, 32), np.uint8)
    labels[:, 8:20, 8:20] = 1
    two[:, 0][labels == 1] += 3
    np.save(tmp_path / "img.npy", two)
    np.save(tmp_path / "img_seg.npy", labels)
    base = ["train", "--image", tmp_path / "img.npy", "--labels", tmp_path / "img_seg.npy", "--spatial-dims", "2",
            "--out", tmp_path / "m", *TINY]  # fmt: skip
    code, _, err = run_cli(capsys, *base)
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--axes" in lines[0] and "img.npy" in lines[0]
    # the fix the message names works: slices first, then channels, as stored
    code, _, err = run_cli(capsys, *base, "--axes", "ZCYX")
    assert code == 0, err
    assert "2 channels" in err and "2 slices" in err
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "m", "--image", tmp_path / "img.npy",
                           "--out", tmp_path / "pred.npy", "--axes", "ZCYX", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    assert np.load(tmp_path / "pred.npy").shape == (2, 32, 32)
    # a plain stack for a 1-channel 2D model needs no --axes: it can only be slices
    np.save(tmp_path / "stack.npy", np.zeros((3, 48, 48), np.float32))
    code, _, err = run_cli(capsys, "predict", "--model", model_2d, "--image", tmp_path / "stack.npy",
                           "--out", tmp_path / "stack_pred.npy", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    assert np.load(tmp_path / "stack_pred.npy").shape == (3, 48, 48)


@pytest.mark.parametrize(("shape", "axes", "fix"), [
    ((48, 48), "YX", None),  # no axis holds 3 channels: no --axes to suggest
    ((3, 48, 48), "ZYX", "--axes CYX"),  # three slices that are the channels
    ((4, 3, 48, 48), "TZYX", "--axes TCYX"),
])
def test_a_channel_mismatch_suggests_only_axes_that_fit_the_file(tmp_path, capsys, shape, axes, fix) -> None:
    """A 3-channel model: the --axes example names an axis of length 3 as C and has one letter
    per axis of the file; following it predicts."""
    rng = np.random.default_rng(21)
    rgb = rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)
    lab = np.zeros((32, 32), np.uint8)
    lab[8:20, 8:20] = 1
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "lab.tif", lab)
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "rgb.tif", "--labels", tmp_path / "lab.tif",
                           "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0, err
    tifffile.imwrite(tmp_path / "x.tif", rng.integers(0, 255, shape).astype(np.uint8), imagej=True,
                     metadata={"axes": axes})
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "m", "--image", tmp_path / "x.tif",
                           "--out", tmp_path / "p.tif", "--device", "cpu")  # fmt: skip
    assert code != 0 and "trained on 3 channel(s)" in err and f"(axes {axes}," in err, err
    if fix is None:
        assert "--axes" not in err
        return
    assert fix in err, err
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "m", "--image", tmp_path / "x.tif",
                           "--out", tmp_path / "p.tif", "--device", "cpu", *fix.split())  # fmt: skip
    assert code == 0, err


def test_evaluate_a_time_series_measures_hd95_within_each_frame(capsys, tmp_path):
    # was: one TYX volume, so frame 1's missing columns were 1 frame away from frame 0's (HD95 1.0)
    truth = np.zeros((3, 20, 20), np.uint8)
    truth[:, 5:10, 5:10] = 1
    pred = truth.copy()
    pred[1, 5:10, 5:8] = 0
    tifffile.imwrite(tmp_path / "pred.tif", pred)
    tifffile.imwrite(tmp_path / "truth.tif", truth)
    code, out, _ = run_cli(capsys, "evaluate", "--prediction", tmp_path / "pred.tif", "--labels",
                           tmp_path / "truth.tif", "--axes", "TYX")
    from napari_medml.segmentation.metrics import hausdorff95

    assert code == 0
    assert json.loads(out)["classes"]["1"]["hd95"] == hausdorff95(pred[1], truth[1])[1] == 3.0


def test_the_spacing_option_gives_files_that_store_none_their_voxel_size(model_2d, tmp_path, capsys) -> None:
    """Trial 19: a voxel size could be given to files that store none from Python only. --spacing
    gives it to predict, evaluate and train; a file that stores one keeps its own."""
    from napari_medml import io

    rng = np.random.default_rng(6)
    img = rng.integers(0, 1000, (48, 48)).astype(np.uint16)
    lab = np.zeros((48, 48), np.uint8)
    lab[10:30, 10:30] = 1
    img[lab == 1] += 2000
    np.save(tmp_path / "crop.npy", img)
    # predict: a bare array is 1x1 to the 0.3 um model, and so said; given its 0.3 it is not
    code, _, err = run_cli(capsys, "predict", "--model", model_2d, "--image", tmp_path / "crop.npy", "--out",
                           tmp_path / "a.tif", "--device", "cpu")  # fmt: skip
    assert code == 0 and "has voxel size 1 x 1 but the model was trained at 0.3 x 0.3" in err, err
    code, _, err = run_cli(capsys, "predict", "--model", model_2d, "--image", tmp_path / "crop.npy", "--out",
                           tmp_path / "b.tif", "--device", "cpu", "--spacing", "0.3", "0.3")  # fmt: skip
    assert code == 0 and "voxel size" not in err, err
    assert io.read_volume(tmp_path / "b.tif").spacing == pytest.approx((0.3, 0.3))  # written with it
    # evaluate: Hausdorff distances in the given units
    pred = np.zeros_like(lab)
    pred[10:30, 10:34] = 1  # 4 columns too wide
    np.save(tmp_path / "pred.npy", pred)
    np.save(tmp_path / "lab.npy", lab)
    scores = []
    for extra in ([], ["--spacing", "0.5", "0.5"]):
        code, out, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / "pred.npy", "--labels",
                                 tmp_path / "lab.npy", *extra)  # fmt: skip
        assert code == 0, err
        scores.append(json.loads(out)["classes"]["1"]["hd95"])
    assert scores[0] == pytest.approx(4.0) and scores[1] == pytest.approx(2.0)
    # a file that stores its voxel size keeps it; too few numbers for a file's axes are refused
    code, _, err = run_cli(capsys, "predict", "--model", model_2d, "--image", model_2d.parent / "slice.tif", "--out",
                           tmp_path / "c.tif", "--device", "cpu", "--spacing", "5", "5")  # fmt: skip
    assert code == 0 and io.read_volume(tmp_path / "c.tif").spacing == pytest.approx((0.3, 0.3)), err
    # trial 44: and says so (the option was ignored without a word)
    assert f"--spacing: '{model_2d.parent / 'slice.tif'}' stores its own voxel size (0.3x0.3" in err, err
    np.save(tmp_path / "vol.npy", np.zeros((4, 48, 48), np.float32))
    code, _, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / "vol.npy", "--labels", tmp_path / "vol.npy",
                           "--axes", "ZYX", "--spacing", "0.5", "0.5")  # fmt: skip
    assert code != 0 and err.strip().splitlines() == [
        f"napari-medml: error: --spacing 0.5 0.5 gives 2 voxel size(s) but '{tmp_path / 'vol.npy'}' has 3 spatial "
        "axes (ZYX): give one per axis, e.g. --spacing 1 0.5 0.5"], err
    # trial 43: without --axes the unnamed first axis took 1 while HD95 was measured across it, in 3D
    code, _, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / "vol.npy", "--labels", tmp_path / "vol.npy",
                           "--spacing", "0.5", "0.5")  # fmt: skip
    assert code != 0 and err.strip().splitlines() == [
        f"napari-medml: error: --spacing 0.5 0.5 gives 2 voxel size(s) but '{tmp_path / 'vol.npy'}' has 3 spatial "
        "axes (QYX; Q is an axis the file does not name, measured as one): give one per axis, e.g. --spacing 1 0.5 "
        "0.5"], err
    from napari_medml.api import evaluate

    vol_lab = np.zeros((6, 48, 48), np.uint8)
    vol_lab[1:4, 8:40, 8:40] = 1
    vol_pred = vol_lab.copy()
    vol_pred[3] = 0  # a slice short: distances along the unnamed axis
    np.save(tmp_path / "vol_pred.npy", vol_pred)
    np.save(tmp_path / "vol_lab.npy", vol_lab)
    code, out, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / "vol_pred.npy", "--labels",
                             tmp_path / "vol_lab.npy", "--spacing", "3", "0.5", "0.5")  # fmt: skip
    assert code == 0 and json.loads(out)["spacing"] == [3.0, 0.5, 0.5], err
    want = evaluate(vol_pred, vol_lab, spacing=(3.0, 0.5, 0.5))["classes"]["1"]["hd95"]
    assert json.loads(out)["classes"]["1"]["hd95"] == want != evaluate(vol_pred, vol_lab, spacing=(1.0, 0.5, 0.5))[
        "classes"]["1"]["hd95"]


def test_too_few_voxel_sizes_for_a_npy_volume_trained_in_3d_are_refused_with_the_full_fix(tmp_path, capsys) -> None:
    """Trial 44: `--spacing 0.5 0.5` on a 6x40x40 .npy volume planned a 1 x 0.5 x 0.5 grid (its unnamed
    first axis, the slices, took 1 without a word), and `--spacing 0.5` suggested those two numbers."""
    rng = np.random.default_rng(3)
    lab = np.zeros((6, 40, 40), np.uint8)
    lab[:, 10:30, 8:32] = 1
    img = (rng.normal(0, 1, lab.shape) + 3 * lab).astype(np.float32)
    np.save(tmp_path / "vol.npy", img)
    np.save(tmp_path / "vol_lab.npy", lab)
    args = ["train", "--image", tmp_path / "vol.npy", "--labels", tmp_path / "vol_lab.npy", "--device", "cpu",
            "--plan-only"]
    code, _, err = run_cli(capsys, *args, "--spacing", "0.5", "0.5")
    assert code == 2 and err.strip().splitlines() == [
        f"napari-medml: error: --spacing 0.5 0.5 gives 2 voxel size(s) but '{tmp_path / 'vol.npy'}' is read as 3 "
        "spatial axes (ZYX; the file does not name its first, taken as Z): give one per axis, e.g. --spacing 1 0.5 "
        "0.5"], err
    code, _, err = run_cli(capsys, *args, "--spacing", "0.5")
    assert code == 2 and err.strip().endswith("e.g. --spacing 1 0.5 (a 2D network); if its first axis, which the "
                                              "file does not name, holds the slices of a volume (a 3D network), one "
                                              "for it too: --spacing 1 1 0.5"), err
    # review 44: a 2D network on the same stack needs no size for its slices
    code, out, err = run_cli(capsys, *args, "--spacing", "0.5", "0.5", "--spatial-dims", "2")
    assert code == 0 and "spacing 0.5x0.5" in out, err
    code, out, err = run_cli(capsys, *args, "--spacing", "5", "0.5", "0.5")
    assert code == 0 and "spacing 5x0.5x0.5 (anisotropy 10.0)" in out and "network: dynunet" in out, err


def test_a_stack_whose_first_axis_is_unnamed_takes_a_voxel_size_for_it(tmp_path) -> None:
    from napari_medml import io
    from napari_medml.cli.spacing_option import with_spacing

    np.save(tmp_path / "stack.npy", np.zeros((4, 8, 8), np.float32))
    vol = io.read_volume(tmp_path / "stack.npy")
    assert vol.axes == "QYX"  # slices, frames or channels: the model or --axes tells later
    assert with_spacing(vol, (2.0, 0.5, 0.5), "stack.npy")[0].spacing == (2.0, 0.5, 0.5)
    assert with_spacing(vol, (0.5, 0.5), "stack.npy")[0].spacing == (1.0, 0.5, 0.5)
    assert with_spacing(vol, None, "stack.npy") == (vol, False)


def test_spacing_is_for_labels_only_when_their_image_stores_none(tmp_path, capsys) -> None:
    """Review 21: --spacing went to a bare labels file whose TIFF image stores 0.5 um, so the
    README's 'TIFF and .npy crops in one command' was refused ('not on the voxel grid')."""
    rng = np.random.default_rng(3)
    image = rng.normal(size=(64, 64)).astype(np.float32)
    labels = np.zeros((64, 64), np.uint8)
    labels[16:40, 20:44] = 1
    image[labels == 1] += 3
    tifffile.imwrite(tmp_path / "scope.tif", image, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "um"})
    np.save(tmp_path / "scope_labels.npy", labels)
    np.save(tmp_path / "crop.npy", image[:48, :48])
    np.save(tmp_path / "crop_labels.npy", labels[:48, :48])
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "scope.tif", "--image", tmp_path / "crop.npy",
                           "--labels", tmp_path / "scope_labels.npy", "--labels", tmp_path / "crop_labels.npy",
                           "--spacing", "0.65", "0.65", "--no-plan", "--patch-size", "32", "32", *TINY,
                           "--out", tmp_path / "m")
    assert code == 0, err
    # evaluate: a bare prediction beside labels that store 0.5 um lies on their grid, in their units
    pred = labels.copy()
    pred[16:40, 20:48] = 1  # 4 columns too wide: 2 um
    np.save(tmp_path / "pred.npy", pred)
    tifffile.imwrite(tmp_path / "truth.tif", labels, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "um"})
    code, out, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / "pred.npy", "--labels",
                             tmp_path / "truth.tif", "--spacing", "3", "3")
    assert code == 0, err
    assert json.loads(out)["classes"]["1"]["hd95"] == pytest.approx(2.0)


def test_an_ensemble_fold_without_foreground_held_out_shows_no_dice_for_it(tmp_path, capsys) -> None:
    """Review 24: the fold that validates on the image without foreground printed Dice 0.000
    on the last line, which reads as a failed member."""
    rng = np.random.default_rng(24)
    args = []
    for k in range(3):
        lab = np.zeros((48, 48), np.uint8)
        if k < 2:
            lab[10:30, 12:36] = 1
        np.save(tmp_path / f"img{k}.npy", (rng.normal(0, 1, lab.shape) + 3 * lab).astype(np.float32))
        np.save(tmp_path / f"lab{k}.npy", lab)
        args += ["--image", tmp_path / f"img{k}.npy", "--labels", tmp_path / f"lab{k}.npy"]
    code, _, err = run_cli(capsys, "train", *args, "--folds", "3", "--out", tmp_path / "m", *TINY)
    assert code == 0, err
    assert "fold 3 of 3: validation on image 3 of 3; it holds no foreground, so its Dice says nothing" in err
    last = err.strip().splitlines()[-1]
    shown = r"validation mean Dice per fold: \d\.\d{3}, \d\.\d{3}, - \('-': no foreground held out"
    assert re.search(shown, last), last


def test_an_image_stored_as_lines_of_an_anisotropic_volume_trains_and_says_so(tmp_path, capsys) -> None:
    """Trial 49: a 64x64 image saved as a NIfTI of x=1, y=1, z=64, t=64 at 0.5 x 0.5 x 2 mm: the plan
    cut the two 1-voxel axes to a 62x1x1 patch for a 2-level U-Net, and training ended in MONAI's
    AssertionError. It trains now, its plan says the images are lines, and --axes makes them an image."""
    rng = np.random.default_rng(3)
    lab = np.zeros((1, 1, 64, 64), np.uint8)
    lab[..., 10:30, 12:40] = 1
    img = (lab + rng.normal(0, 0.2, lab.shape)).astype(np.float32)
    aff = np.diag([0.5, 0.5, 2.0, 1.0])
    nib.save(nib.Nifti1Image(img, aff), tmp_path / "ll.nii.gz")
    nib.save(nib.Nifti1Image(lab, aff), tmp_path / "ll_seg.nii.gz")
    files = ("--image", tmp_path / "ll.nii.gz", "--labels", tmp_path / "ll_seg.nii.gz", "--device", "cpu")
    code, _, err = run_cli(capsys, "train", *files, "--max-minutes", "0.05", "--out", tmp_path / "lines")
    assert code == 0, err
    assert "each image is a line of 64 voxels: if it is an image stored along other axes, say which axis" in err, err
    code, _, err = run_cli(capsys, "train", *files, "--axes", "YXZT", "--max-minutes", "0.05", "--out", tmp_path / "im")
    assert code == 0 and "plan: 1 image(s) of 64x64 voxels" in err, err


def test_a_channel_last_length1_axis_comes_back_in_the_outputs(tmp_path, capsys) -> None:
    """Trial 49: for a (Y, X, 1) .npy image and labels, predict wrote (Y, X). Outputs without a class axis
    keep the input's shape as .npy; TIFF stores Y and X last, so there the axis stays off, never in front."""
    rng = np.random.default_rng(4)
    lab = np.zeros((40, 48, 1), np.uint8)
    lab[8:30, 10:36] = 1
    np.save(tmp_path / "im.npy", (lab + 0.2 * rng.normal(size=lab.shape)).astype(np.float32))
    np.save(tmp_path / "im_seg.npy", lab)
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "im.npy", "--labels", tmp_path / "im_seg.npy",
                           "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0, err
    for suffix, shape in ((".npy", (40, 48, 1)), (".tif", (40, 48)), (".nii.gz", (40, 48))):
        outs = [tmp_path / f"{what}{suffix}" for what in ("pred", "prob", "unc")]
        code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "m", "--image", tmp_path / "im.npy",
                               "--out", outs[0], "--probabilities", outs[1], "--uncertainty", outs[2])
        assert code == 0, err  # review 49: NIfTI refused the channel-last axis (Y and X must be last)
        read = {".npy": np.load, ".tif": tifffile.imread, ".nii.gz": lambda p: read_volume(p).data}[suffix]
        assert [read(p).shape for p in outs] == [shape, (2, 40, 48), shape]
        code, out, err = run_cli(capsys, "evaluate", "--prediction", outs[0], "--labels", tmp_path / "im_seg.npy")
        assert code == 0 and json.loads(out)["classes"]["1"]["gt_voxels"] == int(lab.sum()), err
