"""Axis meaning travels with the data: ImageJ hyperstacks, OME-TIFF, NIfTI time series and
vector images, RGB, length-1 axes, unnamed axes, damaged and compressed files."""

from __future__ import annotations

import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_medml.errors import InputError
from napari_medml.io import Volume, read_volume, write_volume
from napari_medml.io.axes import AXES_HINT, layout
from napari_medml.io.axes_resolve import resolve_axes, split_samples


def test_imagej_tzcyx_hyperstack_reads_with_its_axes_and_writes_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tzcyx = rng.integers(0, 4000, (3, 4, 2, 16, 20)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "movie.tif", tzcyx, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"axes": "TZCYX", "spacing": 1.5, "finterval": 30.0, "unit": "um"})  # fmt: skip
    vol = read_volume(tmp_path / "movie.tif")
    assert vol.axes == "TCZYX" and vol.channel_axis == 1
    np.testing.assert_array_equal(vol.data, tzcyx.transpose(0, 2, 1, 3, 4))
    assert vol.spacing == (30.0, 1.0, 1.5, 0.25, 0.25)

    write_volume(tmp_path / "again.tif", vol)
    with tifffile.TiffFile(tmp_path / "again.tif") as tif:
        assert tif.series[0].axes == "TZCYX"
        ij = tif.imagej_metadata
        assert (ij["frames"], ij["slices"], ij["channels"]) == (3, 4, 2)
        assert ij["spacing"] == 1.5 and ij["finterval"] == 30.0
        np.testing.assert_array_equal(tif.asarray(), tzcyx)


def test_imagej_zcyx_two_channels_are_channels(tmp_path: Path) -> None:
    zcyx = np.zeros((10, 2, 24, 24), np.uint16)
    zcyx[:, 1] = 7
    tifffile.imwrite(tmp_path / "cells.tif", zcyx, imagej=True, metadata={"axes": "ZCYX", "spacing": 1.5})
    vol = read_volume(tmp_path / "cells.tif")
    assert vol.axes == "CZYX" and vol.data.shape == (2, 10, 24, 24)
    assert vol.data.shape[vol.channel_axis] == 2
    assert (vol.data[1] == 7).all() and vol.spacing[1:] == (1.5, 1.0, 1.0)


def test_time_lapse_stays_a_time_lapse(tmp_path: Path) -> None:
    tyx = np.arange(5 * 12 * 14, dtype=np.uint8).reshape(5, 12, 14)
    tifffile.imwrite(tmp_path / "lapse.tif", tyx, imagej=True, metadata={"axes": "TYX", "finterval": 2.0})
    vol = read_volume(tmp_path / "lapse.tif")
    assert vol.axes == "TYX" and vol.spacing[0] == 2.0
    write_volume(tmp_path / "saved.tif", vol)
    with tifffile.TiffFile(tmp_path / "saved.tif") as tif:
        assert tif.series[0].axes == "TYX"
        assert tif.imagej_metadata["frames"] == 5 and "slices" not in tif.imagej_metadata
        assert "spacing" not in tif.imagej_metadata  # no z spacing invented
    assert read_volume(tmp_path / "saved.tif").axes == "TYX"


