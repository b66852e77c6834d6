"""Lengths in other units: an image is predicted in its model's unit and written in its own."""

from __future__ import annotations

import numpy as np

from napari_medml.io.spacing import unit_note
from napari_medml.io.units import UNIT_AS_READ, as_read, in_model_unit
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
