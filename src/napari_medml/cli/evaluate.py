"""``napari-medml evaluate``: per-class Dice, IoU and HD95 of a prediction, as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from napari_medml.cli.common import FILE_TYPES, UsageError, info

__all__ = ["add", "read_pair", "run"]


def add(sub: Any) -> None:
    """Declare the ``evaluate`` subcommand and its options."""
    p = sub.add_parser("evaluate", help="score a predicted segmentation against ground truth",
                       description="Per-class Dice, IoU and 95th-percentile Hausdorff distance "
                       "(in the ground truth's physical units), printed as JSON on stdout. "
                       "A class missing from one file has Dice 0 and HD95 null (infinite), and "
                       "mean_hd95 is then null too; a line on stderr names such classes.")  # fmt: skip
    p.add_argument("--prediction", required=True, type=Path, metavar="P",
                   help=f"predicted labels ({FILE_TYPES})")  # fmt: skip
    p.add_argument("--labels", required=True, type=Path, metavar="GT",
                   help="ground-truth labels on the same voxel grid (a copy stored in another "
                   "orientation is reoriented); its spacing is used for HD95")  # fmt: skip
    p.add_argument("--axes", metavar="AXES",
                   help="what the axes of both files are, one letter each in stored order (T time, "
                   "Z, Y, X), e.g. TYX for a time series; needed only where the files do not say")  # fmt: skip
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
    """Read both files, score them, print the JSON."""
    if args.instances and args.binary:
        raise UsageError("--binary is for class labels; --instances matches objects, whatever their ids")
    pred, gt = read_pair(args)
    if args.instances:
        from napari_medml.cli.instances import evaluate as evaluate_instances

        return evaluate_instances(args, pred, gt)
    from napari_medml.io.geometry import has_geometry
    from napari_medml.segmentation.metrics import evaluate, evaluation_notes

    # distances (HD95) in the voxel size of the file that has one, whichever it is
    spacing = pred.spacing if has_geometry(pred) and not has_geometry(gt) else gt.spacing
    result = evaluate(pred.data, gt.data, spacing=spacing, binary=args.binary)
    for line in evaluation_notes(result, f"prediction '{args.prediction}'", f"labels '{args.labels}'",
                                 "--binary", "--instances"):
        info(line)
    result = {"prediction": str(args.prediction), "labels": str(args.labels), **result}
    print(json.dumps(result, indent=2, allow_nan=False))
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
    from napari_medml.cli.common import check_not_transposed, label_values
    from napari_medml.errors import InputError
    from napari_medml.io.geometry import align_to, fit_length1_axes

    pred, gt = io.read_volume(args.prediction, args.axes), io.read_volume(args.labels, args.axes)
    # ids 0 and up on both sides: a negative "ignore" id or a probability map is refused, not scored
    pred = replace(pred, data=label_values(pred, args.prediction, "prediction"))
    gt = replace(gt, data=label_values(gt, args.labels))
    check_not_transposed(pred, args.prediction, gt, args.labels)
    # a NIfTI saved with an extra leading axis, (1, X, Y, Z): its voxels fit once the axis is gone
    if pred.data.ndim > gt.data.ndim:
        pred, note = fit_length1_axes(pred, gt.data.shape, f"prediction '{args.prediction}'")
    else:
        gt, note = fit_length1_axes(gt, pred.data.shape, f"labels '{args.labels}'")
    if note:
        info(note)
    if pred.data.ndim != gt.data.ndim or pred.data.shape[:-3] != gt.data.shape[:-3]:
        raise InputError(f"prediction '{args.prediction}' has shape {pred.data.shape} but labels "
                         f"'{args.labels}' have {gt.data.shape}: they must match")  # fmt: skip
    aligned = align_to(pred, gt, moving_name=f"prediction '{args.prediction}'",
                       reference_name=f"labels '{args.labels}'")  # fmt: skip
    if aligned.line:
        info(aligned.line)
    return aligned.volume, gt
