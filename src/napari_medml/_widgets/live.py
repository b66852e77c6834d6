"""Live segmentation widget: paint scribbles, see the answer within a second, a network learning behind it.

Start makes (or takes) a scribbles Labels layer ``<image> [scribbles]`` and a
headless :class:`napari_medml.live.LiveSession`. Each finished brush stroke
(the layer's ``paint`` event, debounced) hands the scribbles to the session,
whose ``update`` copies them and returns at once. Two jobs run off the GUI thread
in one job of the widget's runner: it answers the slice on screen, then the
whole image, into ``<image> [live]`` (a plugin-made layer, re-drawn as the answer
improves), and between answers gives the network time (``train_for`` in short
slices, which return as soon as new strokes arrive). One job, not two: napari's
thread pool has as many threads as cores, and Accept, Where to paint next and the
other widgets need one too. Stop, another image, removing a layer the session uses or
closing the widget cancel the session (a whole answer stops within a block) and end the job,
which closes it and frees its features and network. Accept writes the answer as ``<image>
[segmentation]`` and puts the network in the viewer's session, where the Predict widget lists it.
"""

from __future__ import annotations

import contextlib
import time
from types import SimpleNamespace
from typing import Any

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, PushButton, Select, SpinBox
from qtpy.QtCore import QTimer

from napari_medml._widgets._dock import DockForm
from napari_medml._widgets._forms import status_label
from napari_medml._widgets._live_parts import (ACCEPT_BUSY, WHERE_NEXT_BUSY, Answer, Follower, OnClose, SentAnswers,
                                               add_live_model, brush_kept, check_live_input, check_scribbles_shape,
                                               clear_answer, disconnect, draw_answer, go_to, place_on_image,
                                               network_threads, scribbles_for, session_status, slice_axis,
                                               status_lines, user_labels, viewer_closing, visible_slice)
from napari_medml._widgets._placement import placement_events
from napari_medml._widgets._proxy import same
from napari_medml._widgets._layers import (check_fits, check_on_image, layer_spatial, layer_volume, model_input,
                                           show_result)
from napari_medml._widgets._runner import Runner, notify_errors
from napari_medml._widgets._session import session_for
from napari_medml.errors import InputError
from napari_medml.layer_data import is_generated
from napari_medml.result_layers import result_layer_data

__all__ = ["LiveWidget"]

NEW_SCRIBBLES = "new: <image> [scribbles]"
DEBOUNCE_MS = 150
STARTING = "Starting: reading the image and computing its features (seconds on a large volume)..."


