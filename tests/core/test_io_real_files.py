"""napari_medml.io on files as other tools write them: compression that disagrees with the
name, RGB NIfTI, complex values, truncated and multi-image TIFFs."""

from __future__ import annotations

import gzip
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_medml.errors import InputError
from napari_medml.io import read_volume, write_volume


def _zyx(seed: int = 0, shape: tuple[int, ...] = (4, 6, 5)) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# --------------------------------------------------------------- NIfTI: gzip or not by content


def test_a_nifti_without_orientation_codes_has_voxel_sizes_but_no_direction_or_position(tmp_path: Path) -> None:
    """sform and qform code 0 (Analyze conversions, nibabel.Nifti1Image(a, None)): nibabel makes up an
    affine (x flipped, origin at the centre) and a file of the same voxels in RAS lay off its grid (cases 38
    s41, s46). It reads as stored, at 0, with its voxel sizes and no affine, as a TIFF with a voxel size."""
    xyz = np.random.default_rng(0).normal(size=(6, 5, 4)).astype(np.float32)
    img = nib.Nifti1Image(xyz, None)
    img.header.set_zooms((0.5, 0.5, 2.0))
    nib.save(img, tmp_path / "bare.nii.gz")
    assert int(nib.load(tmp_path / "bare.nii.gz").header["sform_code"]) == 0  # nibabel's affine: x flipped
    volume = read_volume(tmp_path / "bare.nii.gz")
    assert volume.affine is None and volume.origin == (0.0, 0.0, 0.0)
    np.testing.assert_allclose(volume.spacing, (2.0, 0.5, 0.5))
    np.testing.assert_array_equal(volume.data, xyz.T)  # as stored, not mirrored in x

    # saved unmoved, it keeps its codes 0; moved (a layer's translate), the position is kept (review 37)
    write_volume(tmp_path / "same.nii.gz", volume)
    assert int(nib.load(tmp_path / "same.nii.gz").header["sform_code"]) == 0
    moved = replace(volume, origin=(4.0, -1.0, 0.5))
    write_volume(tmp_path / "moved.nii.gz", moved)
    back = read_volume(tmp_path / "moved.nii.gz")
    assert back.origin == (4.0, -1.0, 0.5) and back.spacing == volume.spacing
    np.testing.assert_array_equal(back.data, xyz.T)


@pytest.mark.parametrize("nifti", [nib.Nifti1Image, nib.Nifti2Image], ids=["nifti1", "nifti2"])
@pytest.mark.parametrize(("written", "named"), [("a.nii", "plain_named.nii.gz"), ("a.nii.gz", "gz_named.nii")])
def test_nifti_compression_is_read_from_content_not_name(tmp_path: Path, nifti: type, written: str, named: str) -> None:
    zyx = _zyx()
    affine = np.diag([0.5, 0.75, 2.0, 1.0])
    affine[:3, 3] = (-3.0, 4.0, 5.0)
    img = nifti(zyx.T.copy(), affine)
    img.header.set_xyzt_units(xyz="mm")
    nib.save(img, tmp_path / written)
    shutil.copy(tmp_path / written, tmp_path / named)
    assert ((tmp_path / named).read_bytes()[:2] == b"\x1f\x8b") == written.endswith(".gz")

    volume = read_volume(tmp_path / named)
    expected = read_volume(tmp_path / written)  # the same file under its right name
    np.testing.assert_array_equal(volume.data, zyx)
    assert volume.axes == expected.axes == "ZYX"
    assert volume.spacing == expected.spacing == (2.0, 0.75, 0.5)
    assert volume.origin == expected.origin == (5.0, 4.0, -3.0)
    np.testing.assert_array_equal(volume.affine, expected.affine)
    assert dict(volume.meta) == dict(expected.meta) and volume.meta["unit"] == "mm"
    assert volume.name == Path(named).name.split(".")[0]


def test_nifti_misnamed_keeps_label_intent_and_time_axis(tmp_path: Path) -> None:
    tzyx = np.arange(2 * 3 * 4 * 5, dtype=np.int16).reshape(2, 3, 4, 5)
    img = nib.Nifti1Image(tzyx.T.copy(), np.eye(4))
    img.header.set_xyzt_units(xyz="mm", t="sec")
    img.header.set_intent("label")
    (tmp_path / "seg.nii").write_bytes(gzip.compress(img.to_bytes()))  # gzipped, named .nii

    volume = read_volume(tmp_path / "seg.nii")
    np.testing.assert_array_equal(volume.data, tzyx)
    assert volume.axes == "TZYX" and volume.is_labels and volume.meta["time_unit"] == "sec"


