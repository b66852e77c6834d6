"""Result layers: a model's output as a napari layer that lies where its source layer lies.

A result is named ``"<source> [<what>]"``, takes the source's placement (scale, translate,
stored affine and orientation, axis names without the source's channels) and carries the
plugin's mark (:data:`napari_medml.layer_data.PLUGIN_MARK`), so a re-run may replace it.
No napari import here: this module is core and runs without Qt.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_medml.io import axes as io_axes
from napari_medml.io.orientation import STORED_ORIENTATION
from napari_medml.layer_data import AFFINE_KEY, AXES_KEY, FILE_META_KEY, LayerDataTuple, SpatialMeta, mark_generated

__all__ = ["result_layer_data", "result_layer_name", "source_shaped_result"]


def result_layer_name(input_name: str, what: str) -> str:
    """Name a result layer after its input: ``"<input> [<what>]"``.

    Examples
    --------
    >>> result_layer_name("ct", "prediction")
    'ct [prediction]'
    """
    return f"{input_name} [{what}]"


def result_layer_data(
    data: Any,
    source_name: str,
    what: str,
    spatial: SpatialMeta,
    layer_type: str = "image",
    source_axes: str | None = None,
    **kwargs: Any,
) -> LayerDataTuple:
    """Build a marked result layer that lies where its source layer lies.

    Parameters
    ----------
    data : array-like
        The result; leading axes beyond the source's (e.g. class probabilities)
        get scale 1 and translate 0.
    source_name : str
        The input layer's name; the result is named ``"<source> [<what>]"``.
    what : str
        What the result is ("prediction", "uncertainty", ...).
    spatial : SpatialMeta
        The source's :func:`spatial_meta`.
    layer_type : str
        ``"image"`` or ``"labels"``.
    source_axes : str, optional
        The source's :attr:`Volume.axes`. With it, a result has the source's axes
        without its channels (labels, uncertainty), or with its own ``C`` in front
        (class probabilities), and takes their scale, translate and ``axis_labels``.
    **kwargs
        Further layer keyword arguments (colormap, opacity, ...); ``rgb=True`` for a
        result of an RGB source with its colour axis last, ``(Y, X, 3|4)``.

    Returns
    -------
    tuple
        ``(data, kwargs, layer_type)`` with name, scale, translate and marked metadata.
    """
    affine = None if spatial.affine is None else np.asarray(spatial.affine).tolist()
    metadata: dict[str, Any] = {AFFINE_KEY: affine}
    file_meta = dict(spatial.file_meta or {})  # unit, NIfTI codes: saved as the source would be
    file_meta.pop(io_axes.CHANNEL_NAMES_KEY, None)  # a result's channels are classes, not the source's
    if spatial.stored_orientation:  # saved as NIfTI in the image file's own voxel order
        file_meta[STORED_ORIENTATION] = spatial.stored_orientation
    body = (source_axes or "")[: len(spatial.spacing)]  # an RGB colour axis has no spacing
    plain = body.replace("C", "")
    if kwargs.get("rgb"):  # colour last, as in an RGB source: only the spatial axes are placed
        scale, translate = tuple(map(float, spatial.spacing)), tuple(map(float, spatial.origin))
    elif body and 0 < np.ndim(data) <= len(plain) + 1:
        # fewer axes: a leading unnamed axis was the channels (``Q`` resolved by the model)
        axes = "C" + plain if np.ndim(data) == len(plain) + 1 else plain[len(plain) - np.ndim(data):]
        scale = io_axes.placed_values(body, spatial.spacing, axes, 1.0)
        translate = io_axes.placed_values(body, spatial.origin, axes, 0.0)
        metadata[AXES_KEY] = axes
        labels = io_axes.axes_to_labels(axes)
        if labels is not None:
            kwargs.setdefault("axis_labels", labels)
    else:
        extra = max(np.ndim(data) - len(spatial.spacing), 0)
        scale = (1.0,) * extra + tuple(spatial.spacing)
        translate = (0.0,) * extra + tuple(spatial.origin)
    if io_axes.SINGLETONS_KEY in file_meta:  # the source's dropped length-1 axes (a one-channel image's C
        placed = metadata.get(AXES_KEY, "")  # too), but none the result has (probabilities: C, the classes)
        dropped = file_meta[io_axes.SINGLETONS_KEY]
        file_meta[io_axes.SINGLETONS_KEY] = [d for d in dropped if d[0] not in placed and (d[0] != "C" or placed)]
    if file_meta:
        metadata[FILE_META_KEY] = file_meta
    if layer_type == "image":  # napari guesses RGB(A) from a last axis of 3 or 4: never for a result
        kwargs.setdefault("rgb", False)
    layer_kwargs: dict[str, Any] = {
        "name": result_layer_name(source_name, what),
        "scale": scale,
        "translate": translate,
        "metadata": mark_generated(metadata),
        **kwargs,
    }
    return data, layer_kwargs, layer_type


def source_shaped_result(data: Any, source_axes: str, *, rgb: bool = False, dtype: Any = None) -> tuple[Any, dict]:
    """An image-valued result of a layer (a reconstruction) laid out for :func:`result_layer_data`.

    Parameters
    ----------
    data : numpy.ndarray
        The result in the source's shape and axis order (float).
    source_axes : str
        The source's :attr:`Volume.axes`.
    rgb : bool
        Whether the source is an RGB(A) layer (colour last).
    dtype : numpy dtype, optional
        The source's dtype: an RGB result of an integer source is rounded and clipped to
        it, so that it shows in the source's range and lies over it.

    Returns
    -------
    data : numpy.ndarray
        RGB: as given (colour last, in ``dtype``); otherwise with any channel axis moved
        in front, as result layers carry their own channels.
    look : dict
        Layer keyword arguments: ``rgb=True``, or a grey colormap.
    """
    if rgb:
        if dtype is not None and np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            data = np.clip(np.rint(data), info.min, info.max).astype(dtype)
        return data, {"rgb": True}
    if "C" in source_axes:
        data = np.moveaxis(data, source_axes.index("C"), 0)
    return data, {"colormap": "gray"}
