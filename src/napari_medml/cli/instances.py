"""Instance models on the command line: ``predict`` with an instance bundle (instance
image + per-object CSV table) and ``evaluate --instances`` (the field's instance metrics)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from napari_medml.cli.layout import image_layout
from napari_medml.cli.common import (
    UsageError,
    check_derived_table,
    check_file_targets,
    given,
    info,
    progress_bar,
    say_stored_order,
    write_like,
    write_output,
)
from napari_medml.cli.progress import bar_progress
from napari_medml.cli.values import real

__all__ = ["add_predict_options", "evaluate", "predict"]


def add_predict_options(p: Any) -> None:
    """Post-processing options of ``predict`` for instance bundles (default: the bundle's)."""
    g = p.add_argument_group("instance models (default: the values stored in the bundle)")
    g.add_argument("--seed-height", type=real(0, 1), metavar="H",
                   help="a maximum of the learned distance map (0-1) starts an object when it rises at "
                   "least H above the saddle to a higher one: lower splits more, higher merges more")  # fmt: skip
    g.add_argument("--min-distance", type=real(0), metavar="D",
                   help="merge seeds closer than D (physical units, e.g. um); 0 turns it off")  # fmt: skip
    g.add_argument("--min-object-size", type=real(0), metavar="S",
                   help="remove objects smaller than this area (2D) or volume (3D) in physical units")  # fmt: skip
    g.add_argument("--foreground-threshold", type=real(0, 1), metavar="P",
                   help="a voxel belongs to an object when its foreground probability is at least P")  # fmt: skip


def predict(args: argparse.Namespace, model: Any) -> int:
    """Write the instance image (uint32, one id per object) and its per-object CSV table."""
    from dataclasses import replace

    from napari_medml.config import InferConfig
    from napari_medml.instances.measure import is_instance_table, write_table_csv
    from napari_medml.io.spacing import spacing_note
    from napari_medml.io.orientation import orient_as

    for flag, value in (("--probabilities", args.probabilities), ("--uncertainty", args.uncertainty),
                        ("--instances", args.instances)):
        if value is not None:
            raise UsageError(f"{flag} is not used with an instance model ('{args.model}'): it writes "
                             "instances (--out) and their table (--table)")
    table_path = args.table if args.table is not None else args.out.with_name(_stem(args.out) + ".csv")
    check_file_targets({"--out": args.out, "--table": table_path}, inputs=[args.image])
    check_derived_table(table_path, ours=is_instance_table, given=args.table is not None)
    params = replace(model.params, **given(seed_height=args.seed_height, min_distance=args.min_distance,
                                           min_size=args.min_object_size,
                                           foreground_threshold=args.foreground_threshold))
    dims = model.spatial_dims
    from napari_medml import io
    from napari_medml.cli.predict_blocks import in_model_unit_of
    from napari_medml.io.units import as_read
    from napari_medml.cli.spacing_option import check_spacing_covers, with_spacing

    read = in_model_unit_of(args, model, with_spacing(io.read_volume(args.image, args.axes), args.spacing,
                                                      args.image)[0])
    vol, lay = image_layout(read, args.image, dims, in_channels=model.in_channels, channel=args.channel,
                            channel_names=model.config.data.channel_names)
    check_spacing_covers(vol, args.image, dims)
    if lay.sample_axes:
        count = math.prod(vol.data.shape[a] for a in lay.sample_axes)
        info(f"image '{args.image}' (axes {vol.axes}): {count} slices/frames predicted one by one by the "
             f"{dims}D model; object ids stay unique across them")
    oriented = orient_as(vol, model.provenance.get("orientation"), dims)
    for note in (oriented.note, spacing_note(oriented.spacing, model.spacing, f"image '{args.image}'",
                                                   recipe=model.config.data.preprocessing)):
        if note:
            info(note)
    config = InferConfig(**given(overlap=args.overlap, sw_batch_size=args.sw_batch_size, tta=args.tta,
                                 device=args.device))
    with progress_bar("window") as bar:
        progress = bar_progress(bar, "predicted", "windows")
        pred = model.predict(oriented.data, spacing=oriented.spacing, axes=vol.axes, config=config, params=params,
                             progress=progress)
    labels = oriented.back(pred.labels)
    written = [write_output(args.out, lambda tmp: write_like(tmp, vol, labels, spatial_dims=dims, is_labels=True))]
    table = _table(as_read(vol), lay, labels)  # measured in the file's own unit
    written.append(write_table_csv(table_path, table))
    say_stored_order(vol, written)
    n = int(len(table["index"]))
    info(f"{n} object(s) ({_params_line(params)}); wrote " + ", ".join(str(p) for p in written)
         + args.planned)
    return 0


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".ome.tiff", ".ome.tif", ".tiff", ".tif", ".nii", ".npy", ".zarr"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _params_line(params: Any) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in params.to_dict().items())


