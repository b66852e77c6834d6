"""Channels named by their files: a model records the training images' channel names, and an
image that stores the same stains in another order is taken in the model's order (trial 48: a
model trained on Membrane, Nuclei segmented a Nuclei, Membrane file without a word, Dice 0.18
for 0.97); names that differ are said."""

from __future__ import annotations

import json

import numpy as np
import tifffile

from napari_medml.cli import main
from napari_medml.samples import touching_objects_2d

TINY = ["--epochs", "2", "--steps-per-epoch", "8", "--features", "8", "--depth", "2", "--device", "cpu",
        "--no-augment", "--seed", "0", "--no-plan", "--patch-size", "32", "32", "--val-fraction", "0"]


def ome(path, channels, names) -> None:
    tifffile.imwrite(path, np.stack(channels).astype(np.float32), ome=True,
                     metadata={"axes": "CYX", "Channel": {"Name": list(names)}})


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_the_same_stains_in_another_order_are_taken_in_the_models(capsys, tmp_path) -> None:
    s = touching_objects_2d(0, shape=(64, 64))
    nuclei = s.image.astype(np.float32)
    membrane = np.random.default_rng(1).normal(0, 1, nuclei.shape).astype(np.float32) + 0.3 * nuclei[::-1]
    tifffile.imwrite(tmp_path / "seg.tif", (s.labels > 0).astype(np.uint8))
    ome(tmp_path / "a.ome.tif", [membrane, nuclei], ["Membrane", "Nuclei"])
    ome(tmp_path / "b.ome.tif", [nuclei, membrane], ["Nuclei", "Membrane"])  # the same stains, swapped
    ome(tmp_path / "c.ome.tif", [membrane, nuclei], ["GFP", "DAPI"])  # other names
    # a second training image stored swapped is put in the first one's order
    code, err = run_cli(capsys, "train", "--image", tmp_path / "a.ome.tif", "--image", tmp_path / "b.ome.tif",
                        "--labels", tmp_path / "seg.tif", "--labels", tmp_path / "seg.tif", "--out", tmp_path / "m",
                        *TINY)
    assert code == 0, err
    assert (f"image '{tmp_path / 'b.ome.tif'}' stores its channels as Nuclei, Membrane; the first image "
            f"'{tmp_path / 'a.ome.tif'}' has Membrane, Nuclei: taken in that order") in err
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["train_config"]["data"]["channel_names"] == ["Membrane", "Nuclei"]
    preds = {}
    for name in "abc":
        code, err = run_cli(capsys, "predict", "--model", tmp_path / "m", "--image", tmp_path / f"{name}.ome.tif",
                            "--out", tmp_path / f"p{name}.tif")
        assert code == 0, err
        preds[name] = tifffile.imread(tmp_path / f"p{name}.tif")
        if name == "b":
            assert (f"image '{tmp_path / 'b.ome.tif'}' stores its channels as Nuclei, Membrane; the model was "
                    "trained on Membrane, Nuclei: taken in that order") in err
        if name == "c":
            assert (f"warning: image '{tmp_path / 'c.ome.tif'}' names its channels GFP, DAPI, but the model was "
                    "trained on Membrane, Nuclei: check that they hold the same stains in the same order") in err
    np.testing.assert_array_equal(preds["b"], preds["a"])  # swapped back: the same segmentation
    np.testing.assert_array_equal(preds["c"], preds["a"])  # stored alike, named otherwise: as stored
    assert preds["a"].any()


def test_an_instance_model_block_by_block_takes_the_channels_in_its_order(capsys, tmp_path) -> None:
    """Review 48: an instance model writing a .zarr segmented an OME-Zarr of swapped channels as stored."""
    from napari_medml.io import Volume, write_volume

    s = touching_objects_2d(0, shape=(64, 64))
    nuclei = s.image.astype(np.float32)
    other = np.random.default_rng(1).normal(0, 1, nuclei.shape).astype(np.float32)
    ome(tmp_path / "a.ome.tif", [other, nuclei], ["GFP", "DAPI"])
    tifffile.imwrite(tmp_path / "objects.tif", s.labels.astype(np.uint16))
    code, err = run_cli(capsys, "train", "--task", "instances", "--image", tmp_path / "a.ome.tif", "--labels",
                        tmp_path / "objects.tif", "--out", tmp_path / "inst", *TINY)
    assert code == 0, err
    for name, channels, names in (("same", [other, nuclei], ["GFP", "DAPI"]),
                                  ("swapped", [nuclei, other], ["DAPI", "GFP"])):
        write_volume(tmp_path / f"{name}.ome.zarr", Volume(np.stack(channels)[:, None], (1.0,) * 4, (0.0,) * 4, None,
                                                           meta={"channel_names": names}, axes="CZYX"))
    outs = {}
    for name in ("same", "swapped"):
        code, err = run_cli(capsys, "predict", "--model", tmp_path / "inst", "--image", tmp_path / f"{name}.ome.zarr",
                            "--out", tmp_path / f"p_{name}.zarr")
        assert code == 0, err
        if name == "swapped":
            assert "stores its channels as DAPI, GFP; the model was trained on GFP, DAPI: taken in that order" in err
        from napari_medml.io import read_volume

        outs[name] = np.asarray(read_volume(tmp_path / f"p_{name}.zarr").data)
    np.testing.assert_array_equal(outs["swapped"], outs["same"])
