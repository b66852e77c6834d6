"""Classification on the command line: the options ``train --task classification`` adds,
and the train and predict paths for classification bundles.

``napari-medml train`` and ``napari-medml predict`` hand classification over to
:func:`train` and :func:`predict` here; both drive the same core calls as the Classify
widget (``classification.levels`` samples, ``classification.task.fit_classifier``,
``Classifier.classify``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from napari_medml.cli.common import UsageError, info, progress_bar, say_stored_order, write_like
from napari_medml.cli.progress import bar_progress
from napari_medml.cli.values import integer
from napari_medml.cli.spacing_option import with_spacing

__all__ = ["add_train_options", "predict", "table_path", "train"]

LEVELS = ("image", "object", "tile")
CSV_SUFFIXES = (".csv", ".txt", ".tsv")


def add_train_options(p: argparse.ArgumentParser) -> None:
    """The ``classification`` option group of ``napari-medml train``."""
    g = p.add_argument_group("classification (with --task classification)")
    g.add_argument("--level", "--mode", dest="level", choices=LEVELS, default="image",
                   help="image: one class per image of a stack (first axis = sample); object: one "
                   "class per object of --instances; tile: one class per tile of --tile-size "
                   "(default: image)")  # fmt: skip
    g.add_argument("--classes", type=Path, metavar="FILE",
                   help="the known classes: a CSV with one row per sample, class in the last column "
                   "(image level; empty or 0 = unknown), a CSV of object id and class rows (object "
                   "level; objects not listed are unknown), or a labels file of the image's shape with "
                   "classes painted on samples, objects or tiles (0 = unknown)")  # fmt: skip
    g.add_argument("--instances", type=Path, metavar="FILE",
                   help="object level: instance labels (one id per object) of the image's shape")  # fmt: skip
    g.add_argument("--tile-size", type=integer(1), nargs="+", metavar="N",
                   help="tile level: tile shape, one number per spatial axis (or one for all)")  # fmt: skip
    g.add_argument("--input-size", type=integer(1), nargs="+", metavar="N",
                   help="resize samples to this network input shape, one number per spatial axis (or "
                   "one for all) (default: keep images and "
                   "tiles; objects 64x64 or 32x32x32)")  # fmt: skip
    g.add_argument("--object-box", choices=("own", "common"), default=None,
                   help="object level: crop each object in a box of its own size (the network sees "
                   "shape and texture; default: own), or every object in one box of the same side in "
                   "voxels (the 95th percentile of the objects' boxes), so that size tells classes apart "
                   "too")  # fmt: skip


def train(args: argparse.Namespace) -> int:
    """Make samples from the files, train a classifier with a progress bar, save the bundle
    (one run at a time in ``--out``, and ``--resume`` on the run's own samples: ``cli.run_guard``)."""
    from napari_medml.cli.common import check_bundle_target
    from napari_medml.cli.launch import die_with_parent, folder_held_elsewhere, launch, wants_launch
    from napari_medml.cli.run_guard import hold_out_folder, inputs_digest
    from napari_medml.engine.distributed import launched

    if args.labels:
        raise UsageError("classification reads its classes from --classes (a CSV or a labels file), "
                         "not --labels")  # fmt: skip
    if len(args.image) != 1:
        raise UsageError("classification trains on one --image (a stack in image level)")
    inputs = [Path(p) for p in (args.image[0], args.classes, args.instances, getattr(args, "init_from", None))
              if p is not None]
    check_bundle_target(args.out, inputs=inputs)
    refuse_unused(args)
    samples = read_samples(args)  # before torchrun starts: an input error is one line
    if args.spatial_dims is not None and args.spatial_dims != samples.spatial_dims:
        raise UsageError(f"--spatial-dims {args.spatial_dims}: the samples of image '{args.image[0]}' at --level "
                         f"{args.level} are {samples.spatial_dims}D, and the classifier takes them as they are: "
                         "drop it")  # fmt: skip
    config = train_config(args, samples.spatial_dims)  # options that do not go together: one line, before torchrun
    if not args.resume:
        config.check_new_run()
    if launched():  # a process torchrun started: the launcher (or, under a bare torchrun, rank 0) holds the folder
        die_with_parent()
        if folder_held_elsewhere():
            return _train(args, samples)
    with hold_out_folder(args.out, resume=args.resume, digest=inputs_digest([samples.x], [samples.y], []),
                         files=inputs, shaped_by="--level, --input-size, --tile-size or --object-box"):
        return launch(args) if wants_launch(args) else _train(args, samples)


def _train(args: argparse.Namespace, samples: Any) -> int:
    """Train a classifier on ``samples`` with a progress bar and save the bundle."""
    from dataclasses import replace

    from napari_medml.bundles.checkpoints import save_run
    from napari_medml.cli.messages import nothing_saved, stopped_line
    from napari_medml.cli.options import fields_given
    from napari_medml.cli.progress import checkpoint_folder, drive_training, resume_folder, stop_on_interrupt
    from napari_medml.classification.metrics import chance_note, one_class_note
    from napari_medml.classification.task import fit_classifier
    from napari_medml.engine.distributed import is_main
    from napari_medml.errors import MedMLError
    from napari_medml.engine.reports import StopToken

    config = replace(train_config(args, samples.spatial_dims), checkpoint_dir=str(checkpoint_folder(args.out)))
    if args.resume:  # the stopped run's own settings (review 46: its 50 epochs became the default 30)
        from napari_medml.cli.resume import resumed_config, resumed_note

        config = resumed_config(args, config, resume_folder(args))
        if is_main():
            info(resumed_note(config, resume_folder(args)))
    stop = StopToken()
    # with --init-from, the network, width and depth not given are the start bundle's (as for segmentation)
    given = [field.split(".")[1] for field in fields_given(args) if field.startswith("model.")]
    gen = fit_classifier(samples, config, stop=stop, resume_from=resume_folder(args), keep=given)
    with stop_on_interrupt(stop):
        classifier, _ = drive_training(gen, config.optim.epochs)
    if not is_main():
        return 0  # data parallel: rank 0 saves the bundle
    if classifier is None:
        raise MedMLError(nothing_saved("training", checkpoint_folder(args.out)))
    path = save_run(classifier, args.out, stopped=stop.stopped)  # a stopped run keeps its checkpoints
    info(f"saved classifier bundle to {path}")
    info(metrics_line(classifier.metrics, classifier.config.data.val_fraction, classifier.provenance))
    for note in ((one_class_note(classifier.metrics, classifier.class_names), chance_note(classifier.metrics))
                 if classifier.metrics else ()):
        if note:
            info(note)
    if stop.stopped:
        info(stopped_line(path, checkpoint_folder(args.out)))
    return 0


def refuse_unused(args: argparse.Namespace) -> None:
    """Options of ``train`` that a classifier would ignore without a word are refused in one line.

    Raises
    ------
    UsageError
        Segmentation options (patch size, validation margin, foreground share, scribbles),
        ``--spacing``, ``--instances`` without ``--level object``, ``--tile-size`` without ``--level tile``.
    """
    given = [name for name, value in (("--patch-size", args.patch_size), ("--val-margin", args.val_margin),
                                      ("--foreground-fraction", args.foreground_fraction), ("--sparse", args.sparse),
                                      ("--background-id", args.background_id)) if value not in (None, False)]
    if given:
        raise UsageError(f"{', '.join(given)}: for segmentation; a classifier takes each image, object or tile "
                         "whole, at --input-size (drop the option)")  # fmt: skip
    if args.spacing:  # trial 38: accepted and unused
        raise UsageError("--spacing: a classifier takes the voxels as they are (objects and tiles are cut, and "
                         "samples resized to --input-size, in voxels; no voxel size is kept): drop it")
    if args.instances is not None and args.level != "object":
        raise UsageError(f"--instances is for --level object (objects cropped from instance labels), not --level "
                         f"{args.level}: drop it")  # fmt: skip
    if args.tile_size and args.level != "tile":
        raise UsageError(f"--tile-size is for --level tile, not --level {args.level}: drop it")


def read_samples(args: argparse.Namespace) -> Any:
    """ClassSamples from ``--image`` and the class source, for ``args.level``."""
    from dataclasses import replace

    from napari_medml import io
    from napari_medml.classification.data import read_class_csv
    from napari_medml.classification.levels import make_samples

    path = args.image[0]
    vol = with_spacing(io.read_volume(path, args.axes), args.spacing, path)[0]  # --axes: what a file does not say
    axis = vol.channel_axis  # named by the file (RGB or a C axis), never guessed
    if args.classes is None:
        raise UsageError(f"--task classification needs --classes (a {'CSV or ' if args.level != 'tile' else ''}"
                         "labels file with the known classes)")  # fmt: skip
    csv_classes = args.classes.suffix.lower() in CSV_SUFFIXES
    if csv_classes and args.level == "tile":
        raise UsageError("--level tile reads classes painted in a labels file, not a CSV: paint each tile's "
                         "class in a labels file of the image's shape")
    if args.level == "object" and args.instances is None:
        raise UsageError("--level object needs --instances (instance labels, one id per object)")
    if args.level == "tile" and not args.tile_size:
        raise UsageError("--level tile needs --tile-size")
    if args.object_box is not None and args.level != "object":
        raise UsageError(f"--object-box is for --level object (objects cropped from instance labels), not "
                         f"--level {args.level}: drop it")
    params = {"input_size": _size(args.input_size), "tile_size": _size(args.tile_size),
              "box": args.object_box or "own"}
    instances = io.read_volume(args.instances).data if args.level == "object" else None
    if instances is not None:  # before a CSV's object ids are looked up in them
        spatial = list(vol.data.shape)
        if axis is not None:
            del spatial[axis]
        if instances.shape != tuple(spatial):
            raise UsageError(f"instances '{args.instances}' have shape {instances.shape} but image '{path}' has "
                             f"{tuple(spatial)}: give the instance labels of this image")
    if not csv_classes:
        class_labels = io.read_volume(args.classes).data
    elif instances is not None:  # object,class rows painted onto the objects
        from napari_medml.classification.object_classes import object_class_labels

        class_labels = object_class_labels(args.classes, instances, instances_name=f"instances '{args.instances}'")
    else:
        class_labels = None
    with _rgb_stack_hint(vol, path, args.level, args.axes):
        samples = make_samples(args.level, vol.data, {k: v for k, v in params.items() if v},
                               class_labels=class_labels, instances=instances,
                               channel_axis=axis, name=f"image '{path}'")
    if csv_classes and args.level == "image":  # read after the stack is checked: its first axis is the sample
        samples = replace(samples, y=read_class_csv(args.classes, len(samples)))
    return samples


@contextmanager
def _rgb_stack_hint(vol: Any, path: Any, level: str, axes: str | None) -> Iterator[None]:
    """A refusal of an image-level stack that its file made one RGB image (tifffile stores an
    (N, 3, 3) array as Y, X and colour) names the --axes that reads it as a stack (trial 48)."""
    from napari_medml.errors import InputError

    try:
        yield
    except InputError as exc:
        if level != "image" or axes or not vol.meta.get("rgb") or vol.data.ndim != 3:
            raise
        raise InputError(f"{exc}; image '{path}' reads as one RGB image (Y, X and {vol.data.shape[-1]} colours, "
                         "its file says so): if its first axis holds the samples, say so with --axes ZYX") from None


def _size(values: list[int] | None) -> int | tuple[int, ...] | None:
    """One number means the same along every axis (the core expands an int)."""
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def train_config(args: argparse.Namespace, spatial_dims: int) -> Any:
    """``classification_config`` with every option given on the command line."""
    from napari_medml.classification.model import classification_config
    from napari_medml.cli.options import config_from_options

    return config_from_options(args, classification_config(spatial_dims))


def metrics_line(metrics: dict, val_fraction: float, provenance: dict | None = None) -> str:
    """The best epoch's validation numbers in one line; without any, why and what to do."""
    if not metrics:
        from napari_medml.classification.metrics import no_metrics_reason

        return no_metrics_reason(val_fraction, "--val-fraction 0.2", provenance, "train again with --resume")
    parts = [f"{k.replace('_', ' ')} {metrics[k]:.3f}" for k in ("accuracy", "balanced_accuracy", "auc")
             if metrics.get(k) is not None]
    return (f"validation ({metrics.get('n', '?')} samples, best epoch {metrics.get('epoch', '?')}): "
            + ", ".join(parts))  # fmt: skip


def table_path(out: Path) -> Path:
    """``labels.nii.gz`` -> ``labels.csv``, next to the labels file."""
    name = out.name
    for suffix in (".nii.gz", ".nii", ".tiff", ".tif", ".npy"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out.with_name(name + ".csv")


def predict(args: argparse.Namespace, classifier: Any) -> int:
    """Classify ``--image`` with a classifier; write labels, the table and probabilities."""
    from dataclasses import replace

    from napari_medml import io
    from napari_medml.classification.tables import is_prediction_table, write_table
    from napari_medml.cli.common import check_derived_table, check_file_targets, write_output

    table = args.table or table_path(args.out)
    outputs = {"--out": args.out, "--probabilities": args.probabilities, "--table": table}
    check_file_targets(outputs, inputs=[p for p in (args.image, args.instances) if p is not None])
    check_derived_table(table, ours=is_prediction_table, given=args.table is not None)
    if classifier.level == "object" and args.instances is None:
        raise UsageError("this classifier classifies objects: give --instances (instance labels)")
    if classifier.level != "object" and args.instances is not None:  # trial 38: ignored without a word
        raise UsageError(f"--instances is for a classifier of objects; this one classifies {classifier.level}s: "
                         "drop --instances")
    if args.uncertainty is not None:
        raise UsageError("--uncertainty is for segmentation bundles; a classifier writes "
                         "probabilities (--probabilities, --table)")  # fmt: skip
    classifier.config = replace(classifier.config, device=args.device)
    vol = with_spacing(io.read_volume(args.image, args.axes), args.spacing, args.image)[0]
    instances = io.read_volume(args.instances).data if args.instances is not None else None
    axis = vol.channel_axis  # named by the file (RGB or a C axis), never guessed
    with progress_bar("sample") as bar:
        progress = bar_progress(bar, "classified", "samples")
        with _rgb_stack_hint(vol, args.image, classifier.level, args.axes):
            result = classifier.classify(vol.data, instances=instances, channel_axis=axis, progress=progress,
                                         probability_map=args.probabilities is not None,
                                         name=f"image '{args.image}'")  # fmt: skip
    dims = result.labels.ndim
    # each written under a temporary name, then renamed: a crash leaves no truncated file
    written = [write_output(args.out, lambda tmp: write_like(tmp, vol, result.labels, spatial_dims=dims,
                                                             is_labels=True))]  # fmt: skip
    written.append(write_output(table, lambda tmp: write_table(tmp, result.table)))
    if args.probabilities is not None:
        written.append(write_output(args.probabilities,
                                    lambda tmp: write_like(tmp, vol, result.probabilities, spatial_dims=dims)))
    counts = {c: int((result.classes == c).sum()) for c in result.class_ids}
    n = len(result.classes)
    info(f"{n} {result.level}{'' if n == 1 else 's'} classified, per class {counts}")
    if result.note:
        info(result.note)
    say_stored_order(vol, written)
    info("wrote " + ", ".join(str(p) for p in written))
    return 0
