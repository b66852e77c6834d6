"""npe2 writers: save an Image or Labels layer as NIfTI or TIFF (thin over ``io``).

The layer's ``scale``/``translate`` and the affine in its ``metadata`` decide the
file's spacing, origin and affine (rule in :mod:`napari_medml.layer_data`), so a
layer opened from a file and saved again keeps its header. A NIfTI file that the reader
put in RAS+ voxel order goes back to its own stored order when saved as NIfTI again, so
saving what was read writes the same array and affine.
"""

from __future__ import annotations

from typing import Any

from napari_medml.io import Volume, file_format, write_volume
from napari_medml.layer_data import layer_to_volume

__all__ = ["write_image", "write_labels"]


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write an Image layer (npe2 single-layer writer).

    Parameters
    ----------
    path : str
        Target ``.nii.gz``, ``.nii``, ``.tif``, ``.tiff`` or ``.npy`` file (or a ``.zarr`` folder).
    data : array-like
        The layer data.
    meta : dict
        The layer's attributes (``name``, ``scale``, ``translate``, ``metadata``).

    Returns
    -------
    list of str
        The path written.
    """
    return [str(write_volume(path, _volume(path, data, meta, is_labels=False)))]


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer (npe2 single-layer writer); NIfTI marks it as labels.

    Parameters
    ----------
    path : str
        Target ``.nii.gz``, ``.nii``, ``.tif``, ``.tiff`` or ``.npy`` file (or a ``.zarr`` folder).
    data : array-like
        The label ids.
    meta : dict
        The layer's attributes (``name``, ``scale``, ``translate``, ``metadata``).

    Returns
    -------
    list of str
        The path written.
    """
    return [str(write_volume(path, _volume(path, data, meta, is_labels=True)))]


def _volume(path: str, data: Any, meta: dict[str, Any], is_labels: bool) -> Volume:
    """The layer as a Volume; for a NIfTI target, in the orientation its file was stored in."""
    volume = layer_to_volume(data, meta, is_labels=is_labels)
    if file_format(path) != "nifti":
        return volume
    from napari_medml.io.orientation import to_stored

    return to_stored(volume)
