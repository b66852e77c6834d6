"""Layers in, layers out: the widgets' thin bridge to :mod:`napari_medml.layer_data`.

Reading copies nothing but what napari holds; adding a result never overwrites a
user's layer: a re-run replaces only a layer this plugin made (its metadata carries
the plugin's mark; its data is refilled in place when the kind of layer allows, see
:mod:`._refill`), and a user layer that already has the name keeps it while the
result gets a free name. A result Labels layer the user paints in (corrections) loses
the mark at the first stroke: it is the user's from then on, and the next run's result
takes a free name beside it.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple

import napari
import numpy as np

from napari_medml._widgets._proxy import unproxied
from napari_medml._widgets._results import free_name, show_result
from napari_medml.errors import InputError
from napari_medml.io import Volume
from napari_medml.io.memory import MEMORY_ENV, memory_budget, size_text
from napari_medml.layer_data import SpatialMeta, layer_to_volume, spatial_meta

__all__ = ["MEMORY_ENV", "RECIPE_KEY", "SOURCE_ID_KEY", "SOURCE_KEY", "SOURCE_SHAPE_KEY", "ModelInput", "channel_note",
           "check_fits", "follow_dims", "free_name", "image_array", "is_lazy_layer", "labelled_input", "labels_array",
           "layer_recipe", "layer_spatial", "layer_volume", "model_input", "painted_plane", "raw_layer",
           "record_planes", "require", "show_result", "source_metadata"]



def require(layer: Any, kind: type, what: str) -> Any:
    """The layer, or an InputError saying which kind of layer to choose."""
    if layer is None or not isinstance(layer, kind):
        raise InputError(f"choose {what} ({kind.__name__} layer) first")
    return layer


def _kwargs(layer: napari.layers.Layer) -> dict[str, Any]:
    return {"name": layer.name, "scale": tuple(layer.scale), "translate": tuple(layer.translate),
            "metadata": layer.metadata, "rgb": getattr(layer, "rgb", False),
            "axis_labels": getattr(layer, "axis_labels", None), "units": getattr(layer, "units", None)}


def layer_volume(layer: napari.layers.Layer) -> Volume:
    """The layer as a core Volume (array, spacing, origin, affine)."""
    return layer_to_volume(layer.data, _kwargs(layer), isinstance(layer, napari.layers.Labels))


def file_channel_names(inputs: ModelInput) -> tuple[str, ...]:
    """The names the layer's file gave its channels (OME Channel names) when ``inputs`` is one
    layer with a channel axis; () otherwise (layers stacked as channels, or no names)."""
    from napari_medml.io.axes import channel_names_of

    if len(inputs.names) > 1 or inputs.channel_axis is None:
        return ()
    return tuple(channel_names_of(layer_volume(inputs.layer)))


def follow_dims(images: Any, dims: Any) -> Any:
    """Keep a 2D/3D ComboBox ``dims`` possible for the layers chosen in ``images``.

    A 3D network on a 2D layer (an RGB or time-lapse one too) cannot train, so choosing
    one sets 2D; choosing only volumes again puts back the 3D that was switched away
    from. 2D on volumes (slice by slice) is the user's choice and stays. Returns the
    connected callback.
    """
    auto = {"2d": False}

    def update(layers: Any = None) -> None:
        found = {_spatial_dims(layer) for layer in (layers or ())} - {None}
        if 2 in found and dims.value == 3:
            dims.value, auto["2d"] = 2, True
        elif found == {3} and auto["2d"] and dims.value == 2:
            dims.value, auto["2d"] = 3, False

    images.changed.connect(update)
    return update


def _spatial_dims(layer: napari.layers.Layer) -> int | None:
    try:
        axes = layer_volume(layer).axes
    except ValueError:
        return None
    n = sum(a in "ZYX" for a in axes)
    if axes == "QYX":  # a plain 3D array or TIFF: a 3D network trains on it, its first axis as Z
        return 3
    return n if n in (2, 3) and "Q" not in axes else None  # Q: an axis the user must name


def layer_spatial(layer: napari.layers.Layer) -> SpatialMeta:
    """Spacing, origin and affine of a layer."""
    return spatial_meta(layer.scale, layer.translate, layer.metadata)


def placement_miss(labels: napari.layers.Labels, image: napari.layers.Layer) -> str:
    """How ``labels`` lie off ``image`` in the viewer (e.g. ``"scale (2, 1, 1) against (1, 1, 1)"``),
    or "" when they lie on it or have another shape (which a shape check says more clearly)."""
    from napari_medml._widgets._placement import world_mismatch
    from napari_medml.layer_data import placement_mismatch

    volume = layer_volume(image)
    shape = tuple(n for n, a in zip(volume.data.shape, volume.axes) if a != "C")
    if tuple(labels.data.shape) != shape[len(shape) - labels.data.ndim:]:
        return ""
    trailing = [a for a in volume.axes if a != "C"][-labels.data.ndim:]
    frames = [k - len(trailing) for k, a in enumerate(trailing) if a == "T"]  # a frame interval may differ
    return placement_mismatch(layer_spatial(image), layer_spatial(labels), frames) or world_mismatch(image, labels)


def check_on_image(labels: napari.layers.Labels, image: napari.layers.Layer) -> None:
    """Refuse labels that do not lie on their image in the viewer (another scale or translate):
    their ids would be paired with the wrong voxels.

    Raises
    ------
    InputError
        Naming both layers, the difference and the fix.
    """
    miss = placement_miss(labels, image)
    if miss:
        raise InputError(f"labels '{labels.name}' do not lie on image '{image.name}' ({miss}): set the labels "
                         "layer's scale and translate (rotate, shear, affine) to the image's (or make the labels on "
                         "the image, e.g. with the layer list's new-labels button while the image is selected)")


def image_array(layer: napari.layers.Image) -> tuple[np.ndarray, tuple[float, ...]]:
    """The image data (full resolution) and its spacing."""
    volume = layer_volume(layer)
    return volume.data, tuple(volume.spacing)


def labels_array(layer: napari.layers.Labels) -> np.ndarray:
    """A copy of the labels data, so painting during a job cannot change what it reads (lazy
    dask/zarr labels, which napari does not paint, stay lazy)."""
    data = layer_volume(layer).data
    return data if not isinstance(data, np.ndarray) else np.array(data, copy=True)


def is_lazy_layer(layer: napari.layers.Layer) -> bool:
    """A dask/zarr-backed or multiscale layer: read region by region, never whole."""
    from napari_medml.layer_data import _is_lazy

    return bool(getattr(layer, "multiscale", False)) or _is_lazy(layer.data)


def check_fits(layer: napari.layers.Layer, what: str, fix: str, working: int = 0) -> None:
    """Refuse, with one line, a lazy layer too large for ``what`` (an operation that needs
    the whole array); NumPy layers and small lazy ones pass (those are read in the job).

    Parameters
    ----------
    layer : napari.layers.Layer
    what, fix : str
        The operation, and what to do instead (in the message).
    working : int
        Bytes per voxel that ``what`` holds besides the layer's own: 12 for an operation in
        float32 (a copy, its result and one temporary; trial 46: a uint8 layer of 95 MiB took
        1,250 MiB to z-score), more for some (``preprocess.WORKING_BYTES``).

    Raises
    ------
    InputError
        ``'<layer>' is a 40.0 GiB on-disk layer: <what> needs it whole in memory; <fix>``.
    """
    if not is_lazy_layer(layer):
        return
    data = layer_volume(layer).data
    voxels = int(np.prod(data.shape, dtype=np.float64))
    nbytes = voxels * np.dtype(data.dtype).itemsize
    needed = nbytes + voxels * int(working)
    if needed > memory_budget():
        more = f" (about {size_text(needed)} with the working copies)" if working else ""
        raise InputError(f"'{layer.name}' is a {size_text(nbytes)} on-disk layer: {what} needs it whole in "
                         f"memory{more}; {fix}")


# --- preprocessing chains -------------------------------------------------------------
# A preprocess result layer keeps its recipe (list of PreprocessStep dicts) and the raw
# layer it came from (name, napari's unique id, shape). Models re-apply recipes to raw images
# (``fit`` and ``Model.predict`` both do), so train and predict feed the raw layer plus the recipe.
RECIPE_KEY = "preprocessing"
SOURCE_KEY = "preprocess_source"
SOURCE_ID_KEY = "preprocess_source_id"
SOURCE_SHAPE_KEY = "preprocess_source_shape"


def layer_recipe(layer: napari.layers.Layer) -> tuple[Any, ...]:
    """The PreprocessSteps that made ``layer`` from its raw source (empty for raw layers)."""
    from napari_medml.config import PreprocessStep, from_dict

    return tuple(from_dict(PreprocessStep, d) for d in layer.metadata.get(RECIPE_KEY) or ())


def source_metadata(raw: napari.layers.Layer) -> dict[str, Any]:
    """What a preprocess result records of its raw layer, for :func:`raw_layer` to find it again."""
    return {SOURCE_KEY: raw.name, SOURCE_ID_KEY: str(getattr(raw, "unique_id", "")),
            SOURCE_SHAPE_KEY: [int(n) for n in layer_volume(raw).data.shape]}


def raw_layer(viewer: napari.Viewer, layer: napari.layers.Layer) -> napari.layers.Layer:
    """The raw layer a preprocess result was made from (the layer itself when raw): the same
    layer, renamed or not; after a reload (new ids), the layer of its name and shape.

    Raises
    ------
    InputError
        It is no longer open, or the layer of its name is another image (another shape).
    """
    if not layer.metadata.get(RECIPE_KEY):
        return layer
    source, uid = layer.metadata.get(SOURCE_KEY), layer.metadata.get(SOURCE_ID_KEY)
    for candidate in viewer.layers:
        if uid and str(getattr(candidate, "unique_id", "")) == uid:
            return candidate
    if source not in viewer.layers:
        raise InputError(
            f"image '{layer.name}' was preprocessed from '{source}', which is no longer open: "
            f"open '{source}' again, or choose an image without preprocessing")
    found, shape = viewer.layers[source], layer.metadata.get(SOURCE_SHAPE_KEY)
    if shape is not None and [int(n) for n in layer_volume(found).data.shape] != [int(n) for n in shape]:
        raise InputError(
            f"image '{layer.name}' was preprocessed from another '{source}' (of shape {tuple(shape)}) than the one "
            f"open now: open that image again, or choose an image without preprocessing")
    return found


class ModelInput(NamedTuple):
    """Raw image data for train/predict: channels stacked at axis 0 when several layers."""

    image: np.ndarray
    spacing: tuple[float, ...]  # of the axes other than channels and time
    channel_axis: int | None
    recipe: tuple[Any, ...]
    layer: napari.layers.Layer  # the (first) raw layer: results lie where it lies
    axes: str = ""  # what each axis of ``image`` is (Volume.axes; Q: resolved by the model)
    names: tuple[str, ...] = ()  # the layers, one per channel when several are stacked
    labels_note: str = ""  # how the labels were read (labels_over_channels), for the status line

    def samples(self, labels: Any, spatial_dims: int, labels_name: str | None = None
                ) -> tuple[list, list, list, int | None]:
        """Images, labels, spacings and channel axis of the training samples (frames of a
        time series; slices of a volume under a 2D network); see ``io.axes_resolve.split_samples``."""
        from napari_medml.io.axes import AXES_HINT
        from napari_medml.io.axes_resolve import split_samples

        return split_samples(self.image, labels, self.axes, spatial_dims, self.spacing,
                             what=f"image '{self.layer.name}'", hint=AXES_HINT,
                             labels_what=f"labels '{labels_name}'" if labels_name else "labels")  # fmt: skip

    def sample_groups(self, labels: Any, spatial_dims: int) -> tuple[int, ...]:
        """The runs of neighbouring samples among :meth:`samples` (``io.axes_resolve.sample_groups``)."""
        from napari_medml.io.axes import AXES_HINT
        from napari_medml.io.axes_resolve import sample_groups

        return sample_groups(np.shape(self.image), np.shape(labels), self.axes, spatial_dims,
                             what=f"image '{self.layer.name}'", hint=AXES_HINT)  # fmt: skip


def labelled_input(viewer: napari.Viewer, layers: Sequence[napari.layers.Layer],
                   labels_layer: napari.layers.Labels) -> tuple[ModelInput, np.ndarray, tuple[Any, ...]]:
    """The training input for ``labels_layer``, its labels, and a recipe to record afterwards.

    Training reads raw layers and replays their preprocessing recipe. Labels painted on
    a preprocessed layer whose recipe crops or resamples lie on that layer's grid, not
    the raw one: then the preprocessed layer is trained on as shown, and the recipe is
    returned for the model to record (``segmentation.recipes.record_preprocessing``), so
    that it still re-applies it to raw images. Either way the labels must lie on the
    layer whose grid they have (:func:`check_on_image`).
    """
    from napari_medml.io.axes_resolve import labels_over_channels

    def over_channels(inputs: ModelInput) -> tuple[ModelInput, Any]:  # new labels cover a CZYX layer's C axis
        labels, note = labels_over_channels(painted, inputs.image.shape, inputs.axes, what=f"image "
                                            f"'{inputs.layer.name}'", labels_what=f"labels '{labels_layer.name}'")
        return inputs._replace(labels_note=note or ""), labels

    painted = labels_array(labels_layer)
    inputs, labels = over_channels(model_input(viewer, layers))
    _check_not_channels_by_shape(inputs, labels, labels_layer)
    raw_shape = tuple(n for n, a in zip(inputs.image.shape, inputs.axes) if a != "C")
    if inputs.recipe and labels.shape != raw_shape:
        shown, on_shown = over_channels(model_input(viewer, layers, raw=False))
        if on_shown.shape == tuple(n for n, a in zip(shown.image.shape, shown.axes) if a != "C"):
            check_on_image(labels_layer, shown.layer)
            return shown._replace(recipe=()), on_shown, inputs.recipe
    check_on_image(labels_layer, inputs.layer)
    return inputs, labels, ()


def _check_not_channels_by_shape(inputs: ModelInput, labels: Any, labels_layer: napari.layers.Labels) -> None:
    """Refuse labels with an axis fewer than an image of unnamed axes (trial 21: a volume's 16
    slices were taken for 16 channels because the labels were 2D); naming the axis settles it."""
    if "Q" not in inputs.axes or "C" in inputs.axes or np.ndim(labels) != len(inputs.axes) - 1:
        return
    first = inputs.axes.index("Q")
    named = tuple("c" if i == first else ("z" if a == "Q" else a.lower()) for i, a in enumerate(inputs.axes))
    raise InputError(f"labels '{labels_layer.name}' have shape {tuple(np.shape(labels))} but image "
                     f"'{inputs.layer.name}' has shape {tuple(np.shape(inputs.image))}: make labels of the image's "
                     "shape (the layer list's new-labels button while the image is selected), or, if its axis "
                     f"{first} holds channels, say so: viewer.layers['{inputs.layer.name}'].axis_labels = {named}")


def model_input(viewer: napari.Viewer, layers: Sequence[napari.layers.Layer], *, raw: bool = True
                ) -> ModelInput:
    """Resolve chosen image layers to raw data, spacing, axes and the shared recipe.

    A layer's own channel axis (``axis_labels`` "c", or RGB) gives the channels; several
    single-channel layers are stacked as channels in front. With ``raw=False`` a
    preprocessed layer is taken as it is shown (its data, grid and name; the recipe is
    still reported): what live segmentation works on.
    """
    layers = [require(layer, napari.layers.Image, "an image") for layer in layers or [None]]
    # channels in viewer.layers' order, as the widgets' image lists show them top down (napari's
    # layer list shows it bottom up; dragging a layer there reorders them), not a selection's order
    layers.sort(key=lambda layer: viewer.layers.index(layer) if layer in viewer.layers else -1)
    recipes = {layer_recipe(layer) for layer in layers}
    if len(recipes) > 1:
        raise InputError("the chosen images have different preprocessing recipes: "
                         "preprocess every channel the same way")
    raws = [raw_layer(viewer, layer) if raw else layer for layer in layers]
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
    return ModelInput(stacked, spacing, 0, recipes.pop(), raws[0], "C" + first.axes, tuple(l.name for l in layers))


def channel_note(inputs: ModelInput, model: Any) -> str:
    """`` (channels: 'a', 'b'; trained on 'c', 'd')`` for several layers as channels, else ``""``."""
    if len(inputs.names) < 2:
        return ""
    trained = getattr(model, "provenance", {}).get("channel_layers") or ()
    return (f" (channels: {', '.join(map(repr, inputs.names))}"
            + (f"; trained on {', '.join(map(repr, trained))}" if trained else "") + ")")


def channels_line(inputs: ModelInput) -> str:
    """The plan's first line when several image layers are stacked as the input's channels
    (a user who chose several images meaning several training pairs sees it at once)."""
    if len(inputs.names) < 2:
        return ""
    return (f"input: {len(inputs.names)} channels, {', '.join(map(repr, inputs.names))} (the chosen images, "
            "co-registered, one channel each; to train on several images each with its own labels, use "
            "'napari-medml train' or napari_medml.train)\n")


def painted_plane(viewer: napari.Viewer, layer: napari.layers.Labels) -> tuple[int, ...]:
    """The layer's axes napari's brush paints in: the last ``n_edit_dimensions`` on screen."""
    offset = viewer.dims.ndim - layer.ndim
    shown = [a - offset for a in viewer.dims.displayed if a - offset >= 0]
    return tuple(shown[-layer.n_edit_dimensions:])


def record_planes(viewer: napari.Viewer, layer: napari.layers.Labels, planes: set) -> None:
    """Add the plane of every paint on ``layer`` (:func:`painted_plane`) to ``planes``.

    Fine-tuning takes the margin around an edit in the plane it was painted in, not in
    the one on screen when the button is pressed. Holds the viewer and layer weakly.
    """
    layer = unproxied(layer)  # a proxy of it dies with its reference
    viewer_ref, layer_ref = weakref.ref(viewer), weakref.ref(layer)

    def painted(*_: Any) -> None:
        v, lay = viewer_ref(), layer_ref()
        if v is not None and lay is not None:
            planes.add(painted_plane(v, lay))

    earlier = _PLANE_HOOKS.get(layer)
    if earlier is not None:  # a re-run refilled the layer: its planes start again
        layer.events.paint.disconnect(earlier)
    _PLANE_HOOKS[layer] = painted
    layer.events.paint.connect(painted)


_PLANE_HOOKS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
