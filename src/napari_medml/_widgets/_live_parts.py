"""Pieces of the Live widget: what its display job reports, knowing when the dock closes, and
handing an accepted network to the viewer's session, placing the widget's layers on the image."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtCore import QEvent, QObject

from napari_medml._widgets._layers import layer_spatial, placement_miss
from napari_medml._widgets._placement import place_like
from napari_medml._widgets._results import show_result
from napari_medml.errors import InputError
from napari_medml.layer_data import PLUGIN_MARK, is_generated
from napari_medml.result_layers import result_layer_data
from napari_medml.segmentation.split import axis_phrase

__all__ = ["ACCEPT_BUSY", "Answer", "Follower", "OnClose", "SentAnswers", "WHERE_NEXT_BUSY", "add_live_model",
           "brush_kept", "check_live_input", "clear_answer", "disconnect", "draw_answer", "go_to", "network_threads",
           "place_on_image", "scribbles_for", "session_status", "show_uncertainty", "slice_axis", "status_lines",
           "user_labels", "viewer_closing", "visible_slice"]

# what the hint line says while "Where to paint next" runs (Accept and it share one job line)
WHERE_NEXT_BUSY = ("Finding where to paint next: the answer for the whole image comes first (on a large "
                   "volume, a while); Accept waits for it.")
ACCEPT_BUSY = "Accepting: segmenting the whole image..."


def status_lines(status: dict, background: int, whole_behind: bool = False) -> tuple[str, str]:
    """The status and stroke-count lines of a session's status (``session_status``);
    ``whole_behind``: strokes came since the last answer for the whole image (only the
    painted slices show them yet)."""
    scores = ", ".join(f"{k} {v:.2f}" for k, v in status["scores"].items()) or "none yet (every 5th stroke)"
    steps = status["training"].get("steps")
    line = f"on screen: {status['stage']}; held-out scores: {scores}" + (f"; network: {steps} steps" if steps else "")
    if status.get("network_off"):
        line += f"; {status['network_off']}"
    if whole_behind:
        line += "; the rest of the volume updates when you pause painting (the painted slices are current)"
    counts = "strokes: " + (", ".join(f"{'background' if k == background else f'id {k}'} ×{n}"
                                      for k, n in sorted(status["counts"].items())) or "none")
    return line, counts


@contextlib.contextmanager
def brush_kept(viewer: Any, scribbles: Any) -> Iterator[None]:
    """Layers added in the block go under ``scribbles``, and the layer that was active (the
    scribbles in paint mode, while the user paints) stays active in its mode: napari selects a
    layer it adds, and the next stroke would pan the view, or paint into the answer (trial 32)."""
    active = viewer.layers.selection.active
    mode, before = getattr(active, "mode", None), set(map(id, viewer.layers))
    try:
        yield
    finally:
        if scribbles is not None and scribbles in viewer.layers:
            for layer in [layer for layer in viewer.layers if id(layer) not in before]:
                if viewer.layers.index(layer) > viewer.layers.index(scribbles):  # the strokes stay on top
                    viewer.layers.move(viewer.layers.index(layer), viewer.layers.index(scribbles))
        if active is not None and active in viewer.layers and viewer.layers.selection.active is not active:
            viewer.layers.selection.active = active
            if mode is not None and active.mode != mode:
                active.mode = mode


def scribbles_for(viewer: Any, image: Any, shape: tuple[int, ...], axes: str) -> tuple[Any, bool]:
    """The scribbles layer Start takes when the user chose a new one: the image's own
    ``<image> [scribbles]`` of its shape when one is open (a closed and reopened widget: the
    strokes go on, trial 38) that lies on the image, else a new empty one, placed on the image and added.

    Parameters
    ----------
    viewer : napari.Viewer
    image : napari.layers.Image
        The (first) image layer segmented.
    shape : tuple of int
        The image's shape without channels.
    axes : str
        The image layer's axes.

    Returns
    -------
    (napari.layers.Labels, bool)
        The layer, and whether it was made now.
    """
    import napari

    data, kwargs, kind = result_layer_data(np.zeros(shape, np.uint8), image.name, "scribbles", layer_spatial(image),
                                           "labels", axes)
    for layer in viewer.layers:
        if (layer.name == kwargs["name"] and isinstance(layer, napari.layers.Labels)
                and tuple(layer.data.shape) == tuple(shape) and not is_generated(layer.metadata)):
            miss = placement_miss(layer, image)  # review 37: one on another scale was taken, then refused
            if miss:  # the image's own strokes, left where the image lay when a closed widget stopped
                # following it (trial 42: a reopened widget made an empty '[1]' without a word): back on its voxels
                layer.scale, layer.translate = kwargs["scale"], kwargs["translate"]
                place_like(layer, image)
                from napari.utils.notifications import show_info

                show_info(f"Live segmentation: '{layer.name}' lay off '{image.name}' ({miss}): it is back on the "
                          "image, each stroke on the voxel it was painted on")
            return layer, False
    # the user's painting: not a plugin result that a re-run may replace
    kwargs["metadata"] = {k: v for k, v in kwargs["metadata"].items() if k != PLUGIN_MARK}
    scribbles = napari.layers.Layer.create(data, kwargs, kind)
    place_like(scribbles, image)  # the brush paints the voxels under it
    return viewer.add_layer(scribbles), True


def network_threads(network: bool) -> Any:
    """Where a Live session's network trains: torch's threads with a core left for napari on 4 or
    more cores, as Train and Predict (``engine.devices.gui_thread_count``); without a network,
    nothing (torch is not imported)."""
    if not network:
        return contextlib.nullcontext()
    from napari_medml.engine.devices import gui_thread_count, intra_op_threads, resolve_device

    return intra_op_threads(gui_thread_count(resolve_device("auto")))


def user_labels(viewer: Any) -> list[tuple[str, Any]]:
    """``(name, layer)`` of the viewer's Labels layers that are not a plugin's results: the
    scribbles a session may take."""
    import napari

    return [(layer.name, layer) for layer in viewer.layers
            if isinstance(layer, napari.layers.Labels) and not is_generated(layer.metadata)]


class Follower:
    """Keeps the scribbles layer Start made where its image lies, with or without a session:
    after Stop, an image given a new voxel size left the strokes off it (trial 42)."""

    def __init__(self) -> None:
        self._events: list = []
        self._layer: Any = None
        self._inputs: Any = None
        self._axes = ""

    def follow(self, layer: Any, inputs: Any, axes: str) -> None:
        """Follow ``inputs.layer``'s placement with ``layer`` (the one before is let go)."""
        from napari_medml._widgets._placement import placement_events

        self.stop()
        self._layer, self._inputs, self._axes = layer, inputs, axes
        self._events = list(placement_events(inputs.layer))
        for event in self._events:
            event.connect(self._moved)

    def _moved(self, *_: Any) -> None:
        with contextlib.suppress(RuntimeError, ValueError):  # a layer half-removed as the viewer closes
            place_on_image(self._layer, self._inputs, self._axes)

    def stop(self) -> None:
        """Follow nothing."""
        for event in self._events:
            event.disconnect(self._moved)
        self._events, self._layer, self._inputs = [], None, None


