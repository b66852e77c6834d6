"""Files whose shape differs from another's only by length-1 axes (a NIfTI saved from ``a[None]``)."""

from __future__ import annotations

import numpy as np

from napari_medml.io.volume import Volume

__all__ = ["fit_length1_axes"]


def fit_length1_axes(vol: Volume, shape: tuple[int, ...], name: str) -> tuple[Volume, str | None]:
    """A volume whose shape differs from ``shape`` only by length-1 axes, reshaped to it.

    NIfTI names its axes by position (X, Y, Z, T), so an array saved with an extra leading axis
    (``(1, X, Y, Z)``, numpy's ``a[None]``) reads as X of length 1 and the rest shifted: its
    header's grid no longer describes the voxels. The data are kept in order with the length-1
    axes dropped; the grid is left to the reference (no spacing, origin or affine here, so
    :func:`~napari_medml.io.geometry.align_to` takes the other file's and says so).

    Parameters
    ----------
    vol : Volume
    shape : tuple of int
        The shape to fit (the image's without channels, or the other file's).
    name : str
        For the note.

    Returns
    -------
    (Volume, str or None)
        The volume unchanged and None when the shapes already agree or differ otherwise.
    """
    if tuple(vol.data.shape) == tuple(shape) or (
            tuple(n for n in vol.data.shape if n != 1) != tuple(n for n in shape if n != 1)):
        return vol, None
    data = np.asarray(vol.data).reshape(shape)
    meta = {k: v for k, v in vol.meta.items() if k == "unit"}
    note = (f"warning: {name} is stored with shape {tuple(vol.data.shape)}: read as {tuple(shape)}, its extra "
            "length-1 axes dropped (its header's grid no longer fits those voxels); save it without the extra axis")
    return Volume(data, (1.0,) * len(shape), (0.0,) * len(shape), None, vol.is_labels, vol.name, meta), note
