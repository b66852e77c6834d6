"""Layers in, layers out: the widgets' thin bridge to :mod:`napari_medml.layer_data`.

Reading copies nothing but what napari holds; adding a result never overwrites a
user's layer: a re-run replaces only a layer this plugin made (its metadata carries
the plugin's mark), and a user layer that already has the name keeps it while the
result gets a free name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

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

__all__ = ["RECIPE_KEY", "SOURCE_KEY", "ModelInput", "free_name", "image_array", "labels_array",
           "layer_recipe", "layer_spatial", "layer_volume", "model_input", "raw_layer", "require",
           "show_result"]


def require(layer: Any, kind: type, what: str) -> Any:
    """The layer, or an InputError saying which kind of layer to choose."""
    if layer is None or not isinstance(layer, kind):
        raise InputError(f"choose {what} ({kind.__name__} layer) first")
    return layer


def _kwargs(layer: napari.layers.Layer) -> dict[str, Any]:
    return {"name": layer.name, "scale": tuple(layer.scale), "translate": tuple(layer.translate),
            "metadata": layer.metadata, "rgb": getattr(layer, "rgb", False),
            "axis_labels": getattr(layer, "axis_labels", None)}


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
    """A copy of the labels data, so painting during a job cannot change what it reads (lazy
    dask/zarr labels, which napari does not paint, stay lazy)."""
    data = layer_volume(layer).data
    return data if not isinstance(data, np.ndarray) else np.array(data, copy=True)


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
    # Walk "name", "name (2)", ... past the user's layers: the first plugin-made layer on
    # the way is replaced (so a re-run next to a user's "ct [prediction]" replaces its own
    # "ct [prediction] (2)"), else the first free name is taken.
    candidate, k = name, 1
    while candidate in viewer.layers:
        old = viewer.layers[candidate]
        if is_generated(old.metadata):
            index = viewer.layers.index(old)
            viewer.layers.remove(old)
            break
        k += 1
        candidate = f"{name} ({k})"
    kwargs["name"] = candidate
    layer = napari.layers.Layer.create(data, kwargs, layer_type)
    viewer.layers.insert(index, layer)
    return layer


# --- preprocessing chains -------------------------------------------------------------
# A preprocess result layer keeps its recipe (list of PreprocessStep dicts) and the name
# of the raw layer it came from. Models re-apply recipes to raw images (``fit`` and
# ``Model.predict`` both do), so train and predict feed the raw layer plus the recipe.
RECIPE_KEY = "preprocessing"
SOURCE_KEY = "preprocess_source"


def layer_recipe(layer: napari.layers.Layer) -> tuple[Any, ...]:
    """The PreprocessSteps that made ``layer`` from its raw source (empty for raw layers)."""
    from napari_medml.config import PreprocessStep, from_dict

    return tuple(from_dict(PreprocessStep, d) for d in layer.metadata.get(RECIPE_KEY) or ())


def raw_layer(viewer: napari.Viewer, layer: napari.layers.Layer) -> napari.layers.Layer:
    """The raw layer a preprocess result was made from (the layer itself when raw)."""
    if not layer.metadata.get(RECIPE_KEY):
        return layer
    source = layer.metadata.get(SOURCE_KEY)
    if source not in viewer.layers:
        raise InputError(
            f"image '{layer.name}' was preprocessed from '{source}', which is no longer open: "
            f"open '{source}' again, or choose an image without preprocessing")
    return viewer.layers[source]


class ModelInput(NamedTuple):
    """Raw image data for train/predict: channels stacked at axis 0 when several layers."""

    image: np.ndarray
    spacing: tuple[float, ...]  # of the axes other than channels and time
    channel_axis: int | None
    recipe: tuple[Any, ...]
    layer: napari.layers.Layer  # the (first) raw layer: results lie where it lies
    axes: str = ""  # what each axis of ``image`` is (Volume.axes; Q: resolved by the model)

    def samples(self, labels: Any, spatial_dims: int) -> tuple[list, list, list, int | None]:
        """Images, labels, spacings and channel axis of the training samples (frames of a
        time series; slices of a volume under a 2D network); see ``io_axes.split_samples``."""
        from napari_medml.io.axes import AXES_HINT, split_samples

        return split_samples(self.image, labels, self.axes, spatial_dims, self.spacing,
                             what=f"image '{self.layer.name}'", hint=AXES_HINT)  # fmt: skip


def model_input(viewer: napari.Viewer, layers: Sequence[napari.layers.Layer]) -> ModelInput:
    """Resolve chosen image layers to raw data, spacing, axes and the shared recipe.

    A layer's own channel axis (``axis_labels`` "c", or RGB) gives the channels; several
    single-channel layers are stacked as channels in front.
    """
    layers = [require(layer, napari.layers.Image, "an image") for layer in layers or [None]]
    recipes = {layer_recipe(layer) for layer in layers}
    if len(recipes) > 1:
        raise InputError("the chosen images have different preprocessing recipes: "
                         "preprocess every channel the same way")
    raws = [raw_layer(viewer, layer) for layer in layers]
    volumes = [layer_volume(raw) for raw in raws]
    shapes = {v.data.shape for v in volumes}
    if len(shapes) > 1:
        detail = ", ".join(f"'{r.name}' {v.data.shape}" for r, v in zip(raws, volumes))
        raise InputError(f"channel images must have the same shape, got {detail}: "
                         "choose co-registered images")
    first = volumes[0]
    body = first.axes[: len(first.spacing)]  # an RGB colour axis has no spacing
    spacing = tuple(s for a, s in zip(body, first.spacing) if a not in "CT")
    if len(volumes) == 1:
        return ModelInput(first.data, spacing, first.channel_axis, recipes.pop(), raws[0], first.axes)
    if any("C" in v.axes for v in volumes):
        named = ", ".join(f"'{r.name}'" for r, v in zip(raws, volumes) if "C" in v.axes)
        raise InputError(f"{named} already hold channels: choose one multichannel image, "
                         "or several single-channel images")
    if all(isinstance(v.data, np.ndarray) for v in volumes):
        stacked = np.stack([v.data for v in volumes])
    else:  # lazy layers stay lazy
        import dask.array as da

        stacked = da.stack([da.asarray(v.data) for v in volumes])
    return ModelInput(stacked, spacing, 0, recipes.pop(), raws[0], "C" + first.axes)
