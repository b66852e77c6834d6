"""Lengths in other units: an image is predicted in its model's unit and written in its own."""

from __future__ import annotations

import numpy as np

from napari_medml.io.spacing import unit_note
from napari_medml.io.units import UNIT_AS_READ, as_read, in_model_unit, in_unit, trained_unit
from napari_medml.io.volume import Volume


def _volume(unit: str | None) -> Volume:
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    affine[:3, 3] = (1.0, 2.0, 3.0)
    return Volume(np.zeros((3, 4, 8, 8), np.float32), (5.0, 2.0, 0.5, 0.5), (0.0, 3.0, 2.0, 1.0), affine, False,
                  "img", {} if unit is None else {"unit": unit}, "TZYX")


def test_in_model_unit_converts_the_spatial_axes_only_and_as_read_undoes_it():
    vol = _volume("mm")
    converted, factor = in_model_unit(vol, "um")
    assert np.isclose(factor, 1000.0) and converted.meta["unit"] == "um" and converted.meta[UNIT_AS_READ] == "mm"
    np.testing.assert_allclose(converted.spacing, (5.0, 2000.0, 500.0, 500.0))  # the frame interval (T) stays
    np.testing.assert_allclose(converted.origin, (0.0, 3000.0, 2000.0, 1000.0))
    np.testing.assert_allclose(converted.affine[:3, :3], np.diag([500.0, 500.0, 2000.0]))
    np.testing.assert_allclose(converted.affine[:3, 3], (1000.0, 2000.0, 3000.0))
    back = as_read(converted)
    assert back.meta == vol.meta and np.allclose(back.spacing, vol.spacing) and np.allclose(back.origin, vol.origin)
    np.testing.assert_allclose(back.affine, vol.affine)
    for unit, trained in (("um", "um"), (None, "um"), ("mm", None), ("pixel", "um")):  # nothing to convert
        same = _volume(unit)
        assert in_model_unit(same, trained) == (same, 1.0) and as_read(same) is same


def test_the_unit_note_gives_the_voxel_size_in_the_models_unit():
    assert unit_note("mm", "um", (2.0, 0.5), "image 'a.nii.gz'") == (
        "image 'a.nii.gz' names its voxel size in mm (2 x 0.5 mm) and the model's training images in um: it is "
        "predicted at 2000 x 500 um, and its outputs are written in mm (if the file's unit is wrong, fix its header)")
    assert unit_note("um", "um", (1.0,), "x") is None and unit_note(None, "um", (1.0,), "x") is None
    assert unit_note("mm", None, (1.0,), "x") is None


def test_a_voxel_size_a_thousand_times_off_hints_at_a_unit_even_for_a_model_that_resamples():
    """Review 52: a bundle with no recorded unit that resamples took an image in mm as um without a word."""
    from napari_medml.config import PreprocessStep
    from napari_medml.io.spacing import spacing_note

    recipe = (PreprocessStep("resample", {"target_spacing": (2.0, 0.76, 0.76)}),)
    line = spacing_note((0.002, 0.0005, 0.0005), (2.0, 0.76, 0.76), "image 'q.tif'", recipe=recipe)
    assert line.startswith("warning: image 'q.tif' has voxel size 0.002 x 0.0005 x 0.0005, about 1000 times smaller "
                           "than the model's training voxel size 2 x 0.76 x 0.76: if its file names another length "
                           "unit than the training images did (mm for um), fix its header"), line
    assert "1e+06 times larger" in spacing_note((2000.0, 500.0), (0.002, 0.0005), "x")
    assert spacing_note((1.0, 0.5, 0.5), (2.0, 0.76, 0.76), "x", recipe=recipe) is None  # resampled: nothing to say
    assert spacing_note((2.0, 0.0005, 0.0005), (2.0, 0.5, 0.5), "x").startswith("warning: x has voxel size 2 x")


def test_a_unit_round_trip_writes_the_same_numbers_without_float_noise():
    """Note 50: 2 µm in mm was 0.0020000000000000005, and went into the scales written."""
    vol = Volume(np.zeros((4, 4, 4), np.float32), (2.0, 0.3, 0.7), (0.1, 0.0, 3.3), np.diag([0.7, 0.3, 2.0, 1.0]),
                 False, "img", {"unit": "um"}, "ZYX")
    mm = in_unit(vol, "mm", (0, 1, 2))
    assert mm.spacing == (0.002, 0.0003, 0.0007) and mm.origin == (0.0001, 0.0, 0.0033)  # exactly, not approximately
    assert mm.affine[0, 0] == 0.0007 and mm.affine[2, 2] == 0.002
    back = in_unit(mm, "um", (0, 1, 2))
    assert back.spacing == vol.spacing and back.origin == vol.origin and np.array_equal(back.affine, vol.affine)


def test_trained_unit_reads_the_models_provenance():
    class Model:
        provenance = {"unit": "um"}

    assert trained_unit(Model()) == "um" and trained_unit(object()) is None
    Model.provenance = None
    assert trained_unit(Model()) is None


def test_an_unnamed_axis_a_3d_network_takes_as_z_is_a_length_both_ways():
    """Review 53: a layer with napari's default axis labels (QYX) in mm was predicted with Q in µm,
    and its stores kept Q there (2.0 where 0.002 was wanted)."""
    vol = Volume(np.zeros((4, 4, 4), np.float32), (0.002, 0.001, 0.001), (0.5, 1.0, 2.0), None, False, "img",
                 {"unit": "mm"}, "QYX")
    converted, _ = in_model_unit(vol, "um")
    assert converted.spacing == (2.0, 1.0, 1.0) and converted.origin == (500.0, 1000.0, 2000.0)
    back = as_read(converted)
    assert back.spacing == vol.spacing and back.origin == vol.origin and back.meta["unit"] == "mm"


def test_the_unit_note_of_a_layer_names_its_units_not_a_header():
    line = unit_note("mm", "um", (0.5, 0.5), "layer 'cells'")
    assert line.endswith("(if the layer's unit is wrong, set its units)")