def disconnect(layers: dict, painted: Any, moved: Any) -> None:
    """Undo Start's connections: ``painted`` from the scribbles' paint and data events, ``moved``
    from the image's placement and data events and the other channel layers' data events (``layers``
    as the widget keeps them)."""
    from napari_medml._widgets._placement import placement_events

    scribbles, image = layers.get("scribbles"), layers.get("image")
    if scribbles is not None:
        for event in (scribbles.events.paint, scribbles.events.data, scribbles.events.set_data):
            event.disconnect(painted)
    if image is not None:
        for event in (*placement_events(image), *(layer.events.data for layer in [image, *layers.get("channels", ())])):
            event.disconnect(moved)


def visible_slice(viewer: Any, scribbles: Any) -> tuple | None:
    """The index of the slice of ``scribbles`` (a volume's) on screen: an int per hidden axis and
    ``slice(None)`` per shown one; None in 3D view or without a volume."""
    if scribbles is None or viewer.dims.ndisplay != 2 or scribbles.ndim != 3:
        return None
    point, hidden = scribbles.world_to_data(viewer.dims.point), set(viewer.dims.not_displayed)
    offset = viewer.dims.ndim - scribbles.ndim
    return tuple(int(np.clip(round(point[i]), 0, n - 1)) if offset + i in hidden else slice(None)
                 for i, n in enumerate(scribbles.data.shape))