def test_a_frame_interval_keeps_its_time_unit_through_every_format(tmp_path: Path) -> None:
    """ImageJ's tunit, OME's TimeIncrementUnit and OME-Zarr's time unit are read and written (a
    2 min interval saved as 2 s before: trial 42); minutes and hours are read as seconds."""
    import zarr

    from napari_medml.layer_data import volume_to_layer_data

    tyx = np.arange(3 * 8 * 9, dtype=np.uint8).reshape(3, 8, 9)
    tifffile.imwrite(tmp_path / "min.tif", tyx, imagej=True, metadata={"axes": "TYX", "finterval": 2.0,
                                                                        "tunit": "min"})
    vol = read_volume(tmp_path / "min.tif")
    assert vol.spacing[0] == 120.0 and vol.meta["time_unit"] == "sec"
    assert volume_to_layer_data(vol)[1]["units"] == ("s", "pixel", "pixel")
    tifffile.imwrite(tmp_path / "ms.ome.tif", tyx, ome=True, metadata={"axes": "TYX", "TimeIncrement": 40.0,
                                                                       "TimeIncrementUnit": "ms"})
    ms = read_volume(tmp_path / "ms.ome.tif")
    assert ms.spacing[0] == 40.0 and ms.meta["time_unit"] == "msec"
    write_volume(tmp_path / "ms.tif", ms)  # ImageJ
    with tifffile.TiffFile(tmp_path / "ms.tif") as tif:
        assert tif.imagej_metadata["finterval"] == 40.0 and tif.imagej_metadata["tunit"] == "ms"
    assert read_volume(tmp_path / "ms.tif").meta["time_unit"] == "msec"
    write_volume(tmp_path / "again.ome.tif", ms)
    with tifffile.TiffFile(tmp_path / "again.ome.tif") as tif:
        assert 'TimeIncrementUnit="ms"' in tif.ome_metadata
    write_volume(tmp_path / "ms.zarr", ms)
    axes = zarr.open_group(str(tmp_path / "ms.zarr"), mode="r").attrs["multiscales"][0]["axes"]
    assert axes[0] == {"name": "t", "type": "time", "unit": "millisecond"}
    assert read_volume(tmp_path / "ms.zarr").meta["time_unit"] == "msec"
    write_volume(tmp_path / "lapse.nii.gz", vol)
    header = nib.load(tmp_path / "lapse.nii.gz").header
    assert header.get_xyzt_units()[1] == "sec" and header["pixdim"][4] == 120.0
    # review 43: nanoseconds and days are times too; a unit that is not one ('frame') is kept as ImageJ text and
    # left out of OME (it was saved as seconds); an interval nobody gave is not written as "1 s"
    tifffile.imwrite(tmp_path / "ns.ome.tif", tyx, ome=True, metadata={"axes": "TYX", "TimeIncrement": 5.0,
                                                                       "TimeIncrementUnit": "ns"})
    ns = read_volume(tmp_path / "ns.ome.tif")
    assert ns.spacing[0] == pytest.approx(0.005) and ns.meta["time_unit"] == "usec"
    tifffile.imwrite(tmp_path / "frame.tif", tyx, imagej=True, metadata={"axes": "TYX", "finterval": 3.0,
                                                                          "tunit": "frame"})
    frame = read_volume(tmp_path / "frame.tif")
    assert frame.spacing[0] == 3.0 and frame.meta["time_unit"] == "frame"
    assert volume_to_layer_data(frame)[1].get("units", ("pixel",))[0] == "pixel"
    write_volume(tmp_path / "frame_again.tif", frame)
    assert read_volume(tmp_path / "frame_again.tif").meta["time_unit"] == "frame"
    write_volume(tmp_path / "frame.ome.tif", frame)
    with tifffile.TiffFile(tmp_path / "frame.ome.tif") as tif:
        assert "TimeIncrement" not in tif.ome_metadata
    write_volume(tmp_path / "plain.ome.tif", Volume(tyx, (1.0, 1.0, 1.0), (0.0,) * 3, None, False, "p", {}, "TYX"))
    plain = read_volume(tmp_path / "plain.ome.tif")
    assert "time_unit" not in plain.meta and "units" not in volume_to_layer_data(plain)[1]
    # another tool's OME-Zarr in minutes
    group = zarr.open_group(tmp_path / "other.zarr", mode="w", zarr_format=2)
    group.create_array("0", data=tyx, chunks=tyx.shape)
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "t", "type": "time", "unit": "minute"},
                                                              {"name": "y", "type": "space"},
                                                              {"name": "x", "type": "space"}],
                                   "datasets": [{"path": "0", "coordinateTransformations": [
                                       {"type": "scale", "scale": [0.5, 1.0, 1.0]}]}]}]
    other = read_volume(tmp_path / "other.zarr")
    assert other.spacing[0] == 30.0 and other.meta["time_unit"] == "sec"


