"""Named layer axes on every napari the plugin supports.

napari 0.5.0's ``add_image`` refuses ``axis_labels`` (fixed in 0.5.1); there the plugin
keeps them in ``metadata["axes"]`` (``layer_data.layer_axes`` reads either).
"""

from __future__ import annotations

from typing import Any


def named(*labels: str) -> dict[str, Any]:
    """Keyword arguments that name a new layer's axes (``viewer.add_image(data, **named("c", "z", "y", "x"))``)."""
    from napari_medml.layer_data import _add_image_takes_axis_labels

    if _add_image_takes_axis_labels():
        return {"axis_labels": labels}
    return {"metadata": {"axes": "".join(labels).upper()}}


def axis_names(layer: Any) -> tuple[str, ...]:
    """What each axis of ``layer`` is, lower case (``("c", "z", "y", "x")``), on any napari."""
    from napari_medml.layer_data import layer_axes

    axes = layer_axes(layer.data.ndim, layer.axis_labels, layer.metadata, getattr(layer, "rgb", False))
    return tuple(a.lower() for a in axes)
