"""``predict --out x.zarr`` of a time series: one line before anything runs (trial 42: it said
"3 frames predicted one by one", then refused them)."""

from __future__ import annotations

import numpy as np
import tifffile

from napari_medml.cli import main


def test_a_time_series_to_a_zarr_out_is_refused_in_one_line_with_what_works(capsys, tmp_path) -> None:
    rng = np.random.default_rng(0)
    image = rng.random((8, 24, 24)).astype(np.float32)
    np.save(tmp_path / "v.npy", image)
    np.save(tmp_path / "v_lab.npy", (image > 0.5).astype(np.uint8))
    assert main(["train", "--image", str(tmp_path / "v.npy"), "--labels", str(tmp_path / "v_lab.npy"), "--epochs",
                 "1", "--steps-per-epoch", "1", "--no-plan", "--patch-size", "8", "16", "16", "--out",
                 str(tmp_path / "m"), "--device", "cpu"]) == 0
    tifffile.imwrite(tmp_path / "movie.tif", rng.random((3, 8, 24, 24)).astype(np.float32), imagej=True,
                     metadata={"axes": "TZYX"})
    capsys.readouterr()
    code = main(["predict", "--model", str(tmp_path / "m"), "--image", str(tmp_path / "movie.tif"), "--out",
                 str(tmp_path / "p.zarr"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [
        f"napari-medml: error: image '{tmp_path / 'movie.tif'}' (axes TZYX) holds 3 frames: a .zarr --out predicts "
        "one 3D image block by block; give a NIfTI or TIFF --out to predict them one by one in memory, or save "
        "each as its own image"], err
    assert not (tmp_path / "p.zarr").exists()
    assert main(["predict", "--model", str(tmp_path / "m"), "--image", str(tmp_path / "movie.tif"), "--out",
                 str(tmp_path / "p.tif"), "--device", "cpu"]) == 0  # the fix that works