def test_a_volume_with_a_length_1_axis_saved_under_an_ome_tif_name_keeps_its_geometry(tmp_path: Path) -> None:
    """Review 43: length-1 axes go to tifffile's JSON TIFF, which a .ome.tif name turned into OME
    without that JSON: a one-slice 0.5 mm NIfTI read back at 1 x 1 pixels, unit and origin gone."""
    one = Volume(np.arange(72, dtype=np.uint8).reshape(1, 8, 9), (2.0, 0.5, 0.5), (0.0, 1.0, 2.0), None, False,
                 "one", {"unit": "mm"}, "ZYX")
    write_volume(tmp_path / "one.ome.tif", one)
    again = read_volume(tmp_path / "one.ome.tif")
    assert again.spacing == (0.5, 0.5) and again.origin == (1.0, 2.0) and again.meta["unit"] == "mm"
    np.testing.assert_array_equal(again.data, one.data[0])


def test_ome_tiff_czyx_round_trip(tmp_path: Path) -> None:
    czyx = np.random.default_rng(1).integers(0, 255, (3, 4, 10, 12)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.ome.tif", czyx, ome=True,
                     metadata={"axes": "CZYX", "PhysicalSizeZ": 2.0, "PhysicalSizeY": 0.5, "PhysicalSizeX": 0.5})  # fmt: skip
    vol = read_volume(tmp_path / "s.ome.tif")
    assert vol.axes == "CZYX" and vol.spacing == (1.0, 2.0, 0.5, 0.5)
    np.testing.assert_array_equal(vol.data, czyx)
    write_volume(tmp_path / "t.ome.tif", vol)
    back = read_volume(tmp_path / "t.ome.tif")
    assert back.axes == "CZYX" and back.spacing == vol.spacing
    np.testing.assert_array_equal(back.data, czyx)


