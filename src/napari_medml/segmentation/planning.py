"""Planning a run from the arrays it trains on: read them as training will, fingerprint
them (:mod:`.fingerprint`), time a training step on the device, and turn it all into a
:class:`~napari_medml.segmentation.plan.Plan` (:func:`~napari_medml.segmentation.plan.make_plan`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, get_args

from napari_medml.config import ModelConfig, SegmentationNetwork, TrainConfig
from napari_medml.segmentation.fingerprint import fingerprint
from napari_medml.errors import MedMLError
from napari_medml.segmentation.plan import Plan, changed_fields, make_plan
from napari_medml.segmentation.plan_folds import ENSEMBLE, choose_ensemble, ensemble_bar, with_folds_line

__all__ = ["plan_run", "take_start_architecture", "taken_note"]


def plan_run(images: Any, labels: Any, config: TrainConfig, *, spacing: Any = None, channel_axis: int | None = None,
             keep: Sequence[str] | None = None, stop: Any = None) -> Plan:
    """Fingerprint the arrays a run trains on and plan it on the config's device.

    Parameters
    ----------
    images, labels, spacing, channel_axis
        As for ``segmentation.task.fit`` (``task="instances"``: instance labels, planned as
        their foreground).
    config : TrainConfig
    keep : sequence of str, optional
        ``PLANNED_FIELDS`` the user set; None: those that differ from the defaults.
    stop : StopToken, optional
        Checked before each timed trial step and augmented batch (planning times several
        trials, seconds each on a busy CPU); once tripped, planning ends with :class:`NothingLearned`.

    Returns
    -------
    Plan
        ``plan.apply(config)`` is the config to train with.

    Raises
    ------
    InputError
        As ``fit`` would for the same inputs.
    NothingLearned
        When ``stop`` was tripped (no step trained: no model).

    Notes
    -----
    Under torchrun (several processes) rank 0 plans and every process takes its plan: each
    would time its own steps, on a core as busy as the others leave it, and could choose
    another width, number of folds or steps per epoch, and so build another network.
    """
    from napari_medml.config import from_dict
    from napari_medml.engine.distributed import decided_by_main

    def here() -> dict:
        return _plan_here(images, labels, config, spacing=spacing, channel_axis=channel_axis, keep=keep,
                          stop=stop).to_dict()

    return from_dict(Plan, decided_by_main(here, config.device))


def _fold_missing_a_class(prepared: Any, encoded: Any, class_ids: Any, groups: Any, margin: int) -> str:
    """Why the plan's ensemble is not taken when one of its folds would train without a class
    (the classes any image labels), with the margin its members are planned to leave out;
    ``""`` when every fold trains on every class."""
    from napari_medml.segmentation import split

    every = set().union(*(split.present_classes(lab) for lab in encoded))
    for k in range(ENSEMBLE):
        train = split.split_fold(prepared, encoded, k, ENSEMBLE, groups=groups, margin=margin)[0]
        lost = sorted(every - set().union(*(split.present_classes(r.label) for r in train)))
        if lost:
            return (f"fold {k + 1} of {ENSEMBLE}'s training part would hold no voxel of class "
                    f"{split.class_id_text(lost, class_ids)}")
    return ""


def _plan_here(images: Any, labels: Any, config: TrainConfig, *, spacing: Any, channel_axis: int | None,
               keep: Sequence[str] | None, stop: Any) -> Plan:
    """:func:`plan_run` in this process (measured on this process's device and core)."""
    from dataclasses import replace

    import numpy as np

    from napari_medml.engine.devices import resolve_device
    from napari_medml.segmentation import split
    from napari_medml.segmentation.prepare import read_inputs
    from napari_medml.segmentation.step_time import measure_step

    objects = None
    if config.task == "instances":  # planned as the foreground/background segmentation its network also learns
        many = isinstance(labels, (list, tuple))
        objects = [np.asarray(lab) for lab in (labels if many else [labels])]  # the typical object: one id each
        labels = [(lab > 0).astype(np.uint8) for lab in objects]
        labels = labels if many else labels[0]
        config = replace(config, task="segmentation")
    from napari_medml.segmentation.data import as_list
    from napari_medml.segmentation.lazy import is_lazy
    from napari_medml.segmentation.recipes import common_spacing

    resampled = None
    if not any(is_lazy(a) for a in as_list(images, "images")):  # as fit will (no resampling step for lazy images)
        config, resampled = common_spacing(config, spacing, len(as_list(images, "images")))
    prepared, encoded, _class_ids, spacings = read_inputs(images, labels, config, spacing=spacing,
                                                          channel_axis=channel_axis)
    device = resolve_device(config.device)

    def check() -> None:
        if stop is not None and stop.stopped:
            from napari_medml.errors import NothingLearned

            raise NothingLearned("stopped while planning, before the first training step: no model was made")

    timed: dict[str, float] = {}  # plans of one model and of an ensemble often time the same step

    def timer(trial: TrainConfig) -> float:
        key = repr((trial.data.patch_size, trial.data.batch_size, trial.model, trial.optim.loss, trial.augment,
                    trial.amp))
        if key not in timed:
            timed[key] = measure_step(trial, prepared[0].shape[0], len(_class_ids), spacings[0], device, check)
        return timed[key]

    def planned(config: TrainConfig, keep: Sequence[str]) -> Plan:
        if config.data.folds > 1:  # an ensemble: every member's training part must hold the patch
            parts = [split.split_fold(prepared, encoded, k, config.data.folds, groups=config.data.sample_groups)
                     for k in range(config.data.folds)]
            train, val = [r for part in parts for r in part[0]], parts[0][1]
        else:
            train, val, _ = split.split_train_val(prepared, encoded, config.data.val_fraction,
                                                  groups=config.data.sample_groups)
            parts = [(train, val)]
        train_shape = tuple(min(r.label.shape[a] for r in train) for a in range(config.data.spatial_dims))
        fp = fingerprint(prepared, encoded, spacings[0], train_shape, _class_ids, objects=objects)
        if "data.patch_size" in keep:  # refused before a step is timed, as the run would refuse it after
            untimed = make_plan(fp, config, device=device.type, keep=keep)  # the network and depth only
            model = replace(config.model, network=untimed.network, depth=untimed.depth)
            for k, part in enumerate(parts):
                check_kept_patch([r.label.shape for r in part[0]], config, k, len(prepared) == 1, model, spacings[0])
        return make_plan(fp, config, device=device.type, keep=keep, step_seconds=timer,
                         val_voxels=sum(r.label.size for r in val))

    keep = list(changed_fields(config) if keep is None else keep)
    config, taken = take_start_architecture(config, keep)
    # transfer learning: the start bundle's network, or its weights would not fit; what it does not give (a
    # resnet classifier's start) stays planned (review 53: "norm layers: instance (set by you...)" for one)
    keep += taken
    plan = planned(config, keep)
    bar = ensemble_bar(config if objects is None else replace(config, task="instances"), keep, len(prepared))
    if bar is not None:
        plan = with_folds_line(plan, bar)
    else:  # one model, or ENSEMBLE sharing the time limit: planned both ways
        members, why_not = None, ""
        try:
            members = planned(replace(config, data=replace(config.data, folds=ENSEMBLE)), keep)
            # review 43: a fold whose training part lacks a class averages a model blind to it into the answer
            why_not = _fold_missing_a_class(prepared, encoded, _class_ids, config.data.sample_groups,
                                            members.val_margin)
            members = None if why_not else members
        except MedMLError as exc:  # too small to cut into folds, or for a patch in each member's part
            why_not = str(exc).split(":")[0]
        plan = choose_ensemble(plan, members, config, why_not)
    if resampled:
        plan = replace(plan, reasons=(f"spacing: {resampled}", *plan.reasons))
    if not taken:
        return plan
    # the bundle's values are the plan's, not the user's: they reach the run's config through apply
    labels = {"model.network": "network", "model.channels": "width (channels)", "model.depth": "depth (levels)",
              "model.norm": "norm layers"}
    reasons = tuple(re.sub(r" \(set by you; plan: [^)]*\)$", " (the start model's)", r)
                    if any(r.startswith(labels[k] + ":") for k in taken if k in labels) else r for r in plan.reasons)
    return replace(plan, kept=tuple(k for k in plan.kept if k not in taken), reasons=reasons)


def check_kept_patch(shapes: Sequence[Sequence[int]], config: TrainConfig, fold: int, single: bool,
                     model: ModelConfig, spacing: Sequence[float] | None = None) -> None:
    """Refuse a patch size the user set that the planned network does not fit in a training part.

    Parameters
    ----------
    shapes : sequence of shapes
        Spatial shapes (voxels) of the training part's regions: the run's, or fold
        ``fold``'s when ``config.data.folds > 1``.
    config : TrainConfig
        ``data.patch_size`` (None: planned, nothing to check), folds and validation share.
    fold : int
        0-based fold, named in the message of an ensemble.
    single : bool
        One image (the message speaks of its training part).
    model : ModelConfig
        The planned network and depth (the patch may reach the smallest region padded to a
        multiple of what the network pools each axis by: ``nn.strides.patch_divisors``).
    spacing : sequence of float, optional
        Voxel size per axis (DynUNet's strides follow it).

    Raises
    ------
    InputError
        The patch is larger than the smallest region padded to that multiple, as the run
        would refuse it after planning.
    """
    from dataclasses import replace

    from napari_medml.errors import InputError
    from napari_medml.nn.strides import patch_divisors
    from napari_medml.preprocessing.inputs import check_patch_size

    patch = config.data.patch_size
    if patch is None:
        return
    patch = tuple(int(p) for p in patch)
    folds = config.data.folds
    where = ("training part of the image" if single and (folds > 1 or config.data.val_fraction > 0)
             else "smallest training image")
    try:
        if model.network == "dynunet" and model.depth < 3:  # it needs three levels: the factors of three
            model = replace(model, depth=3)
        check_patch_size(patch, shapes, patch_divisors(model, patch, spacing), model.depth, where)
    except InputError as exc:
        if folds > 1:
            raise InputError(f"the patch size set does not fit fold {fold + 1} of {folds}'s training part: {exc} "
                             "(fewer folds leave larger training parts)") from None
        raise


def take_start_architecture(config: TrainConfig, keep: Sequence[str] = ()) -> tuple[TrainConfig, list[str]]:
    """``config`` with its start bundle's network, width, depth and norm (transfer learning).

    A bundle's weights fit only a network built the same way: without this, a batch-norm
    bundle started an instance-norm network and its norm layers' tensors were dropped. The
    command line's ``--no-plan`` run takes them too.

    Parameters
    ----------
    config : TrainConfig
        Nothing changes without ``model.init_from``.
    keep : sequence of str
        Fields the user set (``"model.channels"``...): they stay as they are.

    Returns
    -------
    tuple
        The config, and the dotted names of the fields taken from the bundle.
    """
    from dataclasses import replace

    if not config.model.init_from:
        return config, []
    from napari_medml.bundles.transfer import bundle_architecture

    arch = segmentation_architecture(bundle_architecture(config.model.init_from))
    taken = [f"model.{k}" for k in ARCHITECTURE if k in arch and f"model.{k}" not in keep]
    return replace(config, model=replace(config.model, **{k.split(".")[1]: arch[k.split(".")[1]]
                                                          for k in taken})), taken


def taken_note(config: TrainConfig, taken: Sequence[str]) -> str:
    """The line that says what a run took from its start bundle (:func:`take_start_architecture`)."""
    names = {"network": "network", "channels": "width", "depth": "depth", "norm": "norm layers"}
    parts = [f"{names[k.split('.')[1]]} {getattr(config.model, k.split('.')[1])}" for k in taken]
    return f"{', '.join(parts)}: the start model's (its weights fit only the same network)" if parts else ""


# what a start bundle gives the run (its weights fit only a network built the same way)
ARCHITECTURE = ("network", "channels", "depth", "norm")
# a classifier built on a segmentation network's encoder starts that network
SEGMENTATION_OF = {"unet-encoder": "unet"}


def segmentation_architecture(arch: dict[str, Any]) -> dict[str, Any]:
    """A start bundle's ``network``/``channels``/``depth``/``norm`` (``bundles.transfer.bundle_architecture``)
    as a segmentation network takes them: a ``unet-encoder`` classifier starts a ``unet``;
    another classifier (resnet, densenet, ...) gives none of them, since no segmentation
    network is built that way, and the plan's network takes the tensors that fit."""
    network = SEGMENTATION_OF.get(arch.get("network"), arch.get("network"))
    if network is None:
        return arch
    if network not in get_args(SegmentationNetwork):
        return {k: v for k, v in arch.items() if k not in ARCHITECTURE}
    return {**arch, "network": network}

