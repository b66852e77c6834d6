"""npe2 writers: save an Image or Labels layer as NIfTI or TIFF (thin over ``io``).

The layer's ``scale``/``translate`` and the affine in its ``metadata`` decide the
file's spacing, origin and affine (rule in :mod:`napari_medml.layer_data`), so a
layer opened from a file and saved again keeps its header. A NIfTI file that the reader
put in RAS+ voxel order goes back to its own stored order when saved as NIfTI again, so
saving what was read writes the same array and affine.
"""

from __future__ import annotations

from typing import Any

from napari_medml.errors import MedMLError
from napari_medml.io import Volume, file_format, write_volume
from napari_medml.layer_data import layer_to_volume

__all__ = ["LayerNotWritten", "write_image", "write_labels"]


class LayerNotWritten(OSError):
    """A layer the writer refused (an RGB image to NIfTI, a folder that does not exist), with
    the core's one-line reason. Not a ValueError: napari's writer lookup (npe2
    ``write_get_writer`` inside ``napari.plugins._npe2.write_layers``) drops ValueErrors and
    tells the user only that no writer was found."""


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

    Raises
    ------
    LayerNotWritten
        The layer cannot be written there (the reason, and the fix, in one line).
    """
    return _write(path, data, meta, is_labels=False)


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

    Raises
    ------
    LayerNotWritten
        The layer cannot be written there (the reason, and the fix, in one line).
    """
    return _write(path, data, meta, is_labels=True)


def _write(path: str, data: Any, meta: dict[str, Any], is_labels: bool) -> list[str]:
    try:
        return [str(write_volume(path, _volume(path, data, meta, is_labels=is_labels)))]
    except MedMLError as exc:
        raise LayerNotWritten(f"'{meta.get('name', 'layer')}' was not saved: {exc}") from None


def _volume(path: str, data: Any, meta: dict[str, Any], is_labels: bool) -> Volume:
    """The layer as a Volume; for a NIfTI target, in the orientation its file was stored in."""
    volume = layer_to_volume(data, meta, is_labels=is_labels)
    if file_format(path) != "nifti":
        return volume
    from napari_medml.io.orientation import to_stored

    return to_stored(volume)
