"""Instance training on the shared engine: ``fit()`` yields ``TrainReport``s and returns
the best :class:`~napari_medml.instances.model.InstanceModel`.

The network is a segmentation network from the one registry (``nn.segmentation``)
with four output channels: three class logits (background, interior, boundary
between touching objects) and one channel whose sigmoid is the normalised distance
to the object's border (:mod:`napari_medml.instances.targets`). The loss is the
configured class loss (Dice + cross-entropy by default) plus the mean absolute error
of the distance inside the objects (as StarDist trains its distances), weighted 1:1.
Measured on the touching-objects sample (trained on seeds 3-5 for 200 steps, width 8,
scored on seeds 0-2): F1 at IoU 0.5 of 0.91 / 0.96 / 0.98 with the absolute error
against 0.77 / 0.82 / 0.79 with the squared error, whose gradient fades as the
distance gets close and leaves the peaks between touching objects too flat. Validation turns the held-out part's outputs
into instances (:func:`~napari_medml.instances.postprocess.instances_from_outputs`),
scores them with the field's metrics (F1 and AP at IoU 0.5, mean AP over 0.5-0.9)
for a small grid of seed heights and foreground thresholds, and keeps the
post-processing that scores best; "best" epoch is AP at IoU 0.5, then mean AP. A run
without a held-out part tunes the post-processing the same way on (at most
``TUNING_VOXELS`` of) its training data, and its best epoch is the lowest loss.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medml.config import TrainConfig
from napari_medml.engine.distributed import data_seed
from napari_medml.engine.fit import fit_task, run_to_end
from napari_medml.engine.reports import StopToken, TrainReport
from napari_medml.engine.task import Evaluation
from napari_medml.errors import ConfigError
from napari_medml.instances.model import OUT_CHANNELS, InstanceModel, load_instance_model, network_outputs
from napari_medml.instances.postprocess import InstanceParams

__all__ = ["DISTANCE_WEIGHT", "InstanceTask", "fit", "train"]

DISTANCE_WEIGHT = 1.0  # distance loss : class loss (see the module docstring)
DISTANCE_LOSS = "l1"  # "l1" (mean absolute error) or "mse"; see the module docstring
# Post-processing tried on the held-out part at each validation (seed height x threshold).
SEED_HEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5)
FOREGROUND_THRESHOLDS = (0.4, 0.5, 0.6)


def train(images: Any, labels: Any, config: TrainConfig, **kwargs: Any) -> InstanceModel:
    """Run :func:`fit` to the end and return the best model (same arguments)."""
    return run_to_end(fit(images, labels, config, **kwargs))


def fit(images: Any, labels: Any, config: TrainConfig, *, spacing: Any = None, channel_axis: int | None = None,
        stop: StopToken | None = None, resume_from: str | Path | None = None,
        init_model: InstanceModel | None = None, plan: Any = None) -> Generator[TrainReport, None, InstanceModel]:
    """Train an instance segmentation network on images and instance labels.

    The call is ``segmentation.task.fit``'s (``napari_medml.fit`` hands every task the
    same arguments); the labels, the targets and the validation differ.

    Parameters
    ----------
    images : array or sequence of arrays
        One image or several, each ``(Y, X)`` or ``(Z, Y, X)`` plus the axis ``channel_axis``.
    labels : array or sequence of arrays
        Instance labels of each image's spatial shape: 0 background, each object its
        own id. The targets are derived from them (:func:`~napari_medml.instances.targets.instance_target`).
    config : TrainConfig
        ``task="instances"``; ``data.label_mode`` ``"dense"``.
    spacing : tuple or list of tuples, optional
        Voxel size (physical units); distances and sizes are measured in it.
    channel_axis : int, optional
    stop : StopToken, optional
        Stops after the current step, leaving a checkpoint.
    resume_from : str or Path, optional
        A checkpoint folder (or an earlier run's ``checkpoint_dir``).
    init_model : InstanceModel, optional
        Start from this model's weights (fine-tuning).
    plan : None
        Taken for the same call as ``segmentation.task.fit``; an instance run is not
        planned (the segmentation plan reads class ids, not object ids).

    Yields
    ------
    TrainReport
        Epoch ends carry ``val_metrics`` with ``f1_at_0.5``, ``ap_at_0.5``, ``mean_ap``,
        ``n_true`` and ``n_pred``.

    Returns
    -------
    InstanceModel
        The best model (AP at IoU 0.5 on the held-out part, then mean AP), with the
        post-processing that scored best there.

    Raises
    ------
    ConfigError
        A config of another task, or scribble labels.
    InputError
        Bad images or labels (see :func:`~napari_medml.instances.data.prepare_instance_data`).
    """
    if config.task != "instances":
        raise ConfigError(f"instances.fit trains instance networks; for task {config.task!r} use napari_medml.fit")
    if plan is not None:
        raise ConfigError("instance training takes no segmentation plan: leave plan=None")
    def build(base: InstanceModel | None, start_step: int) -> InstanceTask:
        return InstanceTask(config, images, labels, spacing=spacing, channel_axis=channel_axis, base=base,
                            start_step=start_step)

    return (yield from fit_task(build, config, load=load_instance_model, stop=stop, resume_from=resume_from,
                                init_model=init_model))


class InstanceTask:
    """Patches of images with their instance targets, class + distance loss, and
    validation by instance F1/AP (a :class:`~napari_medml.engine.task.TrainingTask`).

    Parameters
    ----------
    config : TrainConfig
    images, labels, spacing, channel_axis
        As for :func:`fit`.
    base : InstanceModel, optional
        Fine-tuning or resuming: its network, patch, normalisation and parameters.
    start_step : int
        The step a resumed run continues from (shifts the seeds).
    """

    def __init__(self, config: TrainConfig, images: Any, labels: Any, *, spacing: Any = None,
                 channel_axis: int | None = None, base: InstanceModel | None = None, start_step: int = 0) -> None:
        from napari_medml.fields import check_stop_metric

        if base is None:  # a saved model keeps the settings it was trained with
            config.check_new_run()
        check_stop_metric("instances", config.optim.early_stopping_metric)  # also when it fine-tunes or resumes
        from napari_medml.engine.devices import patch_voxel_cap, resolve_device
        from napari_medml.instances.data import InstanceSampler, prepare_instance_data
        from napari_medml.segmentation.task import base_start, start_network, training_transform

        dc = config.data
        self.config = config = replace(config, model=base.config.model if base is not None else config.model)
        device = resolve_device(config.device)
        prepared = prepare_instance_data(images, labels, config, spacing=spacing, channel_axis=channel_axis,
                                         base=base, max_patch_voxels=patch_voxel_cap(device, dc.spatial_dims))
        self.val_regions, self.split_note = prepared.val_regions, prepared.split_note
        self.in_channels, self.spacing = prepared.in_channels, prepared.spacing
        self.patch_size, self.normalization = prepared.patch_size, prepared.normalization
        self.params = prepared.params
        if not self.val_regions and prepared.split_note and dc.val_fraction > 0:
            self.split_note += " (held-out part has no objects: validation off)"
        # without a held-out part the post-processing is tuned on (a bounded share of) the training data
        self.tune_regions = [] if self.val_regions else _tuning_regions(prepared.train_regions)

        self.network, self.initial_weights = start_network(config, self.in_channels, OUT_CHANNELS,
                                                           self.patch_size, self.spacing, base=base,
                                                           start_step=start_step)
        self.base_start = None if base is None else base_start(base)
        self.loss_fn: Any = None
        draws = data_seed(config.seed + start_step)  # each data-parallel process draws its own patches
        transform = training_transform(config, ("image", "label", "distance"), seed=draws,
                                       patch_size=self.patch_size, spacing=self.spacing)
        self.sampler = InstanceSampler(prepared.train_regions, self.patch_size, dc.batch_size,
                                       dc.foreground_fraction, sparse=False, transform=transform, seed=draws)

    # --- TrainingTask ---------------------------------------------------------------------

    def start_message(self) -> str:
        if self.initial_weights is None:
            return self.split_note
        from napari_medml.segmentation.task import start_note

        return "\n".join(line for line in (self.split_note, start_note(self.initial_weights)) if line)

    def train_mode(self) -> None:
        from napari_medml.nn.segmentation import keep_frozen_statistics

        self.network.train()
        keep_frozen_statistics(self.network, self.initial_weights or self.base_start)  # as their weights

    def next_batch(self) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        return self.sampler.batch()

    def loss(self, outputs: Any, targets: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        classes, distance = targets
        if self.loss_fn is None:
            from napari_medml.nn.losses import build_loss

            self.loss_fn = build_loss(self.config.optim, 3, outputs.device)
        class_loss = self.loss_fn(outputs[:, :3], classes.long() - 1, classes > 0)
        inside = (classes >= 2).float()  # interior and boundary voxels (not padding)
        error = torch.sigmoid(outputs[:, 3:4]) - distance
        error = error.abs() if DISTANCE_LOSS == "l1" else error**2
        distance_loss = (error * inside).sum() / inside.sum().clamp_min(1.0)
        return class_loss + DISTANCE_WEIGHT * distance_loss

    def evaluate(self, device: torch.device, amp: bool) -> Evaluation | None:
        from napari_medml.instances.metrics import sum_matchings

        regions = self.val_regions or self.tune_regions
        if not regions:
            return None
        self.network.eval()
        outputs = [network_outputs(self.network, torch.from_numpy(r.image).to(device), self.patch_size,
                                   amp=amp, sw_batch_size=self.config.data.batch_size * 2)
                   for r in regions]
        tried = []
        for params in self._candidates():
            scores = sum_matchings(_score(region, fg, dist, self.spacing, params)
                                   for region, (fg, dist) in zip(regions, outputs))
            tried.append(((scores.at(0.5).average_precision, scores.mean_average_precision), params, scores))
        key, params, scores = max(tried, key=lambda t: t[0])  # the first of equals: lower seeds, threshold
        at = scores.at(0.5)
        metrics = {"f1_at_0.5": at.f1, "ap_at_0.5": at.average_precision,
                   "mean_ap": scores.mean_average_precision, "precision_at_0.5": at.precision,
                   "recall_at_0.5": at.recall, "n_true": at.n_true, "n_pred": at.n_pred}
        if not self.val_regions:  # no held-out part: post-processing tuned on training data, loss decides
            return Evaluation(history={"train_instance_metrics": metrics}, key=None,
                              metrics={"tuned_on": "training data", **metrics,
                                       "instance_params": params.to_dict()})
        return Evaluation(report={"val_metrics": metrics}, history={"val_metrics": metrics},
                          key=key, metrics={"tuned_on": "held-out data", **metrics,
                                              "instance_params": params.to_dict()})

    def _candidates(self) -> list[InstanceParams]:
        return [replace(self.params, seed_height=h, foreground_threshold=t)
                for h in SEED_HEIGHTS for t in FOREGROUND_THRESHOLDS]

    def model(self, history: list[dict], provenance: Mapping[str, Any], metrics: Mapping[str, Any]) -> InstanceModel:
        provenance = {"split": self.split_note, **provenance}
        started = self.initial_weights if self.initial_weights is not None else self.base_start
        if started is not None:  # a resumed run's bundle still says where its weights came from
            provenance["initial_weights"] = started
        params = self.params
        if metrics.get("instance_params"):
            params = InstanceParams.from_dict(metrics["instance_params"])
            provenance["post_processing"] = {k: v for k, v in metrics.items() if k != "instance_params"}
        return InstanceModel(self.network, self.config, self.in_channels, self.config.data.spatial_dims,
                             self.patch_size, self.spacing, self.normalization, params,
                             history=list(history), provenance=provenance)


TUNING_VOXELS = 2**20  # at most this many training voxels are predicted at each epoch end to tune


def _tuning_regions(regions: list[Any]) -> list[Any]:
    """Training regions (cropped at their start) worth at most ``TUNING_VOXELS`` voxels in all."""
    out, left = [], TUNING_VOXELS
    for region in regions:
        if left <= 0:
            break
        shape = region.label.shape
        keep = max(1, min(shape[0], left // max(1, int(np.prod(shape[1:])))))
        part = (slice(0, keep),)
        out.append(type(region)(region.image[(slice(None), *part)], region.label[part], region.distance[part],
                                region.instances[part]))
        left -= keep * int(np.prod(shape[1:]))
    return [r for r in out if (r.label >= 2).any()]


def _score(region: Any, foreground: np.ndarray, distance: np.ndarray, spacing: Any, params: InstanceParams) -> Any:
    """Instance scores of one held-out region, over its scored part (label > 0)."""
    from napari_medml.instances.metrics import instance_scores
    from napari_medml.instances.postprocess import instances_from_outputs

    scored = region.label > 0
    pred = instances_from_outputs(foreground, distance, spacing, params)
    return instance_scores(np.where(scored, region.instances, 0), np.where(scored, pred, 0))
