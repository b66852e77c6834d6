"""Result layers into the viewer: added, or the plugin's own of that name replaced (a user's
never), placed where the layer they were computed from lies (``_placement``)."""

from __future__ import annotations

import re
import weakref
from typing import Any

import napari
import numpy as np

from napari_medml._widgets._proxy import unproxied
from napari_medml._widgets._refill import refill
from napari_medml.layer_data import PLUGIN_MARK, LayerDataTuple, is_generated

__all__ = ["drop_stale_results", "free_name", "show_result"]

# what a result Labels layer shown with keep_edits held when it was made (held while the layer lives)
_SHOWN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def free_name(viewer: napari.Viewer, name: str) -> str:
    """``name``, or ``name (2)``, ``name (3)``... whichever no layer uses."""
    candidate, k = name, 1
    while candidate in viewer.layers:
        k += 1
        candidate = f"{name} ({k})"
    return candidate


def show_result(viewer: napari.Viewer, layer_data: LayerDataTuple,
                like: napari.layers.Layer | None = None, *, keep_edits: bool = False) -> napari.layers.Layer:
    """Add a result layer; replace the plugin's own layer of that name, never a user's.

    ``like``: the layer the result was computed from; the result takes its rotation, shear,
    affine and units (``_placement.place_like``) besides the scale and translate in ``layer_data``.
    ``keep_edits``: a Labels result keeps a copy of what it showed, and once its data differ
    (edited from the console or a script, which emits no paint event) it is the user's, as a
    painted one is, and no re-run replaces it (trial 50: Classify's classes were replaced).
    """
    from napari_medml._widgets._placement import place_like, placement

    data, kwargs = layer_data[0], layer_data[1]
    first = data[0] if isinstance(data, (list, tuple)) else data  # a multiscale result: its full resolution
    ndim = len(np.shape(first)) - int(bool(kwargs.get("rgb")))  # an RGB layer's colour axis is no axis
    if like is not None:
        placement(like, ndim, f"'{kwargs['name']}'")  # one that cannot lie on its layer is refused before it is added
    layer = _add_result(viewer, layer_data, like)
    if like is not None:  # a refilled layer too
        place_like(layer, like)
    if keep_edits and isinstance(layer, napari.layers.Labels) and isinstance(layer.data, np.ndarray):
        _SHOWN[unproxied(layer)] = np.array(layer.data, copy=True)
    return layer


def _claim_if_edited(layer: napari.layers.Layer) -> None:
    """Take the plugin's mark off a ``keep_edits`` result whose data differ from what it showed."""
    shown = _SHOWN.get(layer)
    same = shown is not None and np.shape(layer.data) == shown.shape and np.array_equal(np.asarray(layer.data), shown)
    if shown is not None and not same:
        layer.metadata.pop(PLUGIN_MARK, None)


def _add_result(viewer: napari.Viewer, layer_data: LayerDataTuple,
                like: napari.layers.Layer | None = None) -> napari.layers.Layer:
    data, kwargs, layer_type = layer_data
    kwargs = dict(kwargs)
    name = kwargs["name"]
    index = len(viewer.layers)
    # Walk "name", "name (2)", ... past the user's layers: the first plugin-made layer on
    # the way is replaced (so a re-run next to a user's "ct [prediction]" replaces its own
    # "ct [prediction] (2)"), else the first free name is taken.
    candidate, k = name, 1
    while candidate in viewer.layers:
        old = unproxied(viewer.layers[candidate])  # a weak record of the result keys the layer
        _claim_if_edited(old)
        if is_generated(old.metadata):
            if refill(old, data, kwargs, layer_type):
                return old
            index = viewer.layers.index(old)
            viewer.layers.remove(old)
            break
        k += 1
        candidate = f"{name} ({k})"
    kwargs["name"] = candidate
    layer = napari.layers.Layer.create(data, kwargs, layer_type)
    if like is not None:  # placed before it is added: napari draws it as it is inserted, and warns of
        from napari_medml._widgets._placement import place_like  # its units while they differ from like's

        place_like(layer, like)
    if isinstance(layer, napari.layers.Labels):
        layer.events.paint.connect(_user_owned(layer))
    viewer.layers.insert(index, layer)
    return layer


def _user_owned(layer: napari.layers.Labels) -> Any:
    """A paint-event callback that takes the plugin's mark off ``layer``: painted, it is the user's.

    napari emits ``paint`` for every undoable edit (brush, fill, eraser, polygon,
    ``data_setitem``). Holds the layer weakly.
    """
    ref = weakref.ref(layer)

    def unmark(*_: Any) -> None:
        painted = ref()
        if painted is not None:
            painted.metadata.pop(PLUGIN_MARK, None)

    return unmark


def drop_stale_results(viewer: napari.Viewer, source_name: str, kinds: tuple[str, ...],
                       kept: list[napari.layers.Layer]) -> list[str]:
    """Remove the plugin's earlier ``<source> [<kind>...]`` layers that a re-run did not refill.

    Trial 44: a run without probabilities left the last run's ``[probability k]`` and
    ``[uncertainty]`` layers of that image beside the new prediction, under the same names,
    where they read as the new model's. A user's layer (no plugin mark) is never removed.

    Parameters
    ----------
    viewer : napari.Viewer
    source_name : str
        The image layer's name.
    kinds : tuple of str
        Result kinds to look at: a layer ``"<source> [<kind>...]"`` (or ``... (2)``) matches.
    kept : list of napari.layers.Layer
        The layers this run showed.

    Returns
    -------
    list of str
        The names removed.
    """
    pattern = re.compile(rf"{re.escape(source_name)} \[(?:{'|'.join(map(re.escape, kinds))})[^\]]*\](?: \(\d+\))?")
    keep = {id(unproxied(layer)) for layer in kept}
    stale = [layer for layer in list(viewer.layers) if pattern.fullmatch(layer.name)
             and is_generated(unproxied(layer).metadata) and id(unproxied(layer)) not in keep]
    for layer in stale:
        viewer.layers.remove(layer)
    return [layer.name for layer in stale]
