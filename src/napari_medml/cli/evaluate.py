"""``napari-medml evaluate``: per-class Dice, IoU and HD95 of a segmentation, as JSON; or a
classifier's prediction table scored against known classes (confusion matrix, ROC, AUC)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from napari_medml.cli.common import FILE_TYPES, UsageError, info
from napari_medml.cli.spacing_option import add_spacing_option, stores_voxel_size, with_spacing

__all__ = ["add", "read_pair", "run", "run_classification"]

TABLE_SUFFIXES = (".csv", ".tsv", ".txt")


def add(sub: Any) -> None:
    """Declare the ``evaluate`` subcommand and its options."""
    p = sub.add_parser("evaluate", help="score a predicted segmentation or a classifier's predictions against "
                       "ground truth",
                       description="Segmentation: per-class Dice, IoU and 95th-percentile Hausdorff distance "
                       "(in the ground truth's physical units, named by the JSON's \"unit\" when its file "
                       "names one), printed as JSON on stdout. "
                       "A class missing from one file has Dice 0 and HD95 null (infinite), and "
                       "mean_hd95 is then null too; a line on stderr names such classes. "
                       "Classification: give the CSV table 'predict' wrote for a classifier as --prediction "
                       "and a CSV of the known classes as --labels; rows are matched by sample number, "
                       "object id or tile number, and accuracy, balanced accuracy, per-class precision, "
                       "recall, F1 and one-vs-rest AUC, macro AUC and the confusion matrix are printed "
                       "(--report adds the ROC curves as JSON).")  # fmt: skip
    p.add_argument("--prediction", required=True, type=Path, metavar="P", action="append",
                   help=f"predicted labels ({FILE_TYPES}), or a classifier's prediction table (.csv, "
                   "as 'napari-medml predict' writes it: sample/object/tile, class, prob_<id>)")  # fmt: skip
    p.add_argument("--labels", required=True, type=Path, metavar="GT", action="append",
                   help="ground-truth labels on the same voxel grid (a copy stored in another "
                   "orientation is reoriented); its spacing is used for HD95. With a prediction table: "
                   "the known classes as CSV, as 'train --classes' reads them (one row per sample, "
                   "object or tile: its number or id, then its class; a header row is allowed; empty or "
                   "0 = unknown, left out)")  # fmt: skip
    p.add_argument("--report", type=Path, metavar="FILE.json",
                   help="also write the report as JSON (written whole or not at all): a segmentation's or "
                   "instances' scores as printed; with a prediction table the full report (every metric, the "
                   "confusion matrix, the ROC curve points per class, the rows left out)")  # fmt: skip
    p.add_argument("--axes", metavar="AXES",
                   help="what the axes of both files are, one letter each in stored order (T time, "
                   "Z, Y, X), e.g. TYX for a time series; needed only where the files do not say")  # fmt: skip
    add_spacing_option(p, "prediction and labels files")
    p.add_argument("--binary", action="store_true",
                   help="score foreground against background: every nonzero id of both files counts as "
                   "class 1 (e.g. a 0/255 mask against a 0/1 prediction)")  # fmt: skip
    p.add_argument("--instances", action="store_true",
                   help="both files are instance labels (one id per object): print the instance metrics "
                   "(one-to-one IoU matching; precision, recall, F1 and average precision TP/(TP+FP+FN) "
                   "per IoU threshold, their mean, and the counts)")  # fmt: skip
    p.add_argument("--thresholds", choices=("default", "dsb"), default="default",
                   help="with --instances: IoU 0.5, 0.55, ..., 0.9 (default), or 'dsb' for the Data "
                   "Science Bowl 2018 list up to 0.95")  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Read both files, score them, print the JSON (a prediction table: the classification report)."""
    for flag in ("prediction", "labels"):
        given = getattr(args, flag)
        if len(given) > 1:  # argparse kept only the last one before: the other pairs were dropped silently
            names = ", ".join(f"'{p}'" for p in given)
            raise UsageError(f"--{flag} was given {len(given)} times ({names}): evaluate scores one prediction "
                             "against its labels per run; run it once for each pair")
        setattr(args, flag, given[0])
    if _is_table(args.prediction) or _is_table(args.labels):
        return run_classification(args)
    if args.instances and args.binary:
        raise UsageError("--binary is for class labels; --instances matches objects, whatever their ids")
    _check_report(args)
    pred, gt = read_pair(args)
    if args.instances:
        from napari_medml.cli.instances import evaluate as evaluate_instances

        result = evaluate_instances(args, pred, gt)
        _write_report(args, result)
        print(json.dumps(result, indent=2, allow_nan=False))
        return 0
    from napari_medml.io.geometry import has_geometry
    from napari_medml.segmentation.metrics import evaluate, evaluation_notes

    # distances (HD95) in the voxel size of the file that has one, whichever it is
    source = pred if has_geometry(pred) and not has_geometry(gt) else gt
    spacing = source.spacing
    # a time series: HD95 frame by frame (distances never cross frames), the worst frame's
    frames = gt.axes.index("T") if "T" in gt.axes and len(gt.axes) == gt.data.ndim else None
    result = evaluate(pred.data, gt.data, spacing=spacing, binary=args.binary, frames_axis=frames)
    notes = evaluation_notes(result, f"prediction '{args.prediction}'", f"labels '{args.labels}'", "--binary",
                             "--instances")
    for line in notes:
        info(line)
    # the unit of spacing and HD95 when the file names one (cases 32: HD95 in inches, nothing said); else null
    result = {"prediction": str(args.prediction), "labels": str(args.labels), **result, "notes": notes,
              "unit": source.meta.get("unit") if has_geometry(source) else None}
    _write_report(args, result)
    print(json.dumps(result, indent=2, allow_nan=False))
    return 0