class LiveWidget(DockForm):
    """Paint scribbles, get a live segmentation; Accept hands it and its network to the session."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        viewer = self._viewer = napari_viewer
        w = self._w = {}
        w["images"] = Select(choices=lambda _: [(l.name, l) for l in viewer.layers
                                                if isinstance(l, napari.layers.Image)],
                             label="image(s)", tooltip="Several co-registered layers are the channels.")
        w["scribbles"] = ComboBox(choices=lambda _: [(NEW_SCRIBBLES, NEW_SCRIBBLES), *user_labels(viewer)],
                                  label="scribbles",
                                  tooltip="Paint here with napari's brush; 0 (eraser) = unpainted.")
        w["background"] = SpinBox(value=1, min=1, max=2**31 - 1, label="background id",
                                  tooltip="The painted id meaning background; other ids are classes.")
        w["network"] = CheckBox(value=True, text="train a network behind the features")
        w["start"] = PushButton(text="Start")
        w["stop"] = PushButton(text="Stop")
        w["status"] = status_label("Choose the image, press Start, paint background and a class.")
        w["counts"] = status_label()
        w["uncertainty"] = CheckBox(value=False, text="uncertainty layer")
        w["next"] = PushButton(text="Where to paint next")
        w["hint"] = status_label()
        w["accept"] = PushButton(text="Accept")
        self.extend(list(w.values()))
        setup = [w["start"], w["images"], w["scribbles"], w["background"], w["network"]]
        self.runner = Runner("Live segmentation", setup, w["stop"], show_progress=False)
        self.tasks = Runner("Live segmentation", [w["next"], w["accept"]], show_progress=False)
        self.session: Any = None
        self._inputs: Any = None
        self._axes = ""  # the shown image layer's own axes: where results lie (not the stacked channels')
        self._layers: dict[str, Any] = {}
        self._made: Any = None  # the scribbles layer Start made, and the image layer it was made for:
        self._made_for: Any = None  # the follower keeps it where the image lies
        self._follower = Follower()
        self._pushed: np.ndarray | None = None  # the scribbles last handed to the session
        self._whole_behind = False  # strokes came since the last answer for the whole image
        self._sent = SentAnswers()  # what the display job drew last: an equal answer is not drawn again
        self._stop_reason = ""
        self._visible: tuple | None = None
        self._view = 0  # grows when the slice on screen changes
        self._want_uncertainty = False  # what the worker reads (never a Qt widget from its thread)
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._push_scribbles)
        w["start"].changed.connect(self.start)
        w["stop"].changed.connect(self.stop)
        w["next"].changed.connect(self.where_next)
        w["accept"].changed.connect(self.accept)
        w["uncertainty"].changed.connect(self._uncertainty_toggled)
        for key, what in (("images", "another image was chosen"), ("scribbles", "other scribbles were chosen"),
                          ("background", "the background id changed")):  # this session is over: say why
            w[key].changed.connect(lambda *_, key=key, what=what: self._chosen_changed(key, what))
        viewer.dims.events.current_step.connect(self._view_changed)
        viewer.dims.events.ndisplay.connect(self._view_changed)
        viewer.layers.events.removed.connect(self._layer_removed)
        self._closer = OnClose(self.native, lambda: (self.stop(), self._follower.stop()))  # let go (trial 43)
        self.native.destroyed.connect(self._destroyed)

    def __getitem__(self, key: Any) -> Any:
        return self._w[key] if isinstance(key, str) and key in self._w else super().__getitem__(key)

    # -- start and stop ------------------------------------------------------------------

    @notify_errors("Live segmentation")
    def start(self, *_: Any) -> None:
        """Make or take the scribbles layer, then start the session and its two jobs."""
        if self.runner.refused_while_running():  # one still stopping keeps its layers and events
            return
        for layer in self._w["images"].value or ():
            check_fits(layer, "live segmentation", "crop it (or open a coarser level) to segment it live; Predict "
                       "segments the whole layer block by block with a model from the crop")
        # the layer as shown: a crop (or another preprocessed layer) is segmented as it is,
        # and the accepted model records the recipe that made it from the raw image
        inputs = model_input(self._viewer, self._w["images"].value, raw=False)
        check_live_input(inputs)
        axes = layer_volume(inputs.layer).axes  # several layers as channels: each layer's own
        shape = tuple(s for a, s in zip(inputs.axes, inputs.image.shape) if a != "C")
        scribbles = self._w["scribbles"].value
        if same(scribbles, self._made) and not same(self._made_for, inputs.layer):
            scribbles = None  # the strokes Start made for another image: this one gets its own layer
        if scribbles == NEW_SCRIBBLES or scribbles is None:  # the image's own from before, else a new one
            scribbles, made = scribbles_for(self._viewer, inputs.layer, shape, axes)
            self._w["scribbles"].reset_choices()
            self._w["scribbles"].value = scribbles
            if made:
                self._made, self._made_for = scribbles, inputs.layer
        check_scribbles_shape(scribbles, inputs, shape, NEW_SCRIBBLES)
        from napari_medml.segmentation.label_values import check_scribble_ids  # numpy only (the GUI thread)

        check_scribble_ids(scribbles.data, scribbles.name, self._w["background"].value, NEW_SCRIBBLES)
        if same(scribbles, self._made):  # ours: it lies where the image lies now, and follows it
            place_on_image(scribbles, inputs, axes)
            self._follower.follow(scribbles, inputs, axes)
        else:  # strokes must land on the voxels they are painted over
            check_on_image(scribbles, inputs.layer)
        scribbles.mode = "paint"
        if scribbles.selected_label == self._w["background"].value:
            scribbles.selected_label = self._w["background"].value + 1
        channels = [layer for layer in self._w["images"].value or () if not same(layer, inputs.layer)]
        self._inputs, self._axes = inputs, axes
        self._layers = {"image": inputs.layer, "scribbles": scribbles, "channels": channels}
        self._pushed, self._stop_reason = None, ""
        self._sent.clear()
        scribbles.events.paint.connect(self._painted)
        scribbles.events.data.connect(self._painted)
        scribbles.events.set_data.connect(self._painted)  # undo/redo (Ctrl-Z) only refresh the layer
        for event in (*placement_events(inputs.layer), *(layer.events.data for layer in [inputs.layer, *channels])):
            event.connect(self._image_moved)  # its pixels too, and each channel layer's (trial 38)
        self._view_changed()
        config = (inputs, self._w["background"].value, self._w["network"].value)
        self._w["status"].value = STARTING  # trial 32: 8-17 s without a word on a 2-core CPU
        self.runner.start(lambda stop, report: self._display_job(config, stop, report), on_report=self._on_report,
                          on_done=self._stopped, imports_stack=config[2])  # the forest alone needs no torch

    def stop(self, *_: Any) -> None:
        """End the jobs and cancel the session; the live job then closes it (freeing its memory)."""
        if self.runner.running:  # "Stopped." once the job has ended (a session being made finishes first)
            self._w["status"].value = f"Stopping: {self._stop_reason}" if self._stop_reason else "Stopping..."
        self.runner.stop()
        self.tasks.stop()
        if self.session is not None:
            self.session.cancel()

    def _destroyed(self, *_: Any) -> None:
        # the viewer closed with the widget in it: end the jobs (the session closes in its job), no reports after
        with contextlib.suppress(RuntimeError):  # at interpreter exit Qt may have deleted the timer first
            self._timer.stop()
        for runner in (self.runner, self.tasks):
            runner.detach()
        self._follower.stop()

    def _stopped(self) -> None:
        scribbles = self._layers.get("scribbles")
        disconnect(self._layers, self._painted, self._image_moved)
        self._timer.stop()
        if self.session is None and same(scribbles, self._made) and not scribbles.data.any():
            self._made = None  # no session came (a refused image): the empty layer Start made goes too
            self._follower.stop()
            if scribbles in self._viewer.layers:
                self._viewer.layers.remove(scribbles)
        self.session, self._layers, self._pushed = None, {}, None
        self._w["status"].value = f"Stopped: {self._stop_reason}" if self._stop_reason else "Stopped."

    def _stop_because(self, reason: str, notify: bool = True) -> None:
        from napari.utils import notifications

        if self.runner.running and not self.runner.stopping:  # once: a stopping session is told no more
            self._stop_reason = reason
            self.stop()
            if notify and not viewer_closing(self._viewer):  # the viewer removes every layer as it closes
                notifications.show_warning(f"Live segmentation stops: {reason}")

    def _layer_removed(self, event: Any) -> None:
        if event.value is self._layers.get("live"):  # an output: it comes back, answered again whole now
            self._ask_again()
        for key in ("image", "scribbles"):
            if event.value is self._layers.get(key):
                self._stop_because(f"{key} layer '{event.value.name}' was removed; choose the layers and "
                                   "press Start to go on")

    def _chosen_changed(self, key: str, what: str) -> None:
        for name in ("image", "scribbles"):  # a removed layer leaves its box first (napari 0.5): say that
            layer = self._layers.get(name)
            if layer is not None and layer not in self._viewer.layers:
                return self._layer_removed(SimpleNamespace(value=layer))
        self._stop_because(f"{what}; press Start to go on", notify=False)

    def _image_moved(self, event: Any = None) -> None:
        image, scribbles = self._layers.get("image"), self._layers.get("scribbles")
        if image is None or getattr(event, "type", None) == "data":  # new pixels: the features are of the old ones
            return None if image is None else self._stop_because(
                f"image '{getattr(event.source, 'name', image.name)}' has new data; press Start to segment it")
        ours = same(scribbles, self._made)  # placed by the follower
        answer = self._layers.get("live")
        if answer is not None and is_generated(answer.metadata) and answer in self._viewer.layers:
            place_on_image(answer, self._inputs, self._axes)
        fix = ("the scribbles follow it and keep their strokes" if ours else
               f"set the scale and translate of '{getattr(scribbles, 'name', 'the scribbles')}' to the image's")
        self._stop_because(f"image '{image.name}' has a new voxel size or position ({fix}); press Start to "
                           "segment it with its new spacing")

    # -- GUI thread: strokes in, answers out ----------------------------------------------

    def _painted(self, *_: Any) -> None:
        self._timer.start(DEBOUNCE_MS)  # a burst of paint events becomes one update

    def _push_scribbles(self) -> None:
        scribbles = self._layers.get("scribbles")
        if self.session is None or scribbles is None or self.session.closed:
            return
        from napari_medml.live.instant import same_scribbles  # loaded with the session already

        data = np.asarray(scribbles.data)
        # set_data also comes with every slice change: only new strokes are refitted
        if same_scribbles(data, self._pushed):
            return
        self._pushed, self._whole_behind = data.copy(), True
        self.session.update(self._pushed, copy=False)  # ours alone, never written to: returns at once
        self._w["status"].value = "fitting the new strokes..."

    def _view_changed(self, *_: Any) -> None:
        self._visible, self._view = visible_slice(self._viewer, self._layers.get("scribbles")), self._view + 1

    def _ask_again(self) -> None:  # the display job answers the view again, and sends every answer whole
        self._sent.clear()
        self._view += 1

    def _on_report(self, report: Any) -> None:
        if isinstance(report, dict):  # the network's progress
            self._show_status(report)
            return
        if not isinstance(report, Answer):  # the session, made in the worker
            self.session = report
            self._push_scribbles()
            return
        if "message" in report.status:  # nothing to answer: an answer of strokes now erased would mislead
            self._show_status(report.status)
            clear_answer(self._viewer, self._layers.get("live"))
            self._sent.clear()  # the layer is empty now: the next answer is drawn, whatever it was before
            return
        if not draw_answer(self._viewer, self._layers, report, self._inputs.layer, self._axes, self.session.shape):
            self._ask_again()  # unchanged, but its layer is gone or the user's
        elif report.region is None:
            self._whole_behind = False
        self._show_status(report.status)

    def _uncertainty_toggled(self, value: bool) -> None:
        self._want_uncertainty = bool(value)

    def _show_status(self, status: dict) -> None:
        line, self._w["counts"].value = status_lines(status, self._w["background"].value,
                                                       self._whole_behind and self._visible is not None)
        self._w["status"].value = status.get("message", line)

    # -- worker threads -------------------------------------------------------------------

    def _display_job(self, config: tuple, stop: Any, report: Any) -> None:
        """Make the session, then answer the visible slice and the whole image whenever they change,
        and train the network in between."""
        from napari_medml.live import LiveSession, Superseded
        from napari_medml.live.deep import DeepConfig

        inputs, background, network = config
        with network_threads(network):  # a core left for napari (4 or more); no network, no torch
            try:
                session = LiveSession(inputs.image, spacing=inputs.spacing, channel_axis=inputs.channel_axis,
                                      background_id=background, deep=DeepConfig() if network else None)
            except InputError as exc:  # the status keeps the reason after the notification goes
                self._stop_reason = str(exc)
                raise
            try:
                report(session)
                shown = None
                while not stop.stopped:
                    key = (session.revision, self._view, self._want_uncertainty)
                    try:
                        if key == shown:
                            steps = session.training.get("steps")
                            if network:
                                session.train_for(0.5)  # returns early when strokes arrive, or with nothing to learn
                            if session.training.get("steps") != steps:
                                report(session_status(session))
                            else:
                                time.sleep(0.05)
                            continue
                        if self._visible is not None:
                            labels = self._sent.news(self._visible, session.predict(self._visible))
                            report(Answer(self._visible, labels, None, session_status(session)))
                        if session.revision == key[0] and not stop.stopped:  # nothing newer to show first
                            unc = session.uncertainty(wait=False, until_update=True) if key[2] else None
                            whole = self._sent.news(None, session.predict(wait=False, until_update=True))
                            report(Answer(None, whole, unc, session_status(session)))
                    except Superseded:  # new strokes: their slice is answered first
                        continue
                    except InputError as exc:  # nothing to answer yet (one id painted): say what to paint
                        if session.closed:
                            return
                        report(Answer(None, np.zeros(0), None, {**session_status(session), "message": str(exc)}))
                    shown = key
            finally:
                session.close()

    # -- where next, accept ---------------------------------------------------------------

    @notify_errors("Where to paint next")
    def where_next(self, *_: Any) -> None:
        """Move the view to the slice (and point) with the most uncertain unpainted voxels."""
        session, scribbles = self._require_session(), self._layers["scribbles"]
        axis = slice_axis(self._viewer, scribbles)  # the slider's axis: the view may be turned (trial 36)
        if self.tasks.start(lambda stop, report: session.suggest_next(axis=axis),  # the whole image's answer first
                            on_result=lambda hint: self._go_to(scribbles, hint), on_done=self._busy_over) is not None:
            self._w["hint"].value = WHERE_NEXT_BUSY

    def _go_to(self, scribbles: Any, hint: Any) -> None:
        self._w["hint"].value = go_to(self._viewer, scribbles, hint)

    @notify_errors("Accept")
    def accept(self, *_: Any) -> None:
        """Write the answer as ``<image> [segmentation]``; put the network in the viewer's session."""
        session, inputs = self._require_session(), self._inputs

        def job(stop: Any, report: Any) -> tuple[np.ndarray, Any, str | None]:
            labels = session.predict()
            try:
                model = session.network_model(inputs.recipe)
            except InputError:
                model = None  # no network (yet): the segmentation alone
            return labels, model, session.network_note()

        if self.tasks.start(job, on_result=lambda result: self._accepted(inputs, *result),
                            on_done=self._busy_over) is not None:
            self._w["hint"].value = ACCEPT_BUSY

    def _busy_over(self) -> None:  # the job ended (an answer, an error or a stop): its busy line goes
        if self._w["hint"].value in (WHERE_NEXT_BUSY, ACCEPT_BUSY):
            self._w["hint"].value = ""

    def _accepted(self, inputs: Any, labels: np.ndarray, model: Any, note: str | None = None) -> None:
        from napari.utils import notifications

        if inputs.layer not in self._viewer.layers:  # nothing to lie on: neither the layer nor the model
            notifications.show_warning(f"image '{inputs.layer.name}' was removed while Accept ran: its "
                                       "segmentation and model are not added (open the image again)")
            return
        with brush_kept(self._viewer, self._layers.get("scribbles")):
            show_result(self._viewer, result_layer_data(labels, inputs.layer.name, "segmentation", layer_spatial(
                inputs.layer), "labels", layer_volume(inputs.layer).axes), like=inputs.layer)
        if model is None:
            notifications.show_info("Accepted the segmentation; " + (
                "the network had not learned yet, so no model was added (keep 'train a network' on and give it "
                "time)." if self._w["network"].value else "'train a network' is off, so there is no model to add "
                "(tick it and press Start: a network learns from the same strokes)."))
            return
        name = add_live_model(session_for(self._viewer), model, inputs, self._layers.get("scribbles"),
                              self._w["background"].value)
        text = (f"Accepted: '{inputs.layer.name} [segmentation]' and model '{name}' (Predict widget: predict "
                "other images, fine-tune, save)")
        notify = notifications.show_warning if note else notifications.show_info  # note: the network lags
        notify(f"{text}; but {note}." if note else f"{text}.")

    def _require_session(self) -> Any:
        if self.session is None or self.session.closed:
            raise InputError("no live session: choose the image and press Start (the strokes are kept), then "
                             "Accept or ask while it runs")
        return self.session