def clear_answer(viewer: Any, layer: Any) -> None:
    """Empty the widget's answer layer (``<image> [live]``) when there is no answer to show (the
    strokes of a class were erased): it would show the answer of strokes that are gone. A layer
    the user painted in is theirs and stays."""
    if layer is not None and layer in viewer.layers and is_generated(layer.metadata) and np.any(layer.data):
        layer.data = np.zeros_like(layer.data)


def show_uncertainty(viewer: Any, uncertainty: np.ndarray, image: Any, axes: Any, status: dict) -> None:
    """The answer's uncertainty (``1 - max class probability``) as ``<image> [uncertainty]``, its
    contrast spanning what it can reach: 0 to ``1 - 1/K`` for K painted classes (0.5 for two)."""
    top = 1.0 - 1.0 / max(2, len(status.get("counts") or ()))
    show_result(viewer, result_layer_data(uncertainty, image.name, "uncertainty", layer_spatial(image), "image", axes,
                                          colormap="inferno", contrast_limits=(0.0, top), opacity=0.6), like=image)


@dataclass(frozen=True)
class Answer:
    """One answer of the display job: labels of ``region`` (None: the whole image); labels None
    when they equal the last sent for that region (:class:`SentAnswers`)."""

    region: tuple | None
    labels: np.ndarray | None
    uncertainty: np.ndarray | None
    status: dict


class SentAnswers:
    """The labels the display job last sent for each region, so that an answer equal to the one
    on screen is not drawn again: napari redraws a whole Labels layer on new data, which took
    0.12-0.19 s of the GUI thread every few seconds while the network trained (trial 32)."""

    def __init__(self) -> None:
        self._sent: dict[str, np.ndarray] = {}

    def clear(self) -> None:
        """Send every region again (its layer is new, or gone)."""
        self._sent.clear()

    def news(self, region: tuple | None, labels: np.ndarray) -> np.ndarray | None:
        """``labels``, or None when they equal what was last sent for ``region`` (in the worker)."""
        key, old = repr(region), self._sent.get(repr(region))
        if old is not None and old.shape == labels.shape and np.array_equal(old, labels):
            return None
        self._sent[key] = np.array(labels, copy=True)  # the session's array may be reused
        return labels


def draw_answer(viewer: Any, layers: dict, report: Answer, image: Any, axes: str, shape: tuple) -> bool:
    """Draw an answer into ``layers["live"]`` (a new ``<image> [live]`` where there is none of
    the plugin's, the user's painted one kept) and its uncertainty, the brush kept on
    ``layers["scribbles"]``. False when the labels were unchanged but have no layer of ours to
    be on: they must be sent again."""
    layer = layers.get("live")
    ours = layer is not None and layer in viewer.layers and is_generated(layer.metadata)
    with brush_kept(viewer, layers.get("scribbles")):
        if report.labels is not None:
            if not ours:  # none yet, removed, or painted in by the user (theirs now): a new layer
                _tell_kept(viewer, layer, layers.get("scribbles"))
                data = report.labels if report.region is None else np.zeros(shape, report.labels.dtype)
                layer = layers["live"] = show_result(viewer, result_layer_data(
                    data, image.name, "live", layer_spatial(image), "labels", axes), like=image)
            if report.region is None:
                layer.data = report.labels
            else:  # an index keeps its axis in the answer: write it as a slice of length 1
                layer.data[tuple(slice(r, r + 1) if isinstance(r, int) else r for r in report.region)] = report.labels
                layer.refresh()
        if report.uncertainty is not None:
            show_uncertainty(viewer, report.uncertainty, image, axes, report.status)
    return ours or report.labels is not None


