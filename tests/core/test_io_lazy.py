"""Large TIFF and plain NIfTI files are read lazily (a dask array, one chunk per plane), so
napari opens them without reading them whole: the same values, axes, spacing, origin and
affine as reading them whole, whatever the file's layout or orientation."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_medml.io import read_volume
from napari_medml.io.memory import LAZY_ENV, MEMORY_ENV

dask = pytest.importorskip("dask.array")
pytest.importorskip("zarr")


def _imagej_hyperstack(path):
    data = np.random.default_rng(0).integers(0, 4000, (3, 5, 2, 40, 50)).astype(np.uint16)
    tifffile.imwrite(path / "hyper.tif", data, imagej=True, resolution=(2, 2),
                     metadata={"axes": "TZCYX", "spacing": 2.0, "unit": "um"})  # fmt: skip
    return path / "hyper.tif"


def _tiled_ome(path):
    data = np.random.default_rng(1).random((6, 64, 64)).astype(np.float32)
    tifffile.imwrite(path / "tiled.ome.tif", data, ome=True, tile=(32, 32), compression="zlib",
                     metadata={"axes": "ZYX", "PhysicalSizeZ": 3.0})  # fmt: skip
    return path / "tiled.ome.tif"


def _rgb_stack(path):
    data = np.random.default_rng(2).integers(0, 255, (4, 30, 40, 3)).astype(np.uint8)
    tifffile.imwrite(path / "rgb.tif", data, photometric="rgb")
    return path / "rgb.tif"


def _label_stack(path):
    data = np.random.default_rng(3).integers(0, 5, (7, 20, 20)).astype(np.uint16)
    tifffile.imwrite(path / "cells_labels.tif", data, imagej=True, metadata={"axes": "ZYX"})
    return path / "cells_labels.tif"


def _lps_nifti(path):
    data = np.random.default_rng(4).integers(-100, 1000, (30, 20, 10, 2)).astype(np.int16)
    affine = np.diag([-2.0, -1.5, 3.0, 1.0])
    affine[:3, 3] = [10, 20, 30]
    nib.save(nib.Nifti1Image(data, affine), path / "lps.nii")
    return path / "lps.nii"


def _permuted_nifti(path):
    data = np.random.default_rng(5).random((30, 20, 10)).astype(np.float32)
    affine = np.array([[0, 0, 1.2, 5], [-1.0, 0, 0, 6], [0, 2.0, 0, 7], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, affine), path / "permuted.nii")
    return path / "permuted.nii"


@pytest.mark.parametrize("make", [_imagej_hyperstack, _tiled_ome, _rgb_stack, _lps_nifti, _permuted_nifti])
def test_a_large_file_reads_lazily_as_it_reads_whole(make, tmp_path, monkeypatch):
    path = make(tmp_path)
    whole = read_volume(path)
    assert isinstance(whole.data, np.ndarray)  # small files under the default threshold: in memory
    monkeypatch.setenv(LAZY_ENV, "0.001")  # 1 KiB: every file here is "large"
    lazy = read_volume(path)
    assert isinstance(lazy.data, dask.Array)
    np.testing.assert_array_equal(lazy.data.compute(), whole.data)
    assert (lazy.axes, lazy.spacing, lazy.origin, lazy.is_labels, lazy.meta, lazy.name) == \
        (whole.axes, whole.spacing, whole.origin, whole.is_labels, whole.meta, whole.name)
    if whole.affine is None:
        assert lazy.affine is None
    else:
        np.testing.assert_allclose(lazy.affine, whole.affine)


def test_a_lazy_tiff_reads_one_plane_a_chunk(tmp_path, monkeypatch):
    monkeypatch.setenv(LAZY_ENV, "0.001")
    volume = read_volume(_imagej_hyperstack(tmp_path))
    assert volume.data.chunksize == (1, 1, 1, 40, 50)  # napari shows a plane: it reads one
    rgb = read_volume(_rgb_stack(tmp_path))
    assert rgb.data.chunksize == (1, 30, 40, 3)


def test_a_gzipped_nifti_is_read_whole(tmp_path, monkeypatch):
    # gzip has no random access: a plane would be decompressed from the file's start each time
    data = np.random.default_rng(6).random((12, 10, 8)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "ct.nii.gz")
    monkeypatch.setenv(LAZY_ENV, "0.001")
    volume = read_volume(tmp_path / "ct.nii.gz")
    assert isinstance(volume.data, np.ndarray)
    np.testing.assert_array_equal(volume.data, data.transpose(2, 1, 0))


def test_a_scaled_nifti_is_read_lazily_with_its_scaling(tmp_path, monkeypatch):
    """Trial 42: a scaled file was read whole (in float64) however large it was."""
    img = nib.Nifti1Image(np.arange(600, dtype=np.int16).reshape(10, 6, 10), np.eye(4))
    img.header.set_slope_inter(0.5, -3.0)
    nib.save(img, tmp_path / "scaled.nii")
    monkeypatch.setenv(LAZY_ENV, "0.001")
    volume = read_volume(tmp_path / "scaled.nii")
    assert not isinstance(volume.data, np.ndarray) and volume.data.dtype == np.float32
    assert float(volume.data.max()) == pytest.approx(599 * 0.5 - 3.0)


def test_a_large_labels_file_that_fits_in_memory_is_read_whole(tmp_path, monkeypatch):
    # napari paints only in-memory labels: the correction loop needs them as NumPy
    path = _label_stack(tmp_path)
    monkeypatch.setenv(LAZY_ENV, "0.001")
    volume = read_volume(path)
    assert volume.is_labels and isinstance(volume.data, np.ndarray)
    monkeypatch.setenv(MEMORY_ENV, "0.001")  # larger than memory: it stays on disk
    lazy = read_volume(path)
    assert lazy.is_labels and isinstance(lazy.data, dask.Array)
    np.testing.assert_array_equal(lazy.data.compute(), volume.data)
