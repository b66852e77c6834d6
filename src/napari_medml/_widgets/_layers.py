"""Layers in, layers out: the widgets' thin bridge to :mod:`napari_medml.layer_data`.

Reading copies nothing but what napari holds; adding a result never overwrites a
user's layer: a re-run replaces only a layer this plugin made (its metadata carries
the plugin's mark), and a user layer that already has the name keeps it while the
result gets a free name.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np

from napari_medml.errors import InputError
from napari_medml.io import Volume
from napari_medml.layer_data import (
    LayerDataTuple,
    SpatialMeta,
    is_generated,
    layer_to_volume,
    spatial_meta,
)

__all__ = ["free_name", "image_array", "labels_array", "layer_spatial", "layer_volume",
           "require", "show_result"]


def require(layer: Any, kind: type, what: str) -> Any:
    """The layer, or an InputError saying which kind of layer to choose."""
    if layer is None or not isinstance(layer, kind):
        raise InputError(f"choose {what} ({kind.__name__} layer) first")
    return layer


def _kwargs(layer: napari.layers.Layer) -> dict[str, Any]:
    return {"name": layer.name, "scale": tuple(layer.scale), "translate": tuple(layer.translate),
            "metadata": layer.metadata, "rgb": getattr(layer, "rgb", False)}


def layer_volume(layer: napari.layers.Layer) -> Volume:
    """The layer as a core Volume (array, spacing, origin, affine)."""
    return layer_to_volume(layer.data, _kwargs(layer), isinstance(layer, napari.layers.Labels))


def layer_spatial(layer: napari.layers.Layer) -> SpatialMeta:
    """Spacing, origin and affine of a layer."""
    return spatial_meta(layer.scale, layer.translate, layer.metadata)


def image_array(layer: napari.layers.Image) -> tuple[np.ndarray, tuple[float, ...]]:
    """The image data (full resolution) and its spacing."""
    volume = layer_volume(layer)
    return volume.data, tuple(volume.spacing)


def labels_array(layer: napari.layers.Labels) -> np.ndarray:
    """A copy of the labels data, so painting during a job cannot change what it reads."""
    return np.array(layer_volume(layer).data, copy=True)


def free_name(viewer: napari.Viewer, name: str) -> str:
    """``name``, or ``name (2)``, ``name (3)``... whichever no layer uses."""
    candidate, k = name, 1
    while candidate in viewer.layers:
        k += 1
        candidate = f"{name} ({k})"
    return candidate


def show_result(viewer: napari.Viewer, layer_data: LayerDataTuple) -> napari.layers.Layer:
    """Add a result layer; replace the plugin's own layer of that name, never a user's."""
    data, kwargs, layer_type = layer_data
    kwargs = dict(kwargs)
    name = kwargs["name"]
    index = len(viewer.layers)
    if name in viewer.layers:
        old = viewer.layers[name]
        if is_generated(old.metadata):
            index = viewer.layers.index(old)
            viewer.layers.remove(old)
        else:
            kwargs["name"] = free_name(viewer, name)
    layer = napari.layers.Layer.create(data, kwargs, layer_type)
    viewer.layers.insert(index, layer)
    return layer
