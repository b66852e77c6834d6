"""``napari-medml predict``: segment an image file with a model bundle, or classify its
samples, objects or tiles with a classification bundle (``napari_medml.cli.classify``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from napari_medml.cli.layout import image_layout
from napari_medml.cli.common import (
    DEVICES,
    PROG,
    FILE_TYPES,
    UsageError,
    add_axes_option,
    check_file_targets,
    given,
    info,
    progress_bar,
    say_stored_order,
    write_like,
    write_output,
)
from napari_medml.cli.progress import bar_progress
from napari_medml.cli.spacing_option import add_spacing_option, check_spacing_covers
from napari_medml.cli.values import integer, real
from napari_medml.config import InferConfig

__all__ = ["add", "run"]


def add(sub: Any) -> None:
    """Declare the ``predict`` subcommand and its options."""
    p = sub.add_parser("predict", help="segment or classify an image with a trained model bundle",
                       description="Segment an image with a model bundle, or classify it with a "
                       "classification bundle (labels with each sample, object or tile filled with "
                       "its class, plus a CSV table of classes and probabilities). Outputs keep the "
                       "input's voxel order, spacing and origin, and a NIfTI output its affine; the "
                       "file type follows each output's extension.")  # fmt: skip
    infer = InferConfig()
    p.add_argument("--model", required=True, type=Path, metavar="BUNDLE_DIR",
                   help="model bundle folder written by 'napari-medml train' or the plugin; a pretraining "
                   "bundle ('napari-medml pretrain') writes the image's reconstruction to --out "
                   "and its anomaly map to --error")  # fmt: skip
    p.add_argument("--image", required=True, type=Path, metavar="IMG", action="append",
                   help=f"the one image to segment ({FILE_TYPES}, or a Zarr / OME-Zarr folder, read block by "
                   "block); a 2D model segments a volume slice by "
                   "slice, any model a time series frame by frame")  # fmt: skip
    add_axes_option(p)
    p.add_argument("--channel", type=integer(0), metavar="K",
                   help="segment channel K (0 first) of a multi-channel image with a one-channel model; "
                   "the other channels are left out")  # fmt: skip
    add_spacing_option(p, "image file")
    p.add_argument("--out", required=True, type=Path, metavar="OUT",
                   help="labels file to write, with the model's class ids (instance models: one id per "
                   "object); a .zarr store predicts block by block, resumably")  # fmt: skip
    p.add_argument("--instances", type=Path, metavar="FILE",
                   help="object classifiers: instance labels of the image (one id per object)")  # fmt: skip
    p.add_argument("--table", type=Path, metavar="CSV",
                   help="classifiers: per-sample/object/tile CSV of class and probabilities; instance "
                   "models: per-object CSV of size, centroid, bounding box and intensities "
                   "(default: --out with a .csv extension)")  # fmt: skip
    p.add_argument("--probabilities", type=Path, metavar="OUT",
                   help="also write class probabilities (float32 files holding float16 values, about 3 "
                   "digits: the prediction keeps them in half precision to halve its memory; float16 in a "
                   ".zarr store, half the disk; one channel per class, background first for segmentation) "
                   "to this file")  # fmt: skip
    p.add_argument("--uncertainty", type=Path, metavar="OUT",
                   help="also write the voxel-wise uncertainty to this file: the entropy of the mean "
                   "probabilities; for an ensemble (train --folds) the members' disagreement, "
                   "their mutual information (0 where their probabilities agree); in nats (natural log: at "
                   "most ln K for K classes)")  # fmt: skip
    p.add_argument("--error", type=Path, metavar="OUT",
                   help="pretraining bundles: also write the per-voxel reconstruction error (an anomaly map: "
                   "high where the image is unlike the images it learned from; the squared or absolute error "
                   "of the bundle's loss in normalised intensity units, averaged over channels)")  # fmt: skip
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time augmentation: average the image and its flip along each axis (one "
                   "pass per axis more; a 2D network trained on square patches of square pixels: the 8 "
                   "orientations of the square; "
                   "slower, usually a little better) (default: as the model's plan: "
                   "on for models trained with the plan, off otherwise)")  # fmt: skip
    p.add_argument("--overlap", type=real(0, 1, high_open=True), metavar="F",
                   help=f"sliding-window overlap in [0, 1) (default: {infer.overlap})")  # fmt: skip
    p.add_argument("--sw-batch-size", type=integer(1), metavar="N",
                   help=f"windows run at once (default: {infer.sw_batch_size})")  # fmt: skip
    p.add_argument("--min-size", type=integer(0), metavar="N",
                   help="remove objects smaller than N voxels (default: keep all)")  # fmt: skip
    p.add_argument("--fill-holes", action="store_true", help="fill holes inside each class")
    p.add_argument("--keep-largest", action="store_true",
                   help="keep only the largest connected component of each class")  # fmt: skip
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="where to run; auto picks CUDA, then MPS, then the CPU (default: auto)")  # fmt: skip
    p.add_argument("--level", default=None, metavar="N|match",
                   help="multiscale (OME-)Zarr image: the resolution level to segment, 0 the finest "
                   "(default), or 'match' for the one nearest the model's training spacing")  # fmt: skip
    p.add_argument("--block-memory", type=real(16, 2**22), default=None, metavar="MB",
                   help="with a .zarr --out (block-wise prediction, resumable): working memory per "
                   "block in MiB (default: 1024); the plan is printed before it starts")  # fmt: skip
    p.add_argument("--halo", type=integer(1), nargs="+", default=None, metavar="N",
                   help="instance models with a .zarr --out: context in voxels on each side of a block "
                   "for its objects, one value or one per spatial axis (default: the model's patch; grown "
                   "where an object and its neighbours reach past it)")  # fmt: skip
    from napari_medml.cli.instances import add_predict_options

    add_predict_options(p)
    p.set_defaults(run=run)


# voxels from which a whole-image prediction gets the block-wise tip (512 MiB as float32)
LARGE_IN_MEMORY = 2**27


def run(args: argparse.Namespace) -> int:
    """Load the bundle and the image, predict with a progress bar, write the outputs."""
    if len(args.image) > 1:  # argparse kept only the last one before: the others were dropped silently
        names = ", ".join(f"'{p}'" for p in args.image)
        raise UsageError(f"--image was given {len(args.image)} times ({names}): predict takes one image per run; "
                         "run it once for each image, each with its own --out")
    args.image = args.image[0]
    from napari_medml.api import load_model
    from napari_medml.classification.model import Classifier

    from napari_medml.cli import predict_blocks
    from napari_medml.io.zarr import is_zarr_path

    outputs = {"--out": args.out, "--probabilities": args.probabilities, "--uncertainty": args.uncertainty,
               "--error": args.error}
    blockwise = is_zarr_path(args.out)  # a .zarr --out: block by block, the input never whole in memory
    if blockwise:
        predict_blocks.check_targets(args)
    else:
        check_file_targets(outputs, inputs=[p for p in (args.image, args.instances) if p is not None])
    if args.level not in (None, "match") and not str(args.level).isdigit():
        raise UsageError(f"--level must be a level number (0 the finest) or 'match', got '{args.level}'")
    model = load_model(args.model)
    from napari_medml.pretraining.model import ReconstructionModel

    if isinstance(model, ReconstructionModel):
        return _reconstruct(args, model, blockwise)
    if args.error is not None:
        raise UsageError(f"--error is for pretraining bundles; '{args.model}' is a trained model: its "
                         "voxel-wise uncertainty is --uncertainty")
    args.planned = ""  # said with the written files (an error stays the only line)
    if args.tta is None and not isinstance(model, Classifier):
        from napari_medml.segmentation.planned_inference import planned_inference

        args.tta = planned_inference(model).get("tta")
        if args.tta:
            args.planned = " (test-time augmentation: on, as the model's plan chose; --no-tta turns it off)"
    from napari_medml.instances.model import InstanceModel

    given_here = [f"--{d.replace('_', '-')}" for d in ("seed_height", "min_distance", "min_object_size",
                                                       "foreground_threshold") if getattr(args, d, None) is not None]
    if given_here and not isinstance(model, InstanceModel):  # would be ignored without a word
        kind = "a classifier" if isinstance(model, Classifier) else "a segmentation model"
        raise UsageError(f"{', '.join(given_here)}: for instance models; '{args.model}' is {kind} (drop the option)")
    _refuse_unused(args, kind=("classifier" if isinstance(model, Classifier) else "instances"
                               if isinstance(model, InstanceModel) else "segmentation"), blockwise=blockwise)
    if isinstance(model, Classifier):
        from napari_medml.cli.classify import predict

        return predict(args, model)

    if isinstance(model, InstanceModel):  # before segmentation: an InstanceModel is a Model
        if blockwise:
            return predict_blocks.run_instance_blocks(args, model)
        from napari_medml.cli.instances import predict as predict_instances

        return predict_instances(args, model)
    if args.instances is not None or args.table is not None:
        raise UsageError("--instances and --table are for classification bundles; "
                         f"'{args.model}' is a segmentation model")  # fmt: skip
    dims = model.spatial_dims
    vol, lay = image_layout(predict_blocks.read_image(args, model), args.image, dims,
                            in_channels=model.in_channels, channel=args.channel,
                            channel_names=model.config.data.channel_names)  # fmt: skip
    check_spacing_covers(vol, args.image, dims)
    if blockwise and lay.sample_axes:  # trial 42: it said "3 frames predicted one by one", then refused them
        from napari_medml.io.axes import samples_phrase

        held = samples_phrase(vol.axes, vol.data.shape, dims)
        raise UsageError(f"image '{args.image}' (axes {vol.axes}) holds {held}: a .zarr --out predicts one "
                         f"{dims}D image block by block; give a NIfTI or TIFF --out to predict them one by one in "
                         "memory, or save each as its own image")
    _say_samples(args, vol, lay, dims)
    config = InferConfig(**given(
        overlap=args.overlap, sw_batch_size=args.sw_batch_size, tta=args.tta,
        return_probabilities=args.probabilities is not None,
        return_uncertainty=args.uncertainty is not None,
        min_size=args.min_size, fill_holes=args.fill_holes, keep_largest=args.keep_largest,
        device=args.device,
    ))  # fmt: skip
    if blockwise:
        return predict_blocks.run_blocks(args, model, vol, config)
    from napari_medml.io.geometry import grid_affine, spatial_spacing
    from napari_medml.preprocessing.inputs import check_finite, recipe_fills_nonfinite

    if not recipe_fills_nonfinite(model):
        check_finite(vol.data, f"image '{args.image}'")  # the model alone knows no file name
    if vol.data.size >= LARGE_IN_MEMORY:  # trial 41: 13 min and 4.3 GB for 200 M voxels to .tif, 2.5 min to .zarr
        info(f"image '{args.image}' has {vol.data.size / 1e6:.0f} M voxels, predicted whole in memory (several "
             "GB): --out NAME.zarr predicts it block by block in bounded memory (--block-memory), and an "
             "interrupted run resumes")
    from napari_medml.segmentation.prediction import predict_oriented

    with progress_bar("window") as bar:
        progress = bar_progress(bar, "predicted", "windows")
        # the network sees the anatomy in the orientation it was trained in; outputs go back
        affine = None if vol.affine is None else grid_affine(vol, dims)
        pred = predict_oriented(model, vol.data, spacing=spatial_spacing(vol, dims), affine=affine, axes=vol.axes,
                                config=config, progress=progress, name=f"image '{args.image}'",
                                notes=lambda line: bar.write(f"{PROG}: {line}", file=sys.stderr))
    # each written under a temporary name, then renamed: a crash leaves no truncated file
    written = [write_output(args.out, lambda tmp: write_like(tmp, vol, pred.labels, spatial_dims=dims,
                                                             is_labels=True))]  # fmt: skip
    if args.probabilities is not None:
        # float32: NIfTI and most TIFF readers have no float16
        probabilities = pred.probabilities.astype("float32")
        written.append(write_output(args.probabilities,
                                    lambda tmp: write_like(tmp, vol, probabilities, spatial_dims=dims)))
    if args.uncertainty is not None:
        written.append(write_output(args.uncertainty,
                                    lambda tmp: write_like(tmp, vol, pred.uncertainty, spatial_dims=dims)))
    say_stored_order(vol, written)
    info("wrote " + ", ".join(str(p) for p in written) + args.planned)
    return 0


def _say_samples(args: argparse.Namespace, vol: Any, lay: Any, dims: int) -> None:
    """One line when frames or slices are predicted one by one."""
    if lay.sample_axes:
        from napari_medml.io.axes import samples_phrase

        info(f"image '{args.image}' (axes {vol.axes}): {samples_phrase(vol.axes, vol.data.shape, dims)} predicted "
             f"one by one by the {dims}D model")  # fmt: skip


def _reconstruct(args: argparse.Namespace, model: Any, blockwise: bool) -> int:
    """A pretraining bundle: ``--out`` gets the image as the network reconstructs it, ``--error``
    the anomaly map (``cli.pretrain.write_byproducts``)."""
    from napari_medml.cli import predict_blocks
    from napari_medml.cli.pretrain import write_byproducts
    from napari_medml.io.geometry import spatial_spacing
    from napari_medml.io.spacing import spacing_note
    from napari_medml.preprocessing.inputs import check_finite

    names = ("instances", "table", "probabilities", "uncertainty", "overlap", "sw_batch_size", "min_size",
             "fill_holes", "keep_largest", "halo", "block_memory", "seed_height", "min_distance", "min_object_size",
             "foreground_threshold")
    given_here = [f"--{n.replace('_', '-')}" for n in names
                  if getattr(args, n, None) is not None and getattr(args, n) is not False]
    if args.tta is not None:
        given_here.append("--tta" if args.tta else "--no-tta")
    if given_here:
        raise UsageError(f"{', '.join(given_here)}: not for a pretraining bundle, which writes the image's "
                         f"reconstruction to --out and its anomaly map to --error (drop the option)")
    if blockwise:
        raise UsageError(f"'{args.out}': a pretraining bundle's reconstruction is written whole; write it to a "
                         ".nii.gz, .tif or .npy file")
    dims = model.spatial_dims  # the image's axes checked as for a segmentation model, with the same lines
    vol, lay = image_layout(predict_blocks.read_image(args, model), args.image, dims, in_channels=model.in_channels,
                            channel=args.channel)
    check_spacing_covers(vol, args.image, dims)
    _say_samples(args, vol, lay, dims)
    check_finite(vol.data, f"image '{args.image}'")  # the model alone knows no file name
    note = spacing_note(spatial_spacing(vol, dims), model.spacing, f"image '{args.image}'",
                        recipe=model.config.data.preprocessing)
    if note:  # its reconstruction error then speaks of sizes as much as of content
        info(note)
    written = write_byproducts(model, vol, dims, reconstruction=args.out, error=args.error, device=args.device,
                               name=f"image '{args.image}'")
    say_stored_order(vol, written)
    return 0


def _refuse_unused(args: argparse.Namespace, kind: str, blockwise: bool) -> None:
    """Refuse, in one line, options this model and output would ignore without a word (as the
    instance options are refused for other models above)."""
    from napari_medml.io.zarr import is_zarr_path

    def flags(*names: str) -> list[str]:
        return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n, None) not in (None, False, 0)]

    channel = [] if args.channel is None else ["--channel"]  # 0 is a channel
    if kind == "instances" and blockwise and channel:
        raise UsageError("--channel is not taken by an instance model's block-wise (.zarr --out) prediction: save "
                         "the channel as its own image first, or write the objects to a .tif or .nii.gz")
    if kind == "classifier":
        tta = ["--tta" if args.tta else "--no-tta"] if args.tta is not None else []
        unused = flags("overlap", "sw_batch_size", "min_size", "fill_holes", "keep_largest", "level", "halo",
                       "block_memory") + tta + channel
        if unused:
            raise UsageError(f"{', '.join(unused)}: for segmentation and instance models; '{args.model}' is a "
                             "classifier (drop the option)")
        return
    if kind == "instances" and flags("min_size", "fill_holes", "keep_largest"):
        raise UsageError(f"{', '.join(flags('min_size', 'fill_holes', 'keep_largest'))}: for segmentation models; "
                         "an instance model removes small objects with --min-object-size")
    if flags("halo") and kind != "instances":
        raise UsageError(f"--halo is for instance models with a .zarr --out; '{args.model}' is a segmentation "
                         "model (drop the option)")
    if not blockwise and flags("halo", "block_memory"):
        raise UsageError(f"{' and '.join(flags('halo', 'block_memory'))}: for a .zarr --out (block-wise "
                         f"prediction); '{args.out}' is written whole: drop the option, or write to a .zarr")
    if kind == "instances" and not blockwise and args.level not in (None, "0"):
        raise UsageError(f"--level is for multiscale Zarr images; '{args.image}' has one level"
                         if not is_zarr_path(args.image) else
                         "--level with an instance model needs a .zarr --out (block-wise prediction)")
