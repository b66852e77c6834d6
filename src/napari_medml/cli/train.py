"""``napari-medml train``: train a segmentation network on image/labels files, or (with
``--task classification``, see ``napari_medml.cli.classify``) a classifier."""

from __future__ import annotations

import argparse
import os
import typing
from collections.abc import Generator
from dataclasses import replace
from pathlib import Path
from typing import Any

from napari_medml.cli.progress import checkpoint_folder, drive_training, resume_folder, stop_on_interrupt
from napari_medml.cli.common import DEVICES, FILE_TYPES, UsageError, add_axes_option, check_bundle_target, info
from napari_medml.cli.messages import nothing_saved, saved_note, say_unused_share, stopped_line, with_flag_names
from napari_medml.cli.options import config_from_options, fields_given
from napari_medml.cli.spacing_option import add_spacing_option
from napari_medml.cli.training_files import read_pairs
from napari_medml.cli.values import check_patch_option, integer, real
from napari_medml.config import (
    DataConfig,
    LossName,
    ModelConfig,
    Normalization,
    OptimConfig,
    OptimizerName,
    ScheduleName,
    StopMetric,
    TrainConfig,
)

__all__ = ["add", "check_patch_option", "planned_options", "read_pairs", "run", "train_config"]


def add(sub: Any) -> None:
    """Declare the ``train`` subcommand and its options."""
    from napari_medml.cli.classify import add_train_options

    p = sub.add_parser("train", help="train a segmentation network or a classifier; save it as a bundle",
                       description="Train a segmentation network on image/labels file pairs "
                       "and save the best model (by validation Dice) as a bundle folder; or, with "
                       "--task classification, a classifier of whole images, objects or tiles "
                       "(best by validation accuracy). Ctrl-C stops after the current step and "
                       "still saves the best model.")  # fmt: skip
    data, model, optim = DataConfig(), ModelConfig(), OptimConfig()
    p.add_argument("--task", choices=("segmentation", "classification", "instances"), default="segmentation",
                   help="what to train (default: segmentation); instances: --labels are instance labels "
                   "(each object its own id) and the network learns to separate touching objects")  # fmt: skip
    g = p.add_argument_group("data")
    g.add_argument("--image", action="append", required=True, type=Path, metavar="IMG",
                   help=f"training image ({FILE_TYPES}); repeat for several images")  # fmt: skip
    g.add_argument("--labels", action="append", type=Path, metavar="LAB",
                   help="segmentation: labels for the --image at the same position (same spatial "
                   "shape): integer class ids, 0 = background (or unlabeled with --sparse)")  # fmt: skip
    g.add_argument("--spatial-dims", type=int, choices=(2, 3),
                   help="train a 2D or a 3D network (default: 3 for volumes, 2 for images); a 2D "
                   "network trains on the slices of volumes, and any network on the frames of "
                   "a time series")  # fmt: skip
    add_axes_option(g)
    add_spacing_option(g)
    g.add_argument("--sparse", action="store_true",
                   help="labels are scribbles: 0 is unlabeled and ignored by the loss "
                   "(needs --background-id)")  # fmt: skip
    g.add_argument("--background-id", type=integer(0), metavar="ID",
                   help="with --sparse: the painted label id that means background")  # fmt: skip
    g.add_argument("--patch-size", type=integer(1), nargs="+", metavar="N",
                   help="training patch size: one number for every spatial axis, or one per axis in Z Y X "
                   "order (a NIfTI's x, y, z reversed) (default: chosen from image shape, spacing and memory)")
    g.add_argument("--batch-size", type=integer(1), metavar="B",
                   help=f"patches per step, or samples for a classifier (default: planned; without the plan "
                   f"{data.batch_size}; classification 16)")  # fmt: skip
    g.add_argument("--folds", type=integer(1, 20), metavar="K",
                   help="segmentation: train an ensemble of K models, each validated on a different "
                   "fold (whole images, or one of K blocks of each image); predict averages their "
                   "probabilities and gives their disagreement as --uncertainty (default: planned: with "
                   "--max-minutes, one model or an ensemble of 4, as the time allows; else 1)")  # fmt: skip
    g.add_argument("--val-fraction", type=real(0, 1, high_open=True), metavar="F",
                   help=f"share of the data held out for validation (default: {data.val_fraction})")  # fmt: skip
    g.add_argument("--val-margin", type=integer(0), metavar="N",
                   help="one image: leave out the training labels N voxels next to the held-out "
                   "block, so validation scores like an unseen region (default: planned; without the plan 0)")  # fmt: skip
    g.add_argument("--normalization", choices=typing.get_args(Normalization),
                   help="intensity normalisation (default: planned from the data; without the plan "
                   f"{data.normalization})")  # fmt: skip
    g.add_argument("--foreground-fraction", type=real(0, 1), metavar="F",
                   help="share of patches centred on labelled foreground (default: planned; "
                   f"without the plan {data.foreground_fraction:.2f})")  # fmt: skip
    g.add_argument("--no-augment", action="store_true",
                   help="train without data augmentation (default: flips, rotations, "
                   "affine, noise, blur, contrast, intensity)")  # fmt: skip
    g.add_argument("--augment-scale", type=real(0, 4), metavar="F",
                   help="the default augmentation probabilities times F, at most 1 each (default: planned, "
                   "0.25 to 1 of them as the run is short or long; without the plan 1)")  # fmt: skip
    m = p.add_argument_group("network")
    m.add_argument("--network", metavar="NAME",
                   help=f"network from the model registry: segmentation unet, dynunet, segresnet "
                   f"(default: planned; without the plan {model.network}); classification smallcnn, resnet18, resnet34, "
                   "resnet50, densenet121, efficientnet-b0, unet-encoder (the segmentation U-Net's encoder: "
                   "starts from a pretrain bundle) (default: smallcnn)")  # fmt: skip
    m.add_argument("--channels", "--features", dest="features", type=integer(1, 1024), metavar="N",
                   help=f"network width: channels at full resolution (default: planned; without the plan "
                   f"{model.channels}); smallcnn and unet-encoder only among classifiers (resnet, densenet "
                   "and efficientnet have fixed widths)")  # fmt: skip
    m.add_argument("--depth", type=integer(1, 8), metavar="N",
                   help=f"resolution levels (default: planned; without the plan {model.depth}); smallcnn and "
                   "unet-encoder only among classifiers")  # fmt: skip
    m.add_argument("--norm", choices=("instance", "batch"),
                   help="normalisation layers: instance or batch norm (default: planned, batch on a CPU with "
                   "--max-minutes and batches of 2+, else instance; --no-plan: instance; classifiers: batch)")
    m.add_argument("--dropout", type=real(0, 1, high_open=True), metavar="F",
                   help="dropout rate in [0, 1) (default: 0; classification 0.1)")  # fmt: skip
    m.add_argument("--init-from", type=Path, metavar="BUNDLE_DIR",
                   help="transfer learning: start from the fitting weights of this bundle (a pretraining "
                   "bundle from 'napari-medml pretrain', or a segmentation or classification one); its network, "
                   "width, depth and norm layers unless given")  # fmt: skip
    m.add_argument("--freeze-stages", type=integer(0), metavar="K",
                   help="with --init-from: keep the first K encoder stages fixed (default: 0)")  # fmt: skip
    o = p.add_argument_group("optimisation")
    from napari_medml.classification.defaults import CLASSIFIER_OPTIM as classifier

    o.add_argument("--epochs", type=integer(1), metavar="N",
                   help=f"epochs (default: {optim.epochs}; classification {classifier['epochs']})")
    o.add_argument("--steps-per-epoch", type=integer(1), metavar="N",
                   help=f"optimisation steps per epoch (default: {optim.steps_per_epoch}; classification "
                   f"{classifier['steps_per_epoch']})")  # fmt: skip
    o.add_argument("--max-minutes", type=real(0, low_open=True), metavar="M",
                   help="stop after M minutes and keep the best model so far (default: no limit); with "
                   "--folds the M minutes are the whole run's, each fold training for its share")  # fmt: skip
    o.add_argument("--optimizer", choices=typing.get_args(OptimizerName),
                   help=f"optimizer (default: {optim.optimizer})")  # fmt: skip
    o.add_argument("--lr", type=real(0, low_open=True), metavar="LR",
                   help="learning rate (default: planned for the optimizer: AdamW and Adam 0.002 with the "
                   "warm-up, SGD 0.01, RMSprop 0.001; unplanned and classifiers: SGD 0.01, others 0.001)")  # fmt: skip
    o.add_argument("--momentum", type=real(0, 1, high_open=True), metavar="M",
                   help="SGD and RMSprop momentum (default: SGD 0.99 with Nesterov, as nnU-Net; RMSprop 0)")  # fmt: skip
    o.add_argument("--no-nesterov", dest="nesterov", action="store_false", default=None,
                   help="SGD with plain (heavy-ball) momentum instead of Nesterov's")
    o.add_argument("--weight-decay", type=real(0, 1, high_open=True), metavar="W",
                   help=f"weight decay (L2 penalty; AdamW's is decoupled) (default: {optim.weight_decay:g})")  # fmt: skip
    o.add_argument("--loss", choices=typing.get_args(LossName),
                   help=f"loss function (default: {optim.loss}; classification: ce or focal, "
                   "default ce)")  # fmt: skip
    o.add_argument("--class-weights", type=real(0), nargs="+", metavar="W",
                   help="weight of each class in the cross-entropy (dice_ce's too; focal's alpha), in class order: "
                   "segmentation's background first (default: equal)")  # fmt: skip
    o.add_argument("--label-smoothing", type=real(0, 1, high_open=True), metavar="F",
                   help="cross-entropy label smoothing in [0, 1), segmentation and classification (default: 0)")
    o.add_argument("--schedule", choices=typing.get_args(ScheduleName),
                   help=f"learning-rate schedule; plateau halves the rate after half the --patience (rounded up; "
                   f"with plateau it must be 2 or more; 5 epochs without it) without improvement and has no "
                   f"warm-up (default: planned; without the plan {optim.schedule}; classification cosine)")  # fmt: skip
    o.add_argument("--warmup", type=real(0, 1, high_open=True), metavar="F",
                   help="share of the run (steps, or the time budget) warming the rate up (default: planned; "
                   "without the plan 0)")  # fmt: skip
    o.add_argument("--no-plan", action="store_true",
                   help="do not plan the run from the data and the time budget: options left out keep "
                   "their fixed defaults (the plan is printed before training and stored in the bundle; "
                   "options given always win over it)")  # fmt: skip
    o.add_argument("--plan-only", action="store_true",
                   help="print the plan (it times a training step on the data first) and stop: nothing is "
                   "trained or saved; give a line's option to override it in the run")  # fmt: skip
    o.add_argument("--patience", type=integer(1), metavar="N",
                   help="early stopping: stop after N epochs without improvement (default: off)")  # fmt: skip
    o.add_argument("--stop-metric", choices=typing.get_args(StopMetric), metavar="M",
                   help="what picks the best epoch (the model saved) and early stopping: val_dice (the "
                   "validation mean Dice; a classifier's accuracy), val_loss (not for instances, whose "
                   "validation scores objects) or val_accuracy; ties go to the lower validation loss (default: "
                   "val_dice; classification val_accuracy)")  # fmt: skip
    o.add_argument("--seed", type=integer(0, 2**32 - 1), metavar="S",
                   help=f"random seed for split, patches and weights (default: {TrainConfig().seed})")  # fmt: skip
    o.add_argument("--device", choices=DEVICES, default="auto",
                   help="where to train; auto picks CUDA, then MPS, then the CPU (default: auto)")  # fmt: skip
    o.add_argument("--nproc", type=integer(1), metavar="N",
                   help="train in N processes with data parallelism (torchrun, PyTorch DDP): one per GPU, "
                   "or CPU processes; --batch-size is per process, so a step learns from N x batch "
                   "samples; Ctrl-C stops them all (default: 1)")  # fmt: skip
    add_train_options(p)
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, metavar="BUNDLE_DIR",
                     help="folder for the trained model bundle (config.json + weights; required, except "
                     "with --plan-only); "
                     "an earlier bundle there is replaced; checkpoints are kept in its "
                     "'checkpoints' folder while training and removed when the bundle is saved")  # fmt: skip
    out.add_argument("--resume", action="store_true",
                     help="continue an interrupted run from the checkpoints in --out "
                     "(same files and options)")  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Read the files, train with a progress bar, save the best model.

    The core's messages name settings by their config fields (``val_fraction``); they
    reach the user with the options' names (``--val-fraction``, ``cli.common.flag_names``).
    """
    from napari_medml.errors import MedMLError

    try:
        return _run(args)
    except MedMLError as exc:
        new = with_flag_names(exc)
        if new is exc:
            raise
        raise new from exc


def _run(args: argparse.Namespace) -> int:
    """``run`` without the translation of the messages."""
    from napari_medml.cli.launch import launch, wants_launch
    from napari_medml.engine.distributed import launched

    if getattr(args, "init_from", None):  # config.json names the start bundle wherever it is read from
        args.init_from = Path(os.path.abspath(args.init_from))
    if args.plan_only and not _planned(args):
        raise UsageError("--plan-only prints the plan of a new segmentation or instances run (a classifier is not "
                         "planned): leave out --no-plan and --resume, or --plan-only")
    if args.out is None and not args.plan_only:  # --plan-only saves nothing (trial 44: it asked for --out)
        raise UsageError("the following arguments are required: --out (the folder for the trained model bundle)")
    if args.task == "classification":
        from napari_medml.cli.classify import train

        return train(args)
    if not args.labels:
        raise UsageError(f"{args.task} needs --labels for each --image")
    if args.sparse and args.background_id is None:
        raise UsageError("--sparse needs --background-id, the painted id that means background")
    if len(args.image) != len(args.labels):
        raise UsageError(f"got {len(args.image)} --image but {len(args.labels)} --labels: "
                         "give one labels file per image")  # fmt: skip
    start = [Path(args.init_from)] if getattr(args, "init_from", None) else []  # the start bundle is an input too
    if args.out is not None:
        check_bundle_target(args.out, inputs=[*args.image, *args.labels, *start])
    if args.resume and args.spatial_dims is None:  # the stopped run's network cuts the files, not a new choice
        from napari_medml.cli.resume import stopped_config

        args.spatial_dims = stopped_config(resume_folder(args)).data.spatial_dims
    images, labels, spacings, channel_axis, dims, groups, args.channel_names = read_pairs(  # and the files' unit:
        args.image, args.labels, args.spatial_dims, args.axes, "object" if args.task == "instances" else "class",
        spacing=args.spacing, unit=(unit := {}))
    args.length_unit = unit
    read = images, labels, spacings, channel_axis, dims, groups
    # a planned run takes a depth that divides the patch given (segmentation.plan)
    args.patch_size = check_patch_option(args.patch_size, dims,
                                         args.depth or (None if _planned(args) else ModelConfig().depth),
                                         args.network)
    config = train_config(args, dims)  # options that do not go together: one line before torchrun starts
    if not args.resume:
        config.check_new_run()
    if args.plan_only:
        return _plan_only(args, *read)
    if launched():  # a process torchrun started: the launcher (or, under a bare torchrun, rank 0) holds the folder
        from napari_medml.cli.launch import die_with_parent, folder_held_elsewhere

        die_with_parent()  # torchrun's end (its launcher killed) ends it too
        if folder_held_elsewhere():
            return _train(args, *read)
    from napari_medml.cli.run_guard import hold_out_folder, inputs_digest

    # read and checked before torchrun starts: an input error is one line, not the processes' failure report
    with hold_out_folder(args.out, resume=args.resume, digest=inputs_digest(images, labels, spacings),
                         files=[*args.image, *args.labels], spacings=spacings):
        return launch(args) if wants_launch(args) else _train(args, *read)


def _train(args: argparse.Namespace, images: list, labels: list, spacings: list, channel_axis: int | None,
           dims: int, groups: tuple[int, ...]) -> int:
    """The run on the samples ``read_pairs`` read: planned (or resumed), trained and saved."""
    from napari_medml.bundles.checkpoints import save_run
    from napari_medml.engine.distributed import is_main
    from napari_medml.errors import MedMLError
    from napari_medml.engine.reports import StopToken
    from napari_medml.api import fit  # dispatches to the ensemble with --folds

    planned = _planned(args)
    if args.task == "segmentation" and not args.sparse:
        from napari_medml.segmentation.label_values import many_ids_warning

        note = many_ids_warning(labels, "labels " + ", ".join(f"'{p}'" for p in args.labels), "--task instances")
        if note:
            info(note)
    config = _run_config(args, dims, groups)
    stop = StopToken()
    one = len(images) == 1  # the engine takes one array or a list
    plan = None
    if args.resume:  # the stopped run's own (planned) settings: its checkpoint holds that network
        from napari_medml.cli.resume import resumed_config, resumed_note

        config = resumed_config(args, config, resume_folder(args))
        info(resumed_note(config, resume_folder(args)))
    elif planned:
        plan = _plan(args, config, images, labels, spacings, channel_axis)
        config = plan.apply(config)
    elif config.model.init_from:  # --no-plan: still the start bundle's network, or its weights would not fit
        from napari_medml.segmentation.planning import take_start_architecture, taken_note

        config, taken = take_start_architecture(config, planned_options(args))
        if taken:
            info(taken_note(config, taken))
    say_unused_share(args.val_fraction, config.data.folds, args.resume)  # the core cannot tell the default given
    gen = fit(images[0] if one else images, labels[0] if one else labels, config,
              spacing=spacings[0] if one else spacings, channel_axis=channel_axis, stop=stop,
              resume_from=resume_folder(args), plan=plan)  # fmt: skip
    if plan is not None:
        gen = _after_checks(gen, plan.describe())
    with stop_on_interrupt(stop):
        model, best = drive_training(gen, config.optim.epochs, folds=config.data.folds)
    if not is_main():
        return 0  # data parallel: rank 0 saves the bundle
    if model is None:
        raise MedMLError(nothing_saved("training", checkpoint_folder(args.out)))
    from napari_medml.io.orientation import file_orientation

    # predict puts other orientations in this one for the network, and compares an image's length unit with it
    orientation, unit = file_orientation(args.image[0], dims), getattr(args, "length_unit", {}).get("unit")
    model.provenance.update({key: value for key, value in (("orientation", orientation), ("unit", unit)) if value})
    # a Model, or with --folds an EnsembleModel (a folder of members); a stopped run keeps its
    # checkpoints (an ensemble's: the finished folds' models and the stopped fold's last) for --resume
    folds = config.data.folds
    path = save_run(model, args.out, stopped=stop.stopped)
    info(f"saved model bundle to {path}{saved_note(model, best, folds, resumed=args.resume)}")
    if stop.stopped and folds > 1:
        trained = model.provenance["ensemble"]["trained"]
        info(f"stopped: saved an ensemble of the {trained} of {folds} folds trained so far to {path} and kept the "
             f"run's checkpoints in {checkpoint_folder(args.out)}; the same command with --resume continues the "
             "run (the finished folds are kept)")
    elif stop.stopped:
        info(stopped_line(path, checkpoint_folder(args.out)))
    return 0


def _run_config(args: argparse.Namespace, dims: int, groups: tuple[int, ...]) -> Any:
    """The options' TrainConfig, with the run's checkpoint folder and its samples' groups."""
    config = train_config(args, dims)
    if args.out is not None:  # --plan-only may have none
        config = replace(config, checkpoint_dir=str(checkpoint_folder(args.out)))
    if max(groups) > 1:  # slices or frames of a volume as samples: their neighbours are not held out apart
        config = replace(config, data=replace(config.data, sample_groups=groups))
    if getattr(args, "channel_names", None):  # as the files named them: predict matches an image's by them
        config = replace(config, data=replace(config.data, channel_names=tuple(args.channel_names)))
    return config


