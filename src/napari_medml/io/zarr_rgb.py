"""An RGB(A) image in OME-Zarr, which has no colour axis at the end: :mod:`.zarr` writes the
colours as channels in front of the spatial axes and marks the store, and puts them last
again when it reads a store it marked (other readers see channels)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from napari_medml.io.volume import Volume

__all__ = ["RGB_AS_CHANNELS", "channels_to_rgb", "rgb_to_channels"]

RGB_AS_CHANNELS = "rgb_as_channels"  # file detail: an RGB(A) image stored with its colours as channels


def rgb_to_channels(volume: Volume) -> tuple[Any, str, tuple[float, ...], tuple[float, ...]]:
    """``(data, axes, spacing, origin)`` of an RGB volume (colour last) with the colours as a
    ``C`` axis in front of ``ZYX``/``YX`` (lazy: a dask array); spacing 1 and origin 0 there."""
    import dask.array as da

    body = volume.axes[:-1]
    data = da.moveaxis(da.asarray(volume.data), -1, -4 if "Z" in body else -3)
    axes = body[:-3] + "C" + body[-3:] if "Z" in body else body[:-2] + "C" + body[-2:]
    at = axes.index("C")
    spacing, origin = tuple(volume.spacing), tuple(volume.origin)
    return data, axes, spacing[:at] + (1.0,) + spacing[at:], origin[:at] + (0.0,) + origin[at:]


def channels_to_rgb(volume: Volume) -> Volume:
    """A volume :func:`rgb_to_channels` stored, colours last again (3 or 4 channels; others as given)."""
    import dask.array as da

    c = volume.axes.index("C")
    if volume.data.shape[c] not in (3, 4):
        return volume
    keep = [i for i in range(len(volume.axes)) if i != c]
    return replace(volume, data=da.moveaxis(da.asarray(volume.data), c, -1),
                   spacing=tuple(volume.spacing[i] for i in keep), origin=tuple(volume.origin[i] for i in keep),
                   axes=volume.axes.replace("C", "") + "C",
                   meta={**{k: v for k, v in volume.meta.items() if k != RGB_AS_CHANNELS}, "rgb": True})
