"""Predict widget: a model from this session or a bundle folder, run on an image.

Results are new layers ``<image> [prediction]`` (``[probabilities]``, ``[uncertainty]``, ``[instances]``); a re-run
replaces only its own, and removes those it does not make again. Fine-tune retrains on corrections, then predicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, PushButton, Select, SpinBox, create_widget

from napari_medml._widgets._dock import DockForm
from napari_medml._widgets._forms import status_label
from napari_medml._widgets._layers import (check_fits, check_on_image, labels_array, layer_spatial, layer_volume,
                                           record_planes, require, show_result)
from napari_medml._widgets._instances import (CONTROLS, control_values, instance_controls, instance_table,
                                              params_from_controls, set_controls, show_instances, with_controls)
from napari_medml._widgets._data_watch import HeldData
from napari_medml._widgets._predict_input import (as_predicted, blockwise_input, choose_input, chosen_folder,
                                                  in_layer_unit, input_for, is_lazy_image, not_shown,
                                                  prediction_inputs, result_note, store_geometry_of)
from napari_medml._widgets._results import drop_stale_results
from napari_medml._widgets._runner import Runner, notify_errors
from napari_medml._widgets._session import session_for
from napari_medml.config import InferConfig
from napari_medml.errors import InputError
from napari_medml.layer_data import PLUGIN_MARK, is_generated
from napari_medml.result_layers import result_layer_data

__all__ = ["BUNDLE_CHOICE", "PredictWidget"]

BUNDLE_CHOICE = "bundle folder..."


class PredictWidget(DockForm):
    """Segment an image with a session model or a bundle; fine-tune on corrections."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        # napari's Plugins menu passes the viewer as ``napari_viewer`` (npe2 widget class)
        super().__init__()
        viewer = napari_viewer
        self._viewer = viewer
        self._session = session_for(viewer)
        self._session.attach(self.native)  # the session's temp folder (block-wise stores) goes with the viewer
        w = self._w = {}
        w["images"] = Select(choices=lambda _: [(l.name, l) for l in viewer.layers
                                                if isinstance(l, napari.layers.Image)],
                             label="image(s)", tooltip="One layer per input channel, in the listed order (as trained).")
        w["model"] = ComboBox(choices=lambda _: [*(k for k, m in self._session.models.items() if hasattr(m, "predict")),
                                                 BUNDLE_CHOICE], label="model")  # pretrained models do not segment
        w["bundle"] = FileEdit(mode="d", value="", label="bundle folder")
        w["overlap"] = FloatSpinBox(value=InferConfig.overlap, min=0.0, max=0.9, step=0.05, label="overlap")
        w["tta"] = CheckBox(value=False, text="test-time augmentation (flips, turns)",
                            tooltip="average the image and its flips (2D, square patches and pixels: its 8 "
                            "orientations): slower, usually a little better; a planned model turns it on")
        w["min_size"] = SpinBox(value=0, min=0, max=10**9, label="min object size")
        w["fill_holes"] = CheckBox(value=False, text="fill holes")
        w["keep_largest"] = CheckBox(value=False, text="keep largest object per class")
        w["instances"] = ComboBox(choices=["none", "connected", "watershed"], value="none", label="instances")
        w.update(instance_controls())  # instance models: post-processing on the cached outputs
        w["probabilities"] = ComboBox(choices=["none", "one layer", "one per class"], value="none",
                                      label="probabilities")
        w["uncertainty"] = CheckBox(value=False, text="uncertainty layer")
        w["predict"] = PushButton(text="Predict")
        w["cancel"] = PushButton(text="Cancel")
        w["corrected"] = create_widget(annotation=napari.layers.Labels, label="corrected labels",
                                       options={"tooltip": "Edit the prediction (paint, erase, fill), then fine-tune."})
        w["ft_steps"] = SpinBox(value=30, min=1, max=100000, label="fine-tune steps")
        w["finetune"] = PushButton(text="Fine-tune and predict again")
        w["save_to"] = FileEdit(mode="d", value="", label="save model to",
                                tooltip="a new or empty folder: the chosen model as a bundle (config.json and "
                                "weights; Live's accepted network, a fine-tuned model, ...)")
        w["save"] = PushButton(text="Save model")
        w["status"] = status_label()  # a label, not a toast: building a notification widget stalls the GUI ~100 ms
        self.extend(list(w.values()))
        self.prediction: Any = None
        self.runner = Runner("Prediction", [w["predict"], w["finetune"]], w["cancel"], status=w["status"])
        self.append(self.runner.progress)
        w["predict"].changed.connect(self.predict)
        w["finetune"].changed.connect(self.finetune)
        w["save"].changed.connect(self.save_model)
        self._instances_runner = Runner("Instances", show_progress=False)
        self.native.destroyed.connect(self._instances_runner.detach)  # its bar is not in the dock
        self._instances_source: Any = None  # (inputs, origin) of the last instance prediction
        self._instances_pending = False
        for key in CONTROLS:
            w[key].changed.connect(self.update_instances)
        self._session.on_model_added(self._model_added)
        w["model"].changed.connect(self._follow_plan)
        w["bundle"].changed.connect(self._bundle_chosen)
        self._follow_plan()  # a session model chosen already (trained before this widget opened)

    def __getitem__(self, key: Any) -> Any:
        return self._w[key] if isinstance(key, str) and key in self._w else super().__getitem__(key)

    def _model_added(self, name: str) -> None:
        self._w["model"].reset_choices()
        if name in self._w["model"].choices:  # a pretrained model is not listed
            self._w["model"].value = name
            self._follow_plan()  # the same name again (a new run) changes no value

    def _bundle_chosen(self, *_: Any) -> None:
        """A folder chosen is the model to run (trial 42: once a bundle had run, 'model' showed its
        session copy, and the next folder chosen was ignored without a word)."""
        if str(self._w["bundle"].value) not in ("", ".") and self._w["model"].value != BUNDLE_CHOICE:
            self._w["model"].value = BUNDLE_CHOICE  # its change follows the plan
        else:
            self._follow_plan()

    def _follow_plan(self, *_: Any) -> None:
        """The test-time augmentation box takes the chosen model's plan (off without one), and the
        instance controls the post-processing an instance model predicts with."""
        from napari_medml.instances.postprocess import stored_params
        from napari_medml.segmentation.planned_inference import planned_inference

        choice = self._w["model"].value
        source = (self._w["bundle"].value if choice in (None, BUNDLE_CHOICE)
                  else self._session.models.get(choice))  # fmt: skip
        self._w["tta"].value = bool(planned_inference(source).get("tta"))
        params = stored_params(source)
        if params is not None:
            set_controls(self._w, params)

    @notify_errors("Save model")
    def save_model(self, *_: Any) -> None:
        """Save the chosen session model as a bundle in 'save model to' (checked before writing)."""
        from napari_medml.bundles.format import check_bundle_path

        name = self._w["model"].value
        if name in (None, BUNDLE_CHOICE):
            raise InputError("choose a model of this session to save (a bundle folder is saved already)")
        folder = str(self._w["save_to"].value)
        if folder in ("", "."):
            raise InputError("choose the folder to save the model in ('save model to'): a new or empty folder")
        check_bundle_path(Path(folder))  # a file, other files, not writable: one line each
        if Path(folder).is_dir() and any(Path(folder).iterdir()):  # never replace a model saved before
            raise InputError(f"'{folder}' holds a model bundle already: choose a new or empty folder")
        model = self._session.models[name]

        def done(path: Any) -> None:
            self._session.saved(name, model, path)
            self._w["status"].value = f"saved model '{name}' to {path}"

        self.runner.start(lambda stop, report: model.save(folder), on_result=done)

    def _stores(self) -> Path:
        """Where block-wise predictions of lazy layers go: the session's temp folder, removed when the viewer
        closes (the result layers read from it until then); a run started again after Cancel resumes there."""
        return self._session.run_folder("predictions", empty=False)

    def infer_config(self) -> InferConfig:
        w = self._w
        return InferConfig(overlap=w["overlap"].value, tta=w["tta"].value, min_size=w["min_size"].value,
                           fill_holes=w["fill_holes"].value, keep_largest=w["keep_largest"].value,
                           instances=w["instances"].value, return_probabilities=w["probabilities"].value != "none",
                           return_uncertainty=w["uncertainty"].value)

    def _model_source(self) -> tuple[str, Any]:
        """(name, Model) from the session, or (name, bundle path) to load in the worker."""
        choice = self._w["model"].value
        if choice is not None and choice != BUNDLE_CHOICE:
            return choice, self._session.models[choice]
        folder = chosen_folder(self._w["bundle"].value)
        if folder in ("", ".") and self._session.models:  # trial 32: "no model yet" beside the session's models
            raise InputError(f"'model' is '{BUNDLE_CHOICE}' but no bundle folder is chosen: choose one, or choose "
                             f"a model of this session in 'model' ({', '.join(map(repr, self._session.models))})")
        if folder in ("", "."):
            raise InputError("no model yet: train one in 'Train segmentation', or choose a bundle folder")
        return self._session.bundle_name(folder), Path(folder)

    @notify_errors("Prediction")
    def predict(self, *_: Any) -> None:
        """Run the chosen model on the chosen image(s) in the runner."""
        raw, shown = prediction_inputs(self._viewer, self._w["images"].value)
        held = HeldData([*self._w["images"].value, *([] if isinstance(raw, InputError) else [raw.inputs.layer])])
        name, source = self._model_source()
        config = self.infer_config()
        chosen = control_values(self._w)  # an instance model's post-processing: the model's, or as the user set it

        def job(stop: Any, report: Any) -> tuple[Any, Any]:
            from napari_medml.api import load_model
            from napari_medml.segmentation.prediction import background_note, check_orientation, predict_oriented
            from napari_medml.engine.devices import gui_thread_count, intra_op_threads, resolve_device

            model = load_model(source) if isinstance(source, Path) else source
            if type(model).__name__ == "Classifier":  # a classification bundle
                raise InputError(f"'{name}' is a classifier: Predict segments images; classify with it in "
                                 "Plugins › MedML › Classify ('classify with bundle') or napari-medml predict")
            if type(model).__name__ == "ReconstructionModel":  # trial 39: a traceback (it has no predict)
                raise InputError(f"'{name}' is a pretraining bundle, which segments nothing: Plugins › MedML › "
                                 "Pretrain ('reconstruct with') gives its reconstruction and anomaly map, and "
                                 "Train segmentation starts from it ('start bundle')")
            placed, why = input_for(model, raw, shown)
            inputs, origin, affine = placed
            blockwise, why = blockwise_input(model, inputs, why)
            if why:
                report(why)
            params = with_controls(model.params, chosen) if hasattr(model, "params") else None
            progress = lambda done, total: report((done, total))  # noqa: E731
            with intra_op_threads(gui_thread_count(resolve_device(config.device))):
                from napari_medml.segmentation.model import Model

                if blockwise and hasattr(model, "params"):
                    # an instance model on a dask/zarr layer: maps, then objects, block by block on disk
                    from napari_medml.instances.to_zarr import instances_to_folder

                    prediction = instances_to_folder(model, inputs.image, self._stores(), axes=inputs.axes,
                                                     **store_geometry_of(model, inputs, origin), config=config,
                                                     params=params, progress=progress, stop=stop)
                elif blockwise and isinstance(model, Model):
                    # a dask/zarr layer: block by block into Zarr stores, shown as lazily read layers
                    from napari_medml.segmentation.to_zarr import predict_to_folder

                    prediction = predict_to_folder(model, inputs.image, self._stores(), axes=inputs.axes,
                                                   **store_geometry_of(model, inputs, origin), config=config,
                                                   progress=progress, stop=stop)
                    if empty := background_note(prediction.labels, model.class_ids, f"layer '{inputs.layer.name}'"):
                        report(empty)
                elif hasattr(model, "params"):  # an instance model: its maps stay on the layer's grid
                    check_orientation(model, affine, f"layer '{inputs.layer.name}'",
                                      "predict it with `napari-medml predict`, which reorients the image for "
                                      "the network and the objects back")
                    prediction = model.predict(inputs.image, spacing=inputs.spacing, axes=inputs.axes,
                                               config=config, params=params, progress=progress, stop=stop)
                else:  # the network sees the anatomy in the orientation it was trained in
                    prediction = predict_oriented(model, inputs.image, spacing=inputs.spacing, affine=affine,
                                                  axes=inputs.axes, config=config, progress=progress, stop=stop,
                                                  name=f"layer '{inputs.layer.name}'", notes=report)
            # an on-disk result gets no table (measuring reads every object; the labels layer is lazy)
            table = (instance_table(prediction.labels, in_layer_unit(model, inputs), origin)
                     if hasattr(prediction, "relabel") and not is_lazy_image(prediction.labels) else None)
            return model, prediction, table, as_predicted(prediction), placed

        def done(result: tuple[Any, ...]) -> None:
            model, prediction, table, copied, (inputs, origin, _) = result
            if isinstance(source, Path):
                self._session.add_model(model, name, source)
            if dropped := not_shown(self._viewer, inputs.layer, held):
                self._w["status"].value = dropped
                return
            if hasattr(prediction, "relabel"):  # an instance model: instances and their table
                self._instances_source = (in_layer_unit(model, inputs), origin)
                self.prediction = prediction
                set_controls(self._w, prediction.params)
                show_instances(self._viewer, prediction, inputs.layer, table)
            else:
                self.show(prediction, inputs.layer, model, copied)
            note = "" if self._w["status"].value == running else self._w["status"].value  # an image's note, kept
            self._w["status"].value = ((f"{note}; " if note else "") + f"'{inputs.layer.name}' segmented with '{name}'"
                                       + result_note(inputs, model))

        layer = (shown or raw).inputs.layer
        running = self._w["status"].value = (f"predicting '{layer.name}' with '{name}'" + (  # minutes, lazily
            " block by block into Zarr stores" if is_lazy_image((shown or raw).inputs.image) else "") + "...")
        self.runner.start(job, on_result=done, on_report=self._note, discard_on_stop=True)

    def _note(self, report: Any) -> None:
        """A line about the image (reoriented, voxel size, intensities, background only), after earlier ones."""
        if isinstance(report, str):
            shown = self._w["status"].value  # "...": the run's own line, replaced
            self._w["status"].value = report if shown.endswith("...") else f"{shown}; {report}"

    def show(self, prediction: Any, layer: napari.layers.Layer, model: Any, as_predicted: Any = None,
             edited: Any = None) -> None:
        """Put a Prediction into the viewer as new (or the plugin's own, replaced) layers.

        ``as_predicted``: a copy of the labels, kept so that fine-tuning tells the user's
        edits from the model's answer; ``edited``: the earlier edits the labels keep (then
        the layer is the user's: no later run replaces it).
        """
        spatial = layer_spatial(layer)
        axes = layer_volume(layer).axes  # results drop the image's own channel axis
        names = dict(getattr(model.config, "class_names", None) or {})
        self._session.claim_edited()  # a prediction edited from a script is kept, as a painted one
        labels = show_result(self._viewer, result_layer_data(
            prediction.labels, layer.name, "prediction", spatial, "labels", axes), like=layer)
        if as_predicted is None:  # an instance or on-disk result (a refilled layer's earlier one goes)
            self._session.forget_prediction(labels)
        else:
            record_planes(self._viewer, labels, self._session.remember_prediction(labels, as_predicted, edited).planes)
        if edited is not None and edited.any():
            labels.metadata.pop(PLUGIN_MARK, None)
        labels.metadata.update(class_ids=list(prediction.class_ids), class_names=names)
        self.prediction = prediction
        self._w["corrected"].reset_choices()
        self._w["corrected"].value = labels
        mode = self._w["probabilities"].value
        shown = []
        if prediction.probabilities is not None and mode == "one layer":
            shown.append(show_result(self._viewer, result_layer_data(
                prediction.probabilities, layer.name, "probabilities", spatial, "image", axes,
                colormap="magma", contrast_limits=(0.0, 1.0)), like=layer))
        elif prediction.probabilities is not None:
            for cid, probs in zip(prediction.class_ids, prediction.probabilities):
                what = f"probability {names.get(cid, cid)}"
                shown.append(show_result(self._viewer, result_layer_data(
                    probs, layer.name, what, spatial, "image", axes, colormap="magma",
                    contrast_limits=(0.0, 1.0), blending="additive", visible=False), like=layer))
        if prediction.uncertainty is not None:
            # added over the image: black (certain) adds nothing, so the image and labels stay in view
            shown.append(show_result(self._viewer, result_layer_data(
                prediction.uncertainty, layer.name, "uncertainty", spatial, "image", axes,
                colormap="inferno", blending="additive"), like=layer))
        if prediction.instances is not None:
            shown.append(show_result(self._viewer, result_layer_data(prediction.instances, layer.name, "instances",
                                                                     spatial, "labels", axes), like=layer))
        drop_stale_results(self._viewer, layer.name, ("probabilit", "uncertainty", "instances"), shown)  # trial 44

    @notify_errors("Instances")
    def update_instances(self, *_: Any) -> None:
        """New instances from the last instance prediction's cached outputs (no network run)."""
        if not hasattr(prediction := self.prediction, "relabel") or self._instances_source is None:
            return  # nothing cached yet: the values are used from the next instance prediction on
        if self._instances_runner.running:
            self._instances_pending = True  # re-run with the latest values when this one ends
            return
        self._instances_pending = False
        inputs, origin = self._instances_source
        params = params_from_controls(self._w, prediction.params)

        def job(stop: Any, report: Any) -> tuple[Any, Any]:
            relabelled = prediction.relabel(params)
            lazy = is_lazy_image(relabelled.labels)  # block-wise on disk: no table
            return relabelled, None if lazy else instance_table(relabelled.labels, inputs, origin)

        def done(result: tuple[Any, Any]) -> None:
            self.prediction, table = result
            show_instances(self._viewer, self.prediction, inputs.layer, table)
            if self._instances_pending:
                self.update_instances()

        self._instances_runner.start(job, on_result=done)

    @notify_errors("Fine-tuning")
    def finetune(self, *_: Any) -> None:
        """Continue the current model on the corrected labels, then predict again."""
        name, model = self._model_source()
        if isinstance(model, Path):
            raise InputError("fine-tuning needs a model in this session: predict with the "
                             "bundle once (it is then loaded), then fine-tune")
        inputs = choose_input(model, *prediction_inputs(self._viewer, self._w["images"].value))[0].inputs
        held = HeldData([inputs.layer])
        if hasattr(model, "params"):
            raise InputError(f"'{name}' is an instance model: correct the instance labels and train it again "
                             "in Train (labels are: instances); fine-tuning here is for segmentation models")
        corrected = require(self._w["corrected"].value, napari.layers.Labels, "corrected labels")
        check_on_image(corrected, inputs.layer)
        if is_lazy_image(inputs.image):  # it predicts the whole image again after the steps
            check_fits(inputs.layer, "fine-tuning", "correct a crop of it and fine-tune on that crop; Predict works "
                       "on the whole layer block by block")  # fmt: skip
        shown = self._session.shown_prediction(corrected)  # the model's answer here: the edits are what differs
        if shown is None:  # a copy, a file, a layer painted from scratch: 0 may mean "not looked at"
            raise InputError(f"labels '{corrected.name}' are not a prediction made in this session: paint the "
                             "corrections into the '[prediction]' layer Predict made (once painted, no run replaces "
                             f"it); to train on labels you painted yourself, use Train with 'start from' '{name}'")
        labels = labels_array(corrected)
        if is_generated(corrected.metadata) and not shown.planes and np.array_equal(labels, shown.labels):
            raise InputError(f"no corrections painted in '{corrected.name}': paint them with napari's brush (or "
                             "fill, eraser) first; on the unchanged prediction the model would learn its own answer")
        replay = list(self._session.training_data.get(name, []))  # what it was trained on, kept
        steps, augment = self._w["ft_steps"].value, self._session.augment
        infer, affine = self.infer_config(), layer_spatial(inputs.layer).affine
        # the margin lies in the plane(s) it was painted in (all of them: their common axes)
        plane = tuple(sorted(set.intersection(*map(set, shown.planes)))) if shown.planes else None

        def job(stop: Any, report: Any) -> Any:
            from napari_medml.engine.devices import gui_thread_count, intra_op_threads, resolve_device
            from napari_medml.io.axes import AXES_HINT
            from napari_medml.segmentation.correction_round import correction_round

            with intra_op_threads(gui_thread_count(resolve_device(model.config.device))):
                return (yield from correction_round(  # then its windows on the bar (trial 44: it sat at the last step)
                    model, inputs.image, labels, shown.labels, steps, axes=inputs.axes, spacing=inputs.spacing,
                    affine=affine, plane=plane, edited=shown.edited, replay=replay, augment=augment, infer=infer,
                    stop=stop, name=f"image '{inputs.layer.name}'", hint=AXES_HINT, progress=lambda *d: report(d)))

        def done(result: Any) -> None:
            from napari_medml.segmentation.corrections import describe_finetune  # numpy only: no stall

            tuned_name = self._session.finetuned_name(name)  # the model before the round stays
            self._session.training_data[tuned_name] = replay + result.learned
            self._session.add_model(result.model, tuned_name)
            self._w["model"].value = tuned_name
            learned_from = describe_finetune(tuned_name, result.model.provenance.get("finetuned", {}), corrected.name)
            if result.prediction is None:  # Stop during the steps: the model so far is kept, nothing predicted
                self._w["status"].value = f"{learned_from}: kept; press Predict to see its answer on the image"
                return
            if dropped := not_shown(self._viewer, inputs.layer, held, f"model '{tuned_name}' is kept; "):
                self._w["status"].value = dropped
                return
            self.show(result.prediction, inputs.layer, result.model, result.as_predicted, result.edited)
            self._w["status"].value = (f"{learned_from}: '{inputs.layer.name}' predicted again, your edits kept "
                                       f"({result.kept_edits:,} voxels where the network still differs)")

        self._w["status"].value = f"fine-tuning '{name}' on the edits in '{corrected.name}'..."
        self.runner.start(job, on_result=done, desc="Fine-tuning")