def test_nifti_not_nifti_under_either_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"not an image at all" * 40))
    with pytest.raises(InputError, match=r"cannot read '.*junk\.nii\.gz' as NIFTI"):
        read_volume(tmp_path / "junk.nii.gz")


# ----------------------------------------------------------------------------- NIfTI: RGB


@pytest.mark.parametrize("fields", ["RGB", "RGBA"], ids=["rgb24", "rgba32"])
@pytest.mark.parametrize("shape", [(4, 6, 5), (6, 5)], ids=["3d", "2d"])
def test_nifti_rgb_reads_as_channel_axis_in_front(tmp_path: Path, fields: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    channels = rng.integers(0, 256, (len(fields), *shape), dtype=np.uint8)  # napari order (C, [Z,] Y, X)
    voxels = np.zeros(shape, dtype=[(f, "u1") for f in fields])
    for i, f in enumerate(fields):
        voxels[f] = channels[i]
    affine = np.diag([0.5, 0.75, 2.0, 1.0])
    nib.save(nib.Nifti1Image(voxels.T.copy(), affine), tmp_path / "rgb.nii.gz")
    assert int(nib.load(tmp_path / "rgb.nii.gz").header["datatype"]) == (128 if fields == "RGB" else 2304)

    volume = read_volume(tmp_path / "rgb.nii.gz")
    assert volume.axes == ("CZYX" if len(shape) == 3 else "CYX")
    assert volume.data.dtype == np.uint8 and volume.data.shape == (len(fields), *shape)
    np.testing.assert_array_equal(volume.data, channels)
    assert volume.spacing == (1.0, *(2.0, 0.75, 0.5)[-len(shape):])
    assert not volume.is_labels and not volume.meta.get("rgb")


# ------------------------------------------------------------------------- complex values


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_nifti_complex_is_refused_with_a_fix(tmp_path: Path, dtype: str) -> None:
    data = (_zyx() * np.exp(2j)).astype(dtype)
    nib.save(nib.Nifti1Image(data.T.copy(), np.eye(4)), tmp_path / "cplx.nii.gz")
    with pytest.raises(InputError, match=r"'.*cplx\.nii\.gz' holds complex values .*save its magnitude \(abs\)"):
        read_volume(tmp_path / "cplx.nii.gz")


def test_tiff_complex_is_refused_with_a_fix(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "cplx.tif", (_zyx() * 1j).astype(np.complex64))
    with pytest.raises(InputError, match=r"'.*cplx\.tif' holds complex values .*real-valued image"):
        read_volume(tmp_path / "cplx.tif")


# ------------------------------------------------------------------ TIFF: truncated files


def test_truncated_tiff_gives_one_line_and_no_tifffile_log(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    tifffile.imwrite(tmp_path / "img.tif", _zyx(shape=(8, 16, 16)), imagej=True, metadata={"axes": "ZYX"})
    whole = (tmp_path / "img.tif").read_bytes()
    (tmp_path / "trunc.tif").write_bytes(whole[: len(whole) // 2])
    level = logging.getLogger("tifffile").level
    with caplog.at_level(logging.DEBUG), pytest.raises(InputError, match=r"'.*trunc\.tif' is damaged") as info:
        read_volume(tmp_path / "trunc.tif")
    assert "\n" not in str(info.value)
    assert not [r for r in caplog.records if r.name.startswith("tifffile")], caplog.text
    out, err = capsys.readouterr()
    assert "tifffile" not in out + err and "invalid page offset" not in out + err
    assert logging.getLogger("tifffile").level == level  # restored afterwards


# -------------------------------------------------------------------- TIFF: several images


def test_tiff_with_two_images_is_refused_naming_both(tmp_path: Path) -> None:
    with tifffile.TiffWriter(tmp_path / "two.tif") as tif:
        tif.write(_zyx(shape=(16, 16)))
        tif.write(_zyx(shape=(8, 12)))
    with pytest.raises(InputError, match=r"'.*two\.tif' holds 2 images \(shapes \(16, 16\), \(8, 12\)\).*"
                                         r"save each image as its own file"):
        read_volume(tmp_path / "two.tif")


def test_tiff_appended_images_are_refused(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "app.tif", _zyx(shape=(16, 16)))
    tifffile.imwrite(tmp_path / "app.tif", _zyx(shape=(3, 16, 16)), append=True)
    with pytest.raises(InputError, match=r"holds 2 images \(shapes \(16, 16\), \(3, 16, 16\)\)"):
        read_volume(tmp_path / "app.tif")


def test_ome_tiff_with_two_images_is_refused(tmp_path: Path) -> None:
    with tifffile.TiffWriter(tmp_path / "two.ome.tif", ome=True) as tif:
        tif.write(_zyx(shape=(16, 16)))
        tif.write(_zyx(shape=(2, 16, 16)))
    with pytest.raises(InputError, match=r"'.*two\.ome\.tif' holds 2 images"):
        read_volume(tmp_path / "two.ome.tif")


@pytest.mark.parametrize("ome", [False, True], ids=["tiff", "ome"])
def test_tiff_pyramid_reads_its_full_resolution(tmp_path: Path, ome: bool) -> None:
    yx = _zyx(shape=(16, 16))
    path = tmp_path / ("pyr.ome.tif" if ome else "pyr.tif")
    with tifffile.TiffWriter(path, ome=ome) as tif:
        tif.write(yx, subifds=1)
        tif.write(yx[::2, ::2].copy(), subfiletype=1)
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.data, yx)
    assert volume.axes == "YX"


def test_whole_slide_side_images_do_not_count(tmp_path: Path) -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "slide.tif") as tif:  # Aperio SVS layout
        kw = {"photometric": "rgb", "metadata": None}
        tif.write(rgb, tile=(16, 16), description="Aperio Image Library test |AppMag = 40", **kw)
        tif.write(rgb[::4, ::4].copy(), description="Aperio Image Library thumbnail", **kw)
        tif.write(rgb[:20, :30].copy(), subfiletype=1, description="Aperio Image Library label", **kw)
        tif.write(rgb[:10, :40].copy(), subfiletype=9, description="Aperio Image Library macro", **kw)
    with tifffile.TiffFile(tmp_path / "slide.tif") as tif:
        assert [s.name for s in tif.series] == ["Baseline", "Thumbnail", "Label", "Macro"]
    volume = read_volume(tmp_path / "slide.tif")
    np.testing.assert_array_equal(volume.data, rgb)
    assert volume.axes == "YXC" and volume.meta.get("rgb")


# --------------------------------------------------------------- TIFF: units


def test_imagej_nanometres_read_as_micrometres(tmp_path: Path) -> None:
    """The same stack saved in nm and in um reads to one voxel size, so the two files train
    together and lie on one grid (probe of case 06)."""
    zyx = (np.arange(4 * 8 * 10) % 251).astype(np.uint8).reshape(4, 8, 10)
    tifffile.imwrite(tmp_path / "nm.tif", zyx, imagej=True, resolution=(1 / 250, 1 / 250),
                     metadata={"axes": "ZYX", "spacing": 1500.0, "unit": "nm"})
    tifffile.imwrite(tmp_path / "um.tif", zyx, imagej=True, resolution=(4.0, 4.0),
                     metadata={"axes": "ZYX", "spacing": 1.5, "unit": "um"})
    nm, um = read_volume(tmp_path / "nm.tif"), read_volume(tmp_path / "um.tif")
    np.testing.assert_allclose(nm.spacing, (1.5, 0.25, 0.25))
    np.testing.assert_allclose(nm.spacing, um.spacing)
    assert nm.meta["unit"] == um.meta["unit"] == "um"


@pytest.mark.parametrize(("per_cm", "spacing", "unit"), [(40.0, 0.25, "mm"), (20.0, 0.5, "mm"), (25_000.0, 0.4, "um")])
def test_a_plain_tiffs_resolution_in_centimetres_is_its_pixel_size(tmp_path: Path, per_cm: float, spacing: float,
                                                                    unit: str) -> None:
    """Scanners and PIL exports store px/cm with ResolutionUnit CENTIMETER and no other metadata
    (cases y06, y07): that is the pixel's size. Inches (the writers' 72 dpi default) are a print size."""
    yx = np.zeros((6, 8), np.uint8)
    tifffile.imwrite(tmp_path / "cm.tif", yx, resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
    tifffile.imwrite(tmp_path / "inch.tif", yx, resolution=(72.0, 72.0), resolutionunit="INCH")
    tifffile.imwrite(tmp_path / "plain.tif", yx)
    cm = read_volume(tmp_path / "cm.tif")
    np.testing.assert_allclose(cm.spacing, (spacing, spacing))
    assert cm.meta["unit"] == unit
    # review 37: a print resolution saved in cm (72 dpi), a zero numerator (it read as 10 mm pixels)
    tifffile.imwrite(tmp_path / "print.tif", yx, resolution=(72 / 2.54, 72 / 2.54), resolutionunit="CENTIMETER")
    tifffile.imwrite(tmp_path / "zero.tif", yx, resolution=((0, 1), (int(per_cm), 1)), resolutionunit="CENTIMETER")
    for name in ("inch.tif", "plain.tif", "print.tif", "zero.tif"):
        other = read_volume(tmp_path / name)
        assert other.spacing == (1.0, 1.0) and "unit" not in other.meta, name
    # a stack: its step is unknown, so the file says nothing and --spacing (with_spacing) gives the voxel size
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 6, 8), np.uint8), resolution=(per_cm, per_cm),
                     resolutionunit="CENTIMETER")
    stack = read_volume(tmp_path / "stack.tif")
    assert stack.spacing == (1.0, 1.0, 1.0) and "unit" not in stack.meta


