"""The instance part of the Predict widget: post-processing controls, the per-object
table, and the ``<image> [instances]`` Labels layer with its ``features``.

Changing a control re-runs only the mask creation on the cached network outputs
(``InstancePrediction.relabel``), off the GUI thread, as cellpose-napari does.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import napari
from magicgui.widgets import FloatSpinBox

from napari_medml._widgets._layers import layer_spatial, layer_volume, show_result
from napari_medml._widgets._results import drop_stale_results
from napari_medml.result_layers import result_layer_data

__all__ = ["CONTROLS", "control_values", "instance_controls", "instance_table", "params_from_controls", "set_controls",
           "show_instances", "spatial_origin", "with_controls"]

CONTROLS = ("foreground_threshold", "seed_height", "min_distance", "min_object_size")


def instance_controls() -> dict[str, FloatSpinBox]:
    """Post-processing of instance models; a model's own values fill them after a prediction."""
    return {
        # review 43: the CLI's --foreground-threshold had no control here
        "foreground_threshold": FloatSpinBox(value=0.5, min=0.0, max=1.0, step=0.05, label="foreground threshold",
                                             tooltip="instance models: a voxel is in an object where the learned "
                                             "foreground probability is at least this (0-1); lower grows objects "
                                             "and finds fainter ones, higher shrinks them"),
        "seed_height": FloatSpinBox(value=0.3, min=0.0, max=1.0, step=0.05, label="seed height",
                                    tooltip="instance models: a maximum of the learned distance map starts an "
                                    "object when it rises this much (0-1) above the saddle to a higher one; "
                                    "lower splits more, higher merges more"),
        "min_distance": FloatSpinBox(value=0.0, min=0.0, max=1e6, step=0.5, label="min distance",
                                     tooltip="instance models: merge seeds closer than this (physical units, "
                                     "the layer's scale); 0 = off"),
        "min_object_size": FloatSpinBox(value=0.0, min=0.0, max=1e12, step=1.0, label="min size",
                                        tooltip="instance models: remove objects smaller than this area/volume "
                                        "(physical units); 0 = keep all"),
    }


def set_controls(widgets: dict[str, Any], params: Any) -> None:
    """Show ``params`` (InstanceParams) in the controls without re-running anything."""
    values = {"foreground_threshold": params.foreground_threshold, "seed_height": params.seed_height,
              "min_distance": params.min_distance, "min_object_size": params.min_size}
    for name, value in values.items():
        with widgets[name].changed.blocked():
            widgets[name].value = value


def control_values(widgets: dict[str, Any]) -> dict[str, float]:
    """The controls' values as ``InstanceParams`` fields (read on the GUI thread, used in a job)."""
    return {"foreground_threshold": float(widgets["foreground_threshold"].value),
            "seed_height": float(widgets["seed_height"].value), "min_distance": float(widgets["min_distance"].value),
            "min_size": float(widgets["min_object_size"].value)}


def with_controls(params: Any, values: dict[str, float]) -> Any:
    """``params`` with the controls' ``values`` (:func:`control_values`) where they differ from it
    by more than the controls' rounding (2 decimals): a value the user left keeps the model's own."""
    return replace(params, **{k: v for k, v in values.items() if abs(v - getattr(params, k)) > 0.0051})


def params_from_controls(widgets: dict[str, Any], params: Any) -> Any:
    """``params`` with the controls' values (:func:`with_controls`)."""
    return with_controls(params, control_values(widgets))


def instance_table(labels: Any, inputs: Any, origin: tuple[float, ...]) -> dict | None:
    """The per-object table of ``labels`` (worker thread): sizes and centroids in the
    layer's world units, intensities of the input image; None beyond 3 axes."""
    import numpy as np

    from napari_medml.instances.measure import measure_image_instances, measure_instances

    ndim = labels.ndim
    if ndim not in (2, 3):
        return None
    shape = list(np.shape(inputs.image))
    if inputs.channel_axis is not None:
        del shape[inputs.channel_axis]
    spacing = tuple(inputs.spacing)[-ndim:] if len(inputs.spacing) >= ndim else None
    where = tuple(origin)[-ndim:] if len(origin) >= ndim else None
    if tuple(shape) != labels.shape:
        return measure_instances(labels, spacing, where)
    return measure_image_instances(labels, inputs.image, spacing=spacing, origin=where,
                                   channel_axis=inputs.channel_axis)


def spatial_origin(layer: napari.layers.Layer) -> tuple[float, ...]:
    """The layer's origin along its axes other than channels and time."""
    volume = layer_volume(layer)
    body = volume.axes[: len(volume.origin)]
    return tuple(o for a, o in zip(body, volume.origin) if a not in "CT")


def show_instances(viewer: napari.Viewer, prediction: Any, layer: napari.layers.Layer,
                   table: dict | None) -> napari.layers.Labels:
    """``<image> [instances]``: one id per object, the table as ``features`` (one row per id); the
    plugin's earlier prediction, probability and uncertainty layers of the image go."""
    axes = layer_volume(layer).axes
    kwargs: dict[str, Any] = {} if table is None else {"features": table}
    out = show_result(viewer, result_layer_data(prediction.labels, layer.name, "instances", layer_spatial(layer),
                                                "labels", axes, **kwargs), like=layer)
    out.metadata["instance_params"] = prediction.params.to_dict()
    # an earlier semantic model's layers of this image would read as this model's (review 44)
    drop_stale_results(viewer, layer.name, ("prediction", "probabilit", "uncertainty"), [out])
    return out
