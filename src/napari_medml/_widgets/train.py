"""Train widget: image layer(s) and labels in, a Model in the viewer's session out.

Reads the form into a :class:`~napari_medml.config.TrainConfig` and runs :func:`napari_medml.segmentation.task.fit`
through the runner; the live plot shows loss and validation Dice per epoch. Stop keeps the best model so far,
and the run's ``last`` checkpoint (in ``<bundle>/checkpoints``, or the session's temp folder): Resume continues it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, get_args

import napari
from magicgui.widgets import (CheckBox, ComboBox, FileEdit, FloatSpinBox, LineEdit, PushButton, Select, SpinBox,
                              create_widget)

from napari_medml._widgets._device_check import DeviceCheck
from napari_medml._widgets._dock import DockForm
from napari_medml._widgets._forms import (
    add_loss_fields,
    add_optimizer_fields,
    class_weights,
    optimizer_settings,
    parse_size,
    planned_choice,
    planned_number,
    status_label,
)
from napari_medml._widgets._train_form import (
    BUNDLE_START,
    FORM_DEFAULTS,
    FORM_PLANNED,
    RANDOM_START,
    WARM_UP,
    planned_settings,
    resume_form,
    start_source,
    stopped_folds,
    user_set,
)
from napari_medml.io.orientation import orientation_of
from napari_medml._widgets._layers import (
    channels_line,
    check_fits,
    file_channel_names,
    follow_dims,
    labelled_input,
    layer_spatial,
    layer_volume,
    require,
)
from napari_medml._widgets._runner import notify_errors
from napari_medml._widgets._run_controls import run_controls, started_line
from napari_medml._widgets._session import session_for
from napari_medml._widgets._start_model import StartModel
from napari_medml._widgets.plots import TrainingPlot
from napari_medml.config import (
    DataConfig,
    DeviceName,
    LossName,
    ModelConfig,
    Normalization,
    OptimConfig,
    OptimizerName,
    ScheduleName,
    SegmentationNetwork,
    TrainConfig,
)
from napari_medml.errors import InputError

__all__ = ["BUNDLE_START", "RANDOM_START", "TrainWidget"]



class TrainWidget(DockForm):
    """Form for one training run, Start/Stop, and a live plot."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        # napari's Plugins menu passes the viewer as ``napari_viewer`` (npe2 widget class)
        super().__init__()
        viewer = napari_viewer
        self._viewer = viewer
        self._session = session_for(viewer)
        w = self._w = {}  # name -> widget, for tests and the demo
        image_choices = lambda _: [(l.name, l) for l in viewer.layers  # noqa: E731
                                   if isinstance(l, napari.layers.Image)]
        w["images"] = Select(choices=image_choices, label="image(s)",
                             tooltip="Several co-registered images become input channels, in the order listed here.")
        w["labels"] = create_widget(annotation=napari.layers.Labels, label="labels")
        w["mode"] = ComboBox(choices=[("dense", "dense"), ("scribbles", "sparse"), ("instances", "instances")],
                             value="dense", label="labels are",
                             tooltip="dense: 0 is background. scribbles: 0 is unlabelled (ignored); "
                             "'background id' is the painted background. instances: each object has its own "
                             "id; the network learns to separate touching objects.")
        w["background_id"] = SpinBox(value=1, min=0, max=65535, label="background id")
        w["dims"] = ComboBox(choices=[("2D", 2), ("3D", 3)], value=3, label="2D/3D")
        follow_dims(w["images"], w["dims"])
        w["network"] = planned_choice(get_args(SegmentationNetwork), ModelConfig.network, label="network")
        w["channels"] = planned_number("int", ModelConfig.channels, 0, max=1024, label="width (channels)")
        w["depth"] = planned_number("int", ModelConfig.depth, 0, max=8, label="depth (levels)")
        w["norm"] = planned_choice(["instance", "batch"], ModelConfig.norm, label="norm layers",
                                   tooltip="the plan's: batch norm on a CPU with a time limit, else instance")
        w["dropout"] = FloatSpinBox(value=0.0, min=0.0, max=0.9, step=0.05, label="dropout")
        w["normalization"] = planned_choice(get_args(Normalization), DataConfig.normalization,
                                            label="intensity normalization")
        w["patch"] = LineEdit(value="0", label="patch size", tooltip="0 = automatic; '64' or '16,64,64'")
        w["batch"] = SpinBox(value=0, min=0, max=256, label="batch size", tooltip="0 = automatic")
        w["epochs"] = planned_number("int", FORM_DEFAULTS["optim.epochs"], 0, max=100000, label="epochs",
                                     tooltip="with a time limit the plan spans it")
        w["steps"] = planned_number("int", FORM_DEFAULTS["optim.steps_per_epoch"], 0, max=100000,
                                    label="steps per epoch")
        w["minutes"] = FloatSpinBox(value=0.0, min=0.0, max=10000.0, step=0.5, label="max minutes", tooltip=(
            "training's time limit (0: none); planning, which times a step first, takes seconds to half a minute more"))
        w["plan"] = CheckBox(value=True, text="plan from the data",
                             tooltip="choose normalisation, patch, batch, width, depth, learning rate and "
                             "schedule (over the time limit), and one model or an ensemble, from the data and "
                             "the device; the fields showing 'planned' (and 0 = automatic) are chosen, a value "
                             "you set is kept")
        w["optimizer"] = ComboBox(choices=list(get_args(OptimizerName)), value="adamw",
                                  label="optimizer")
        add_optimizer_fields(w)
        w["lr"] = planned_number("float", "0.001 (SGD 0.01)", 0.0, max=1.0, step=1e-4, label="learning rate")
        w["lr"].native.setDecimals(6)
        w["schedule"] = planned_choice(get_args(ScheduleName), OptimConfig.schedule, label="schedule")
        w["warmup"] = planned_number("float", OptimConfig.warmup, -0.05, max=0.5, step=0.05, label="warm-up",
                                     tooltip="share of the run with a linear warm-up of the learning rate")
        w["loss"] = ComboBox(choices=list(get_args(LossName)), value="dice_ce", label="loss")
        add_loss_fields(w)
        w["stop_metric"] = ComboBox(choices=["val_dice", "val_loss"], value="val_dice", label="best epoch by",
                                    tooltip="what judges the epoch kept and early stopping")
        w["val_fraction"] = FloatSpinBox(value=0.2, min=0.0, max=0.9, step=0.05, label="validation")
        w["folds"] = SpinBox(value=0, min=0, max=20, label="ensemble (folds)",
                             tooltip="0 = planned (one model, or 4 sharing the time limit when each still "
                             "trains enough); 1 = one model; K: K models, each validated on another fold; "
                             "Predict averages them and gives their disagreement as the uncertainty layer")
        w["patience"] = SpinBox(value=0, min=0, max=1000, label="early stop after",
                                tooltip="epochs without improvement; 0 = off")
        w["init"] = ComboBox(choices=lambda _: [RANDOM_START, *self._session.models, BUNDLE_START],
                             value=RANDOM_START, label="start from",
                             tooltip="transfer learning: the weights whose names and shapes fit, from a model "
                             "of this session (e.g. from Pretrain) or a bundle folder")
        w["init_bundle"] = FileEdit(mode="d", value="", label="start bundle",
                                    tooltip="with 'start from' = bundle folder: a pretrained, segmentation "
                                    "or classification bundle")
        w["freeze"] = SpinBox(value=0, min=0, max=7, label="frozen stages",
                              tooltip="with a start model: keep the first encoder stages fixed")
        w["device"] = ComboBox(choices=list(get_args(DeviceName)), value="auto", label="device")
        w["device_info"] = status_label("(checking...)")
        w["amp"] = CheckBox(value=True, text="mixed precision (CUDA)")
        w["bundle"] = FileEdit(mode="d", value="", label="save bundle to",
                               tooltip="optional: a folder for the model bundle")
        w["name"] = LineEdit(value="", label="model name", tooltip="empty: '<image> model'")
        w["status"] = status_label()
        w["plan_text"] = status_label()  # the plan of the last run, shown when it starts (or by Show plan)
        w["show_plan"] = PushButton(text="Show plan", tooltip="plan the run from the data and show the plan, "
                                    "training nothing: set a field to override its line, then Start")
        self.runner, self._checkpoints = run_controls(w, self._session, "train", "Training", "data",
                                                      also=(w["show_plan"],))
        self._session.attach(self.native)  # the session's temp folder goes with the viewer
        self._last_run: dict[str, Any] | None = None  # what Resume continues
        self.extend([*w.values(), self.runner.progress])
        self.plot = TrainingPlot()
        self.add_native(self.plot)
        self.model: Any = None
        self._device = DeviceCheck(w["device"], w["device_info"], WARM_UP)
        self._device_runner = self._device.runner
        self.native.destroyed.connect(self._device_runner.detach)  # its bar is not in the dock
        w["start"].changed.connect(self.start)
        w["show_plan"].changed.connect(lambda *_: self.start(plan_only=True))

        def publish_patch(*_: Any) -> None:  # the Augmentation preview crops the training patch
            self._session.train_patch = (w["dims"].value, w["patch"].value)

        w["dims"].changed.connect(publish_patch)
        w["patch"].changed.connect(publish_patch)
        publish_patch()
        w["resume"].changed.connect(self.resume)

        def folds_hold_out(*_: Any) -> None:  # trial 48: a share set with folds went unused, unsaid
            w["val_fraction"].enabled = w["folds"].value < 2
            w["val_fraction"].tooltip = ("not used with folds: each fold holds out 1 of them" if w["folds"].value >= 2
                                         else "share of the data held out for validation")

        w["folds"].changed.connect(folds_hold_out)
        folds_hold_out()
        self._session.on_model_added(lambda _name: w["init"].reset_choices())
        self._reference = self.config()  # the untouched form: fields changed from it win over the plan
        self._device.check(soon=True)  # once docked: see Runner.start_soon

    def __getitem__(self, key: Any) -> Any:
        return self._w[key] if isinstance(key, str) and key in self._w else super().__getitem__(key)

    def config(self, recipe: tuple[Any, ...] = ()) -> TrainConfig:
        """The TrainConfig the form describes (``recipe`` from the chosen image layer)."""
        w = self._w
        dims = w["dims"].value
        instances = w["mode"].value == "instances"
        planned = planned_settings(w)  # 'planned' fields: the defaults, which a plan replaces
        data = DataConfig(
            spatial_dims=dims, label_mode="dense" if instances else w["mode"].value,
            background_id=w["background_id"].value if w["mode"].value == "sparse" else DataConfig.background_id,
            patch_size=parse_size(w["patch"].value, dims, of="network"),
            batch_size=w["batch"].value or DataConfig.batch_size,
            val_fraction=w["val_fraction"].value, folds=w["folds"].value or 1,
            preprocessing=tuple(recipe), **planned["data"])
        optim = OptimConfig(
            loss=w["loss"].value, optimizer=w["optimizer"].value,
            max_minutes=w["minutes"].value or None, early_stopping_patience=w["patience"].value or None,
            early_stopping_metric=w["stop_metric"].value, label_smoothing=w["smoothing"].value,
            class_weights=class_weights(w), **optimizer_settings(w), **planned["optim"])
        model = ModelConfig(dropout=w["dropout"].value, freeze_stages=w["freeze"].value, **planned["model"])
        return TrainConfig(task="instances" if instances else "segmentation",
                           data=data, augment=self._session.augment, model=model, optim=optim,
                           device=w["device"].value, amp=w["amp"].value)

    @notify_errors("Training")
    def start(self, *_: Any, init_model: Any = None, on_model: Any = None, plan_only: bool = False) -> None:
        """Read the form and the layers and start training (or fine-tuning ``init_model``; or, ``plan_only``,
        planning the run and showing the plan)."""
        w = self._w
        if plan_only and not w["plan"].value:
            raise InputError("tick 'plan from the data' to see the plan of the run (unticked, the form is the run)")
        labels_layer = require(w["labels"].value, napari.layers.Labels, "a labels layer")
        inputs, labels, record = labelled_input(self._viewer, w["images"].value, labels_layer)
        config = self.config(inputs.recipe)
        if init_model is None:  # a run of its own settings, checked before the plan is drawn (trial 41)
            config.check_new_run()
        for layer in (*w["images"].value, labels_layer):  # on-disk layers: segmentation reads patches only
            if config.task == "instances":
                check_fits(layer, "instance training", "crop it, or train a segmentation model (it reads "
                           "patches of on-disk layers)")
            elif w["plan"].value and init_model is None:
                check_fits(layer, "'plan from the data'", "untick it: training itself reads patches")
        inputs.samples(labels, config.data.spatial_dims, labels_layer.name)  # axes and shapes checked before the job
        bundle = str(w["bundle"].value) if str(w["bundle"].value) not in ("", ".") else None
        name = w["name"].value or self._session.new_model_name(f"{inputs.layer.name} model")
        start_from = start_source(self._w, self._session) if init_model is None else None
        if not plan_only:  # a shown plan leaves the last run's curves
            self.plot.clear()
        self.start_job(inputs, labels, config, name=name, bundle=bundle, init_model=init_model,
                       on_model=on_model, start_from=start_from, record=record, plan_only=plan_only)

    @notify_errors("Training")
    def resume(self, *_: Any) -> None:
        """Continue the last run (stopped, or failed) from its ``last`` checkpoint.

        The run keeps its data and settings; form fields that shape the network must not
        have changed since (one error line says which did).
        """
        run = self._last_run
        # the run's network is its planned one: fields left 'planned' take its values, the others must match it
        self._checkpoints.check_resume(None if run is None else {**run, "form": run["config"]}, self.runner.running,
                                       lambda: resume_form(self.config(run["inputs"].recipe), run["config"], self._w))
        self.start_job(run["inputs"], run["labels"], run["config"], name=run["name"], bundle=run["bundle"],
                       init_model=run["init_model"], on_model=run["on_model"], resume=run, record=run["record"])

    def start_job(self, inputs: Any, labels: Any, config: TrainConfig, *, name: str,
                  bundle: str | None = None, init_model: Any = None, on_model: Any = None,
                  start_from: Any = None, resume: dict[str, Any] | None = None, record: tuple = (),
                  plan_only: bool = False) -> None:
        """Run fit() in the runner; the model goes to the session under ``name``.

        ``start_from``: transfer learning from a bundle folder or a session model (``StartModel``).
        Checkpoints go to ``<bundle>/checkpoints``, or the session's temp folder.
        ``resume``: the run (``_last_run``) to continue from its checkpoint folder.
        ``record``: a recipe the model records after training on a preprocessed layer as
        shown (``_layers.labelled_input``). ``plan_only``: the job ends once the plan is shown.
        """
        from napari_medml.segmentation.plan import changed_fields

        keep = (changed_fields(config, self._reference) - set(FORM_PLANNED)) | user_set(self._w)
        keep |= {name for name, field in (("data.folds", "folds"), ("data.batch_size", "batch"))
                 if self._w[field].value}  # 0: automatic
        checkpoints = self._checkpoints
        if resume is None:
            run = {"inputs": inputs, "labels": labels, "form": config, "config": config, "plan": None, "name": name,
                   "labels_name": getattr(self._w["labels"].value, "name", "labels"), "bundle": bundle,
                   # as chosen, not the raw layer of a preprocessed one; several: in channel order (review 50)
                   "image_names": list(inputs.names) or [layer.name for layer in self._w["images"].value],
                   "init_model": init_model, "on_model": on_model, "record": record}
            if not plan_only:  # what Resume continues; a shown plan leaves the last run's checkpoints to it
                self._last_run = run
            # fine-tuning keeps its model's settings; instances are planned as their foreground
            planned = self._w["plan"].value and init_model is None
            if not planned:  # an earlier run's plan is not this one's
                self._w["plan_text"].value = ""
        else:  # the run's own (planned) config; its checkpoint holds the network
            run, planned, start_from = resume, False, None
        resume_from = str(checkpoints.folder) if resume is not None else None
        plan = run["plan"]
        # Predict and `napari-medml predict` put other orientations in this one, and compare units with it
        placed = {"orientation": orientation_of(layer_spatial(run["inputs"].layer).affine, config.data.spatial_dims),
                  "unit": layer_volume(run["inputs"].layer).meta.get("unit")}  # napari >= 0.5.1 has layer units
        names = run.get("image_names") or [run["inputs"].layer.name]
        data_line = (f"image{'s' if len(names) > 1 else ''} {', '.join(map(repr, names))}"
                     f"{' as channels' if len(names) > 1 else ''} with labels '{run['labels_name']}'")
        # a session model: the run's lines (a resumed run's too) name it, not the temp folder it is saved to
        start = run.setdefault("start", StartModel(self._session, start_from))
        many_ids = (resume is None and config.task == "segmentation" and config.data.label_mode == "dense")

        def job(stop: Any, report: Any) -> Any:
            nonlocal config, plan
            from napari_medml.engine.devices import gui_thread_count, intra_op_threads, resolve_device
            from napari_medml.api import fit  # the task the config names (instances: each object its own id)

            if resume_from is None and not plan_only:  # in the worker: the folder helpers import torch
                config = run["config"] = replace(config, checkpoint_dir=str(checkpoints.new_run(bundle)))
            if start_from is not None:
                config = replace(config, model=replace(config.model, init_from=start.source()))
            with start.naming(), intra_op_threads(gui_thread_count(resolve_device(config.device))):
                # frames of a time series (slices under a 2D network) are the samples
                images, targets, spacings, channel_axis = inputs.samples(labels, config.data.spatial_dims)
                named = file_channel_names(inputs)  # as the file named them: Predict matches an image's by them
                if named:
                    config = replace(config, data=replace(config.data, channel_names=named))
                if len(images) > 1:  # one layer's slices or frames: a held-out one's neighbours do not train
                    groups = inputs.sample_groups(labels, config.data.spatial_dims)
                    config = replace(config, data=replace(config.data, sample_groups=groups))
                if many_ids:  # instance labels given to a segmentation: said before the run, not refused
                    from napari_medml.segmentation.label_values import many_ids_warning

                    note = many_ids_warning(targets, f"labels '{run['labels_name']}'",
                                            "labels are: instances")
                    if note:
                        yield note
                if planned:
                    from napari_medml.segmentation.planning import plan_run

                    plan = plan_run(images, targets, config, spacing=spacings, channel_axis=channel_axis, keep=keep,
                                    stop=stop)
                    config = plan.apply(config)
                    run["config"], run["plan"] = config, plan  # what Resume continues
                    yield plan  # shown in the form before the first step
                    if plan_only:
                        return None
                elif start_from is not None:  # unplanned: still the start bundle's network (its weights fit no other)
                    from napari_medml.segmentation.planning import take_start_architecture

                    config = run["config"] = take_start_architecture(config, keep)[0]
                model = yield from fit(images, targets, config, spacing=spacings, channel_axis=channel_axis,
                                       stop=stop, init_model=init_model, resume_from=resume_from, plan=plan)
            start.rename_in(model)
            if config.task == "segmentation" and not record:  # fine-tuning in Predict learns it alongside
                from napari_medml.segmentation.corrections import labelled_samples

                scribbles = config.data.background_id if config.data.label_mode == "sparse" else None
                run["samples"] = labelled_samples(images, targets, spacings, channel_axis, scribbles)
            model.provenance.update({key: value for key, value in placed.items() if value})
            if len(run["inputs"].names) > 1:  # Predict shows them beside the layers it is given
                model.provenance["channel_layers"] = list(run["inputs"].names)
            if record:  # trained on a preprocessed layer as shown: raw images get its recipe
                from napari_medml.segmentation.recipes import record_preprocessing

                record_preprocessing(model, record)
            checkpoints.finish(model, bundle, stop.stopped)
            return model

        def done(model: Any) -> None:
            checkpoints.result(bool(self.runner.token is not None and self.runner.token.stopped))
            self.model = model
            self._session.training_data[name] = run.get("samples", [])  # a record-trained model: none
            self._session.add_model(model, name, bundle)  # its folder loaded again: this entry
            # A label, not a toast: building a notification widget stalls the GUI ~100 ms.
            from napari_medml.segmentation.step_time import model_steps_trained  # loaded with training already

            trained = model_steps_trained(model)
            self._w["status"].value = (f"model '{name}' is ready in Predict" + (f" (trained {trained})" if trained
                                                                                else "")
                                       + f" (trained on {data_line})" + "".join(f" ({w})" for w in warnings))
            if checkpoints.folder is not None and self.runner.token.stopped:
                self._w["status"].value += f" (stopped: {stopped_folds(model)}Resume continues the run)"
            if on_model is not None:
                on_model(model)

        warnings: list[str] = [inputs.labels_note] if inputs.labels_note else []

        def on_report(report: Any) -> None:
            if isinstance(report, str):  # a warning about the data, kept in view during and after the run
                warnings.append(report)
                self._w["status"].value = report
            elif hasattr(report, "describe"):  # the plan
                self._w["plan_text"].value = channels_line(inputs) + report.describe()
            else:
                self.plot.add(report)
                from napari_medml.segmentation.split import NO_FOREGROUND

                lines = [line for line in start.named(getattr(report, "message", "")).splitlines()
                         if line.startswith(("started from", "early stopping", "validation on scribbles",
                                             "warning: class", "note: class"))  # classes not learned or scored
                         or NO_FOREGROUND in line]  # a Dice of 0 there reads as a failed model
                warnings.extend(line for line in lines if line not in warnings)  # once: each fold says them

        if plan_only:
            shown = "the plan below: nothing was trained; set a field to override its line, then Start (planned again)"
            if self.runner.start(job, on_report=on_report, on_result=lambda _: setattr(self._w["status"], "value",
                                                                                       shown)) is not None:
                self._w["status"].value = "Planning the run (timing a step; nothing is trained)..."
            return
        checkpoints.running()
        if self.runner.start(job, on_report=on_report, on_result=done, on_done=checkpoints.done) is not None:
            self._w["status"].value = started_line(resume is not None, "data", data_line)
