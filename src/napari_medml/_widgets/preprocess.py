"""Preprocess widget: one operation at a time, each result a new layer.

Results are named ``<image> [<operation>]``; running on a result appends to its
recipe (``metadata["preprocessing"]``, a list of PreprocessStep dicts), which the
train widget hands to ``DataConfig.preprocessing`` so prediction re-applies it. Cheap
intensity operations preview live on the current slice in ``<image> [preview]``.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FloatSpinBox,
    LineEdit,
    PushButton,
    SpinBox,
    create_widget,
)

from napari_medml._widgets._data_watch import HeldData, new_data_line
from napari_medml._widgets._dock import DockForm
from napari_medml._widgets._layers import (
    RECIPE_KEY,
    check_fits,
    is_lazy_layer,
    labels_array,
    layer_recipe,
    layer_volume,
    raw_layer,
    require,
    show_result,
    source_metadata,
)
from napari_medml._widgets._runner import Runner, notify_errors
from napari_medml.config import PreprocessStep, to_dict
from napari_medml.errors import InputError
from napari_medml.io import Volume
from napari_medml.layer_data import (
    LayerDataTuple,
    is_generated,
    mark_generated,
    volume_to_layer_data,
)
from napari_medml.result_layers import result_layer_name

__all__ = ["PreprocessWidget"]

OPERATION_CHOICES = [
    ("z-score", "zscore"), ("percentile clip + rescale", "percentile"), ("min-max", "minmax"),
    ("CT window", "ct_window"), ("Gaussian denoise", "gaussian"), ("median denoise", "median"),
    ("CLAHE", "clahe"), ("resample", "resample"), ("crop to threshold", "crop"),
    ("crop to labels", "crop_labels"), ("fill NaN/inf (with the smallest value)", "fill_nan"),
]
# Which parameter widgets each operation shows.
PARAMS = {
    "percentile": ("low", "high"), "ct_window": ("preset", "level", "width"),
    "gaussian": ("sigma",), "median": ("size",), "clahe": ("clip_limit",),
    "resample": ("target_spacing",), "crop": ("threshold", "margin"),
    "crop_labels": ("crop_labels", "margin"),
}
PREVIEW_VOXELS = 4096**2  # an on-disk layer's slice is previewed live up to this size
# a larger slice is previewed in a worker: a 4000x4000 z-score held the GUI thread 1.5 s (trial 46)
SYNC_PREVIEW_VOXELS = 512**2
CHEAP = ("zscore", "percentile", "minmax", "ct_window", "fill_nan")  # previewed live
# bytes a voxel an operation holds besides the layer (tracemalloc's peak on a uint8 volume; 12 for the
# intensity operations in float32): check_fits counts them before an on-disk layer is read whole
WORKING_BYTES = {"clahe": 52, "resample": 20, "gaussian": 15, "median": 2, "fill_nan": 9}


class PreprocessWidget(DockForm):
    """Choose an operation and its parameters; Apply makes a new layer."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        # napari's Plugins menu passes the viewer as ``napari_viewer`` (npe2 widget class)
        super().__init__()
        viewer = napari_viewer
        self._viewer = viewer
        w = self._w = {}
        w["image"] = create_widget(annotation=napari.layers.Image, label="image")
        w["operation"] = ComboBox(choices=OPERATION_CHOICES, value="zscore", label="operation")
        w["low"] = FloatSpinBox(value=1.0, min=0.0, max=100.0, label="low percentile")
        w["high"] = FloatSpinBox(value=99.0, min=0.0, max=100.0, label="high percentile")
        w["preset"] = ComboBox(choices=["brain", "soft tissue", "lung", "bone", "custom"],
                               value="soft tissue", label="window preset")
        w["level"] = FloatSpinBox(value=40.0, min=-5000.0, max=5000.0, label="level (HU)")
        w["width"] = FloatSpinBox(value=400.0, min=1.0, max=10000.0, label="width (HU)")
        w["sigma"] = FloatSpinBox(value=1.0, min=0.0, max=50.0, step=0.25, label="sigma (voxels)")
        w["size"] = SpinBox(value=3, min=1, max=31, label="window size")
        w["clip_limit"] = FloatSpinBox(value=0.01, min=0.0, max=1.0, step=0.005, label="clip limit")
        w["clip_limit"].native.setDecimals(3)
        w["target_spacing"] = LineEdit(value="1, 1, 1", label="target spacing")
        w["threshold"] = FloatSpinBox(value=0.5, min=-1e6, max=1e6, label="threshold")
        w["crop_labels"] = create_widget(annotation=napari.layers.Labels, label="labels")
        w["margin"] = SpinBox(value=0, min=0, max=1000, label="margin (voxels)")
        w["live"] = CheckBox(value=False, text="live preview (current slice)")
        w["apply"] = PushButton(text="Apply")
        w["cancel"] = PushButton(text="Cancel")
        self.extend(list(w.values()))
        self.runner = Runner("Preprocessing", [w["apply"]], w["cancel"], imports_stack=False)  # NumPy and SciPy
        self.append(self.runner.progress)
        w["apply"].changed.connect(self.apply)
        w["image"].changed.connect(self._fit_target_spacing)
        for name in ("operation", "low", "high", "preset", "level", "width", "image", "live"):
            w[name].changed.connect(functools.partial(self._field_changed, name))
        self._preview_worker: Any = None  # the preview running in a worker, if any
        self._preview_again = False  # the form changed while it ran: preview again when it ends
        viewer.dims.events.current_step.connect(self._changed)
        self._fit_target_spacing()
        self._changed()

    def __getitem__(self, key: Any) -> Any:
        return self._w[key] if isinstance(key, str) and key in self._w else super().__getitem__(key)

    def step(self) -> PreprocessStep:
        """The PreprocessStep the form describes (not for 'crop to labels')."""
        w, op = self._w, self._w["operation"].value
        params: dict[str, Any] = {}
        if op == "percentile":
            params = {"low": w["low"].value, "high": w["high"].value}
        elif op == "ct_window":
            params = ({"level": w["level"].value, "width": w["width"].value}
                      if w["preset"].value == "custom" else {"preset": w["preset"].value})
        elif op == "gaussian":
            params = {"sigma": w["sigma"].value}
        elif op == "median":
            params = {"size": w["size"].value}
        elif op == "clahe":
            params = {"clip_limit": w["clip_limit"].value}
        elif op == "resample":
            try:
                target = [float(v) for v in w["target_spacing"].value.replace(",", " ").split()]
            except ValueError:
                raise InputError("target spacing: give numbers such as '1, 1, 1'") from None
            if len(target) == 1 and w["image"].value is not None:  # one value for every spatial axis, as patch
                target = target * len(self._spacing_now(w["image"].value) or target)  # fields take one
            params = {"target_spacing": target}
        elif op == "crop":
            params = {"threshold": w["threshold"].value, "margin": w["margin"].value}
        return PreprocessStep(op, params)

    def form_closed(self) -> None:
        """A closed Preprocess no longer previews the slice the viewer shows (the slider ran its
        preview on unseen); its preview layer goes with it."""
        try:
            self._viewer.dims.events.current_step.disconnect(self._changed)
        except (TypeError, ValueError, RuntimeError):  # not connected
            pass
        self._w["live"].value = False

    def _changed(self, *_: Any) -> None:
        op = self._w["operation"].value
        shown = set(PARAMS.get(op, ()))
        for names in PARAMS.values():
            for name in names:
                self._w[name].visible = name in shown
        custom = op == "ct_window" and self._w["preset"].value == "custom"
        self._w["level"].visible = self._w["width"].visible = custom
        self._update_preview()

    def _field_changed(self, name: str, *_: Any) -> None:
        """A parameter the chosen operation does not use changes nothing (trial 46: the high
        percentile's box re-ran a z-score's preview)."""
        op = self._w["operation"].value
        if name in ("operation", "image", "live") or name in PARAMS.get(op, ()) or (
                op == "ct_window" and name in ("level", "width")):
            self._changed()

    def _fit_target_spacing(self, *_: Any) -> None:
        """Offer the chosen image's own spatial spacing as the target when the field holds
        another number of values (a 2D image, a time series, RGB: no Z)."""
        layer, field = self._w["image"].value, self._w["target_spacing"]
        spacing = None if layer is None else self._spacing_now(layer)
        if spacing and len(field.value.replace(",", " ").split()) != len(spacing):
            field.value = ", ".join(f"{s:g}" for s in spacing)

    @staticmethod
    def _spacing_now(layer: napari.layers.Layer) -> tuple[float, ...] | None:
        """The layer's spatial voxel size as the recipe sees it; None when its axes are unknown."""
        from napari_medml.preprocessing.stacks import recipe_axes

        try:
            return tuple(recipe_axes(layer_volume(layer)).spacing)
        except ValueError:
            return None  # unknown axes: Apply says so

    def _preview_name(self, layer: napari.layers.Layer) -> str:
        return f"{layer.name} [preview]"

    def _update_preview(self) -> None:
        from napari_medml.preprocessing.stacks import plane_at

        layer = self._w["image"].value
        old = [l for l in self._viewer.layers
               if l.name.endswith(" [preview]") and is_generated(l.metadata)]
        if layer in old or layer not in self._viewer.layers:  # the image removed: the list fell on a preview
            layer = None
        live = self._w["live"].value and layer is not None and self._w["operation"].value in CHEAP
        for l in old:  # another image's preview is stale (review 46: a worker's result outlived the switch)
            if not live or l.name != self._preview_name(layer):
                self._viewer.layers.remove(l)
        if not live:
            return
        volume = layer_volume(layer)  # full resolution; a dask/zarr layer stays on disk
        plane = plane_at(volume, layer.world_to_data(self._viewer.dims.point))  # the slice the viewer shows
        voxels = math.prod(plane.data.shape)
        if is_lazy_layer(layer) and voxels > PREVIEW_VOXELS:
            return  # a slice too large to preview live; Apply still works (or refuses, with the fix)
        try:
            step = self.step()
        except ValueError:
            return  # a half-typed parameter: keep the last preview
        if voxels <= SYNC_PREVIEW_VOXELS:
            out = _preview(plane, step)
            if out is not None:
                self._show_preview(layer, out)
            return
        if self._preview_worker is not None:  # one at a time: the newest form is previewed when it ends
            self._preview_again = True
            return
        from napari.qt.threading import create_worker

        worker = create_worker(_preview, plane, step, _start_thread=False)
        self._preview_worker = worker
        asked = self._preview_request()
        shown_before = self._preview_name(layer) in self._viewer.layers

        def shown(out: Any) -> None:
            # only what the form and the viewer still ask for (review 46: a percentile preview came after the
            # operation became Gaussian), and not back where the user removed the preview meanwhile
            if out is not None and not self._preview_again and self._preview_request() == asked and (
                    not shown_before or self._preview_name(layer) in self._viewer.layers):
                self._show_preview(layer, out)
            elif out is not None and self._preview_request() != asked:
                self._preview_again = True  # (a change that asked for nothing new, e.g. the slider moved back)

        def ended() -> None:
            self._preview_worker = None
            if self._preview_again:
                self._preview_again = False
                self._update_preview()

        worker.returned.connect(shown)
        worker.finished.connect(ended)
        worker.start()

    def _preview_request(self) -> tuple[Any, ...] | None:
        """What a preview now would show: the image, the operation's step and the viewer's point;
        None when no preview is asked for."""
        layer = self._w["image"].value
        if not (self._w["live"].value and layer in self._viewer.layers and self._w["operation"].value in CHEAP):
            return None
        try:
            step = to_dict(self.step())
        except ValueError:
            return None
        return id(layer), repr(step), tuple(round(float(v), 6) for v in self._viewer.dims.point)

    def _show_preview(self, layer: napari.layers.Layer, out: Volume) -> None:
        """Show ``out`` in ``<image> [preview]``, in place where the layer is already there."""
        if layer not in self._viewer.layers:
            return
        name = self._preview_name(layer)
        if name in self._viewer.layers and is_generated(self._viewer.layers[name].metadata):
            shown = self._viewer.layers[name]
            if getattr(shown, "rgb", False) == bool(out.meta.get("rgb")) and shown.data.shape == out.data.shape:
                shown.data = out.data
                return
        with contextlib.suppress(InputError):  # a plane of a layer rotated across it: no preview, Apply says why
            show_result(self._viewer, _result_layer(out, layer.name, "preview"), like=layer)
        self._viewer.layers.selection.active = layer

    @notify_errors("Preprocessing")
    def apply(self, *_: Any) -> None:
        """Run the operation on the chosen image in the runner; add the result layer(s).

        Each channel (an RGB colour too) and each time frame is processed on its own, as
        training replays the recipe; the result keeps the input's axes."""
        from napari_medml.preprocessing.recipe import describe_step
        from napari_medml.preprocessing.stacks import check_steps, crop_volume_to_labels, recipe_axes, run_recipe_volume

        layer = require(self._w["image"].value, napari.layers.Image, "an image")
        check_fits(layer, "preprocessing", "crop it (e.g. open a smaller region or a coarser level), or train and "
                   "predict on the raw image: training reads patches and Predict works block by block",
                   working=WORKING_BYTES.get(self._w["operation"].value, 12))
        volume = layer_volume(layer)
        recipe_axes(volume)  # unknown axes: refused here, before the job
        op = self._w["operation"].value
        if op == "crop_labels":
            if layer_recipe(layer):
                raise InputError(f"'{layer.name}' is already preprocessed: crop to a labels layer "
                                 "first, on the raw image, then add other steps")
            labels_layer = require(self._w["crop_labels"].value, napari.layers.Labels,
                                   "a labels layer to crop to")
            labels = labels_array(labels_layer)
            margin = self._w["margin"].value

            def crop_job(stop: Any, report: Any) -> Any:
                return crop_volume_to_labels(volume, labels, margin, labels_layer.name)

            def crop_done(result: Any) -> None:
                image_out, labels_out = result
                show_result(self._viewer, _result_layer(image_out, layer.name, f"crop to {labels_layer.name}"),
                            like=layer)
                show_result(self._viewer, _result_layer(labels_out, labels_layer.name, "crop"), like=labels_layer)

            self.runner.start(crop_job, on_result=crop_done)
            return

        step = self.step()
        check_steps(volume, (step,))  # here, not after the job's first import of MONAI (seconds)
        recipe = (*layer_recipe(layer), step)
        source = source_metadata(raw_layer(self._viewer, layer))
        what, held = describe_step(step), HeldData([layer])

        def job(stop: Any, report: Any) -> Any:
            from napari_medml.preprocessing.inputs import nonfinite_note
            from napari_medml.preprocessing.recipe import NothingToCrop

            # each channel and frame on its own: progress, and Cancel between them
            try:
                out = run_recipe_volume(volume, (step,), stop=stop, progress=lambda done, total: report((done, total)))
            except InputError as exc:  # the line names the image (trial 46: "crop: the mask is empty")
                lower = ": choose a lower threshold" if isinstance(exc, NothingToCrop) else ""
                raise InputError(f"image '{layer.name}': {exc}{lower}") from None
            filled = step.operation == "fill_nan"  # an on-disk layer is not read again
            return out, "" if filled else nonfinite_note(volume.data, f"image '{layer.name}'")

        def done(result: Any) -> None:
            from napari_medml.preprocessing.inputs import fills_nonfinite

            from napari.utils import notifications

            out, note = result
            if layer not in self._viewer.layers or held.replaced():  # trial 49: the old pixels' result, unsaid
                why = (new_data_line([layer.name], f"its '{what}' result") if layer in self._viewer.layers else
                       f"image '{layer.name}' was removed while the job ran: its '{what}' result is not shown")
                return notifications.show_warning(f"Preprocessing: {why}")
            new = show_result(self._viewer, _result_layer(out, layer.name, what), like=layer)
            if step.operation == "fill_nan" and not fills_nonfinite(recipe):  # after other steps: a new image
                # (models let a raw image with NaN through only when their recipe fills it first)
                return
            new.metadata[RECIPE_KEY] = [to_dict(s) for s in recipe]
            new.metadata.update(source)
            if note:
                notifications.show_warning(f"Preprocessing: {note}")

        self.runner.start(job, on_result=done, discard_on_stop=True)


def _preview(plane: Volume, step: PreprocessStep) -> Volume | None:
    """``step`` on the shown slice, per colour channel as Apply and training; None for a value
    the operation refuses (Apply says why)."""
    from napari_medml.preprocessing.stacks import run_recipe_volume

    try:
        return run_recipe_volume(plane, (step,))
    except ValueError:
        return None


def _result_layer(volume: Volume, source_name: str, what: str) -> LayerDataTuple:
    """A marked result layer ``<source> [<what>]`` with the volume's axes (labels, scale,
    translate; RGB stays RGB)."""
    data, kwargs, kind = volume_to_layer_data(volume)
    kwargs = {**kwargs, "name": result_layer_name(source_name, what), "metadata": mark_generated(kwargs["metadata"])}
    if kind == "image" and not kwargs.get("rgb"):
        kwargs["colormap"] = "gray"
    return data, kwargs, kind
