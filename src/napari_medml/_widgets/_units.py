"""A layer's voxel size in another length unit: a model's, or the first of several layers'."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from napari_medml._widgets._layers import layer_volume

__all__ = ["in_first_unit", "in_model_unit", "layer_unit", "spacing_in_unit"]


def layer_unit(layer: Any) -> str | None:
    """The length unit ``layer`` names its scale in (napari >= 0.5.1 layer units, or the file's);
    None when it names none."""
    return layer_volume(layer).meta.get("unit")


def spacing_in_unit(layer: Any, spacing: Sequence[float], unit: str | None) -> tuple[tuple[float, ...], float]:
    """``spacing`` (``layer``'s spatial voxel size, in its own unit) in ``unit`` (review 51: a layer in mm
    holding the training images' voxels in µm was resampled 1000-fold).

    Parameters
    ----------
    layer : napari.layers.Layer
        Its unit is the one converted from.
    spacing : sequence of float
        Its spatial voxel size (Z, Y, X or Y, X), in the layer's unit.
    unit : str or None
        The unit wanted (a model's ``io.units.trained_unit``); None: kept as it is.

    Returns
    -------
    (tuple of float, float)
        The voxel size and the factor it was multiplied by: 1.0 when either unit is unknown or both
        are the same length.
    """
    from napari_medml.io.units import scaled
    from napari_medml.io.volume import length_factor

    have = layer_unit(layer)
    factor = length_factor(have, unit) if have is not None and unit is not None else 1.0
    if factor == 1.0:
        return tuple(spacing), 1.0
    return tuple(scaled(s, factor) for s in spacing), factor


def in_model_unit(model: Any, layer: Any, spacing: Sequence[float]) -> tuple[tuple[float, ...], str | None]:
    """``layer``'s voxel size ``spacing`` in the length unit ``model`` was trained in, and the line that
    says so (None when nothing changes); results still lie on the layer, in its own unit.

    Parameters
    ----------
    model : object
        Its ``provenance["unit"]`` (``io.units.trained_unit``) names the unit.
    layer : napari.layers.Layer
    spacing : sequence of float
        The layer's spatial voxel size, in its unit.
    """
    from napari_medml.io.spacing import unit_note
    from napari_medml.io.units import trained_unit

    trained = trained_unit(model)
    converted, factor = spacing_in_unit(layer, spacing, trained)
    if factor == 1.0:
        return tuple(spacing), None
    return converted, unit_note(layer_unit(layer), trained, tuple(spacing), f"layer '{layer.name}'")


def in_first_unit(inputs: list[Any]) -> tuple[list[Any], str | None, list[str]]:
    """Each of ``inputs`` with its voxel size in the length unit of the first layer naming one, as the
    command line's training files are (trial 51: µm and mm spacings were mixed as one number).

    Parameters
    ----------
    inputs : list of ModelInput
        One per layer (``layer``, ``spacing`` of its spatial axes).

    Returns
    -------
    (list of ModelInput, str or None, list of str)
        The inputs, the unit (None when no layer names one), and a line for each layer converted.
    """
    unit = next((u for u in map(layer_unit, (i.layer for i in inputs)) if u is not None), None)
    first = next((i.layer.name for i in inputs if layer_unit(i.layer) is not None), "")
    show = lambda v: "x".join(f"{x:g}" for x in v)  # noqa: E731
    out, lines = [], []
    for inp in inputs:
        spacing, factor = spacing_in_unit(inp.layer, inp.spacing, unit)
        if factor != 1.0:
            have = layer_unit(inp.layer)
            lines.append(f"layer '{inp.layer.name}' names its voxel size in {have} ({show(inp.spacing)} {have}), "
                         f"the first layer '{first}' in {unit}: it is used at {show(spacing)} {unit}")
            inp = inp._replace(spacing=spacing)
        out.append(inp)
    return out, unit, lines