def test_rgb_tiff_colour_is_the_channel_axis(tmp_path: Path) -> None:
    rgb = np.random.default_rng(2).integers(0, 255, (10, 12, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "photo.tif", rgb, photometric="rgb")
    vol = read_volume(tmp_path / "photo.tif")
    assert vol.axes == "YXC" and vol.channel_axis == 2 and vol.meta["rgb"]


def test_nifti_4d_time_series(tmp_path: Path) -> None:
    xyzt = np.random.default_rng(3).normal(size=(12, 10, 6, 7)).astype(np.float32)
    img = nib.Nifti1Image(xyzt, np.diag([2.0, 2.0, 3.0, 1.0]))
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((2.0, 2.0, 3.0, 0.8))
    nib.save(img, tmp_path / "bold.nii.gz")
    vol = read_volume(tmp_path / "bold.nii.gz")
    assert vol.axes == "TZYX" and vol.data.shape == (7, 6, 10, 12)
    np.testing.assert_allclose(vol.spacing, (0.8, 3.0, 2.0, 2.0))
    write_volume(tmp_path / "again.nii.gz", vol)
    again = nib.load(tmp_path / "again.nii.gz")
    assert again.shape == (12, 10, 6, 7) and again.header.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_allclose(again.header.get_zooms(), (2.0, 2.0, 3.0, 0.8))


def test_nifti_4d_without_time_unit_is_resolved_from_the_labels(tmp_path: Path) -> None:
    # some datasets keep modalities in the 4th dimension (X, Y, Z, 4)
    nib.save(nib.Nifti1Image(np.zeros((12, 10, 6, 4), np.float32), np.eye(4)), tmp_path / "mr.nii.gz")
    vol = read_volume(tmp_path / "mr.nii.gz")
    assert vol.axes == "QZYX"
    assert resolve_axes(vol.axes, vol.data.shape, what="x", hint="", labels_shape=(6, 10, 12)) == "CZYX"
    assert resolve_axes(vol.axes, vol.data.shape, what="x", hint="", labels_shape=vol.data.shape) == "TZYX"


def test_itk_vector_nifti_x_y_z_1_c(tmp_path: Path) -> None:
    xyz1c = np.random.default_rng(4).normal(size=(12, 10, 6, 1, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(xyz1c, np.diag([0.5, 0.5, 2.0, 1.0])), tmp_path / "dwi.nii.gz")
    vol = read_volume(tmp_path / "dwi.nii.gz")
    assert vol.axes == "CZYX" and vol.data.shape == (3, 6, 10, 12)
    np.testing.assert_array_equal(vol.data, xyz1c[:, :, :, 0].transpose(3, 2, 1, 0))
    write_volume(tmp_path / "again.nii.gz", vol)
    again = nib.load(tmp_path / "again.nii.gz")
    assert again.shape == (12, 10, 6, 1, 3)
    np.testing.assert_array_equal(np.asarray(again.dataobj), xyz1c)


def test_channels_written_to_nifti_read_back_as_channels(tmp_path: Path) -> None:
    vol = Volume(np.zeros((2, 5, 6, 7), np.float32), (1.0, 2.0, 0.5, 0.5), (0.0,) * 4, axes="CZYX")
    write_volume(tmp_path / "two.nii.gz", vol)
    assert nib.load(tmp_path / "two.nii.gz").shape == (7, 6, 5, 1, 2)
    back = read_volume(tmp_path / "two.nii.gz")
    assert back.axes == "CZYX" and back.spacing == vol.spacing


def test_length_one_axes_are_dropped_and_restored(tmp_path: Path) -> None:
    img = np.random.default_rng(5).normal(size=(64, 48, 1)).astype(np.float32)  # nnU-Net 2D
    nib.save(nib.Nifti1Image(img, np.diag([0.7, 0.7, 1.0, 1.0])), tmp_path / "case.nii.gz")
    vol = read_volume(tmp_path / "case.nii.gz")
    assert vol.axes == "YX" and vol.data.shape == (48, 64)
    write_volume(tmp_path / "out.nii.gz", Volume(vol.data > 0, vol.spacing, vol.origin, vol.affine,
                                                 True, meta=vol.meta, axes=vol.axes))  # fmt: skip
    assert nib.load(tmp_path / "out.nii.gz").shape == (64, 48, 1)

    lab = np.zeros((32, 32, 16, 1), np.uint8)
    nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / "scan_seg.nii.gz")
    assert read_volume(tmp_path / "scan_seg.nii.gz").axes == "ZYX"

    np.save(tmp_path / "one.npy", np.zeros((1, 20, 30)))
    one = read_volume(tmp_path / "one.npy")
    assert one.data.shape == (20, 30)
    write_volume(tmp_path / "back.npy", one)
    assert np.load(tmp_path / "back.npy").shape == (1, 20, 30)


def test_unnamed_axes_are_resolved_or_refused_naming_the_option(tmp_path: Path) -> None:
    np.save(tmp_path / "stack.npy", np.zeros((10, 48, 48), np.float32))
    vol = read_volume(tmp_path / "stack.npy")
    assert vol.axes == "QYX"
    shape = vol.data.shape
    assert resolve_axes(vol.axes, shape, what="s", hint="h", labels_shape=shape) == "ZYX"
    assert resolve_axes(vol.axes, shape, what="s", hint="h", labels_shape=(48, 48)) == "CYX"
    assert resolve_axes(vol.axes, shape, what="s", hint="h", spatial_dims=2, in_channels=10) == "CYX"
    assert resolve_axes(vol.axes, shape, what="s", hint="h", spatial_dims=2, in_channels=1) == "ZYX"
    with pytest.raises(InputError, match=r"stack.*could be CZYX or TCYX.*--axes.*one letter for each of its 4 axes, "
                       r"e\.g\. CZYX\)$"):
        resolve_axes("QQYX", (2, 2, 8, 8), what="image 'stack.npy'", hint=AXES_HINT, spatial_dims=2,
                     in_channels=2)  # fmt: skip
    # case 06 without its ImageJ metadata (a shaped TIFF, review 31): 6 frames of 2 channels in our order, or a
    # Z-stack of 2 channels in ImageJ's: only the user can tell (both were read as the frames, in silence)
    with pytest.raises(InputError, match=r"could be TCYX: 6 frames of 2 channels for a 2D network, or ZCYX: a "
                       r"Z-stack of 2 channels in ImageJ's order, for a 3D network\): h"):
        resolve_axes("QQYX", (6, 2, 8, 8), what="s", hint="h", labels_shape=(6, 8, 8))
    assert resolve_axes("QQYX", (6, 2, 8, 8), what="s", hint="h", labels_shape=(6, 8, 8), spatial_dims=2) == "TCYX"
    for kwargs in ({"spatial_dims": 3, "in_channels": 2}, {"labels_shape": (3, 6, 8, 8)}):
        shape = (6, 2, 8, 8) if "in_channels" in kwargs else (3, 6, 2, 8, 8)
        with pytest.raises(InputError, match=r"it fits as T?ZCYX, a Z-stack of 2 channels in ImageJ's order: h "
                           r"\(here T?ZCYX\)$"):
            resolve_axes("Q" * (len(shape) - 2) + "YX", shape, what="s", hint="h", **kwargs)
    assert resolve_axes("QQYX", (2, 6, 8, 8), what="s", hint="h", labels_shape=(6, 8, 8)) == "CZYX"
    assert resolve_axes("QQYX", (2, 2, 8, 8), what="s", hint="h", spatial_dims=3, in_channels=2) == "CZYX"
    assert read_volume(tmp_path / "stack.npy", axes="CYX").axes == "CYX"
    with pytest.raises(InputError, match="has 3 axes but 'CZYX' names 4"):
        read_volume(tmp_path / "stack.npy", axes="CZYX")


def test_layout_and_samples_of_time_series_and_stacks() -> None:
    assert layout("TCZYX", 3).sample_axes == (0,) and layout("TCZYX", 3).channel_axis == 1
    assert layout("ZYX", 2).sample_axes == (0,)
    with pytest.raises(InputError, match="2 spatial.*3D"):
        layout("TYX", 3)
    image = np.arange(4 * 2 * 6 * 5).reshape(4, 2, 6, 5).astype(np.float32)  # T, C, Y, X
    labels = np.zeros((4, 6, 5), np.uint8)
    labels[2, 1, 1] = 3
    images, targets, spacings, channel = split_samples(image, labels, "TCYX", 2, (9.0, 0.5, 0.25))
    assert len(images) == 4 and images[2].shape == (2, 6, 5) and channel == 0
    assert targets[2][1, 1] == 3 and spacings[0] == (0.5, 0.25)
    np.testing.assert_array_equal(images[3], image[3])


def test_truncated_compressed_stack_is_reported_as_damaged(tmp_path: Path) -> None:
    stack = np.random.default_rng(6).integers(0, 1000, (8, 64, 64)).astype(np.uint16)
    for name, kwargs in (("plain", {}), ("fiji", {"imagej": True, "metadata": {"axes": "ZYX"}})):
        tifffile.imwrite(tmp_path / f"{name}.tif", stack, compression="zlib", **kwargs)
        whole = (tmp_path / f"{name}.tif").read_bytes()
        for cut in (0.5, 0.67, 0.95):
            (tmp_path / f"{name}_cut.tif").write_bytes(whole[: int(len(whole) * cut)])
            with pytest.raises(InputError, match=rf"{name}_cut\.tif' is damaged"):
                read_volume(tmp_path / f"{name}_cut.tif")


def _lzw_tiff(path: Path, arr: np.ndarray) -> None:
    """A valid LZW TIFF (literal codes only, a Clear code every 200), as scanners write."""
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


def test_lzw_tiff_reads_and_a_missing_codec_names_the_package(tmp_path: Path, monkeypatch) -> None:
    mask = np.zeros((40, 56), np.uint8)
    mask[5:25, 10:40] = 1
    _lzw_tiff(tmp_path / "mask.tif", mask)
    np.testing.assert_array_equal(read_volume(tmp_path / "mask.tif").data, mask)

    import napari_medml.io.tiff as io_tiff

    def no_codec(path: Path) -> Volume:
        raise ValueError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")

    monkeypatch.setattr(io_tiff, "read_tiff", no_codec)
    with pytest.raises(InputError, match=r"mask\.tif.*imagecodecs.*pip install imagecodecs") as info:
        read_volume(tmp_path / "mask.tif")
    assert "damaged" not in str(info.value)


def test_a_codec_missing_on_import_names_the_package(tmp_path: Path, monkeypatch) -> None:
    """tifffile imports some codecs on demand (zstd: ``compression.zstd`` without imagecodecs)."""
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((8, 8), np.uint8))
    import napari_medml.io.tiff as io_tiff

    def no_module(path: Path) -> Volume:
        raise ModuleNotFoundError("No module named 'compression'")

    monkeypatch.setattr(io_tiff, "read_tiff", no_module)
    with pytest.raises(InputError, match=r"plain\.tif.*imagecodecs.*pip install imagecodecs") as info:
        read_volume(tmp_path / "plain.tif")
    assert "damaged" not in str(info.value)


