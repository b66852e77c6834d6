"""Classify widget: train a classifier on whole images, objects or tiles, then classify.

Reads the form into a :class:`~napari_medml.config.TrainConfig` (task
"classification"), runs :func:`napari_medml.classification.task.fit_classifier` through the runner
with live curves, confusion matrix and ROC, then classifies the image: a new Labels
layer ``<image> [classes]`` (every sample, object or tile filled with its class id) whose
``features`` have one row per class (``index`` = class id, so hovering shows the class's
name, count and mean probability; ``tables.class_table``). The per-sample table (class,
``prob_<id>``, size..., after training the ``part`` each was in) is in its ``metadata["samples"]``,
and *save table (CSV)* writes it as ``napari-medml predict`` does.
Object level adds ``<image> [object classes]``, the objects' outlines (a copy of the
instance ids; the user's layer is not touched) whose features are the per-object rows;
tile level adds ``<image> [class probabilities]``. With a start bundle, the network,
width, depth and norm are the bundle's (the status says so). Every run keeps ``best``/``last``
checkpoints (in ``<bundle>/checkpoints``, or the session's temp folder): Resume continues a stopped run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

import napari
import numpy as np
from magicgui.widgets import ComboBox, FileEdit, FloatSpinBox, LineEdit, PushButton, SpinBox, create_widget

from napari_medml._widgets._data_watch import HeldData
from napari_medml._widgets._dock import DockForm
from napari_medml._widgets._forms import (
    add_loss_fields,
    add_optimizer_fields,
    add_rate_field,
    class_weights,
    optimizer_settings,
    parse_size,
    status_label,
)
from napari_medml._widgets._layers import (check_fits, check_on_image, labels_array, layer_spatial, layer_volume,
                                           require, show_result)
from napari_medml._widgets._predict_input import not_shown
from napari_medml._widgets._runner import notify_errors
from napari_medml._widgets._run_controls import run_controls, started_line
from napari_medml._widgets._session import session_for
from napari_medml._widgets.plots import ConfusionMatrixPlot, RocPlot, TrainingPlot
from napari_medml.classification.data import read_class_csv, stack_dims
from napari_medml.config import (
    SIZED_CLASSIFIERS,
    ClassifierLoss,
    ClassifierNetwork,
    ClassLevel,
    DataConfig,
    DeviceName,
    ModelConfig,
    OptimConfig,
    OptimizerName,
    ScheduleName,
    TrainConfig,
)
from napari_medml.errors import InputError
from napari_medml.layer_data import PLUGIN_MARK
from napari_medml.result_layers import result_layer_data

__all__ = ["ClassifyWidget"]

PAINTED, CSV = "labels layer", "CSV file"


class ClassifyWidget(DockForm):
    """Form, Start/Stop, live curves, confusion matrix, ROC and the metric numbers."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        # napari's Plugins menu passes the viewer as ``napari_viewer`` (npe2 widget class)
        super().__init__()
        viewer = napari_viewer
        self._viewer = viewer
        w = self._w = {}  # name -> widget, for tests and the demo
        w["level"] = ComboBox(choices=list(get_args(ClassLevel)), value="image", label="classify",
                             tooltip="image: each image of a stack (first axis = sample); object: "
                             "each object of an instance labels layer; tile: each tile of a grid")
        w["image"] = create_widget(annotation=napari.layers.Image, label="image")
        w["source"] = ComboBox(choices=[PAINTED, CSV], value=PAINTED, label="classes from",
                               tooltip="a labels layer with classes painted on some samples, "
                               "objects or tiles (0 = unknown); or a CSV: one row per sample (image level) "
                               "or object id and class rows (object level)")
        w["classes"] = create_widget(annotation=napari.layers.Labels, label="class labels")
        w["csv"] = FileEdit(mode="r", filter="*.csv", value="", label="class CSV")
        w["instances"] = create_widget(annotation=napari.layers.Labels, label="instances",
                                       options={"tooltip": "object level: one id per object",
                                                "nullable": True})
        w["box"] = ComboBox(choices=[("own size (shape)", "own"), ("common size (size too)", "common")],
                            value="own", label="object box",
                            tooltip="object level: each object cropped in a box of its own size fills its "
                            "sample (the network sees shape and texture), or every object in one box of the "
                            "same side, so a larger object fills more of it (size tells classes apart too)")
        w["tile"] = LineEdit(value="32", label="tile size", tooltip="tile level: '32' or '32, 32'")
        w["input"] = LineEdit(value="0", label="input size",
                              tooltip="resize samples to this shape; 0 = keep (objects: 64 / 32^3)")
        w["network"] = ComboBox(choices=list(get_args(ClassifierNetwork)), value="smallcnn", label="network")
        w["channels"] = SpinBox(value=16, min=1, max=256, label="width (channels)",
                                tooltip="smallcnn and unet-encoder; resnet, densenet and efficientnet have fixed "
                                "widths")
        w["depth"] = SpinBox(value=ModelConfig.depth, min=1, max=8, label="depth (levels)",
                             tooltip="smallcnn and unet-encoder; resnet, densenet and efficientnet have fixed "
                             "depths")
        w["norm"] = ComboBox(choices=["batch", "instance"], value="batch", label="norm layers")
        w["dropout"] = FloatSpinBox(value=0.1, min=0.0, max=0.9, step=0.05, label="dropout")
        w["epochs"] = SpinBox(value=30, min=1, max=100000, label="epochs")
        w["steps"] = SpinBox(value=20, min=1, max=100000, label="steps per epoch")
        w["batch"] = SpinBox(value=16, min=1, max=1024, label="batch size")
        w["optimizer"] = ComboBox(choices=list(get_args(OptimizerName)), value="adamw", label="optimizer")
        add_optimizer_fields(w)
        add_rate_field(w)
        w["schedule"] = ComboBox(choices=list(get_args(ScheduleName)), value="cosine",
                                 label="schedule")
        w["loss"] = ComboBox(choices=list(get_args(ClassifierLoss)), value="ce", label="loss")
        add_loss_fields(w)
        w["val_fraction"] = FloatSpinBox(value=0.2, min=0.0, max=0.9, step=0.05, label="validation")
        w["patience"] = SpinBox(value=0, min=0, max=1000, label="early stop after",
                                tooltip="epochs without improvement; 0 = off")
        w["device"] = ComboBox(choices=list(get_args(DeviceName)), value="auto", label="device")
        w["init"] = FileEdit(mode="d", value="", label="start from bundle",
                             tooltip="transfer learning: a classification, segmentation or pretraining "
                             "bundle; its network (a U-Net gives 'unet-encoder'), width, depth and norm "
                             "are taken")
        w["freeze"] = SpinBox(value=0, min=0, max=10, label="frozen stages",
                              tooltip="with a start bundle: keep the first stages fixed")
        w["bundle"] = FileEdit(mode="d", value="", label="save bundle to",
                               tooltip="optional: a folder for the classifier bundle")
        w["saved"] = FileEdit(mode="d", value="", label="classify with bundle",
                              tooltip="a saved classifier bundle: classify the image (object level: and its "
                              "instances) with it, without training")
        w["apply"] = PushButton(text="classify with bundle")
        self.runner, self._checkpoints = run_controls(w, session_for(viewer), "classify", "Classification", "samples",
                                                      also=(w["apply"],))
        w["status"] = status_label()
        self.runner.status = w["status"]  # a job's error or cancel replaces an earlier result there
        w["metrics"] = status_label()
        w["table"] = FileEdit(mode="w", filter="*.csv", value="", label="table CSV",
                              tooltip="where 'save table (CSV)' writes one row per sample, object or tile")
        w["save_table"] = PushButton(text="save table (CSV)")
        session_for(viewer).attach(self.native)  # the session's temp folder goes with the viewer
        self._last_run: dict[str, Any] | None = None  # what Resume continues
        self._early = ""  # the run's early-stopping line, said with its result
        self.extend([*w.values(), self.runner.progress])
        self.plot = TrainingPlot(metric="accuracy")
        self.confusion = ConfusionMatrixPlot()
        self.roc = RocPlot()
        for canvas in (self.plot, self.confusion, self.roc):
            self.add_native(canvas)
        self.classifier: Any = None
        self.result: Any = None
        w["start"].changed.connect(self.start)
        w["resume"].changed.connect(self.resume)
        w["save_table"].changed.connect(self.save_table)
        w["apply"].changed.connect(self.apply)
        w["level"].changed.connect(self._show_fields)
        w["source"].changed.connect(self._show_fields)
        w["network"].changed.connect(self._show_fields)
        self._show_fields()

    def __getitem__(self, key: Any) -> Any:
        return self._w[key] if isinstance(key, str) and key in self._w else super().__getitem__(key)

    def _show_fields(self, *_: Any) -> None:
        w, level = self._w, self._w["level"].value
        w["source"].visible = level != "tile"
        csv = level != "tile" and w["source"].value == CSV
        w["csv"].visible, w["classes"].visible = csv, not csv
        w["instances"].visible = w["box"].visible = level == "object"
        w["tile"].visible = level == "tile"
        sized = w["network"].value in SIZED_CLASSIFIERS  # resnet, densenet, efficientnet: published sizes
        w["channels"].enabled = w["depth"].enabled = sized

    def config(self, spatial_dims: int, class_names: dict[int, str] | None = None) -> TrainConfig:
        """The TrainConfig the form describes (``class_names`` from the class labels layer)."""
        w = self._w
        weights = class_weights(w)
        init = str(w["init"].value) if str(w["init"].value) not in ("", ".") else None
        return TrainConfig(
            task="classification",
            data=DataConfig(spatial_dims=spatial_dims, batch_size=w["batch"].value,
                            val_fraction=w["val_fraction"].value),
            augment=session_for(self._viewer).augment,
            model=ModelConfig(network=w["network"].value, channels=w["channels"].value, depth=w["depth"].value,
                              norm=w["norm"].value,
                              dropout=w["dropout"].value, init_from=init, freeze_stages=w["freeze"].value),
            optim=OptimConfig(loss=w["loss"].value, class_weights=weights, label_smoothing=w["smoothing"].value,
                              optimizer=w["optimizer"].value, learning_rate=w["lr"].value,
                              schedule=w["schedule"].value, epochs=w["epochs"].value,
                              steps_per_epoch=w["steps"].value, early_stopping_metric="val_accuracy",
                              early_stopping_patience=w["patience"].value or None, **optimizer_settings(w)),
            device=w["device"].value, class_names=class_names)

    def _image(self) -> tuple[Any, np.ndarray, int | None]:
        """The chosen image layer, its data and its channel axis (a ``c`` axis, as the reader and the
        command line read it; RGB: the last), checked."""
        layer = require(self._w["image"].value, napari.layers.Image, "an image")
        check_fits(layer, "classification", "crop it to the samples, objects or tiles to classify (or open a "
                   "coarser level); segmentation training reads patches and Predict works block by block")
        volume = layer_volume(layer)
        return layer, volume.data, volume.channel_axis

    def inputs(self) -> dict[str, Any]:
        """Image, classes and instances from the layers (copies), checked."""
        w, level = self._w, self._w["level"].value
        layer, image, axis = self._image()
        out: dict[str, Any] = {"layer": layer, "image": image, "channel_axis": axis, "instances": None,
                               "labels": None, "classes": None, "level": level, "class_names": None}
        if level == "image":  # its first axis is the samples (trial 42: a 2D image said "spatial_dims 1")
            stack_dims(image.shape, axis, name=f"image '{layer.name}'")
        if level == "object":
            instances = require(w["instances"].value, napari.layers.Labels, "the instance labels (one id per object)")
            check_on_image(instances, layer)
            out["instances"], out["instances_layer"] = labels_array(instances), instances
        if level != "tile" and w["source"].value == CSV:
            path = str(w["csv"].value)
            if path in ("", "."):
                rows = "one row per sample" if level == "image" else "object id and class rows"
                raise InputError(f"choose the class CSV file ({rows}), or paint the classes")
            if level == "image":
                out["classes"] = read_class_csv(Path(path), image.shape[0])
            else:
                from napari_medml.classification.object_classes import object_class_labels

                out["labels"] = object_class_labels(Path(path), out["instances"],
                                                    instances_name=f"instances '{instances.name}'")
        else:
            painted = require(w["classes"].value, napari.layers.Labels, "the labels layer with painted classes")
            check_on_image(painted, layer)
            painted.metadata.pop(PLUGIN_MARK, None)  # an input is the user's: no result replaces it (trial 50)
            out["labels"] = labels_array(painted)
            names = painted.metadata.get("class_names") or {}
            out["class_names"] = {int(k): str(v) for k, v in names.items()} or None
        return out

    @notify_errors("Classification")
    def start(self, *_: Any) -> None:
        """Read the form and the layers and start training, then classify the image."""
        inp = self.inputs()
        dims = inp["image"].ndim - (inp["channel_axis"] is not None) - (inp["level"] == "image")
        tile = parse_size(self._w["tile"].value, dims, "tile size") if inp["level"] == "tile" else None
        if inp["level"] == "tile" and tile is None:
            raise InputError("tile level needs a tile size, such as '32'")
        size = parse_size(self._w["input"].value, dims, "input size")
        form = self.config(dims, inp["class_names"])
        bundle = str(self._w["bundle"].value) if str(self._w["bundle"].value) not in ("", ".") else None
        for canvas in (self.plot, self.confusion, self.roc):
            canvas.clear()
        self._w["metrics"].value, self._early = "", ""
        self._last_run = {"inputs": inp, "dims": dims, "params": {"input_size": size, "tile_size": tile,
                                                                     "box": self._w["box"].value},
                          "form": form, "config": form, "bundle": bundle}
        self._start_job(self._last_run)

    @notify_errors("Classification")
    def resume(self, *_: Any) -> None:
        """Continue the last run (stopped, or failed) from its ``last`` checkpoint: it keeps its samples
        and settings; form fields that shape the network must not have changed since (one line says which did)."""
        run = self._last_run
        folder = self._checkpoints.check_resume(run, self.runner.running,
                                                lambda: self.config(run["dims"], run["inputs"]["class_names"]))
        self._start_job(run, resume_from=folder)

    def _start_job(self, run: dict[str, Any], resume_from: str | None = None) -> None:
        """Train (or resume) ``run`` in the runner, then classify the image."""
        inp, params, bundle = run["inputs"], run["params"], run["bundle"]
        checkpoints = self._checkpoints  # held: the data read at the first Start, which a Resume continues on
        held = run.setdefault("held", HeldData([inp["layer"], inp.get("instances_layer")]))

        def job(stop: Any, report: Any) -> Any:
            from napari_medml.classification.levels import make_samples
            from napari_medml.classification.split import with_parts
            from napari_medml.classification.task import fit_classifier

            if resume_from is None:  # in the worker: the folder helpers import torch
                run["config"] = replace(run["form"], checkpoint_dir=str(checkpoints.new_run(bundle)))
            config = run["config"]

            samples = make_samples(inp["level"], inp["image"], {k: v for k, v in params.items() if v},
                                   class_labels=inp["labels"], classes=inp["classes"], instances=inp["instances"],
                                   channel_axis=inp["channel_axis"], name=f"image '{inp['layer'].name}'")
            classifier = yield from fit_classifier(samples, config, stop=stop, resume_from=resume_from)
            checkpoints.finish(classifier, bundle, stop.stopped)
            result = classifier.classify(inp["image"], instances=inp["instances"], channel_axis=inp["channel_axis"],
                                         name=f"image '{inp['layer'].name}'")
            return classifier, with_parts(result, samples.y, config)  # trained on, validated on, or unseen

        def done(result: tuple[Any, Any]) -> None:
            stopped = bool(self.runner.token is not None and self.runner.token.stopped)
            checkpoints.result(stopped)
            self.show(*result, inp["layer"], inp["instances"], held=held)  # trial 42: early stopping was said
            ended = " (stopped: Resume continues the run)" if stopped else f" ({self._early})" if self._early else ""
            self._w["status"].value += ended

        checkpoints.running()
        if self.runner.start(job, on_report=self._on_report, on_result=done, on_done=checkpoints.done) is not None:
            self._w["status"].value = started_line(resume_from is not None, "samples")

    def _on_report(self, report: Any) -> None:
        if getattr(report, "message", ""):  # the split, what a start bundle gave, early stopping (kept)
            self._w["status"].value = report.message.replace("\n", "; ")
            self._early = next((m for m in report.message.splitlines() if m.startswith("early stopping")), self._early)
        self.plot.add(report)
        full = getattr(report, "val_report", None)
        if full:
            self.confusion.show(full)
            self.roc.show(full)

    def show(self, classifier: Any, result: Any, layer: napari.layers.Layer, instances: np.ndarray | None = None,
             from_bundle: bool = False, held: HeldData | None = None) -> None:
        """Put the classes (and tile probabilities) into the viewer; show the best epoch's metrics
        (``from_bundle``: a saved classifier applied to this image, whose metrics are its training's).
        ``held``: the job's layers, whose new data (or removal) leaves the classes unshown."""
        from napari_medml.classification.metrics import no_metrics_reason, report_summary
        from napari_medml.classification.report_text import result_line
        from napari_medml.classification.tables import object_table

        self.classifier, self.result = classifier, None  # an unshown result's table is not saved
        if classifier.metrics:  # the kept classifier's validation, shown with or without its classes (trial 50)
            self.confusion.show(classifier.metrics)
            self.roc.show(classifier.metrics)
        self._w["metrics"].value = (report_summary(classifier.metrics) if classifier.metrics else
                                    no_metrics_reason(classifier.config.data.val_fraction, "'validation' 0.2",
                                                      classifier.provenance, "Resume continues the run"))
        if from_bundle and classifier.metrics:  # not this image's score (trial 48: "use Evaluate", segmentations only)
            self._w["metrics"].value = ("the bundle's own validation when it was trained (to score this image, save "
                                        "its 'table CSV' and run napari-medml evaluate --prediction TABLE --labels "
                                        "TRUE_CLASSES):\n" + self._w["metrics"].value)
        kept = "the classifier is kept; " if not from_bundle else ""
        kind = "image" if instances is None else "layer"  # the instance labels are held too
        if held is not None and (why := not_shown(self._viewer, layer, held, kept, "its classification", kind)):
            self._w["status"].value = why
            return
        self.result = result
        spatial, axes = layer_spatial(layer), layer_volume(layer).axes  # results without the layer's channels
        classes = result_layer_data(result.labels, layer.name, "classes", spatial, "labels", axes,
                                    features=result.class_table)
        labels = show_result(self._viewer, classes, like=layer, keep_edits=True)  # edited, it is the user's
        labels.metadata["class_ids"] = list(result.class_ids)
        labels.metadata["class_names"] = classifier.class_names
        labels.metadata["samples"] = {k: np.array(v, copy=True) for k, v in result.table.items()}
        if result.level == "object" and instances is not None:  # hovering an object shows its own row
            objects = show_result(self._viewer, result_layer_data(
                np.asarray(instances), layer.name, "object classes", spatial, "labels", axes,
                features=object_table(result.table, classifier.class_names)), like=layer, keep_edits=True)
            objects.contour = 1  # outlines: the classes stay visible beneath
        if result.level == "tile":
            show_result(self._viewer, result_layer_data(
                result.probabilities, layer.name, "class probabilities", spatial, "image", axes,
                colormap="magma", contrast_limits=(0.0, 1.0), blending="additive", opacity=0.6), like=layer)
        self._w["status"].value = result_line(classifier, result, from_bundle)

    @notify_errors("Classification")
    def apply(self, *_: Any) -> None:
        """Classify the image (and, for an object-level bundle, the instances) with a saved bundle."""
        w = self._w
        path = str(w["saved"].value)
        if path in ("", "."):
            raise InputError("choose a classifier bundle folder ('classify with bundle'), then press the button")
        layer, image, axis = self._image()
        chosen = w["instances"].value if w["level"].value == "object" else None
        if chosen is not None:
            check_on_image(chosen, layer)
        instances = labels_array(chosen) if chosen is not None else None

        def job(stop: Any, report: Any) -> Any:
            from napari_medml.api import load_model

            classifier = load_model(path)
            if type(classifier).__name__ != "Classifier":
                raise InputError(f"'{Path(path).name}' is not a classifier bundle (a segmentation, instance or "
                                 "pretraining model): use it in Plugins › MedML › Predict")
            if classifier.level == "object" and instances is None:
                raise InputError(f"'{Path(path).name}' classifies objects: set 'classify' to object and choose "
                                 "the instance labels ('instances')")
            return classifier, classifier.classify(image, instances=instances, channel_axis=axis,
                                                   name=f"image '{layer.name}'")

        held = HeldData([layer, chosen])
        if self.runner.start(job, on_result=lambda r: self.show(*r, layer, instances, from_bundle=True, held=held),
                             desc="Classification", discard_on_stop=True) is not None:
            self._w["status"].value = f"classifying '{layer.name}' with '{Path(path).name}'..."  # not the last result

    @notify_errors("Classification")
    def save_table(self, *_: Any) -> None:
        """Write the last result's per-sample table to the ``table CSV`` file."""
        from napari_medml.classification.tables import write_table

        path = str(self._w["table"].value)
        if self.result is None:
            raise InputError("nothing to save yet: press Start; the table is the classified samples")
        if path in ("", "."):
            raise InputError("choose the table CSV file to write ('table CSV'), then save")
        classes = str(self._w["csv"].value)
        if classes not in ("", ".") and Path(path).resolve() == Path(classes).resolve():  # trial 38: it was replaced
            raise InputError(f"'table CSV' {path} is the 'class CSV' the classes are read from: outputs never "
                             "overwrite inputs; choose another file name")
        written = write_table(Path(path), self.result.table)
        self._w["status"].value = f"saved {len(self.result.classes)} rows to {written}"
