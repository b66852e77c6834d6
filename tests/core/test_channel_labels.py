"""Labels that cover an image's channel axis (napari's new labels on a CZYX layer), and
files written from layers of unnamed axes keeping their axis order."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medml.errors import InputError
from napari_medml.io import Volume, read_volume, write_volume
from napari_medml.io.axes import concrete_axes
from napari_medml.io.axes_resolve import labels_over_channels
from napari_medml.preprocessing.stacks import crop_volume_to_labels


@pytest.fixture
def truth() -> np.ndarray:
    lab = np.zeros((6, 20, 24), np.uint8)
    lab[2:4, 5:12, 6:15] = 1
    lab[1:3, 14:18, 16:22] = 2
    return lab


def test_labels_painted_on_one_channel_become_labels_of_the_voxels(truth):
    painted = np.zeros((3, *truth.shape), np.uint8)
    painted[2] = truth  # the channel slider at 2
    merged, note = labels_over_channels(painted, painted.shape, "CZYX", what="image 'cells'", labels_what="labels 'L'")
    np.testing.assert_array_equal(merged, truth)
    assert "labels 'L' cover the channel axis of image 'cells'" in note and "painted on channel 2" in note


def test_labels_painted_on_several_channels_are_refused(truth):
    """The axis may hold slices a file calls channels (a ZYX stack written without axes reads
    as CYX): merging the planes would move labels between slices."""
    painted = np.stack([truth, np.zeros_like(truth), truth])
    with pytest.raises(InputError, match=r"painted on 2 of its channels \(0, 2\): paint on one channel only; if "):
        labels_over_channels(painted, painted.shape, "CZYX", labels_what="labels 'L'")


@pytest.mark.parametrize(("shape", "axes"), [((6, 20, 24), "ZYX"), ((20, 24, 3), "YXC"), ((2, 6, 20, 24), "TZYX")])
def test_labels_without_a_channel_axis_to_cover_come_back_as_given(truth, shape, axes):
    labels = np.zeros(shape, np.uint8)
    out, note = labels_over_channels(labels, shape, axes)
    assert out is labels and note is None


def test_crop_to_labels_takes_labels_that_cover_the_channels(truth):
    image = Volume(np.random.default_rng(0).normal(size=(2, *truth.shape)).astype(np.float32), (1.0, 2.0, 0.5, 0.5),
                   (0.0,) * 4, None, False, "cells", axes="CZYX")
    cropped, labels = crop_volume_to_labels(image, np.stack([truth, np.zeros_like(truth)]))
    assert cropped.data.shape == (2, 3, 13, 16) and labels.data.shape == (3, 13, 16)  # z 1-3, y 5-17, x 6-21


@pytest.mark.parametrize("suffix", [".tif", ".nii.gz", ".ome.tif"])
def test_a_layer_of_unnamed_axes_is_written_in_its_own_axis_order(tmp_path, truth, suffix):
    """``QQYX`` was written as ``ZTYX``, which the formats store T first: the file opened
    again transposed against the layer."""
    assert concrete_axes("QQYX") == "TZYX" and concrete_axes("QYX") == "ZYX" and concrete_axes("QQQYX") == "TCZYX"
    assert concrete_axes("QCYX") == "TCYX" and concrete_axes("CQYX") == "CZYX"  # the whole string canonical
    data = np.stack([truth, 2 * truth])
    write_volume(tmp_path / f"l{suffix}", Volume(data, (1.0, 2.0, 0.5, 0.5), (0.0,) * 4, None, True, "l", axes="QQYX"))
    back = read_volume(tmp_path / f"l{suffix}")
    np.testing.assert_array_equal(np.asarray(back.data), data)


def test_labels_over_the_channels_of_a_cyx_image_are_refused_with_a_fix_for_napari(truth):
    """Review 25: a ZYX stack that tifffile writes without axes reads as CYX; one slice painted
    trained a 2D network with the slices as channels. Without a Z or T axis besides the
    channels only the user can tell, so the line says how in napari (Split Stack)."""
    painted = np.zeros((5, 20, 24), np.uint8)
    painted[2] = truth[2]
    with pytest.raises(InputError, match="right-click the image > Split Stack"):
        labels_over_channels(painted, painted.shape, "CYX", what="image 'stack'", labels_what="labels 'L'")
    merged, note = labels_over_channels(np.zeros((2, *truth.shape), np.uint8), (2, *truth.shape), "CZYX")
    assert not merged.any() and "none of its channels painted yet" in note


@pytest.mark.parametrize("suffix", [".tif", ".nii.gz"])
def test_labels_with_three_unnamed_axes_are_not_written_with_one_called_channels(tmp_path, truth, suffix):
    """Review 25: QQQYX labels were written TCZYX; the C axis lost its spacing and an OME file
    opened as three channel images."""
    data = np.stack([np.stack([truth[:4], truth[2:]])] * 2)  # (2, 2, 4, 20, 24)
    labels = Volume(data, (1.0, 2.0, 3.0, 0.5, 0.5), (0.0,) * 5, None, True, "l", axes="QQQYX")
    with pytest.raises(InputError, match=r"without calling one of them channels .*: save as \.npy"):
        write_volume(tmp_path / f"l{suffix}", labels)
    write_volume(tmp_path / "l.npy", labels)
    np.testing.assert_array_equal(read_volume(tmp_path / "l.npy").data, data)


@pytest.mark.parametrize("axes", ["QTYX", "QQCYX"])
def test_unnamed_axes_that_no_letters_keep_in_order_are_refused(tmp_path, axes):
    """Review 25: QTYX was written ZTYX (stored T first) and reopened transposed."""
    data = np.zeros({"QTYX": (2, 3, 5, 6), "QQCYX": (2, 3, 4, 5, 6)}[axes], np.float32)
    with pytest.raises(InputError, match=r"the file would open transposed: save as \.npy"):
        write_volume(tmp_path / "x.tif", Volume(data, (1.0,) * data.ndim, (0.0,) * data.ndim, None, False, "x",
                                                axes=axes))
    assert concrete_axes("ZTYX") == "ZTYX"  # named axes are written as they are