def _table(vol: Any, lay: Any, labels: Any) -> dict:
    """The per-object table; a stack of slices/frames is measured in voxels, without intensities.

    Centroids are world coordinates (mm) on the RAS+ grid napari shows a NIfTI on, whatever
    orientation the file is stored in (a LAS copy of a scan gives the same centroids as the
    RAS one); bounding boxes stay voxel indices into the written file."""
    from dataclasses import replace

    from napari_medml.instances.measure import measure_image_instances, measure_instances
    from napari_medml.io.orientation import to_canonical

    spatial = [i for i, a in enumerate(vol.axes) if a in "ZYX"]
    if lay.sample_axes or labels.ndim != len(spatial):
        return measure_instances(labels) if labels.ndim in (2, 3) else {"index": np.unique(labels[labels > 0])}

    def measure(vol: Any, labels: Any) -> dict:
        spacing = tuple(float(vol.spacing[i]) for i in spatial)
        origin = tuple(float(vol.origin[i]) for i in spatial)
        return measure_image_instances(labels, vol.data, spacing=spacing, origin=origin,
                                       channel_axis=lay.channel_axis)

    table = measure(vol, labels)
    if vol.affine is not None and len(spatial) == 3:
        keep = [i for i, a in enumerate(vol.axes) if a != "C"]
        objects = replace(vol, data=labels, axes="".join(vol.axes[i] for i in keep), is_labels=True,
                          spacing=tuple(vol.spacing[i] for i in keep), origin=tuple(vol.origin[i] for i in keep))
        canonical = to_canonical(objects)
        if canonical is not objects:  # stored other than RAS: the centroids of the RAS+ grid
            world = measure_instances(canonical.data, spacing=canonical.spacing, origin=canonical.origin)
            table.update({name: world[name] for name in world if name.startswith("centroid_")})
    return table


def evaluate(args: argparse.Namespace, pred: Any, gt: Any) -> dict[str, Any]:
    """Score predicted instances against true instances (``pred`` and ``gt``: ``io.Volume`` s on
    one grid, from ``cli.evaluate.read_pair``): the JSON report, as a dict (its notes printed too)."""
    from napari_medml.instances.metrics import AP_THRESHOLDS, DSB_THRESHOLDS, instance_scores

    from napari_medml.instances.notes import merged_objects_notes
    from napari_medml.io.geometry import has_geometry

    thresholds = DSB_THRESHOLDS if args.thresholds == "dsb" else AP_THRESHOLDS
    truth, predicted = np.asarray(gt.data), np.asarray(pred.data)
    scores = instance_scores(truth, predicted, thresholds)
    notes = merged_objects_notes(truth, predicted, f"labels '{args.labels}'", f"prediction '{args.prediction}'",
                                 "score classes without --instances")
    for line in notes:
        info(line)
    source = pred if has_geometry(pred) and not has_geometry(gt) else gt  # as the classes report says it
    return {"prediction": str(args.prediction), "labels": str(args.labels), **scores.summary(), "notes": notes,
            "unit": source.meta.get("unit") if has_geometry(source) else None}
