"""``napari-medml pretrain``: self-supervised pretraining on unlabeled image files.

The bundle it writes starts segmentation runs (``train --init-from``) and classifiers;
``--reconstruction`` and ``--error`` also write the first image's
reconstruction and its per-voxel reconstruction error (an anomaly map).
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_medml.cli.common import (
    DEVICES,
    FILE_TYPES,
    add_axes_option,
    check_bundle_target,
    check_file_targets,
    info,
    progress_bar,
)
from napari_medml.cli.progress import bar_progress
from napari_medml.cli.spacing_option import add_spacing_option
from napari_medml.cli.options import PRETRAIN_FIELDS, config_from_options
from napari_medml.cli.values import integer, real
from napari_medml.config import (
    CORRUPTION_SETTINGS,
    AugmentConfig,
    Corruption,
    DataConfig,
    ModelConfig,
    OptimConfig,
    PretrainConfig,
    ReconstructionLoss,
    SegmentationNetwork,
    TrainConfig,
)

__all__ = ["add", "run", "write_byproducts"]


def add(sub: Any) -> None:
    """Declare the ``pretrain`` subcommand and its options."""
    p = sub.add_parser("pretrain", help="pretrain a segmentation network on unlabeled images (self-supervised)",
                       description="Train a segmentation network's encoder and decoder to reconstruct "
                       "masked or noised versions of unlabeled images, and save it as a bundle that "
                       "'train --init-from' starts from (it takes the bundle's network, width and "
                       "depth unless you give them). Ctrl-C stops after the current step and still "
                       "saves the best model.")  # fmt: skip
    data, model, optim, pre = DataConfig(), ModelConfig(), OptimConfig(), PretrainConfig()
    g = p.add_argument_group("data")
    g.add_argument("--image", action="append", required=True, type=Path, metavar="IMG",
                   help=f"unlabeled image ({FILE_TYPES}); repeat for several images")  # fmt: skip
    g.add_argument("--spatial-dims", type=int, choices=(2, 3),
                   help="pretrain a 2D or a 3D network (default: 3 for volumes, 2 for images)")  # fmt: skip
    add_axes_option(g)
    add_spacing_option(g, "image files")
    g.add_argument("--patch-size", type=integer(1), nargs="+", metavar="N",
                   help="training patch size: one number for every spatial axis, or one per axis (default: from "
                   "the images' shape and spacing)")  # fmt: skip
    g.add_argument("--batch-size", type=integer(1), metavar="B", help=f"patches per step (default: {data.batch_size})")
    s = p.add_argument_group("self-supervision")
    s.add_argument("--loss", choices=typing.get_args(ReconstructionLoss),
                   help=f"reconstruction loss: mse (squared) or mae (absolute) (default: {pre.loss})")  # fmt: skip
    s.add_argument("--corruption", choices=typing.get_args(Corruption),
                   help=f"what the network undoes: blanked blocks, Gaussian noise, or both "
                   f"(default: {pre.corruption})")  # fmt: skip
    s.add_argument("--mask-ratio", type=real(0, 1, low_open=True, high_open=True), metavar="F",
                   help=f"share of blocks blanked, in (0, 1) (default: {pre.mask_ratio})")  # fmt: skip
    s.add_argument("--mask-block", type=integer(1, 256), metavar="N",
                   help=f"block size in voxels along the finest axis (default: {pre.mask_block})")  # fmt: skip
    s.add_argument("--noise-std", type=real(0), metavar="S",
                   help=f"noise standard deviation in normalised units (default: {pre.noise_std})")  # fmt: skip
    m = p.add_argument_group("network")
    m.add_argument("--network", choices=typing.get_args(SegmentationNetwork),
                   help=f"segmentation network from the registry (default: {model.network})")  # fmt: skip
    m.add_argument("--channels", "--features", dest="features", type=integer(1, 1024), metavar="N",
                   help=f"network width: channels at full resolution (default: {model.channels})")  # fmt: skip
    m.add_argument("--depth", type=integer(2, 8), metavar="N", help=f"resolution levels (default: {model.depth})")
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=integer(1), metavar="N", help=f"epochs (default: {optim.epochs})")
    o.add_argument("--steps-per-epoch", type=integer(1), metavar="N",
                   help=f"optimisation steps per epoch (default: {optim.steps_per_epoch})")  # fmt: skip
    o.add_argument("--max-minutes", type=real(0, low_open=True), metavar="M",
                   help="stop after M minutes and keep the best model so far (default: no limit)")  # fmt: skip
    o.add_argument("--lr", type=real(0, low_open=True), metavar="LR",
                   help=f"learning rate (default: {optim.learning_rate})")  # fmt: skip
    o.add_argument("--seed", type=integer(0, 2**32 - 1), metavar="S",
                   help=f"random seed for patches, masks and weights (default: {TrainConfig().seed})")  # fmt: skip
    o.add_argument("--device", choices=DEVICES, default="auto",
                   help="where to train; auto picks CUDA, then MPS, then the CPU (default: auto)")  # fmt: skip
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, type=Path, metavar="BUNDLE_DIR",
                     help="folder for the pretrained model bundle (config.json + weights)")  # fmt: skip
    out.add_argument("--reconstruction", type=Path, metavar="FILE",
                     help="also write the first image's reconstruction (the image as the network predicts it)")  # fmt: skip
    out.add_argument("--error", type=Path, metavar="FILE",
                     help="also write the first image's per-voxel reconstruction error (an anomaly map: the "
                     "squared (mse) or absolute (mae) error of each voxel predicted while blanked, in normalised "
                     "intensity units, averaged over channels)")  # fmt: skip
    out.add_argument("--resume", action="store_true",
                     help="continue an interrupted run from the checkpoints in --out")  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Read the images, pretrain with a progress bar, save the bundle (and the by-products)."""
    from napari_medml.bundles.checkpoints import save_run
    from napari_medml.cli.messages import nothing_saved, stopped_line
    from napari_medml.cli.progress import checkpoint_folder, drive_training, resume_folder, stop_on_interrupt
    from napari_medml.cli.run_guard import hold_out_folder, inputs_digest
    from napari_medml.cli.values import check_patch_option
    from napari_medml.engine.reports import StopToken
    from napari_medml.errors import MedMLError
    from napari_medml.pretraining.task import fit_pretraining

    check_bundle_target(args.out, inputs=args.image)
    check_file_targets({"--reconstruction": args.reconstruction, "--error": args.error}, inputs=args.image)
    unit: dict = {}
    images, spacings, channel_axis, dims, first, counts = _read_images(args.image, args.spatial_dims, args.axes,
                                                                       args.spacing, unit)
    args.patch_size = check_patch_option(args.patch_size, dims, args.depth or ModelConfig().depth,
                                         getattr(args, "network", None))
    config = replace(_config(args, dims), checkpoint_dir=str(checkpoint_folder(args.out)))
    resume_from = resume_folder(args)
    if resume_from is not None:  # the stopped run's own settings (review 46: as train --resume)
        from napari_medml.cli.options import PRETRAIN_FIELDS
        from napari_medml.cli.resume import resumed_config, resumed_note

        config = resumed_config(args, config, resume_from, PRETRAIN_FIELDS)
        info(resumed_note(config, resume_from))
    # each file one case of the median voxel size, however many slices or frames it gives
    config = replace(config, data=replace(config.data, sample_groups=tuple(counts)))
    stop = StopToken()
    # one run at a time in --out, and --resume on the images it started with (cli.run_guard)
    with hold_out_folder(args.out, resume=args.resume, digest=inputs_digest(images, [], spacings), files=args.image,
                         spacings=spacings):
        gen = fit_pretraining(images, None, config, spacing=spacings, channel_axis=channel_axis, stop=stop,
                              resume_from=resume_from)
        with stop_on_interrupt(stop):
            model, best = drive_training(gen, config.optim.epochs)
        if model is None:
            raise MedMLError(nothing_saved("pretraining", checkpoint_folder(args.out)))
        if unit.get("unit"):  # reconstruct compares an image's unit with it
            model.provenance["unit"] = unit["unit"]
        path = save_run(model, args.out, stopped=stop.stopped)  # a stopped run keeps its checkpoints
    note = f" (best epoch {best.epoch}, validation reconstruction loss {best.val_loss:.4f})" if best else ""
    info(f"saved pretrained bundle to {path}{note}; start a segmentation run from it with "
         f"'napari-medml train --init-from {path} ...'")
    if stop.stopped:
        info(stopped_line(path, checkpoint_folder(args.out)))
    if args.reconstruction is not None or args.error is not None:
        write_byproducts(model, first, dims, reconstruction=args.reconstruction, error=args.error,
                         device=args.device)
    return 0