def _check_report(args: argparse.Namespace) -> None:
    """Refuse a ``--report`` that is not a new or replaceable .json file, before any work."""
    from napari_medml.io.atomic import check_file_target

    if args.report is None:
        return
    if args.report.suffix.lower() != ".json":
        raise UsageError(f"--report '{args.report}' must be a .json file")
    if args.report.resolve() in (args.prediction.resolve(), args.labels.resolve()):
        raise UsageError(f"--report '{args.report}' is an input: give a new file name")
    check_file_target(args.report, "--report")


def _write_report(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Write ``report`` as JSON to ``--report`` (atomically), when given."""
    if args.report is None:
        return
    from napari_medml.cli.common import write_output

    text = json.dumps(report, indent=2, allow_nan=False) + "\n"
    info(f"wrote {write_output(args.report, lambda tmp: tmp.write_text(text, encoding='utf-8'))}")


def _is_table(path: Path) -> bool:
    return path.suffix.lower() in TABLE_SUFFIXES


def run_classification(args: argparse.Namespace) -> int:
    """Score a classifier's prediction table against a CSV of known classes; print the report
    (and write it as JSON with ``--report``). Every bad input is one line: status 2 for the
    options, 1 for the files, as for segmentations."""
    from napari_medml.classification.evaluation import evaluate_tables, report_text

    if not _is_table(args.labels):
        raise UsageError(f"--labels '{args.labels}' is an image but --prediction '{args.prediction}' is a table: "
                         "a classifier's prediction table is scored against the known classes as a CSV (one "
                         "row per sample, object or tile: its number or id, then its class); give that as "
                         "--labels")  # fmt: skip
    if not _is_table(args.prediction):
        raise UsageError(f"--prediction '{args.prediction}' is an image but --labels '{args.labels}' is a table: "
                         "a segmentation is scored against a labels image; to score a classifier give the "
                         ".csv table 'napari-medml predict' wrote next to its output as --prediction")  # fmt: skip
    for option, given in (("--binary", args.binary), ("--instances", args.instances),
                          ("--axes", args.axes is not None), ("--thresholds", args.thresholds != "default")):
        if given:
            raise UsageError(f"{option} is for label images; a prediction table is scored per class: drop {option}")
    _check_report(args)
    score = evaluate_tables(args.prediction, args.labels)  # a wrong file: InputError, one line, status 1
    for note in score.notes:
        info(note)
    _write_report(args, score.report)
    print(report_text(score.report))
    from napari_medml.classification.metrics import chance_note, one_class_note

    for note in (one_class_note(score.report), chance_note(score.report)):  # the numbers against chance
        if note:
            info(note)
    return 0


def read_pair(args: argparse.Namespace) -> tuple[Any, Any]:
    """The prediction and the ground truth as ``io.Volume`` s on one voxel grid, for both modes.

    Ids are checked (whole numbers >= 0), a length-1 axis one file has and the other not is
    dropped, and the prediction is put on the labels' grid in world space (a copy stored in
    another orientation is reoriented; another grid is refused), so that no two arrays that
    do not lie voxel for voxel on one another are ever scored.

    Raises
    ------
    InputError
        Bad ids, transposed files, shapes or grids that differ.
    """
    from dataclasses import replace

    from napari_medml import io
    from napari_medml.cli.common import label_values
    from napari_medml.cli.transposed import check_not_transposed
    from napari_medml.errors import InputError
    from napari_medml.io.geometry import align_to
    from napari_medml.io.length1_axes import fit_length1_axes

    pred, gt = io.read_volume(args.prediction, args.axes), io.read_volume(args.labels, args.axes)
    # --spacing for files that store none, when neither does: beside one that does, a file lies on its grid
    spacing = None if stores_voxel_size(pred) or stores_voxel_size(gt) else args.spacing
    # an axis neither file names (a .npy volume's first) is measured as a spatial one: it needs its size (trial 43)
    pred = with_spacing(pred, spacing, args.prediction, unnamed_is_spatial=True)[0]
    gt = with_spacing(gt, spacing, args.labels, unnamed_is_spatial=True)[0]
    # ids 0 and up on both sides: a negative "ignore" id or a probability map is refused, not scored
    ids = "object" if getattr(args, "instances", False) else "class"
    pred = replace(pred, data=label_values(pred, args.prediction, "predicted labels", ids))
    gt = replace(gt, data=label_values(gt, args.labels, ids=ids))
    check_not_transposed(pred, args.prediction, gt, args.labels)
    # a NIfTI saved with an extra leading axis, (1, X, Y, Z): its voxels fit once the axis is gone
    if pred.data.ndim > gt.data.ndim:
        pred, note = fit_length1_axes(pred, gt.data.shape, f"prediction '{args.prediction}'")
    else:
        gt, note = fit_length1_axes(gt, pred.data.shape, f"labels '{args.labels}'")
    if note:
        info(note)
    if pred.data.ndim != gt.data.ndim or pred.data.shape[:-3] != gt.data.shape[:-3]:
        more, fewer = (pred, gt) if pred.data.ndim > gt.data.ndim else (gt, pred)
        lead = more.axes[: more.data.ndim - fewer.data.ndim]
        fix = "give files of one grid"
        if more.data.ndim > fewer.data.ndim and more.data.shape[len(lead):] == fewer.data.shape:  # trial 47: no fix
            what = ("frames" if set(lead) == {"T"} else f"{more.data.shape[0]} volumes or images along its first "
                    "axis" if len(lead) == 1 else f"parts along its first {len(lead)} axes")  # review 47: "axes Q"
            who = "labels are" if fewer is gt else "prediction is"
            fix = (f"the {who} for one of the {what}: give {who.split()[0]} for every one (shape "
                   f"{more.data.shape}), or save the one it belongs to as a file of its own and score that")
        raise InputError(f"prediction '{args.prediction}' has shape {pred.data.shape} but labels '{args.labels}' "
                         f"have {gt.data.shape}: {fix}")  # fmt: skip
    aligned = align_to(pred, gt, moving_name=f"prediction '{args.prediction}'",
                       reference_name=f"labels '{args.labels}'")  # fmt: skip
    if aligned.line:
        info(aligned.line)
    return aligned.volume, gt
