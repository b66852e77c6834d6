"""Evaluate widget: score a labels layer against ground truth, as ``napari-medml evaluate``.

Classes: per-class Dice, IoU and HD95 (in the layer's units: the ground truth's scale),
their means, and lines that say what the means hide (a class missing from one layer, ids
that look like instances); foreground: every nonzero id against background; instances:
one-to-one IoU matching with precision, recall, F1 and the DSB 2018 AP at IoU 0.5 to 0.9.
The numbers come from the core (``napari_medml.evaluate``) in a worker thread; the table shows them and *save
report (JSON)* writes the CLI's JSON, atomically.
"""

from __future__ import annotations

import json
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, FileEdit, PushButton, Table, create_widget

from napari_medml._widgets._dock import DockForm
from napari_medml._widgets._forms import status_label
from napari_medml._widgets._layers import check_fits, labels_array, layer_spatial, layer_volume, require
from napari_medml._widgets._proxy import same
from napari_medml._widgets._runner import Runner, notify_errors
from napari_medml.errors import InputError

__all__ = ["EvaluateWidget", "score_rows"]

LEVELS = [("classes (Dice, IoU, HD95)", "classes"), ("foreground vs background", "binary"),
          ("instances (F1, AP)", "instances")]


class EvaluateWidget(DockForm):
    """Choose a prediction and its ground truth, Score, read the table, save the report."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        # napari's Plugins menu passes the viewer as ``napari_viewer`` (npe2 widget class)
        super().__init__()
        self._viewer = napari_viewer
        w = self._w = {}
        w["prediction"] = create_widget(annotation=napari.layers.Labels, label="prediction")
        w["truth"] = create_widget(annotation=napari.layers.Labels, label="ground truth")
        w["score_as"] = ComboBox(choices=LEVELS, value="classes", label="score as",
                                 tooltip="classes: each id is a class; foreground vs background (value "
                                 "'binary', as --binary): any nonzero id; instances: each id is an object, "
                                 "matched one to one by IoU")
        w["score"] = PushButton(text="Score")
        w["cancel"] = PushButton(text="Cancel",
                                 tooltip="stop scoring: HD95 stops between classes (or frames of a series)")
        w["summary"] = status_label()
        w["table"] = Table(value={"data": [], "columns": ["score"]})
        w["report_path"] = FileEdit(mode="w", filter="*.json", value="", label="report JSON")
        w["save"] = PushButton(text="save report (JSON)")
        self.runner = Runner("Evaluation", [w["score"], w["save"]], w["cancel"])
        self.extend([*w.values(), self.runner.progress])
        self.report: dict[str, Any] | None = None
        w["score"].changed.connect(self.score)
        w["save"].changed.connect(self.save)

    def __getitem__(self, key: Any) -> Any:
        return self._w[key] if isinstance(key, str) and key in self._w else super().__getitem__(key)

    @notify_errors("Evaluation")
    def score(self, *_: Any) -> None:
        """Read both layers (copies), check that they lie on one another, score them in the runner."""
        w = self._w
        # the last pair's numbers go: they must not read as this pair's (nor be saved as them)
        self.report, w["table"].value, w["summary"].value = None, {"data": [], "columns": ["score"]}, ""
        pred_layer = require(w["prediction"].value, napari.layers.Labels, "a prediction labels layer")
        truth_layer = require(w["truth"].value, napari.layers.Labels, "a ground-truth labels layer")
        if same(pred_layer, truth_layer):
            raise InputError(f"prediction and ground truth are both '{pred_layer.name}': choose the layer to "
                             "score and the layer it is scored against")
        axes = layer_volume(truth_layer).axes  # a time series (axis labels t, ...): scored frame by frame
        frames = axes.index("T") if "T" in axes and len(axes) == truth_layer.data.ndim else None
        for layer in (pred_layer, truth_layer):
            check_fits(layer, "evaluation", "crop both layers the same way, or score the files with "
                       "'napari-medml evaluate'")
            if layer.data.ndim - (frames is not None) not in (2, 3):  # a 3D time series scores (trial 43)
                raise InputError(f"labels '{layer.name}' have {layer.data.ndim} axes ({axes}): Evaluate scores a "
                                 "2D image or a 3D volume, or a time series of them (axis labels t, z, y, x); "
                                 "score one channel at a time")
        if tuple(pred_layer.data.shape) != tuple(truth_layer.data.shape):
            raise InputError(f"prediction '{pred_layer.name}' has shape {tuple(pred_layer.data.shape)} but ground "
                             f"truth '{truth_layer.name}' has {tuple(truth_layer.data.shape)}: score layers of one "
                             "image")
        from napari_medml._widgets._placement import world_mismatch
        from napari_medml.layer_data import placement_mismatch

        miss = (placement_mismatch(layer_spatial(truth_layer), layer_spatial(pred_layer),  # frames pair by index
                                   () if frames is None else (frames - len(axes),))
                or world_mismatch(truth_layer, pred_layer))
        if miss:
            raise InputError(f"prediction '{pred_layer.name}' does not lie on ground truth '{truth_layer.name}' "
                             f"({miss}): set its scale and translate (rotate, shear, affine) to the ground truth's")
        pred, truth = labels_array(pred_layer), labels_array(truth_layer)
        spacing = tuple(float(s) for s in truth_layer.scale)
        level, names = w["score_as"].value, (pred_layer.name, truth_layer.name)
        # the unit of the scale, as its file named it (null: voxels), as the command line's JSON says it: the
        # ground truth's, else the prediction's (a truth painted in napari beside a predicted file)
        unit = next(filter(None, (_length_unit(layer) for layer in (truth_layer, pred_layer))), None)

        def job(stop: Any, report: Any) -> dict[str, Any]:
            from napari_medml.api import evaluate
            from napari_medml.errors import raise_if_stopped

            def progress(done: int, total: int) -> None:  # HD95, class by class: the bar and Cancel
                raise_if_stopped(stop)
                report((done, total))

            return {**evaluate(np.asarray(pred), np.asarray(truth), spacing=spacing, level=level, names=names,
                               frames_axis=frames, progress=progress), "unit": unit}

        self.runner.start(job, on_result=self._show, discard_on_stop=True)

    def _show(self, report: dict[str, Any]) -> None:
        self.report = report
        rows, columns, index, summary = score_rows(report)
        self._w["table"].value = {"data": rows, "columns": columns, "index": index}
        self._w["summary"].value = summary

    @notify_errors("Save report")
    def save(self, *_: Any) -> None:
        """Write the last report as JSON (atomically; the path must end in .json)."""
        from pathlib import Path

        from napari_medml.io.atomic import atomic_path, check_file_target

        if self.report is None:
            raise InputError("nothing scored yet: press Score first")
        path = Path(str(self._w["report_path"].value))
        if str(path) in ("", ".") or path.suffix.lower() != ".json":
            raise InputError("choose where to write the report ('report JSON'): a file name ending in .json")
        check_file_target(path, "report JSON")
        text = json.dumps(self.report, indent=2, allow_nan=False) + "\n"
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        self._w["summary"].value += f" (saved to {path.name})"


def _length_unit(layer: Any) -> str | None:
    """The length unit of a layer's scale: its file's, else the unit napari shows on its last axis
    (napari >= 0.6: a layer made in napari with units of micrometers; it said none: trial 43)."""
    from napari_medml.io.volume import canonical_unit

    unit = (layer.metadata.get("file_meta") or {}).get("unit")
    if unit:
        return str(unit)
    shown = canonical_unit(str(tuple(getattr(layer, "units", ()) or ("pixel",))[-1]))
    return shown if shown in ("nm", "um", "mm", "cm", "m") else None


def score_rows(report: dict[str, Any]) -> tuple[list[list[Any]], list[str], list[str], str]:
    """The table (rows, columns, row names) and a one-line summary of a report."""

    def num(value: Any) -> Any:
        return "-" if value is None else round(float(value), 4)

    if "classes" not in report:  # instances
        rows = [[m["threshold"], m["tp"], m["fp"], m["fn"], num(m["precision"]), num(m["recall"]), num(m["f1"]),
                 num(m["average_precision"])] for m in report["thresholds"]]
        summary = (f"{report.get('n_true', '?')} true, {report.get('n_pred', '?')} predicted objects; F1 at IoU 0.5 "
                   f"{num(report.get('f1_at_0.5'))}, mean AP {num(report['mean_ap'])}")
        summary += "".join(". " + note for note in report.get("notes") or ())
        return (rows, ["IoU", "tp", "fp", "fn", "precision", "recall", "F1", "AP"],
                [f"{m['threshold']:.2f}" for m in report["thresholds"]], summary)
    classes = report["classes"]
    rows = [[num(c["dice"]), num(c["iou"]), num(c["hd95"]), c["gt_voxels"], c["pred_voxels"]] for c in classes.values()]
    unit = f" {report['unit']}" if report.get("unit") else ""
    units = "x".join(f"{s:g}" for s in report["spacing"]) + unit
    summary = (f"mean Dice {num(report['mean_dice'])}, mean IoU {num(report['mean_iou'])}, mean HD95 "
               f"{num(report['mean_hd95'])}{unit} (voxel size {units})")
    if report.get("notes"):
        summary += ". " + " ".join(report["notes"])
    return rows, ["Dice", "IoU", "HD95", "true voxels", "predicted voxels"], [f"class {k}" for k in classes], summary
