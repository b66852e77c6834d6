"""npe2 reader: NIfTI, TIFF and NumPy files, and Zarr/OME-Zarr folders (lazily, every
resolution level), as napari layers (thin over ``io``).

Integer files whose name contains seg, label, mask or scribble open as Labels layers;
spacing becomes ``scale``, origin ``translate`` and the NIfTI affine rides in
``metadata`` (see :mod:`napari_medml.layer_data`).

A NIfTI volume opens in RAS+ voxel order (:func:`napari_medml.io.orientation.to_canonical`,
flips and axis swaps only): napari places a layer by scale and translate alone, so an
image stored LAS or LPS and its labels stored RAS would otherwise lie mirrored on one
another, and labels painted on the image and saved would be mirrored in world space. A NIfTI
whose sform and qform codes are 0 has no orientation (no affine): it opens as stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_medml.errors import InputError
from napari_medml.io import Volume, file_format, read_volume
from napari_medml.io.zarr import is_zarr_path
from napari_medml.layer_data import LayerDataTuple, channel_volumes, volume_to_layer_data

__all__ = ["get_reader", "read_layers"]

PathOrPaths = str | Path | Sequence[str | Path]


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerDataTuple]] | None:
    """Return a reader for ``path`` (or a list of paths), or None if one is unsupported.

    Parameters
    ----------
    path : str, Path or list of them
        What napari asks to open.

    Returns
    -------
    callable or None
        :func:`read_layers` when every path has a supported extension.
    """
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths:
        return None
    try:
        for p in paths:
            file_format(p)
    except InputError:  # not ours: let napari try another reader
        return None
    return read_layers


def read_layers(path: PathOrPaths) -> list[LayerDataTuple]:
    """Read one or several files into napari LayerDataTuples, one layer per file (a time
    series with channels, one per channel: :func:`napari_medml.layer_data.channel_volumes`).

    Raises
    ------
    InputError
        If a file is missing or unreadable (napari shows the message).
    """
    paths = [path] if isinstance(path, str | Path) else list(path)
    layers = []
    for p in paths:
        if is_zarr_path(p):
            layers += _zarr_layers(p)
        else:
            layers += [volume_to_layer_data(v) for v in channel_volumes(_file_volume(p))]
    return [_with_value_range(layer) for layer in layers]


def _with_value_range(layer: LayerDataTuple) -> LayerDataTuple:
    """A lazily read image layer with its contrast limits: napari's own guess for a lazy (dask)
    layer with a translate came out (0, 1) (napari 0.5-0.9), a white picture of a scan whose values
    run from 112 to 347 (trial 42: a large NIfTI, a single-level OME-Zarr, a large TIFF with an origin)."""
    data, kwargs, layer_type = layer
    if layer_type != "image" or kwargs.get("rgb") or "contrast_limits" in kwargs or isinstance(data, np.ndarray):
        return layer
    coarsest = data[-1] if isinstance(data, (list, tuple)) else data
    return data, {**kwargs, "contrast_limits": _value_range(coarsest)}, layer_type


OBLIQUE_DEGREES = 1.0  # a turn under this is rounding in the scanner's header, not an oblique slab


def _file_volume(path: str | Path) -> Volume:
    """A file as a Volume; a NIfTI volume in RAS+ voxel order (see the module docstring)."""
    volume = read_volume(path)
    if not volume.is_labels:
        from napari_medml.io.volume import label_name_note

        note = label_name_note(path, volume.data)
        if note:  # a notification, as the oblique line's
            from napari.utils.notifications import show_warning

            show_warning(note)
    if file_format(path) != "nifti":
        return volume
    from napari_medml.io.orientation import to_canonical

    _warn_oblique(path, volume)
    return to_canonical(volume)


def _warn_oblique(path: str | Path, volume: Volume) -> None:
    """Say (napari shows a warning) when a NIfTI grid is turned against the world's axes:
    napari places a layer by scale and translate, so it is shown axis-aligned."""
    if volume.affine is None or np.asarray(volume.affine).shape != (4, 4):
        return
    from nibabel.affines import obliquity  # each voxel axis's angle to its closest world axis

    turn = float(np.rad2deg(np.max(np.abs(obliquity(np.asarray(volume.affine, float))))))
    if turn >= OBLIQUE_DEGREES:  # a notification, as the writer's (a warning may be recorded and dropped)
        from napari.utils.notifications import show_warning

        show_warning(f"'{path}' is oblique (its voxel axes are turned up to {turn:.0f} degrees from the world's): "
                     "napari shows it axis-aligned, so world positions in the viewer ignore that turn; saving "
                     "with MedML (NIfTI) writes the affine back as it was, for it and for what is made on it")


def _zarr_layers(path: str | Path) -> list[LayerDataTuple]:
    """A Zarr/OME-Zarr image as lazily loaded layers: every resolution level (a multiscale
    layer when there are several), placed by the finest level's spacing and origin; a time
    series with channels as one layer per channel, as a TIFF's (``layer_data.channel_volumes``)."""
    from napari_medml.io.zarr import read_levels, read_zarr

    levels, _, _ = read_levels(path)
    volume = read_zarr(path)
    parts = channel_volumes(volume)
    c = volume.axes.find("C")
    coarser = [read_zarr(path, k).data for k in range(1, len(levels))]
    layers = []
    for k, part in enumerate(parts):
        data, kwargs, layer_type = volume_to_layer_data(part)
        if coarser:  # its contrast limits: the coarsest level's range (read_layers)
            data = [data] + [level if len(parts) == 1 else level[(slice(None),) * c + (k,)] for level in coarser]
            kwargs["multiscale"] = True
        layers.append((data, kwargs, layer_type))
    return layers


def _value_range(level: Any, planes: int = 16, values: int = 2**20) -> tuple[float, float]:
    """Min and max of a (lazy) array from about ``planes`` evenly spaced planes (its last two
    axes), each read on a grid of at most about ``values`` values: a lazy file is read plane by
    plane, so opening a 1.4 GB scan reads some 16 planes, not a quarter of it."""
    import math

    shape = level.shape
    lead, plane = shape[:-2], shape[-2:]
    # planes shared out over the leading axes, the shortest first: a short axis (2 frames, 3
    # channels) is read whole and the long one strided (one stride for all read frame 0 alone)
    steps = [1] * len(lead)
    budget = float(planes)
    for done, axis in enumerate(sorted(range(len(lead)), key=lambda a: lead[a])):
        take = max(1, min(lead[axis], round(budget ** (1 / (len(lead) - done)))))
        steps[axis] = max(1, math.ceil(lead[axis] / take))
        budget = max(1.0, budget / take)
    plane_step = max(1, math.ceil(math.sqrt(math.prod(plane) / values))) if plane else 1
    index = tuple(slice(None, None, step) for step in steps) + (slice(None, None, plane_step),) * len(plane)
    sample = np.asarray(level[index], dtype=np.float64)
    sample = sample[np.isfinite(sample)]
    low, high = (float(sample.min()), float(sample.max())) if sample.size else (0.0, 1.0)
    return (low, high) if high > low else (low, low + 1.0)