def test_axes_given_for_an_imagej_stack_keep_its_z_step(tmp_path: Path) -> None:
    """An ImageJ file written without axes reads as ZCYX (slices and channels swapped);
    --axes CZYX puts them right and the file's Z step (1.5) goes with the Z axis."""
    tifffile.imwrite(tmp_path / "cz.tif", np.zeros((3, 8, 40, 40), np.uint8), imagej=True, resolution=(5.0, 5.0),
                     metadata={"spacing": 1.5, "unit": "um"})
    said = read_volume(tmp_path / "cz.tif")
    assert said.axes == "CZYX" and said.data.shape == (8, 3, 40, 40) and said.spacing[1:] == (1.5, 0.2, 0.2)
    given = read_volume(tmp_path / "cz.tif", "CZYX")
    assert given.axes == "CZYX" and given.data.shape == (3, 8, 40, 40)
    assert given.spacing[1:] == pytest.approx((1.5, 0.2, 0.2))


def test_a_file_named_ome_tif_is_written_as_ome_tiff(tmp_path: Path) -> None:
    labels = np.zeros((6, 20, 24), np.uint8)
    labels[2:4, 5:15, 6:18] = 3
    vol = Volume(labels, (2.0, 0.5, 0.5), (0.0, 0.0, 0.0), None, True, "seg", axes="ZYX")
    write_volume(tmp_path / "seg.ome.tif", vol)
    with tifffile.TiffFile(tmp_path / "seg.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].axes == "ZYX"
    back = read_volume(tmp_path / "seg.ome.tif")
    np.testing.assert_array_equal(back.data, labels)
    assert back.spacing == pytest.approx((2.0, 0.5, 0.5))
    write_volume(tmp_path / "seg.tif", vol)  # a plain name stays an ImageJ hyperstack
    with tifffile.TiffFile(tmp_path / "seg.tif") as tif:
        assert tif.is_imagej and not tif.is_ome


@pytest.mark.parametrize("name,dtype", [("x.ome.tif", np.int16), ("seg32.tif", np.uint32), ("f64.tif", np.float64)])
def test_an_ome_tiff_keeps_the_origin_in_the_volumes_unit(tmp_path: Path, name: str, dtype: type) -> None:
    """OME-TIFF plane positions carry their unit: an origin in mm came back divided by 1000
    (read as OME's default, µm) from a .ome.tif name and the dtypes ImageJ cannot store."""
    vol = Volume(np.arange(4 * 6 * 8).reshape(4, 6, 8).astype(dtype), (3.0, 0.5, 0.5), (-30.0, -7.5, -10.0),
                 None, dtype == np.uint32, "lps", meta={"unit": "mm"}, axes="ZYX")
    write_volume(tmp_path / name, vol)
    with tifffile.TiffFile(tmp_path / name) as tif:
        assert tif.is_ome and 'PositionXUnit="mm"' in tif.ome_metadata
    back = read_volume(tmp_path / name)
    np.testing.assert_array_equal(back.data, vol.data)
    assert back.spacing == pytest.approx((3.0, 0.5, 0.5)) and back.origin == pytest.approx((-30.0, -7.5, -10.0))
    assert back.meta.get("unit") == "mm"


def test_an_ome_tiff_of_a_volume_without_geometry_claims_none(tmp_path: Path) -> None:
    """Review 35: OME's default unit made a unit-less volume (a .npy's prediction) 1 um voxels,
    which evaluate then compared with a NIfTI in mm as two unit names for the same numbers."""
    from napari_medml.io.geometry import has_geometry

    vol = Volume(np.arange(3 * 6 * 8, dtype=np.int32).reshape(3, 6, 8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), None, True,
                 "seg", axes="ZYX")
    write_volume(tmp_path / "seg.ome.tif", vol)
    with tifffile.TiffFile(tmp_path / "seg.ome.tif") as tif:
        assert tif.is_ome and "PhysicalSize" not in tif.ome_metadata
    back = read_volume(tmp_path / "seg.ome.tif")
    np.testing.assert_array_equal(back.data, vol.data)
    assert back.meta.get("unit") is None and not has_geometry(back)
    # trial 40: a voxel size without a unit came back in um (OME's default): it is written as OME's "pixel"
    sized = Volume(vol.data, (2.0, 1.0, 1.0), (0.0, 0.5, 0.0), None, True, "seg", axes="ZYX")
    write_volume(tmp_path / "sized.ome.tif", sized)
    with tifffile.TiffFile(tmp_path / "sized.ome.tif") as tif:
        assert 'PhysicalSizeZUnit="pixel"' in tif.ome_metadata
    back = read_volume(tmp_path / "sized.ome.tif")
    assert back.spacing == (2.0, 1.0, 1.0) and back.origin == (0.0, 0.5, 0.0) and back.meta.get("unit") is None


def test_a_2d_network_never_cuts_one_thick_slice_into_strips() -> None:
    image, labels = np.zeros((56, 48, 1), np.float32), np.zeros((56, 48, 1), np.uint8)
    with pytest.raises(InputError, match=r"'sag'.*one slice along X.*strips.*3D network"):
        split_samples(image, labels, "ZYX", 2, None, what="'sag'")
    images, _, _, _ = split_samples(image, labels, "ZYX", 3, None, what="'sag'")
    assert [i.shape for i in images] == [(56, 48, 1)]


def test_an_uppercase_npy_name_is_written_as_given(tmp_path: Path) -> None:
    vol = Volume(np.arange(12, dtype=np.uint8).reshape(3, 4), (1.0, 1.0), (0.0, 0.0), None, True, "x", axes="YX")
    write_volume(tmp_path / "PRED.NPY", vol)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["PRED.NPY"]
    np.testing.assert_array_equal(read_volume(tmp_path / "PRED.NPY").data, vol.data)


def test_a_folder_named_like_an_image_is_called_a_folder(tmp_path: Path) -> None:
    (tmp_path / "cells.tif").mkdir()
    with pytest.raises(InputError, match=r"cells\.tif' is a folder, not a TIFF file"):
        read_volume(tmp_path / "cells.tif")


def test_a_float_mask_named_seg_reads_as_labels(tmp_path: Path) -> None:
    seg = np.zeros((4, 8, 8), np.float32)
    seg[1:3, 2:6, 2:6] = 2.0
    np.save(tmp_path / "cells_seg.npy", seg)
    vol = read_volume(tmp_path / "cells_seg.npy")
    assert vol.is_labels and vol.data.dtype == np.uint8
    np.testing.assert_array_equal(vol.data, seg.astype(np.uint8))
    np.save(tmp_path / "cells_seg_soft.npy", seg * 0.3)  # fractions: a probability map, not labels
    soft = read_volume(tmp_path / "cells_seg_soft.npy")
    assert not soft.is_labels and soft.data.dtype == np.float32


def test_labels_written_as_tiff_read_back_as_labels_whatever_the_name(tmp_path: Path) -> None:
    """A prediction saved as pred.tif (no seg/label/mask in the name) opens as labels again."""
    labels = np.zeros((4, 10, 12), np.uint8)
    labels[1:3, 2:8, 3:9] = 2
    write_volume(tmp_path / "pred.tif", Volume(labels, (2.0, 1.0, 1.0), (0.0,) * 3, None, True, "pred", axes="ZYX"))
    back = read_volume(tmp_path / "pred.tif")
    assert back.is_labels and back.spacing == (2.0, 1.0, 1.0)
    np.testing.assert_array_equal(back.data, labels)
    write_volume(tmp_path / "image.tif", Volume(labels, (2.0, 1.0, 1.0), (0.0,) * 3, None, False, "i", axes="ZYX"))
    assert not read_volume(tmp_path / "image.tif").is_labels



def test_an_image_without_the_models_channels_is_told_so_not_to_name_its_axes() -> None:
    """A 3-channel model on a one-channel volume with unnamed axes: naming them would not help,
    so the line is about the channels (a napari layer without axis labels, probe of the widgets)."""
    from napari_medml.io.axes_resolve import resolve_axes

    with pytest.raises(InputError, match=r"^the model was trained on 3 channel\(s\) but image 'ct' \(shape "
                                         r"16x48x48\) has no axis that holds them: give an image with the same"):
        resolve_axes("QYX", (16, 48, 48), what="image 'ct'", hint="name the axes", spatial_dims=3, in_channels=3)
    # an axis of the right length still reads as the channels
    assert resolve_axes("QYX", (3, 48, 48), what="image 'ct'", hint="", spatial_dims=2, in_channels=3) == "CYX"


def test_one_slice_volume_puts_back_the_dropped_slice_axis_for_a_3d_network() -> None:
    from napari_medml.io.axes import one_slice_volume, squeeze

    data, axes, spacing, origin, dropped = squeeze(np.zeros((2, 1, 5, 6)), "CZYX", (1.0, 2.5, 0.5, 0.5),
                                                   (0.0, 7.0, 1.0, 2.0))
    assert (data.shape, axes, dropped) == ((2, 5, 6), "CYX", [["Z", 2.5, 7.0]])
    back, axes, spacing, origin, left = one_slice_volume(data, axes, spacing, origin, dropped)
    assert (back.shape, axes, spacing, origin, left) == ((2, 1, 5, 6), "CZYX", (1.0, 2.5, 0.5, 0.5),
                                                 (0.0, 7.0, 1.0, 2.0), [])
    # an unnamed length-1 axis (a (1, Y, X) .npy) becomes Z; nothing dropped, or a Z already there: None
    data, axes, spacing, origin, dropped = squeeze(np.zeros((1, 5, 6)), "QYX", (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    assert one_slice_volume(data, axes, spacing, origin, dropped)[1:] == ("ZYX", (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), [])
    assert one_slice_volume(np.zeros((5, 6)), "YX", (1.0, 1.0), (0.0, 0.0), []) is None
    assert one_slice_volume(np.zeros((3, 5, 6)), "ZYX", (1.0,) * 3, (0.0,) * 3, [["T", 1.0, 0.0]]) is None


def test_placed_values_match_unnamed_axes_by_position():
    from napari_medml.io.axes import placed_values

    assert placed_values("QQYX", (3, 2, 1, 0.5), "QQYX", 1.0) == (3.0, 2.0, 1.0, 0.5)
    assert placed_values("QQYX", (3, 2, 1, 0.5), "CQQYX", 1.0) == (1.0, 3.0, 2.0, 1.0, 0.5)
    assert placed_values("TCZYX", (3, 9, 2, 1, 0.5), "TZYX", 0.0) == (3.0, 2.0, 1.0, 0.5)
    assert placed_values("TCZYX", (3, 9, 2, 1, 0.5), "ZYX", 0.0) == (2.0, 1.0, 0.5)  # the last of them
    assert placed_values("QYX", (4, 1, 0.5), "ZYX", 1.0) == (1.0, 1.0, 0.5)  # not a tail: by letter


@pytest.mark.parametrize(("axes", "shape", "dims", "said"), [
    ("TYX", (4, 32, 32), 2, "4 frames"),
    ("ZYX", (31, 32, 32), 2, "31 slices"),
    ("ZYX", (31, 32, 32), 3, ""),
    ("TZCYX", (3, 5, 2, 32, 32), 2, "15 frames/slices"),
    ("CQYX", (2, 12, 32, 32), 3, ""),  # an unnamed axis is spatial where the network needs it
    ("QYX", (12, 32, 32), 2, "12 slices"),
    ("ZYX", (1, 32, 32), 2, "1 slice"),  # review 30: "1 slices"
    ("TYX", (1, 32, 32), 2, "1 frame"),
])
def test_samples_phrase_counts_what_a_network_takes_one_at_a_time(axes, shape, dims, said):
    from napari_medml.io.axes import samples_phrase

    assert samples_phrase(axes, shape, dims) == said
