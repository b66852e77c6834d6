"""Which written outputs lose a NIfTI image's orientation (io.orientation.stored_order_note)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def test_the_stored_order_note_names_only_outputs_napari_would_show_flipped():
    """Review 24: tables among the written files raised (every classify and instances predict
    failed), and a 2D NIfTI, which napari shows as stored, was said to be flipped."""
    from napari_medml.io import Volume
    from napari_medml.io.orientation import stored_order_note

    lps = np.diag([-1.0, -1.0, 2.0, 1.0])
    volume = Volume(np.zeros((4, 6, 8), np.float32), (2.0, 1.0, 1.0), (0.0, 0.0, 0.0), lps, False, "scan", {}, "ZYX")
    note = stored_order_note(volume, [Path("p.tif"), Path("p.csv"), Path("p.nii.gz")])
    assert note is not None and note.startswith("p.tif: the voxels are in the order 'scan' stores them (LPS)")
    assert stored_order_note(volume, [Path("p.nii.gz"), Path("p.csv")]) is None
    flat = Volume(np.zeros((6, 8), np.float32), (1.0, 1.0), (0.0, 0.0), lps, False, "slice", {}, "YX")
    assert stored_order_note(flat, [Path("p.tif")]) is None
    ras = Volume(volume.data, volume.spacing, volume.origin, np.diag([1.0, 1.0, 2.0, 1.0]), False, "s", {}, "ZYX")
    assert stored_order_note(ras, [Path("p.npy")]) is None
    assert stored_order_note(Volume(volume.data, volume.spacing, volume.origin, None, False, "s", {}, "ZYX"),
                             [Path("p.tif")]) is None