def test_ome_units_per_axis_are_brought_to_one(tmp_path: Path) -> None:
    zyx = np.zeros((4, 8, 10), np.uint16)
    tifffile.imwrite(tmp_path / "mixed.ome.tif", zyx, ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeZ": 1500.0, "PhysicalSizeZUnit": "nm",
                               "PhysicalSizeY": 0.25, "PhysicalSizeYUnit": "µm",
                               "PhysicalSizeX": 0.25, "PhysicalSizeXUnit": "µm"})
    volume = read_volume(tmp_path / "mixed.ome.tif")
    np.testing.assert_allclose(volume.spacing, (1.5, 0.25, 0.25))
    assert volume.meta["unit"] == "um"


@pytest.mark.parametrize("shape", [(6, 8, 1), (3, 6, 8, 1)])
def test_a_tiff_of_numpys_one_channel_last_reads_as_the_npy_of_it(tmp_path: Path, shape: tuple[int, ...]) -> None:
    """tifffile.imwrite(a[..., None]) stores (Y, X, 1) and calls the last axis unnamed: it is a
    channel, as in the .npy of the same array, stored last, so a prediction is (Y, X, 1) as .npy and
    (Y, X) as TIFF (which stores Y and X last), never (1, Y, X)."""
    a = _zyx(shape=shape)
    tifffile.imwrite(tmp_path / "a.tif", a)
    np.save(tmp_path / "a.npy", a)
    tif, npy = read_volume(tmp_path / "a.tif"), read_volume(tmp_path / "a.npy")
    assert tif.data.shape == npy.data.shape == shape[:-1]
    assert tif.axes[-2:] == "YX" and tif.meta["singletons"] == npy.meta["singletons"] == [["C", 1.0, 0.0, "last"]]


