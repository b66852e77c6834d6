"""Training: ``fit()`` is a generator of ``TrainReport``s that returns the best Model.

Every front runs the same generator: a widget in napari's ``thread_worker``, the
command line with a progress bar, a script through ``train()``.  Stopping (a
``StopToken`` or closing the generator) finishes the current step and, when
``TrainConfig.checkpoint_dir`` is set, leaves a loadable checkpoint in
``<checkpoint_dir>/last``, the best model so far in ``<checkpoint_dir>/best``.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medml.config import AugmentConfig, TrainConfig
from napari_medml.engine.fit import fit_task, run_to_end
from napari_medml.engine.reports import StopToken, TrainReport
from napari_medml.engine.task import Evaluation
from napari_medml.errors import ConfigError, InputError
from napari_medml.segmentation.model import Model, load_segmentation_model

__all__ = ["SegmentationTask", "base_start", "fit", "start_network", "train", "training_transform"]


def train(images: Any, labels: Any, config: TrainConfig, **kwargs: Any) -> Model:
    """Run ``fit`` to the end and return the best Model (same arguments as ``fit``)."""
    return run_to_end(fit(images, labels, config, **kwargs))


def fit(images: Any, labels: Any, config: TrainConfig, *, spacing: Any = None, channel_axis: int | None = None,
        stop: StopToken | None = None, resume_from: str | Path | None = None,
        init_model: Model | None = None, plan: Any = None) -> Generator[TrainReport, None, Model]:
    """Train a segmentation network on images and (dense or scribble) labels.

    Parameters
    ----------
    images : array or sequence of arrays
        ``(Y, X)`` or ``(Z, Y, X)`` (plus the axis ``channel_axis``).
    labels : array or sequence of arrays
        Integer labels of each image's spatial shape.
    config : TrainConfig
    spacing : tuple or list of tuples, optional
        Voxel size (one tuple for all images, or one per image).
    channel_axis : int, optional
    stop : StopToken, optional
        Stops after the current step, leaving a checkpoint.
    resume_from : str or Path, optional
        A checkpoint folder (or an earlier run's ``checkpoint_dir``): continues its
        model, optimizer, schedule and step count.
    init_model : Model, optional
        Start from this model's weights (fine-tuning); class ids must match.
    plan : segmentation.plan.Plan, optional
        The plan ``config`` came from (``plan_run``); stored in the bundle as ``"plan"``.

    Yields
    ------
    TrainReport
        At least every quarter second of work and at every epoch end.

    Returns
    -------
    Model
        The best model (by ``optim.early_stopping_metric`` on validation).
    """
    if config.task != "segmentation":
        raise ConfigError(f"segmentation.fit trains segmentation networks; for task {config.task!r} use "
                          "napari_medml.fit")
    if init_model is not None and not hasattr(init_model, "network"):
        raise ConfigError("fine-tuning starts from one model, not an ensemble: fine-tune one member (its "
                          "bundle folder members/fold-1), or train a new ensemble")
    if config.data.folds > 1 and config.data.fold is None:
        raise ConfigError(f"folds={config.data.folds} asks for an ensemble: train it with napari_medml.fit "
                          "(segmentation.ensemble.fit_ensemble), or set data.fold to train one member")
    note = None
    if init_model is None and resume_from is None:  # a model or a checkpoint keeps its own recipe
        from napari_medml.segmentation.data import as_list
        from napari_medml.segmentation.lazy import is_lazy
        from napari_medml.segmentation.recipes import common_spacing

        image_list = as_list(images, "images")
        if not any(is_lazy(a) for a in image_list):  # a resampling step needs the whole image: none for lazy ones
            config, note = common_spacing(config, spacing, len(image_list))

    def build(base: Model | None, start_step: int) -> SegmentationTask:
        task = SegmentationTask(config, images, labels, spacing=spacing, channel_axis=channel_axis, base=base,
                                start_step=start_step)
        if note:
            task.notes.append(note)
        return task

    # no checkpoint_dir: nothing on disk (the best state is kept in memory), never a stray temp folder
    provenance = {"plan": plan.to_dict()} if plan is not None else None
    return (yield from fit_task(build, config, load=load_segmentation_model, stop=stop, resume_from=resume_from,
                                init_model=init_model, provenance=provenance))


# --- segmentation as a task of the shared engine ------------------------------------------


class SegmentationTask:
    """Patches of images and (dense or scribble) labels, a masked loss, sliding-window
    validation with Dice (a :class:`~napari_medml.engine.task.TrainingTask`).

    Parameters
    ----------
    config : TrainConfig
    images, labels, spacing, channel_axis
        As for :func:`fit`.
    base : Model, optional
        Fine-tuning or resuming: start from this model's network, classes, patch and
        normalisation.
    start_step : int
        The step a resumed run continues from (it shifts the seeds, so a resumed run
        draws new patches).
    """

    def __init__(self, config: TrainConfig, images: Any, labels: Any, *, spacing: Any = None,
                 channel_axis: int | None = None, base: Model | None = None, start_step: int = 0) -> None:
        if base is None:  # a saved model keeps the settings it was trained with
            config.check_new_run()
        from napari_medml.segmentation import data
        from napari_medml.engine.devices import patch_voxel_cap, resolve_device
        from napari_medml.engine.distributed import data_seed
        from napari_medml.segmentation.prepare import prepare_training_data

        dc = config.data
        model_cfg = base.config.model if base is not None else config.model
        self.config = config = replace(config, model=model_cfg)
        device = resolve_device(config.device)
        prepared = prepare_training_data(images, labels, config, spacing=spacing, channel_axis=channel_axis,
                                         base=base, max_patch_voxels=patch_voxel_cap(device, dc.spatial_dims))
        self.val_regions = prepared.val_regions
        self.split_note, self.class_ids = prepared.split_note, prepared.class_ids
        self.notes = [prepared.split_note, *prepared.warnings]  # the first report carries them
        if dc.label_mode == "sparse" and prepared.val_regions:
            self.notes.append(SCRIBBLE_VALIDATION)
        self.in_channels, self.spacing = prepared.in_channels, prepared.spacing
        self.patch_size, self.normalization = prepared.patch_size, prepared.normalization

        self.network, self.initial_weights = start_network(config, self.in_channels, len(self.class_ids),
                                                           self.patch_size, self.spacing, base=base,
                                                           start_step=start_step)
        if self.initial_weights is not None:
            self.notes.append(start_note(self.initial_weights))
        self.base_start = None if base is None else base_start(base)
        self.loss_fn: Any = None  # built on the device of the first outputs (class weights live there)
        draws = data_seed(config.seed + start_step)  # each data-parallel process draws its own patches
        transform = training_transform(config, ("image", "label"), seed=draws, patch_size=self.patch_size,
                                       spacing=self.spacing)
        self.sampler = data.PatchSampler(prepared.train_regions, self.patch_size, dc.batch_size,
                                         dc.foreground_fraction, sparse=dc.label_mode == "sparse",
                                         transform=transform, seed=draws)

    # --- TrainingTask ---------------------------------------------------------------------

    def start_message(self) -> str:
        return "\n".join(self.notes)  # the split and any warning about it, before any other news

    def train_mode(self) -> None:
        from napari_medml.nn.segmentation import keep_frozen_statistics

        self.network.train()
        keep_frozen_statistics(self.network, self.initial_weights or self.base_start)  # as their weights

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sampler.batch()

    def loss(self, outputs: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if self.loss_fn is None:
            from napari_medml.nn.losses import build_loss

            self.loss_fn = build_loss(self.config.optim, len(self.class_ids), outputs.device)
        # label 0 is unlabeled (scribbles) or never present (dense labels are shifted by one)
        return self.loss_fn(outputs, label.long() - 1, label > 0)

    def evaluate(self, device: torch.device, amp: bool) -> Evaluation | None:
        if not self.val_regions:
            return None
        from napari_medml.segmentation.validation import selection_key, validate

        if self.loss_fn is None:
            from napari_medml.nn.losses import build_loss

            self.loss_fn = build_loss(self.config.optim, len(self.class_ids), device)
        fields = validate(self.network, self.val_regions, patch_size=self.patch_size, class_ids=self.class_ids,
                          loss_fn=self.loss_fn, device=device, amp=amp,
                          sw_batch_size=self.config.data.batch_size * 2)
        history = {"val_loss": fields.get("val_loss"), "val_mean_dice": fields.get("val_mean_dice"),
                   "val_dice": {str(k): v for k, v in (fields.get("val_dice") or {}).items()},
                   "val_iou": {str(k): v for k, v in (fields.get("val_iou") or {}).items()}}
        key = selection_key(fields, self.config.optim.early_stopping_metric)
        fields.pop("val_false_classes", None)  # judged the epoch; no field of a report
        return Evaluation(report=fields, history=history, key=key)

    def model(self, history: list[dict], provenance: Mapping[str, Any], metrics: Mapping[str, Any]) -> Model:
        provenance = {"split": self.split_note, "label_mode": self.config.data.label_mode, **provenance}
        started = self.initial_weights if self.initial_weights is not None else self.base_start
        if started is not None:  # a resumed run's bundle still says where its weights came from
            provenance["initial_weights"] = started
        return Model(self.network, self.config, self.class_ids, self.in_channels, self.config.data.spatial_dims,
                     self.patch_size, self.spacing, self.normalization, history=list(history),
                     provenance=provenance)


def start_network(config: TrainConfig, in_channels: int, out_channels: int, patch_size: tuple[int, ...],
                  spacing: tuple[float, ...] | None, *, base: Any = None,
                  start_step: int = 0) -> tuple[torch.nn.Module, dict[str, Any] | None]:
    """A run's network from the one registry (``nn.segmentation``), ready to train.

    Seeded with ``config.seed + start_step``; it starts from ``base``'s weights
    (fine-tuning or resuming), else from the tensors that fit in ``model.init_from``
    (transfer); then ``model.freeze_stages`` encoder stages are frozen.

    Parameters
    ----------
    config : TrainConfig
        ``model``, ``data.spatial_dims`` and ``seed``.
    in_channels, out_channels : int
    patch_size : tuple of int
    spacing : tuple of float, optional
    base : model, optional
        A model of the same network (``base.network``).
    start_step : int
        The step a resumed run continues from.

    Returns
    -------
    tuple
        ``(network, initial_weights)``: what ``bundles.transfer.transfer_weights``
        loaded (None without a transfer), for the model's provenance.
    """
    from napari_medml.nn.segmentation import build_network, freeze_encoder_stages, output_tensors, patch_divisor

    torch.manual_seed(config.seed + start_step)
    network = build_network(config.model, config.data.spatial_dims, in_channels, out_channels,
                            patch_size=patch_size, spacing=spacing)
    if math.prod(p / patch_divisor(config.model) for p in patch_size) <= 1:  # the bottom may hold one voxel: probe
        from napari_medml.nn.norm_fit import check_norm_inputs

        check_norm_inputs(network, (in_channels, *patch_size), config.data.batch_size,
                          f"the {'x'.join(map(str, patch_size))} patches", size_name="patch size",
                          size_option="--patch-size, or the Train widget's patch size", depth=True)
    initial_weights = None
    if base is not None:
        network.load_state_dict(base.network.state_dict())
    elif config.model.init_from:
        from napari_medml.bundles.transfer import transfer_weights

        head = output_tensors(network, config.model, config.data.spatial_dims, in_channels, out_channels,
                              patch_size=patch_size, spacing=spacing)
        initial_weights = transfer_weights(network, config.model.init_from, head=head, task=config.task)
    config.model.check_freeze(base is not None or bool(config.model.init_from))
    frozen = freeze_encoder_stages(network, config.model.freeze_stages)
    started = initial_weights if base is None else base_start(base)
    if started is not None and frozen:  # a resumed or fine-tuned run freezes what its start froze
        from napari_medml.bundles.transfer import thaw_new_tensors

        thawed = thaw_new_tensors(network, started)
        if initial_weights is not None:
            initial_weights["frozen_stages"], initial_weights["thawed"] = frozen, thawed
    return network, initial_weights


def base_start(base: Any) -> dict[str, Any] | None:
    """The transfer a model's run started from (its provenance's ``initial_weights``), if any."""
    start = (getattr(base, "provenance", None) or {}).get("initial_weights")
    return start if isinstance(start, dict) else None


# A trial: 0.99 validation Dice on held-out strokes, 0.56-0.63 on the dense truth of unseen rows.
SCRIBBLE_VALIDATION = ("validation on scribbles scores only the painted voxels held out, mostly easy ones inside "
                       "strokes: expect a lower Dice on the whole image (check it on densely labelled data with "
                       "Evaluate)")


def start_note(weights: dict[str, Any]) -> str:
    """One line on a transfer: the tensors taken, a new output layer, the frozen stages.

    Parameters
    ----------
    weights : dict
        What :func:`start_network` returned (``bundles.transfer.transfer_weights``'s provenance).

    Returns
    -------
    str
        E.g. ``started from 33 of 37 tensors of /path (pretraining); the output layer
        starts new (the bundle's is for pretraining); the first 2 encoder stages frozen``.
    """
    line = f"started from {weights['loaded']} of {weights['total']} tensors of {weights['source']} ({weights['task']})"
    if weights.get("unfit"):  # "26 of 26" read as a whole transfer while 30 batch norm tensors were dropped
        parts, rest = [], weights["unfit"]
        if weights.get("input_unfit"):  # the input layer, pretrained on images of other channels
            theirs, mine = weights["input_channels"]
            parts.append(f"{weights['input_unfit']} take the input: {theirs} channel{'s' * (theirs != 1)} in the "
                         f"bundle's network, {mine} in this one")
            rest -= weights["input_unfit"]
        if weights.get("kernel_unfit"):  # a DynUNet built for another voxel size
            parts.append(f"{weights['kernel_unfit']} have other kernel sizes: a DynUNet plans its kernels from "
                         "the voxel size and patch, and the bundle's were planned for others")
            rest -= weights["kernel_unfit"]
        if rest > 0:
            parts.append(f"{rest} more: another norm, width or depth" if parts else "another norm, width or depth")
        why = "; ".join(parts)
        line += (f"; {weights['unfit']} of the bundle's {weights['bundle_tensors']} tensors do not fit this network "
                 f"({why}) and are not used")
    theirs, mine = weights.get("norms") or (None, None)
    norms = f" (its {mine} norm layers: the bundle's network has {theirs} norm)" if mine else ""
    if weights.get("encoder_only"):  # trial 39: a classifier's encoder into a U-Net
        line += (f"; the decoder and the output layer ({weights['total'] - weights['loaded']} tensors) start new"
                 f"{norms}: the bundle's classifier holds a U-Net encoder alone")
    elif weights.get("absent"):  # a batch-norm network from an instance-norm bundle: 22 of 56, without a word
        line += f"; {weights['absent']} of this network's tensors are not in the bundle and start new{norms}"
    if weights.get("new_head") or (weights.get("other_outputs") and weights["task"] != "segmentation"):
        line += f"; the output layer starts new (the bundle's is for {weights['task']})"
    elif weights.get("other_outputs"):
        line += "; the output layer starts new (the bundle's has another number of classes)"
    n = weights.get("frozen_stages") or 0
    if n:
        line += "; the first encoder stage frozen" if n == 1 else f"; the first {n} encoder stages frozen"
        thawed = weights.get("thawed") or 0
        if thawed:
            line += (f", except the {thawed} tensor{'s' * (thawed != 1)} of {'it' if n == 1 else 'them'} that "
                     f"start{'s' * (thawed == 1)} new")
    return line


def training_transform(config: TrainConfig, keys: tuple[str, ...], *, seed: int, patch_size: tuple[int, ...],
                       spacing: tuple[float, ...] | None) -> Any:
    """The run's augmentation: MONAI dictionary transforms on ``keys`` (``augment.augmentation_transforms``).

    Parameters
    ----------
    config : TrainConfig
        ``augment`` and ``data.spatial_dims``.
    keys : tuple of str
        The image first, then what moves with it (labels, targets).
    seed : int
        The draws' seed (``engine.distributed.data_seed``: one per process).
    patch_size, spacing
        The patch the transforms see, and its voxel size.

    Returns
    -------
    Compose or None
        None when no augmentation has a probability above 0.
    """
    if config.augment.off:
        return None
    from napari_medml.augment.transforms import augmentation_transforms

    return augmentation_transforms(config.augment, config.data.spatial_dims, keys, seed=seed,
                                   spatial_shape=patch_size, spacing=spacing)