def _tell_kept(viewer: Any, layer: Any, scribbles: Any) -> None:
    """Say once that an answer layer the user painted into is kept and the answers go on in a new one."""
    if layer is None or layer not in viewer.layers:
        return
    from napari.utils import notifications

    where = f"'{scribbles.name}'" if scribbles is not None else "the scribbles layer"
    notifications.show_info(f"'{layer.name}' has your painting, so it is kept as it is and the answers go on in a "
                            f"new layer; to teach the model, paint into {where}")


class OnClose(QObject):
    """Calls back when the widget leaves its dock (napari's remove_dock_widget un-parents it)."""

    def __init__(self, widget: Any, callback: Any) -> None:
        super().__init__(widget)
        self._widget, self._callback = widget, callback
        widget.installEventFilter(self)

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.ParentChange and self._widget.parent() is None:
            self._callback()
        return False


def session_status(session: Any) -> dict:
    """What the status line shows: the stage on screen, held-out scores, stroke counts, training."""
    return {"stage": session.stage, "scores": session.scores, "counts": session.stroke_counts,
            "training": session.training, "network_off": getattr(session, "network_off", None)}


def add_live_model(store: Any, model: Any, inputs: Any, scribbles: Any, background: int) -> str:
    """Put an accepted network in the viewer's session ``store`` under a new name ``live <image>``,
    with the strokes as its training data (fine-tuning in Predict learns them alongside), unless
    the image was preprocessed (its recipe); returns the name."""
    name = store.new_model_name(f"live {inputs.layer.name}")
    if scribbles is not None and not inputs.recipe:
        from napari_medml.segmentation.corrections import labelled_samples

        images, strokes, spacings, channel_axis = inputs.samples(np.asarray(scribbles.data), model.spatial_dims)
        store.training_data[name] = labelled_samples(images, strokes, spacings, channel_axis, background)
    store.add_model(model, name)
    return name


def check_scribbles_shape(scribbles: Any, inputs: Any, shape: tuple[int, ...], new_choice: str) -> None:
    """Refuse scribbles of another shape than the image without its channels (``shape``), in one line;
    napari's New Labels on a layer with a channel slider makes them over the channels too (trial 40)."""
    have = tuple(scribbles.data.shape)
    if have == shape:
        return
    over_channels = "C" in inputs.axes and have == tuple(inputs.image.shape) and len(inputs.axes) == len(have)
    why = (" (napari's New Labels covers the channel slider too)" if over_channels else "")
    raise InputError(f"scribbles '{scribbles.name}' have shape {have}{why} but image '{inputs.layer.name}' has "
                     f"{shape} without its channels: choose '{new_choice}' in scribbles (Start makes it), or "
                     "another layer of that shape")