def _read_images(paths: list[Path], spatial_dims: int | None, axes: str | None, spacing: Any = None,
                 unit: dict | None = None) -> tuple:
    """The samples of every image (frames, or slices under a 2D network), their spacings,
    the channel axis, the network's dimensions, the first volume and the samples of each file;
    ``unit`` receives the length unit of the spacings (``training_files.in_first_unit``)."""
    from napari_medml import io
    from napari_medml.cli.common import AXES_HINT, spatial_spacing
    from napari_medml.cli.layout import image_layout
    from napari_medml.cli.spacing_option import check_spacing_covers, stores_voxel_size, with_spacing
    from napari_medml.cli.training_files import in_first_unit, network_dims, unknown_spacing_line
    from napari_medml.errors import InputError
    from napari_medml.preprocessing.inputs import check_finite, check_not_constant
    from napari_medml.io.axes import samples_phrase
    from napari_medml.pretraining.data import split_unlabeled

    images, spacings, channels, first, counts = [], [], set(), None, []
    held = unit if unit is not None else {}
    stored: dict[Path, tuple[float, ...] | None] = {}  # each file's voxel size, None when it stores none
    reads = [io.read_volume(path, axes) for path in paths]
    spatial_dims = network_dims(reads, paths, spatial_dims)
    for path, read in zip(paths, reads):
        raw, given = with_spacing(read, spacing, path)
        check_finite(raw.data, f"image '{path}'")  # named by its file, before the core numbers it
        vol, lay = image_layout(raw, path, spatial_dims)
        check_not_constant(vol.data, f"image '{path}'")
        dims = spatial_dims or len(vol.data.shape) - len(lay.sample_axes) - int(lay.channel_axis is not None)
        check_spacing_covers(vol, path, dims)
        vol = in_first_unit(vol, path, dims, held)
        spatial_dims = dims
        parts, sizes, channel = split_unlabeled(vol.data, vol.axes, dims, spatial_spacing(vol, dims),
                                                what=f"image '{path}'", hint=AXES_HINT)  # fmt: skip
        if len(parts) > 1:
            info(f"image '{path}': {samples_phrase(vol.axes, vol.data.shape, dims)} (axes {vol.axes}) "
                 f"as samples of a {dims}D network")  # fmt: skip
        images += parts
        spacings += sizes
        counts.append(len(parts))
        stored[path] = spatial_spacing(vol, dims) if given or stores_voxel_size(read) else None
        channels.add(channel)
        first = first or vol
    if len(channels) > 1:
        raise InputError("the images differ in channels: give all with or all without a channel axis")
    line = unknown_spacing_line(stored)
    if line:
        info(line)
    return images, spacings, channels.pop(), spatial_dims, first, counts


