"""Pretrain widget: unlabeled image layers in; a pretrained model in the session, and
``<image> [reconstruction]`` and ``<image> [reconstruction error]`` layers out.

Reads the form into a :class:`~napari_medml.config.TrainConfig` (task ``"pretraining"``)
and runs :func:`napari_medml.pretraining.task.fit_pretraining` through the runner, then
reconstructs each chosen layer. Train segmentation's "start from" lists the model.
Reconstruct applies a pretrained model (of the session, or a saved pretraining bundle) to the
chosen layers without training: their reconstruction and error (anomaly map) layers.
Every run keeps ``best``/``last`` checkpoints (in ``<bundle>/checkpoints``, or the
session's temp folder): Resume continues a stopped run.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, get_args

import napari
from magicgui.widgets import ComboBox, FileEdit, FloatSpinBox, LineEdit, PushButton, Select, SpinBox

from napari_medml._widgets._data_watch import HeldData, new_data_line
from napari_medml._widgets._dock import DockForm
from napari_medml._widgets._forms import parse_size, status_label
from napari_medml._widgets._layers import (
    check_fits,
    follow_dims,
    layer_spatial,
    layer_volume,
    model_input,
    show_result,
)
from napari_medml._widgets._runner import notify_errors
from napari_medml._widgets._run_controls import run_controls, started_line
from napari_medml._widgets._session import session_for
from napari_medml._widgets._units import in_first_unit, in_model_unit
from napari_medml._widgets.plots import TrainingPlot
from napari_medml.config import (
    CORRUPTION_SETTINGS,
    AugmentConfig,
    Corruption,
    DataConfig,
    DeviceName,
    ModelConfig,
    OptimConfig,
    PretrainConfig,
    ReconstructionLoss,
    SegmentationNetwork,
    TrainConfig,
)
from napari_medml.errors import InputError
from napari_medml.result_layers import result_layer_data, source_shaped_result

__all__ = ["FROM_BUNDLE", "PretrainWidget"]

FROM_BUNDLE = "bundle folder..."


class PretrainWidget(DockForm):
    """Form for one pretraining run on unlabeled layers, Start/Stop, and a live plot."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        # napari's Plugins menu passes the viewer as ``napari_viewer`` (npe2 widget class)
        super().__init__()
        viewer = napari_viewer
        self._viewer = viewer
        self._session = session_for(viewer)
        pre = PretrainConfig()
        w = self._w = {}
        w["images"] = Select(choices=lambda _: [(l.name, l) for l in viewer.layers
                                                if isinstance(l, napari.layers.Image)],
                             label="unlabeled image(s)",
                             tooltip="Each chosen layer is one more unlabeled image (not a channel).")
        w["dims"] = ComboBox(choices=[("2D", 2), ("3D", 3)], value=3, label="2D/3D")
        follow_dims(w["images"], w["dims"])
        w["network"] = ComboBox(choices=list(get_args(SegmentationNetwork)), value="unet", label="network",
                                tooltip="Train segmentation starts from it with the same network, width and depth.")
        w["channels"] = SpinBox(value=16, min=1, max=256, label="width (channels)")
        w["depth"] = SpinBox(value=4, min=2, max=7, label="depth (levels)")
        w["loss"] = ComboBox(choices=list(get_args(ReconstructionLoss)), value=pre.loss, label="loss",
                             tooltip="mse: squared error; mae: absolute error")
        w["corruption"] = ComboBox(choices=list(get_args(Corruption)), value=pre.corruption, label="corruption",
                                   tooltip="what the network learns to undo: blanked blocks, noise, or both")
        w["mask_ratio"] = FloatSpinBox(value=pre.mask_ratio, min=0.05, max=0.95, step=0.05, label="masked share")
        w["mask_block"] = SpinBox(value=pre.mask_block, min=1, max=256, label="mask block",
                                  tooltip="blanked block size in voxels along the finest axis")
        w["noise_std"] = FloatSpinBox(value=pre.noise_std, min=0.0, max=5.0, step=0.05, label="noise std")
        w["patch"] = LineEdit(value="0", label="patch size", tooltip="0 = automatic; '64' or '16,64,64'")
        w["batch"] = SpinBox(value=DataConfig.batch_size, min=1, max=256, label="batch size")
        w["epochs"] = SpinBox(value=20, min=1, max=100000, label="epochs")
        w["steps"] = SpinBox(value=25, min=1, max=100000, label="steps per epoch")
        w["minutes"] = FloatSpinBox(value=0.0, min=0.0, max=10000.0, step=0.5, label="max minutes",
                                    tooltip="0 = no time limit")
        w["lr"] = FloatSpinBox(value=1e-3, min=1e-6, max=1.0, step=1e-4, label="learning rate")
        w["lr"].native.setDecimals(6)
        w["device"] = ComboBox(choices=list(get_args(DeviceName)), value="auto", label="device")
        w["bundle"] = FileEdit(mode="d", value="", label="save bundle to",
                               tooltip="optional: a folder for the pretrained bundle")
        w["name"] = LineEdit(value="", label="model name", tooltip="empty: '<image> pretrained'")
        w["use"] = ComboBox(choices=lambda _: [*self._pretrained(), FROM_BUNDLE], label="reconstruct with",
                            tooltip="Reconstruct applies this pretrained model (of this session, or a saved "
                            "pretraining bundle) to the chosen images: reconstruction and error layers")
        w["use_bundle"] = FileEdit(mode="d", value="", label="pretraining bundle",
                                   tooltip="with 'reconstruct with' = bundle folder: one that Pretrain or "
                                   "'napari-medml pretrain' saved")
        w["reconstruct"] = PushButton(text="Reconstruct")
        w["status"] = status_label()
        self.runner, self._checkpoints = run_controls(w, self._session, "pretrain", "Pretraining", "images",
                                                      also=(w["reconstruct"],))
        self._session.attach(self.native)  # the session's temp folder goes with the viewer
        self._last_run: dict[str, Any] | None = None  # what Resume continues
        self.extend([*w.values(), self.runner.progress])
        self.plot = TrainingPlot(metric=None)  # reconstruction losses only
        self.add_native(self.plot)
        self.model: Any = None
        w["start"].changed.connect(self.start)
        w["resume"].changed.connect(self.resume)
        w["reconstruct"].changed.connect(self.reconstruct)
        w["corruption"].changed.connect(self._corruption_changed)
        self._corruption_changed(w["corruption"].value)
        self._session.on_model_added(self._model_added)

    def _corruption_changed(self, corruption: str) -> None:
        """Only the settings that the chosen corruption reads can be edited."""
        for name in ("mask_ratio", "mask_block", "noise_std"):
            self._w[name].enabled = name in CORRUPTION_SETTINGS[corruption]

    def __getitem__(self, key: Any) -> Any:
        return self._w[key] if isinstance(key, str) and key in self._w else super().__getitem__(key)

    def config(self, recipe: tuple[Any, ...] = ()) -> TrainConfig:
        """The TrainConfig the form describes (``recipe``: the chosen layers' preprocessing)."""
        w = self._w
        return TrainConfig(
            task="pretraining",
            data=DataConfig(spatial_dims=w["dims"].value, preprocessing=tuple(recipe),
                            patch_size=parse_size(w["patch"].value, w["dims"].value, of="network"),
                            batch_size=w["batch"].value),
            model=ModelConfig(network=w["network"].value, channels=w["channels"].value, depth=w["depth"].value),
            optim=OptimConfig(learning_rate=w["lr"].value, epochs=w["epochs"].value,
                              steps_per_epoch=w["steps"].value, max_minutes=w["minutes"].value or None),
            pretrain=PretrainConfig(loss=w["loss"].value, corruption=w["corruption"].value,
                                    mask_ratio=round(w["mask_ratio"].value, 4), mask_block=w["mask_block"].value,
                                    noise_std=w["noise_std"].value),
            augment=replace(AugmentConfig.none(), flip=AugmentConfig().flip),  # the corruption is the task
            device=w["device"].value)

    @notify_errors("Pretraining")
    def start(self, *_: Any) -> None:
        """Read the form and the layers; pretrain, then reconstruct each layer, in the runner."""
        w = self._w
        layers = self._chosen("pretraining", "choose at least one image layer to pretrain on",
                              "crop it (or open a coarser level) to pretrain on; segmentation training reads "
                              "patches of it and Predict works block by block")
        # one unlabeled image each, all in one length unit (the first layer's), which the bundle records
        inputs, unit, unit_lines = in_first_unit([model_input(self._viewer, [layer]) for layer in layers])
        if len({i.recipe for i in inputs}) > 1:
            raise InputError("the chosen images have different preprocessing recipes: preprocess them the "
                             "same way, or pretrain on the raw images")
        form = self.config(inputs[0].recipe)
        dims = form.data.spatial_dims
        from napari_medml.io.axes import AXES_HINT

        def samples() -> tuple[list, list, Any, tuple[int, ...]]:
            from napari_medml.pretraining.data import split_unlabeled

            images, spacings, channel_axes, counts = [], [], set(), []
            for inp in inputs:
                parts, sizes, channel = split_unlabeled(inp.image, inp.axes, dims, inp.spacing,
                                                        what=f"image '{inp.layer.name}'", hint=AXES_HINT)
                images += parts
                spacings += sizes
                channel_axes.add(channel)
                counts.append(len(parts))  # each layer one case of the median voxel size
            if len(channel_axes) > 1:
                raise InputError("the chosen images differ in channels: choose all with or all without channels")
            return images, spacings, channel_axes.pop(), tuple(counts)

        samples()  # axes and channels checked before the job
        bundle = str(w["bundle"].value) if str(w["bundle"].value) not in ("", ".") else None
        name = w["name"].value or self._session.new_model_name(f"{inputs[0].layer.name} pretrained")
        self._last_run = {"inputs": inputs, "samples": samples, "form": form, "config": form,
                          "bundle": bundle, "name": name, "unit": unit, "unit_lines": unit_lines}
        self.plot.clear()
        self._start_job(self._last_run)

    @notify_errors("Pretraining")
    def resume(self, *_: Any) -> None:
        """Continue the last run (stopped, or failed) from its ``last`` checkpoint.

        The run keeps its images and settings; form fields that shape the network must
        not have changed since (one error line says which did).
        """
        run = self._last_run
        folder = self._checkpoints.check_resume(run, self.runner.running, lambda: self.config(run["inputs"][0].recipe))
        self._start_job(run, resume_from=folder)

    def _start_job(self, run: dict[str, Any], resume_from: str | None = None) -> None:
        """Pretrain (or resume) ``run`` in the runner, then reconstruct each layer."""
        inputs, samples, bundle, name = run["inputs"], run["samples"], run["bundle"], run["name"]
        # the data read at the first Start: a Resume after new data shows none of the old (review 50)
        checkpoints, held = self._checkpoints, run.setdefault("held", HeldData(inp.layer for inp in inputs))

        def job(stop: Any, report: Any) -> Any:
            from napari_medml.engine.devices import gui_thread_count, intra_op_threads, resolve_device
            from napari_medml.pretraining.task import fit_pretraining

            if resume_from is None:  # in the worker: the folder helpers import torch
                run["config"] = replace(run["form"], checkpoint_dir=str(checkpoints.new_run(bundle)))
            config = run["config"]
            with intra_op_threads(gui_thread_count(resolve_device(config.device))):
                images, spacings, channel_axis, counts = samples()
                config = replace(config, data=replace(config.data, sample_groups=counts))
                model = yield from fit_pretraining(images, None, config, spacing=spacings,
                                                   channel_axis=channel_axis, stop=stop, resume_from=resume_from)
                if run.get("unit"):  # Reconstruct and `napari-medml pretrain`'s reconstruct compare units with it
                    model.provenance["unit"] = run["unit"]
                checkpoints.finish(model, bundle, stop.stopped)
                results = [model.reconstruct(inp.image, spacing=inp.spacing, axes=inp.axes, device=config.device,
                                             progress=lambda done, total: report((done, total)))
                           for inp in inputs]
            return model, results

        def done(result: tuple[Any, list]) -> None:
            stopped = bool(self.runner.token is not None and self.runner.token.stopped)
            checkpoints.result(stopped)
            model, results = result
            self.model = model
            self._session.add_model(model, name, bundle)  # its folder loaded again: this entry
            gone = [inp.layer.name for inp in inputs if inp.layer not in self._viewer.layers]
            replaced = held.replaced()  # trial 49: the old pixels' reconstruction was shown on the new ones
            for inp, rec in zip(inputs, results):
                if inp.layer in self._viewer.layers and inp.layer.name not in replaced:  # removed: nothing to lie on
                    self.show(rec, inp.layer)
            from napari_medml.segmentation.step_time import model_steps_trained  # loaded with training already

            trained = model_steps_trained(model)
            self._w["status"].value = f"model '{name}' is ready: start Train segmentation from it" + (
                f" (trained {trained})" if trained else "") + (
                f" (removed while it ran, so not shown: the reconstruction of {', '.join(map(repr, gone))})"
                if gone else "") + (f"; {new_data_line(replaced, 'the reconstruction')}" if replaced else "") + "".join(
                f"; {line}" for line in run.get("unit_lines", ()))
            if stopped:
                self._w["status"].value += " (stopped: Resume continues the run)"

        def plot(report: Any) -> None:
            if not isinstance(report, tuple):  # (done, total) pairs are the reconstruction's windows
                self.plot.add(report)

        checkpoints.running()
        if self.runner.start(job, on_report=plot, on_result=done, on_done=checkpoints.done) is not None:
            self._w["status"].value = started_line(resume_from is not None, "images")

    def _model_added(self, name: str) -> None:
        """List a new pretrained model; take it when no bundle folder is chosen."""
        use = self._w["use"]
        use.reset_choices()
        if name in self._pretrained() and use.value == FROM_BUNDLE and str(self._w["use_bundle"].value) in ("", "."):
            use.value = name

    def _chosen(self, what: str, none: str, fix: str) -> list[napari.layers.Layer]:
        """The chosen image layers, each one that ``what`` can read whole (``none``: the error without any)."""
        layers = list(self._w["images"].value or [])
        if not layers:
            raise InputError(none)
        for layer in layers:
            check_fits(layer, what, fix)
        return layers

    def _pretrained(self) -> list[str]:
        """The session's pretrained models, by name."""
        return [name for name, m in self._session.models.items() if getattr(m.config, "task", "") == "pretraining"]

    @notify_errors("Reconstruction")
    def reconstruct(self, *_: Any) -> None:
        """Apply a pretrained model (session or bundle folder) to the chosen layers, in the runner."""
        w = self._w
        layers = self._chosen("reconstruction", "choose the image layer(s) to reconstruct",
                              "crop it (or open a coarser level) to reconstruct it")
        if w["use"].value in (None, FROM_BUNDLE):
            source: Any = str(w["use_bundle"].value)
            if source in ("", "."):
                raise InputError("'reconstruct with' is a bundle folder: choose the folder of a pretraining "
                                 "bundle (or pretrain one here first)")
        elif w["use"].value in self._session.models:
            source = self._session.models[w["use"].value]
        else:
            raise InputError(f"model '{w['use'].value}' is no longer in this session: choose another")
        inputs = [model_input(self._viewer, [layer]) for layer in layers]
        device = w["device"].value

        def job(stop: Any, report: Any) -> tuple[list, list]:
            from napari_medml.engine.devices import gui_thread_count, intra_op_threads, resolve_device
            from napari_medml.io.spacing import spacing_note
            from napari_medml.preprocessing.inputs import check_finite
            from napari_medml.pretraining.model import load_pretrained

            if isinstance(source, str):
                from pathlib import Path

                from napari_medml.bundles.format import read_description

                task = read_description(Path(source)).get("task")
                if task != "pretraining":
                    what = "an ensemble of models" if task == "ensemble" else f"a {task} model"
                    raise InputError(f"'{source}' holds {what}: Reconstruct takes a pretraining bundle "
                                     "(Predict applies trained models)")
            model = load_pretrained(source) if isinstance(source, str) else source
            results, notes = [], []
            with intra_op_threads(gui_thread_count(resolve_device(device))):
                for inp in inputs:
                    check_finite(inp.image, f"layer '{inp.layer.name}'")  # named, as on the command line
                    spacing, line = in_model_unit(model, inp.layer, inp.spacing)  # review 51
                    notes.append(line)
                    inp = inp._replace(spacing=spacing)  # its results lie on the layer, in the layer's unit
                    notes.append(spacing_note(inp.spacing, model.spacing, f"layer '{inp.layer.name}'",
                                              recipe=model.config.data.preprocessing))
                    results.append(model.reconstruct(inp.image, spacing=inp.spacing, axes=inp.axes, device=device,
                                                     progress=lambda done, total: report((done, total)), stop=stop,
                                                     name=f"layer '{inp.layer.name}'"))
                    notes.append(results[-1].note)
            return results, [n for n in notes if n]

        def done(result: tuple[list, list]) -> None:
            results, notes = result
            shown = [inp.layer.name for inp in inputs if inp.layer in self._viewer.layers]
            for inp, rec in zip(inputs, results):
                if inp.layer in self._viewer.layers:  # a removed image's results would have nothing to lie on
                    self.show(rec, inp.layer)
            w["status"].value = "; ".join([f"reconstructed {', '.join(map(repr, shown)) or 'nothing'}", *notes])

        if self.runner.start(job, on_result=done, desc="Reconstruction", discard_on_stop=True) is not None:
            w["status"].value = f"reconstructing {', '.join(repr(l.name) for l in layers)}..."  # not the last result

    def show(self, reconstruction: Any, layer: napari.layers.Layer) -> None:
        """Add (or replace the plugin's own) reconstruction and error layers of ``layer``."""
        spatial = layer_spatial(layer)
        axes = layer_volume(layer).axes
        data, look = source_shaped_result(reconstruction.image, axes, rgb=getattr(layer, "rgb", False),
                                          dtype=layer.dtype)
        show_result(self._viewer, result_layer_data(data, layer.name, "reconstruction", spatial, "image", axes,
                                                    **look), like=layer)
        show_result(self._viewer, result_layer_data(reconstruction.error, layer.name, "reconstruction error",
                                                    spatial, "image", axes, colormap="inferno",
                                                    blending="additive"), like=layer)
