"""napari_medml.layer_data: Volume <-> LayerDataTuple, the affine rule, naming, marks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medml.io import Volume, affine_from_spacing
from napari_medml.layer_data import (
    PLUGIN_MARK,
    is_generated,
    layer_to_volume,
    mark_generated,
    spatial_meta,
    volume_to_layer_data,
)
from napari_medml.result_layers import result_layer_data, result_layer_name


def oblique() -> np.ndarray:
    c, s = np.cos(0.4), np.sin(0.4)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([0.5, 0.75, 2.0])
    affine[:3, 3] = (5.0, -6.0, 7.0)
    return affine


def test_image_volume_to_layer_and_back() -> None:
    vol = Volume(
        np.ones((3, 4, 5), np.float32), (2.0, 0.75, 0.5), (7.0, -6.0, 5.0), oblique(),
        name="ct", meta={"unit": "mm", "sform_code": 1},
    )  # fmt: skip
    data, kwargs, layer_type = volume_to_layer_data(vol)
    assert layer_type == "image"
    assert kwargs["name"] == "ct"
    assert kwargs["scale"] == vol.spacing and kwargs["translate"] == vol.origin
    assert kwargs["metadata"]["affine"] == oblique().tolist()  # plain lists: JSON-friendly
    back = layer_to_volume(data, kwargs, is_labels=False)
    assert back.spacing == vol.spacing and back.origin == vol.origin
    np.testing.assert_array_equal(back.affine, vol.affine)  # agrees: kept exactly
    assert back.meta == vol.meta and back.name == "ct" and not back.is_labels


def test_labels_volume_becomes_labels_layer() -> None:
    vol = Volume(np.zeros((4, 4), np.uint16), (1.0, 1.0), (0.0, 0.0), is_labels=True, name="seg")
    data, kwargs, layer_type = volume_to_layer_data(vol)
    assert layer_type == "labels"
    assert kwargs["metadata"]["affine"] is None
    assert layer_to_volume(data, kwargs, is_labels=True).is_labels


def test_npe2_writer_meta_with_numpy_scale_is_accepted() -> None:
    # napari hands writers numpy arrays for scale/translate and its own 'affine'
    meta = {
        "name": "img", "scale": np.array([2.0, 1.0]), "translate": np.array([0.5, 0.0]),
        "affine": np.eye(3), "metadata": {}, "rgb": False,
    }  # fmt: skip
    vol = layer_to_volume(np.zeros((2, 3)), meta, is_labels=False)
    assert vol.spacing == (2.0, 1.0) and vol.origin == (0.5, 0.0) and vol.affine is None


def test_changed_scale_rebuilds_affine_keeping_direction() -> None:
    stored = {"affine": oblique().tolist()}
    spacing, origin, affine, *_ = spatial_meta((4.0, 0.75, 0.5), (7.0, -6.0, 5.0), stored)
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), (0.5, 0.75, 4.0))
    np.testing.assert_allclose(affine, affine_from_spacing(spacing, origin, oblique()))
    # translate edited too: napari's view is the voxel-aligned one, so a move in it is a move along the
    # turned voxel axes in the world (trial 40: what lies together on screen lies together when saved)
    _, _, moved, *_ = spatial_meta((2.0, 0.75, 0.5), (0.0, 1.0, 2.0), stored)
    directions = oblique()[:3, :3] / np.linalg.norm(oblique()[:3, :3], axis=0)
    np.testing.assert_allclose(moved[:3, 3], oblique()[:3, 3] + directions @ ((2.0, 1.0, 0.0) - oblique()[:3, 3]))
    np.testing.assert_allclose(moved[:3, :3], oblique()[:3, :3])


def test_spatial_meta_defaults() -> None:
    assert spatial_meta(None, None, None, ndim=3) == ((1.0,) * 3, (0.0,) * 3, None, None, None)


def test_results_carry_the_voxel_order_their_image_file_was_stored_in() -> None:
    """A layer read from an LAS file (shown RAS) hands its file's order to its results, so a
    prediction saved as NIfTI has its image's voxel order, with the file's unit, codes and
    dropped length-1 axes (a one-channel image's C too, but none the result has); not the file's format
    details (a level, a channel); other layers hand nothing on."""
    file_meta = {"stored_orientation": "LAS", "sform_code": 1, "qform_code": 1, "unit": "mm", "level": 0,
                 "channel": 1, "singletons": [["T", 1.0, 0.0], ["C", 1.0, 0.0], ["Z", 3.0, 0.0]]}
    metadata = {"affine": np.eye(4).tolist(), "file_meta": file_meta}
    spatial = spatial_meta((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), metadata)
    assert spatial.stored_orientation == "LAS"
    _, kwargs, _ = result_layer_data(np.zeros((2, 3, 4), np.uint8), "ct", "prediction", spatial, "labels", "ZYX")
    assert kwargs["metadata"]["file_meta"] == {"stored_orientation": "LAS", "sform_code": 1, "qform_code": 1,
                                               "unit": "mm", "singletons": [["T", 1.0, 0.0], ["C", 1.0, 0.0]]}
    plain = spatial_meta((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), {"affine": np.eye(4).tolist()})
    _, kwargs, _ = result_layer_data(np.zeros((2, 3, 4), np.uint8), "ct", "prediction", plain, "labels", "ZYX")
    assert plain.stored_orientation is None and "file_meta" not in kwargs["metadata"]


def test_result_name_and_generated_mark() -> None:
    assert result_layer_name("ct", "prediction") == "ct [prediction]"
    user = {"note": "mine"}
    marked = mark_generated(user)
    assert is_generated(marked) and marked["note"] == "mine"
    assert not is_generated(user) and PLUGIN_MARK not in user  # input left alone
    assert not is_generated(None)


def test_result_layer_data_lies_on_its_source() -> None:
    spatial = spatial_meta((2.0, 0.5, 0.5), (1.0, 2.0, 3.0), {"affine": None})
    probs = np.zeros((3, 4, 5, 6), np.float16)  # class axis in front
    data, kwargs, layer_type = result_layer_data(
        probs, "ct", "probabilities", spatial, colormap="magma"
    )
    assert data is probs and layer_type == "image"
    assert kwargs["name"] == "ct [probabilities]"
    assert kwargs["scale"] == (1.0, 2.0, 0.5, 0.5)
    assert kwargs["translate"] == (0.0, 1.0, 2.0, 3.0)
    assert is_generated(kwargs["metadata"]) and kwargs["colormap"] == "magma"


def test_axes_travel_as_axis_labels_and_metadata() -> None:
    vol = Volume(np.zeros((2, 3, 4, 5), np.uint16), (1.0, 2.0, 0.5, 0.5), (0.0,) * 4, name="cells",
                 axes="CZYX")  # fmt: skip
    data, kwargs, _ = volume_to_layer_data(vol)
    assert kwargs["axis_labels"] == ("c", "z", "y", "x") and kwargs["metadata"]["axes"] == "CZYX"
    assert layer_to_volume(data, kwargs, is_labels=False).axes == "CZYX"
    # labels the user sets in napari win; napari's defaults say nothing
    relabelled = {**kwargs, "axis_labels": ("t", "z", "y", "x")}
    assert layer_to_volume(data, relabelled, is_labels=False).axes == "TZYX"
    default = {**kwargs, "axis_labels": ("-4", "-3", "-2", "-1")}
    assert layer_to_volume(data, default, is_labels=False).axes == "CZYX"
    bare = {"name": "x", "axis_labels": ("-3", "-2", "-1")}
    assert layer_to_volume(np.zeros((3, 4, 5)), bare, is_labels=False).axes == "QYX"
    rgb = {"name": "photo", "rgb": True, "axis_labels": ("-2", "-1")}
    assert layer_to_volume(np.zeros((4, 5, 3), np.uint8), rgb, is_labels=False).axes == "YXC"


def test_a_files_length_unit_becomes_the_layers_units_on_its_spatial_axes() -> None:
    """The scale bar read "pixel" for a NIfTI in mm (trial 33): its spatial axes take the unit."""
    from napari_medml.layer_data import _add_image_takes_axis_labels

    def units(shape: tuple, axes: str, meta: dict) -> tuple | None:
        vol = Volume(np.zeros(shape, np.uint8), (1.0,) * len(shape), (0.0,) * len(shape), axes=axes, meta=meta)
        return volume_to_layer_data(vol)[1].get("units")

    if not _add_image_takes_axis_labels():  # napari 0.5.0's add_image refuses a sequence of units
        assert units((2, 3, 4), "ZYX", {"unit": "mm"}) is None
        return
    assert units((2, 3, 4), "ZYX", {"unit": "mm"}) == ("mm", "mm", "mm")
    assert units((2, 3, 4, 5), "CZYX", {"unit": "um"}) == ("pixel", "um", "um", "um")
    assert units((3, 4, 3), "YXC", {"unit": "um", "rgb": True}) == ("um", "um")  # the colour axis is none
    assert units((2, 3, 4), "ZYX", {}) is None and units((2, 3, 4), "ZYX", {"unit": "parsec"}) is None


def test_unnamed_axes_get_no_axis_labels() -> None:
    vol = Volume(np.zeros((3, 4, 5)), (1.0,) * 3, (0.0,) * 3, axes="QYX")
    _, kwargs, _ = volume_to_layer_data(vol)
    assert "axis_labels" not in kwargs and kwargs["metadata"]["axes"] == "QYX"


def test_result_of_a_multichannel_source_drops_the_channel_axis() -> None:
    spatial = spatial_meta((1.0, 2.0, 0.5, 0.25), (0.0, 1.0, 2.0, 3.0), None)
    labels = np.zeros((3, 4, 5), np.uint8)
    _, kwargs, _ = result_layer_data(labels, "cells", "prediction", spatial, "labels", "CZYX")
    assert kwargs["scale"] == (2.0, 0.5, 0.25) and kwargs["translate"] == (1.0, 2.0, 3.0)
    assert kwargs["axis_labels"] == ("z", "y", "x")
    probs = np.zeros((2, 3, 4, 5), np.float16)
    _, kwargs, _ = result_layer_data(probs, "cells", "probabilities", spatial, "image", "TZYX")
    assert kwargs["scale"] == (1.0, 2.0, 0.5, 0.25)


def test_a_result_of_unnamed_axes_keeps_each_axis_own_voxel_size_and_origin() -> None:
    """Trial 21: the two unnamed axes of a (Q, Q, Y, X) layer were matched by letter, so the
    first took the second's scale and origin: the prediction of frames at t = 100-106 lay at 0-4."""
    spatial = spatial_meta((3.0, 2.0, 1.0, 1.0), (100.0, 0.0, 0.0, 0.0), None)
    _, kwargs, _ = result_layer_data(np.zeros((3, 4, 5, 6), np.uint8), "m", "prediction", spatial, "labels", "QQYX")
    assert kwargs["scale"] == (3.0, 2.0, 1.0, 1.0) and kwargs["translate"] == (100.0, 0.0, 0.0, 0.0)
    _, kwargs, _ = result_layer_data(np.zeros((2, 3, 4, 5, 6), np.float16), "m", "probabilities", spatial, "image",
                                     "QQYX")
    assert kwargs["scale"] == (1.0, 3.0, 2.0, 1.0, 1.0) and kwargs["translate"] == (0.0, 100.0, 0.0, 0.0, 0.0)


def test_an_image_result_is_laid_out_like_its_source() -> None:
    from napari_medml.result_layers import source_shaped_result

    rgb = np.array([[[-3.4, 120.6, 300.2]]])  # a reconstruction of a uint8 RGB image
    data, look = source_shaped_result(rgb, "YXC", rgb=True, dtype=np.uint8)
    assert look == {"rgb": True} and data.dtype == np.uint8 and data.tolist() == [[[0, 121, 255]]]
    multi = np.zeros((4, 5, 2), np.float32)  # channels last in the source: in front for a result layer
    data, look = source_shaped_result(multi, "YXC")
    assert data.shape == (2, 4, 5) and look == {"colormap": "gray"}
    data, _ = source_shaped_result(np.zeros((3, 4, 5)), "ZYX")
    assert data.shape == (3, 4, 5)


def test_a_time_series_with_channels_becomes_one_volume_per_channel() -> None:
    import dask.array as da

    from napari_medml.layer_data import channel_volumes

    data = np.arange(3 * 2 * 4 * 5 * 6, dtype=np.float32).reshape(3, 2, 4, 5, 6)
    vol = Volume(da.from_array(data, chunks=(1, 1, 4, 5, 6)), (5.0, 1.0, 2.0, 0.5, 0.5), (0.0, 0.0, 1.0, 2.0, 3.0),
                 name="movie", axes="TCZYX", meta={"unit": "um", "singletons": [[2, "Z"]]})
    parts = channel_volumes(vol)
    assert [p.name for p in parts] == ["movie [ch0]", "movie [ch1]"]
    for k, part in enumerate(parts):
        assert part.axes == "TZYX" and part.spacing == (5.0, 2.0, 0.5, 0.5) and part.origin == (0.0, 1.0, 2.0, 3.0)
        assert isinstance(part.data, da.Array)  # lazy stays lazy
        np.testing.assert_array_equal(np.asarray(part.data), data[:, k])
        assert part.meta == {"unit": "um", "channel": k}  # the file's dropped singletons are not a channel's
    czyx = Volume(data[0], (1.0, 2.0, 0.5, 0.5), (0.0,) * 4, name="cells", axes="CZYX")
    assert channel_volumes(czyx) == [czyx]  # results (Z, Y, X) line up with its last axes
    rgb = Volume(np.zeros((3, 8, 8, 3), np.uint8), (1.0, 1.0, 1.0), (0.0,) * 3, axes="TYXC", meta={"rgb": True})
    assert channel_volumes(rgb) == [rgb]


def test_a_grid_cut_from_an_oblique_one_keeps_its_world_place_through_a_layer() -> None:
    """Trial 40: a crop of an oblique volume lies in napari's axis-aligned view at its source's
    origin plus the cut; its affine holds at that view origin (io.regrid), through a layer and
    back, and a move in the view moves it along the turned voxel axes."""
    from napari_medml.config import PreprocessStep
    from napari_medml.io.regrid import AFFINE_ORIGIN
    from napari_medml.preprocessing.stacks import run_recipe_volume

    turn = np.deg2rad(30.0)
    affine = np.eye(4)
    affine[:2, :2] = [[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]]
    affine[:3, :3] = affine[:3, :3] @ np.diag([0.5, 0.8, 2.0])
    affine[:3, 3] = (10.0, -4.0, 3.0)
    data = np.zeros((10, 20, 30), np.float32)  # (Z, Y, X)
    data[3:7, 5:12, 8:20] = 1.0
    source = Volume(data, (2.0, 0.8, 0.5), (3.0, -4.0, 10.0), affine, False, "ct", {"sform_code": 1}, "ZYX")
    cut = run_recipe_volume(source, (PreprocessStep("crop", {"threshold": 0.5, "margin": 0}),))
    assert cut.data.shape == (4, 7, 12) and cut.origin == (3.0 + 3 * 2.0, -4.0 + 5 * 0.8, 10.0 + 8 * 0.5)
    want = affine @ np.array([[1, 0, 0, 8], [0, 1, 0, 5], [0, 0, 1, 3], [0, 0, 0, 1]], float)  # voxel (8, 5, 3)
    np.testing.assert_allclose(cut.affine, want)
    assert cut.meta[AFFINE_ORIGIN] == pytest.approx([14.0, 0.0, 9.0]) and cut.meta["sform_code"] == 1
    data_, kwargs, _ = volume_to_layer_data(cut)
    back = layer_to_volume(data_, kwargs, is_labels=False)
    np.testing.assert_allclose(back.affine, want)
    # moved one voxel along the view's x: one voxel along the turned x axis in the world
    moved = spatial_meta(np.asarray(kwargs["scale"]), np.asarray(kwargs["translate"]) + (0.0, 0.0, 0.5),
                         kwargs["metadata"])
    np.testing.assert_allclose(moved.affine[:3, 3], want[:3, 3] + affine[:3, 0])
    np.testing.assert_allclose(moved.file_meta[AFFINE_ORIGIN], [14.5, 0.0, 9.0])
