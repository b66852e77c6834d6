"""Which image Predict runs a model on: the raw layer, where the model replays the chosen
layer's preprocessing itself, or else the chosen layer as it is shown."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import napari
import numpy as np

from napari_medml._widgets._data_watch import HeldData, new_data_line
from napari_medml._widgets._instances import spatial_origin
from napari_medml._widgets._layers import (SOURCE_KEY, ModelInput, channel_note, file_channel_names, layer_spatial,
                                          model_input)
from napari_medml.errors import InputError

__all__ = ["Placed", "as_predicted", "check_channels", "choose_input", "chosen_folder", "image_gone", "input_for",
           "in_layer_unit", "is_lazy_image", "not_shown", "prediction_inputs", "result_note", "store_geometry_of"]


class Placed(NamedTuple):
    """A prediction's input and where its result lies (the layer's origin and affine)."""

    inputs: ModelInput
    origin: tuple[float, ...]
    affine: Any


def _placed(inputs: ModelInput) -> Placed:
    return Placed(inputs, spatial_origin(inputs.layer), layer_spatial(inputs.layer).affine)


def prediction_inputs(viewer: napari.Viewer, layers: Sequence[napari.layers.Layer]
                      ) -> tuple[Placed | InputError, Placed | None]:
    """The chosen layers as raw input, and as shown when they were preprocessed (else None);
    read on the GUI thread, chosen between by :func:`input_for` once the model is known.
    A preprocessed layer whose raw layer is closed gives the error in place of the raw input:
    only a model that replays its recipe needs that layer."""
    shown = model_input(viewer, layers, raw=False)
    if not shown.recipe:
        return _placed(shown), None
    try:
        raw: Placed | InputError = _placed(model_input(viewer, layers))
    except InputError as exc:
        raw = exc
    return raw, _placed(shown)


def _steps(steps: Sequence[Any]) -> str:
    from napari_medml.config import to_dict

    return json.dumps([to_dict(step) for step in steps], sort_keys=True)


def input_for(model: Any, raw: Placed | InputError, shown: Placed | None) -> tuple[Placed, str]:
    """:func:`choose_input`, its image checked under the layer's name (the model's own checks know no
    layer): its channels, a 2D model on one sagittal or coronal slice, and NaN and infinite values
    (a dask/zarr layer's block by block)."""
    from napari_medml.preprocessing.inputs import check_finite, recipe_fills_nonfinite

    from napari_medml.io.axes_resolve import check_not_strips

    placed, why = choose_input(model, raw, shown)
    check_channels(model, placed.inputs)
    if getattr(model, "spatial_dims", None):  # trial 49: 64 one-pixel strips of a sagittal slice, unsaid
        axes = placed.inputs.axes  # an unnamed leading axis is what a 2D model takes slice by slice (review 49)
        check_not_strips(axes if "Z" in axes else axes.replace("Q", "Z", 1), np.shape(placed.inputs.image),
                         model.spatial_dims, f"layer '{placed.inputs.layer.name}'")
    names = getattr(getattr(getattr(model, "config", None), "data", None), "channel_names", None)
    if names:  # trial 48: the same stains stored in another order were segmented without a word
        from napari_medml.io.channel_order import in_channel_order, match_channels

        inputs = placed.inputs
        order, line = match_channels(names, file_channel_names(inputs), f"image '{inputs.layer.name}'")
        if order is not None:
            placed = placed._replace(inputs=inputs._replace(
                image=in_channel_order(inputs.image, inputs.channel_axis, order)))
        why = "; ".join(w for w in (why, line) if w)
    if isinstance(placed.inputs.image, np.ndarray) and not recipe_fills_nonfinite(model):  # the model fills them
        check_finite(placed.inputs.image, f"image '{placed.inputs.layer.name}'")
    placed, line = _in_model_unit(model, placed)
    return placed, "; ".join(w for w in (why, line) if w)


def _in_model_unit(model: Any, placed: Placed) -> tuple[Placed, str]:
    """The input's voxel size in the length unit the model was trained in, and the line that says so;
    the result lies on the layer in its own unit."""
    from napari_medml._widgets._units import in_model_unit

    inputs = placed.inputs
    spacing, line = in_model_unit(model, inputs.layer, inputs.spacing)
    return (placed._replace(inputs=inputs._replace(spacing=spacing)), line) if line else (placed, "")


def in_layer_unit(model: Any, inputs: ModelInput) -> ModelInput:
    """``inputs`` with the layer's own voxel size again (undoing :func:`_in_model_unit`): an instance
    table measures in the layer's world units (review 53: volumes in µm³ beside centroids in mm)."""
    from napari_medml._widgets._units import spacing_in_unit
    from napari_medml.io.units import scaled, trained_unit

    factor = spacing_in_unit(inputs.layer, (), trained_unit(model))[1]
    return inputs if factor == 1.0 else inputs._replace(spacing=tuple(scaled(s, 1 / factor) for s in inputs.spacing))


def store_geometry_of(model: Any, inputs: ModelInput, origin: Any) -> dict[str, Any]:
    """``spacing``, ``origin`` and ``meta`` for a block-wise prediction of ``inputs`` (its spacing already
    in the model's unit, :func:`_in_model_unit`): the stores record the layer's own unit, spacing and
    origin (``io.units.as_read``), so that they open on the layer."""
    from napari_medml._widgets._units import layer_unit, spacing_in_unit
    from napari_medml.io.units import UNIT_AS_READ, trained_unit

    unit, trained = layer_unit(inputs.layer), trained_unit(model)
    factor = spacing_in_unit(inputs.layer, (), trained)[1]
    if factor == 1.0:
        return {"spacing": inputs.spacing, "origin": origin, "meta": {"unit": unit} if unit else {}}
    return {"spacing": inputs.spacing, "origin": None if origin is None else tuple(o * factor for o in origin),
            "meta": {"unit": trained, UNIT_AS_READ: unit}}


def blockwise_input(model: Any, inputs: ModelInput, why: str = "") -> tuple[bool, str]:
    """Whether Predict segments ``inputs`` block by block on disk (a dask/zarr layer the model takes as
    one image), and ``why`` (the input's note) with a line added when a lazy layer is predicted in
    memory instead, one slice or frame at a time (a 2D model on a volume; trial 48: refused, naming
    an in-memory prediction the widget did not offer)."""
    from napari_medml.segmentation.prediction import takes_samples

    if not is_lazy_image(inputs.image) or not takes_samples(model, inputs.image, inputs.axes):
        return is_lazy_image(inputs.image), why
    line = (f"layer '{inputs.layer.name}' is read from disk and the {model.spatial_dims}D model takes it one slice "
            "or frame at a time: predicted in memory (block-wise takes one image)")
    return False, "; ".join(w for w in (why, line) if w)


def choose_input(model: Any, raw: Placed | InputError, shown: Placed | None) -> tuple[Placed, str]:
    """``raw`` when ``model`` re-applies the chosen layer's recipe (it was trained with it, or
    recorded it), else ``shown`` and a line saying so (a crop or window made after training).

    Parameters
    ----------
    model : model
        A segmentation, instance or ensemble model (``config.data.preprocessing``).
    raw, shown : Placed (raw: or the InputError of a closed raw layer)
        From :func:`prediction_inputs`.

    Returns
    -------
    Placed, str
        The input and "" or the line for the status.
    """
    if isinstance(raw, InputError) and shown is None:
        raise raw
    if shown is None:
        return raw, ""
    own = getattr(getattr(getattr(model, "config", None), "data", None), "preprocessing", ())
    if _steps(own) == _steps(shown.inputs.recipe):
        if isinstance(raw, InputError):  # the model replays the recipe on the raw layer, which is closed
            raise raw
        return raw, ""
    source = raw.inputs.layer.name if isinstance(raw, Placed) else shown.inputs.layer.metadata.get(SOURCE_KEY)
    return shown, (f"'{shown.inputs.layer.name}' predicted as shown: the model was not trained with its "
                   f"preprocessing, so it cannot replay it on '{source}'")


def _trained_on(model: Any) -> str:
    trained = getattr(model, "provenance", {}).get("channel_layers") or ()
    return f" (it was trained on {', '.join(map(repr, trained))})" if trained else ""


def _split_hint(inputs: ModelInput) -> str:
    """How napari splits one layer into its channels: Split Stack splits the first axis only, and
    an RGB layer has Split RGB instead (review 46: a ZCYX layer split into its Z slices)."""
    if getattr(inputs.layer, "rgb", False):
        return "split its colours (right-click the layer > Split RGB)"
    if inputs.channel_axis == 0:
        return "split it into its channels (right-click the layer > Split Stack)"
    return (f"split it into its channels (napari's console: viewer.add_image(viewer.layers['{inputs.layer.name}']"
            f".data, channel_axis={inputs.channel_axis}); Split Stack splits the first axis)")


def check_channels(model: Any, inputs: ModelInput) -> None:
    """Refuse layers with another number of channels than ``model`` was trained on, naming the
    layers and the fix in the widget's terms (the model's own line names ``channel_axis``).

    Raises
    ------
    InputError
    """
    want = getattr(model, "in_channels", None)
    have = 1 if inputs.channel_axis is None else int(np.shape(inputs.image)[inputs.channel_axis])
    unnamed = [n for a, n in zip(inputs.axes, np.shape(inputs.image)) if a == "Q"]
    if want is None or have == want or want in unnamed:  # an unnamed axis of that length: the model settles it
        return
    names = ", ".join(map(repr, inputs.names)) if len(inputs.names) > 1 else repr(inputs.layer.name)
    fix = (f"choose its {want} channel layers together in image(s), in the order trained (a file opened as "
           "'name [ch0]', 'name [ch1]'...)" if have == 1 else
           f"{_split_hint(inputs)} and choose the {want} trained on, in the order trained"
           if have > want and len(inputs.names) <= 1 else
           f"choose image layers with {want} channel(s) in all, as in training")
    raise InputError(f"the model was trained on {want} channel(s) but {names} "
                     f"{'have' if len(inputs.names) > 1 else 'has'} {have}: {fix}{_trained_on(model)}")


def result_note(inputs: ModelInput, model: Any) -> str:
    """What the status adds after "'x' segmented with 'm'": the layers taken as channels
    (``_layers.channel_note``) and the frames or slices segmented one at a time."""
    from napari_medml.io.axes import samples_phrase

    dims = getattr(model, "spatial_dims", None)
    samples = samples_phrase(inputs.axes, np.shape(inputs.image), dims) if dims else ""
    several = samples and not samples.startswith("1 ")  # one slice or frame is just the image
    return channel_note(inputs, model) + (f" ({samples}, one at a time by the {dims}D model)" if several else "")


def is_lazy_image(image: Any) -> bool:
    """A dask or zarr image (a lazily loaded layer): never turned into one NumPy array."""
    return not isinstance(image, np.ndarray)


def chosen_folder(value: Any) -> str:
    """A folder field's value, or "" when none is chosen: magicgui gives an emptied field as "." or,
    set from a script, as the working folder (trial 49: "model bundle <working folder> has no
    config.json" for a field left empty); a bundle there is taken."""
    folder = str(value or "")
    if folder and Path(folder).resolve() == Path.cwd().resolve() and not (Path(folder) / "config.json").exists():
        return ""
    return folder


def image_gone(name: str, kept: str = "", result: str = "its prediction") -> str:
    """The status when a job's result has no image to lie on (``kept``: what was kept, ending "; ")."""
    return f"image '{name}' was removed while the job ran: {kept}{result} is not shown (open the image again)"


def not_shown(viewer: Any, layer: Any, held: HeldData, kept: str = "", result: str = "its prediction",
              kind: str = "image") -> str:
    """The status when a prediction (``result``) of ``layer`` is not shown, else "": the layer was removed,
    or a layer of the job (``held``, of ``kind``) got new data while it ran (``kept``: what was kept, ending
    "; ")."""
    if layer not in viewer.layers:
        return image_gone(layer.name, kept, result)
    replaced = held.replaced()
    return new_data_line(replaced, f"{kept}{result}", kind) if replaced else ""


def as_predicted(prediction: Any) -> Any:
    """A copy of a segmentation's labels (in the worker: a large copy would stall the GUI), or
    None for an instance prediction or an on-disk result (fine-tuning needs the layer in memory)."""
    if hasattr(prediction, "relabel") or is_lazy_image(prediction.labels):
        return None
    return np.array(prediction.labels, copy=True)