def _plan(args: argparse.Namespace, config: Any, images: list, labels: list, spacings: list,
          channel_axis: int | None) -> Any:
    """The run's plan from its samples and the options given (kept at their values)."""
    from napari_medml.segmentation.planning import plan_run

    one = len(images) == 1  # the planner takes one array or a list
    return plan_run(images[0] if one else images, labels[0] if one else labels, config,
                    spacing=spacings[0] if one else spacings, channel_axis=channel_axis, keep=planned_options(args))


def _plan_only(args: argparse.Namespace, images: list, labels: list, spacings: list, channel_axis: int | None,
               dims: int, groups: tuple[int, ...]) -> int:
    """``--plan-only``: print the plan on stdout; nothing is trained, no folder is made.

    With ``--nproc N`` the step is timed with the threads each of the N processes gets.
    """
    from napari_medml.cli.launch import threads_per_process, wants_launch
    from napari_medml.engine.devices import intra_op_threads

    threads = threads_per_process(int(args.nproc)) if wants_launch(args) else None
    if threads is not None:
        info(f"--nproc {args.nproc}: a step is timed with {threads} CPU thread(s), as each process trains")
    with intra_op_threads(threads):
        plan = _plan(args, _run_config(args, dims, groups), images, labels, spacings, channel_axis)
    print(plan.describe())
    out = "" if args.out is not None else " and with --out (the bundle's folder)"
    info(f"--plan-only: nothing was trained; the same command without --plan-only{out} trains with this plan (timed "
         "again, so a busy machine may plan fewer steps); an option given keeps its value")
    return 0


def _planned(args: argparse.Namespace) -> bool:
    """Whether the run is planned from the data and the time budget."""
    return not args.no_plan and not args.resume and args.task in ("segmentation", "instances")


def _after_checks(gen: Generator[Any, None, Any], text: str) -> Generator[Any, None, Any]:
    """``gen``, printing ``text`` (the plan) once the run has passed its input checks, before
    its first report: a bad input stays a one-line error."""
    try:
        first = next(gen)
    except StopIteration as done:
        return done.value
    info(text)
    yield first
    return (yield from gen)


def planned_options(args: argparse.Namespace) -> list[str]:
    """The config fields the options set (the plan keeps the planned ones at the user's value)."""
    return [*fields_given(args), *(["augment"] if args.no_augment or args.augment_scale is not None else [])]


def train_config(args: argparse.Namespace, spatial_dims: int) -> TrainConfig:
    """A TrainConfig from the options given; everything left out keeps its default."""
    task = "instances" if getattr(args, "task", "") == "instances" else "segmentation"
    return config_from_options(args, TrainConfig(task=task, data=DataConfig(spatial_dims=spatial_dims)))
