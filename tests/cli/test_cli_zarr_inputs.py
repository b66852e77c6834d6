"""Zarr inputs as users hold them: OME-Zarr labels inside the image's store, and a small
store whose held-out validation block does not fit next to the patch."""

from __future__ import annotations

import json

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
pytest.importorskip("torch")

from napari_medml.cli import main  # noqa: E402

TINY = ["--epochs", "1", "--steps-per-epoch", "2", "--features", "8", "--depth", "3", "--device", "cpu",
        "--no-augment", "--seed", "0"]  # fmt: skip


def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def blob() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    lab = np.zeros((24, 48, 48), np.uint8)
    lab[5:15, 10:40, 10:30] = 1
    return (rng.normal(0, 1, lab.shape) + 3 * lab).astype(np.float32), lab


def test_ome_zarr_labels_inside_the_image_store_are_read(capsys, tmp_path, blob) -> None:
    """NGFF keeps labels at img.zarr/labels/<name>, a multiscale group of their own."""
    img, lab = blob
    axes = [{"name": n, "type": "space"} for n in "zyx"]
    scale = [{"type": "scale", "scale": [2.0, 0.5, 0.5]}]
    multiscales = [{"version": "0.4", "axes": axes, "datasets": [{"path": "0", "coordinateTransformations": scale}]}]
    root = zarr.open_group(tmp_path / "img.zarr", mode="w", zarr_format=2)
    root.create_array("0", data=img, chunks=(8, 16, 16))
    root.attrs["multiscales"] = multiscales
    group = root.create_group("labels")
    group.attrs["labels"] = ["seg"]
    seg = group.create_group("seg")
    seg.create_array("0", data=lab, chunks=(8, 16, 16))
    seg.attrs["multiscales"] = multiscales
    seg.attrs["image-label"] = {"version": "0.4", "source": {"image": "../../"}}
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "img.zarr", "--labels",
                           tmp_path / "img.zarr" / "labels" / "seg", "--out", tmp_path / "m", *TINY)  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "m", "--image", tmp_path / "img.zarr",
                           "--out", tmp_path / "pred.nii.gz")  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / "img.zarr" / "labels" / "seg",
                             "--labels", tmp_path / "img.zarr" / "labels" / "seg")  # fmt: skip
    assert code == 0 and json.loads(out)["mean_dice"] == 1.0, err


def test_a_store_too_small_for_a_held_out_block_says_so_and_the_fix_validates(capsys, tmp_path, blob) -> None:
    img, lab = blob
    zarr.create_array(tmp_path / "img.zarr", data=img, chunks=(8, 16, 16), zarr_format=2)
    zarr.create_array(tmp_path / "lab.zarr", data=lab, chunks=(8, 16, 16), zarr_format=2)
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "img.zarr", "--labels", tmp_path / "lab.zarr",
                           "--out", tmp_path / "m", "--val-fraction", "0.3", *TINY)  # fmt: skip
    assert code == 0, err
    assert "val_fraction 0" not in err
    assert "no validation: the image's 48 voxels along axis 1 (Y) hold no held-out block" in err, err
    assert "give a smaller patch (at most 24 along that axis)" in err
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "img.zarr", "--labels", tmp_path / "lab.zarr",
                           "--out", tmp_path / "m2", "--val-fraction", "0.3", "--patch-size", "16", "24", "24",
                           *TINY)  # fmt: skip
    assert code == 0 and "validation on a 24x24x48 block at the end of axis 1" in err, err