def check_live_input(inputs: Any) -> None:
    """Live takes one 2D image or 3D volume: a time series, or more axes than that with none
    named, is refused naming the layer and what to do."""
    from napari_medml.errors import InputError

    if "T" in inputs.axes:
        first = inputs.axes.index("T") == 0 and inputs.image.ndim == np.ndim(inputs.layer.data) and not getattr(
            inputs.layer, "rgb", False)  # napari offers Split RGB there, not Split Stack (review 47)
        how = ("right-click the layer > Split Stack, then Start on a frame" if first else  # trial 47: not said how
               "add the frame as a layer of its own (napari's console: viewer.add_image(...)), then Start on it")
        raise InputError(f"image '{inputs.layer.name}' is a time series: live segmentation takes one 2D image or 3D "
                         f"volume: {how}")
    if inputs.axes.count("Q") > 1:  # more axes than a volume, and nothing says what they are
        raise InputError(f"image '{inputs.layer.name}' has {inputs.image.ndim} axes and napari does not say "
                         "what they are: name them in the console, e.g. viewer.layers['"
                         f"{inputs.layer.name}'].axis_labels = ('t', 'z', 'y', 'x') for a time series (then "
                         "segment one frame) or ('c', 'z', 'y', 'x') when it holds channels")
    shape = [n for a, n in zip(inputs.axes, inputs.image.shape) if a != "C"]
    if min(shape) < 2:  # before Start makes a scribbles layer for it
        one = len(shape) == 3 and shape[0] == 1 and min(shape[1:]) > 1 and "C" not in inputs.axes
        name = inputs.layer.name
        fix = (f"take its slice as a 2D image, e.g. in the console viewer.add_image(viewer.layers['{name}'].data[0], "
               f"name='{name} 2D')" if one else "open a larger region")
        raise InputError(f"image '{inputs.layer.name}' has spatial shape {tuple(shape)}: live segmentation needs "
                         f"2 voxels or more along each axis; {fix}")


def place_on_image(layer: Any, inputs: Any, axes: str) -> None:
    """Put ``layer`` (the widget's own) where the image layer lies now."""
    _, kwargs, _ = result_layer_data(np.broadcast_to(np.zeros((), np.uint8), layer.data.shape),
                                     inputs.layer.name, "scribbles", layer_spatial(inputs.layer), "labels", axes)
    layer.scale, layer.translate = kwargs["scale"], kwargs["translate"]
    place_like(layer, inputs.layer)


def slice_axis(viewer: Any, scribbles: Any) -> int:
    """The axis of the 3D ``scribbles`` layer on ``viewer``'s slider (0, napari's default view,
    when the view is 3D or the layer is not a volume): a turned view (``dims.order``) slices another."""
    offset = viewer.dims.ndim - scribbles.ndim
    sliced = [i - offset for i in viewer.dims.not_displayed if i >= offset]
    return sliced[0] if scribbles.ndim == 3 and len(sliced) == 1 else 0


def go_to(viewer: Any, scribbles: Any, hint: Any) -> str:
    """Move ``viewer`` to a ``suggest_next`` hint (its slice, centred on its point); the hint line."""
    world = scribbles.data_to_world(hint.point)
    offset = viewer.dims.ndim - scribbles.ndim
    for i, value in enumerate(world):
        if offset + i in viewer.dims.not_displayed:
            step = int(round((value - viewer.dims.range[offset + i].start) / viewer.dims.range[offset + i].step))
            viewer.dims.set_current_step(offset + i, step)
    viewer.camera.center = tuple(world[i - offset] for i in viewer.dims.displayed if i >= offset)
    along = f" along {_axis_name(viewer, offset + hint.axis, hint)}" if hint.axis else ""  # napari's default: 0
    where = f"slice {hint.index}{along}, " if hint.index is not None else ""
    return f"Paint next at {where}voxel {tuple(hint.point)} (mean uncertainty {hint.uncertainty:.2f})."


def _axis_name(viewer: Any, dim: int, hint: Any) -> str:
    """``"axis 1 (y)"``: the layer's axis by the label napari's slider shows (a layer of a NIfTI
    opened in the console may be labelled x, y, z), or by its letter in (Z, Y, X) when unlabelled."""
    label = str(viewer.dims.axis_labels[dim])
    if label in (str(dim), str(dim - viewer.dims.ndim)):  # napari's default labels: 0, 1, 2 (0.5) or -3, -2, -1
        return axis_phrase(hint.axis, len(hint.point))
    return f"axis {hint.axis} ({label})"


def viewer_closing(viewer: Any) -> bool:
    """Whether ``viewer`` is closing: ``Viewer.close`` shuts its slicer down before it removes
    the layers (napari 0.5-0.9), so a removal then is the close's, not the user's."""
    executor = getattr(getattr(viewer, "_layer_slicer", None), "_executor", None)
    return bool(getattr(executor, "_shutdown", False))