def test_a_length1_axis_of_a_tiff_comes_back_in_what_is_written(tmp_path: Path) -> None:
    """A (1, Y, X) TIFF: a prediction written like it reads back (1, Y, X) with tifffile, and
    opens as labels again (ImageJ would drop the length-1 axis; probe of case 02)."""
    from dataclasses import replace

    from napari_medml.io import write_volume

    tifffile.imwrite(tmp_path / "one.tif", np.zeros((1, 16, 12), np.uint16))
    image = read_volume(tmp_path / "one.tif")
    pred = np.zeros(image.data.shape, np.uint8)
    pred[..., 4:8, 3:6] = 1
    write_volume(tmp_path / "pred.tif", replace(image, data=pred, is_labels=True))
    assert tifffile.imread(tmp_path / "pred.tif").shape == (1, 16, 12)
    again = read_volume(tmp_path / "pred.tif")
    assert again.is_labels
    np.testing.assert_array_equal(again.data, pred)


def test_ome_zarr_units_per_axis_are_brought_to_one(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    axes = [{"name": "z", "type": "space", "unit": "nanometer"},
            {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"}]
    scale = [{"type": "scale", "scale": [1500.0, 0.25, 0.25]}, {"type": "translation", "translation": [3000.0, 1.0, 2.0]}]
    root = zarr.open_group(tmp_path / "mixed.zarr", mode="w", zarr_format=2)
    root.create_array("0", data=np.zeros((4, 8, 10), np.uint16), chunks=(4, 8, 10))
    root.attrs["multiscales"] = [{"version": "0.4", "axes": axes,
                                  "datasets": [{"path": "0", "coordinateTransformations": scale}]}]
    volume = read_volume(tmp_path / "mixed.zarr")
    np.testing.assert_allclose(volume.spacing, (1.5, 0.25, 0.25))
    np.testing.assert_allclose(volume.origin, (3.0, 1.0, 2.0))
    assert volume.meta["unit"] == "um"