def _config(args: argparse.Namespace, spatial_dims: int) -> TrainConfig:
    augment = replace(AugmentConfig.none(), flip=AugmentConfig().flip)  # flips only: the corruption is the task
    base = TrainConfig(task="pretraining", data=DataConfig(spatial_dims=spatial_dims), augment=augment)
    config = config_from_options(args, base, PRETRAIN_FIELDS)
    corruption = config.pretrain.corruption
    unused = [name for name in ("mask_ratio", "mask_block", "noise_std")
              if getattr(args, name) is not None and name not in CORRUPTION_SETTINGS[corruption]]
    if unused:
        flags = " and ".join(f"--{name.replace('_', '-')} {getattr(args, name):g}" for name in unused)
        what = "adds no noise" if corruption == "mask" else "blanks no blocks"
        info(f"{flags} {'is' if len(unused) == 1 else 'are'} not used: --corruption {corruption} {what} "
             "(--corruption mask_noise does both)")
    return config


def write_byproducts(model: Any, vol: Any, dims: int, *, reconstruction: Path | None, error: Path | None,
                     device: str, name: str = "the image") -> list[Path]:
    """Reconstruct ``vol`` with a pretraining model and write the reconstruction (the image as
    the network predicts it, in the image's units and axes) and the
    per-voxel reconstruction error (an anomaly map, the image's grid without its channel
    axis), each keeping the image's voxel order, spacing, origin and affine. Says, naming the image
    ``name``, when its intensities are far from the pretraining images'.

    Returns
    -------
    list of Path
        The files written.
    """
    from dataclasses import replace

    from napari_medml.cli.common import spatial_spacing, write_like, write_output
    from napari_medml.io import GIVEN_ORDER_KEY

    with progress_bar("window") as bar:
        progress = bar_progress(bar, "reconstructed", "windows")
        result = model.reconstruct(vol.data, spacing=spatial_spacing(vol, dims), axes=vol.axes,
                                   device=device, progress=progress, name=name)  # fmt: skip
    if result.note:  # an image unlike the pretraining images: its error map shows the contrast
        info(result.note)
    written = []
    if reconstruction is not None:
        image, axes, like = result.image, (vol.axes if "C" in vol.axes else None), vol
        if vol.meta.get("rgb"):  # float colours are no RGB picture: a channel axis in front, named
            image, axes = np.moveaxis(image, -1, 0), "C" + vol.axes[:-1]
            # ... which a .npy, naming no axes, stores where the input had its colours (last)
            like = replace(vol, meta={**vol.meta, GIVEN_ORDER_KEY: vol.axes})
        written.append(write_output(reconstruction, lambda tmp: write_like(
            tmp, like, image, spatial_dims=dims, axes=axes)))
    if error is not None:
        written.append(write_output(error, lambda tmp: write_like(tmp, vol, result.error, spatial_dims=dims)))
    info("wrote " + ", ".join(str(p) for p in written))
    return written
