"""Training: ``fit()`` is a generator of ``TrainReport``s that returns the best Model.

Every front runs the same generator: a widget in napari's ``thread_worker``, the
command line with a progress bar, a script through ``train()``.  Stopping (a
``StopToken`` or closing the generator) finishes the current step and leaves a
loadable checkpoint in ``<checkpoint_dir>/last``; the best model so far is in
``<checkpoint_dir>/best``.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import threading
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from napari_medml.config import AugmentConfig, TrainConfig
from napari_medml.engine.reports import StopToken, TrainReport
from napari_medml.errors import ConfigError
from napari_medml.infer import Model
from napari_medml.optim import build_optimizer, build_scheduler

__all__ = ["StopToken", "TrainReport", "finetune_config", "fit", "train"]

_REPORT_EVERY_S = 0.25


def train(images: Any, labels: Any, config: TrainConfig, **kwargs: Any) -> Model:
    """Run ``fit`` to the end and return the best Model (same arguments as ``fit``)."""
    gen = fit(images, labels, config, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def fit(images: Any, labels: Any, config: TrainConfig, *, spacing: Any = None, channel_axis: int | None = None,
        stop: StopToken | None = None, resume_from: str | Path | None = None,
        init_model: Model | None = None) -> Generator[TrainReport, None, Model]:
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

    Yields
    ------
    TrainReport
        At least every quarter second of work and at every epoch end.

    Returns
    -------
    Model
        The best model (by ``optim.early_stopping_metric`` on validation).
    """
    if config.task == "classification":
        # images are ClassSamples (napari_medml.classify_data); labels are carried inside them
        from napari_medml.classify import fit_classifier

        if labels is not None:
            raise ConfigError("classification: pass the classes inside ClassSamples and labels=None")
        return (yield from fit_classifier(images, config, stop=stop, init_from=init_model))
    run = _Run(config, images, labels, spacing, channel_axis, resume_from, init_model)
    return (yield from run.loop(stop))


# --- one training run -------------------------------------------------------------------


class _Run:
    """State of one run: data, network, optimizer; ``loop`` is the generator body."""

    def __init__(self, config: TrainConfig, images: Any, labels: Any, spacing: Any,
                 channel_axis: int | None, resume_from: str | Path | None, init_model: Model | None) -> None:
        from napari_medml import bundle, data
        from napari_medml.devices import amp_enabled, patch_voxel_cap, resolve_device
        from napari_medml.losses import build_loss
        from napari_medml.models import build_network, freeze_encoder_stages
        from napari_medml.train_data import prepare_training_data

        dc = config.data
        self.sparse = dc.label_mode == "sparse"
        self.start_step = 0
        self.resume_state: dict | None = None
        base: Model | None = init_model
        if resume_from is not None:
            ckpt = bundle.find_checkpoint(resume_from)
            base = bundle.load_model(ckpt)
            self.resume_state, self.resume_tensors = bundle.read_checkpoint(ckpt)
            self.start_step = int(self.resume_state["step"])
        model_cfg = base.config.model if base is not None else config.model
        self.config = config = replace(config, model=model_cfg)
        self.device = resolve_device(config.device)
        self.amp = amp_enabled(self.device, config.amp)

        prepared = prepare_training_data(images, labels, config, spacing=spacing, channel_axis=channel_axis,
                                         base=base, max_patch_voxels=patch_voxel_cap(self.device, dc.spatial_dims))
        self.train_regions, self.val_regions = prepared.train_regions, prepared.val_regions
        self.split_note, self.class_ids = prepared.split_note, prepared.class_ids
        self.notes = [prepared.split_note, *prepared.warnings]  # the first report carries them
        self.in_channels, self.spacing = prepared.in_channels, prepared.spacing
        self.patch_size, self.normalization = prepared.patch_size, prepared.normalization
        class_ids = self.class_ids

        # network, optimizer, loss
        torch.manual_seed(config.seed + self.start_step)
        self.network = build_network(config.model, dc.spatial_dims, self.in_channels, len(class_ids),
                                     patch_size=self.patch_size, spacing=self.spacing)
        self.initial_weights: dict[str, Any] | None = None
        if base is not None:
            self.network.load_state_dict(base.network.state_dict())
        elif config.model.init_from:
            from napari_medml.bundle import transfer_weights

            self.initial_weights = transfer_weights(self.network, config.model.init_from)
        freeze_encoder_stages(self.network, config.model.freeze_stages)
        self.network.to(self.device)
        self.loss_fn = build_loss(config.optim, len(class_ids), self.device)
        self.optimizer = build_optimizer(self.network, config)
        self.total_steps = config.optim.epochs * config.optim.steps_per_epoch
        self.scheduler, self.plateau = build_scheduler(self.optimizer, config, self.total_steps)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp) if self.amp else None
        self.history: list[dict] = []
        self.best_metric: float | None = None
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs = 0
        if self.resume_state is not None:
            self._restore()
        self.checkpoint_dir = Path(config.checkpoint_dir or tempfile.mkdtemp(prefix="napari-medml-"))
        transform = None
        if config.augment != AugmentConfig.none() and any(
                getattr(config.augment, f).prob > 0 for f in config.augment.__dataclass_fields__):
            from napari_medml.transforms import augmentation_transforms

            transform = augmentation_transforms(config.augment, dc.spatial_dims, seed=config.seed + self.start_step,
                                                spatial_shape=self.patch_size, spacing=self.spacing)
        self.sampler = data.PatchSampler(self.train_regions, self.patch_size, dc.batch_size,
                                         dc.foreground_fraction, sparse=self.sparse, transform=transform,
                                         seed=config.seed + self.start_step)

    # --- the generator body -------------------------------------------------------------

    def loop(self, stop: StopToken | None) -> Generator[TrainReport, None, Model]:
        cfg = self.config.optim
        spe = cfg.steps_per_epoch
        start = time.monotonic()
        last_report = -math.inf  # the first step is always reported
        # Losses stay on the device until a report reads them: no GPU sync per step.
        losses: list[torch.Tensor] = []
        epoch_losses: list[torch.Tensor] = []
        step = self.start_step
        self.network.train()
        try:
            while step < self.total_steps:
                step += 1
                epoch = (step - 1) // spe + 1
                lr = self._lr()  # the rate this step used
                loss = self._train_step()
                losses.append(loss)
                epoch_losses.append(loss)
                now = time.monotonic()
                elapsed = now - start
                done_here = step - self.start_step
                eta = elapsed / done_here * (self.total_steps - step)
                message = ""
                finished = False
                if stop is not None and stop.stopped:
                    message, finished = "stopped by user", True
                elif cfg.max_minutes is not None and elapsed >= cfg.max_minutes * 60:
                    message, finished = f"time limit of {cfg.max_minutes:g} min reached", True
                epoch_end = step % spe == 0 or step == self.total_steps
                fields: dict[str, Any] = {}
                if epoch_end:
                    fields, early = self._end_epoch(step, epoch, _mean(epoch_losses), elapsed)
                    epoch_losses = []
                    self.network.train()  # validation left it in eval mode
                    if early and not finished:
                        message, finished = early, True
                if finished and not epoch_end:
                    self._save_last(step, epoch)
                if self.notes:  # the split and any warning about it, before any other news
                    message = "\n".join([*self.notes, message] if message else self.notes)
                    self.notes = []
                if epoch_end or finished or now - last_report >= _REPORT_EVERY_S:
                    report = TrainReport(step=step, epoch=epoch, total_steps=self.total_steps,
                                         train_loss=_mean(losses), learning_rate=lr,
                                         elapsed_s=elapsed, eta_s=None if finished else eta,
                                         epoch_end=epoch_end, message=message, **fields)
                    losses = []
                    last_report = now
                    yield report
                if finished:
                    break
        except GeneratorExit:
            # closed from outside (e.g. a worker quit): leave a checkpoint, then end quietly
            if step > self.start_step:
                self._save_last(step, (step - 1) // spe + 1)
            return self._best_model()
        return self._best_model()

    # --- steps ------------------------------------------------------------------------

    def _train_step(self) -> torch.Tensor:
        """One optimisation step (network already in train mode); the loss stays on the device."""
        image, label = self.sampler.batch()
        # Plain (pageable) copies: pinning a fresh batch every step costs more than it saves.
        image = image.to(self.device)
        label = label.to(self.device)
        mask = label > 0
        target = label.long() - 1
        self.optimizer.zero_grad(set_to_none=True)
        ctx = torch.autocast("cuda", dtype=torch.float16) if self.amp else contextlib.nullcontext()
        with ctx:
            logits = self.network(image)
        loss = self.loss_fn(logits.float(), target, mask)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12.0)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12.0)
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach()

    def _end_epoch(self, step: int, epoch: int, train_loss: float, elapsed: float) -> tuple[dict, str]:
        cfg = self.config.optim
        fields: dict[str, Any] = {}
        if self.val_regions:
            fields = self._validate()
        if cfg.early_stopping_metric == "val_loss":
            value, higher = fields.get("val_loss"), False
        elif cfg.early_stopping_metric == "val_accuracy":
            value, higher = (fields.get("val_metrics") or {}).get("accuracy"), True
        else:
            value, higher = fields.get("val_mean_dice"), True
        if value is None:  # no validation: the training loss decides
            value, higher = train_loss, False
        if self.plateau is not None:
            self.plateau.step(value if higher else -value)
        improved = (self.best_metric is None or (value > self.best_metric if higher else value < self.best_metric))
        if improved:
            self.best_metric, self.best_epoch, self.bad_epochs = float(value), epoch, 0
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.network.state_dict().items()}
        else:
            self.bad_epochs += 1
        entry = {"epoch": epoch, "step": step, "train_loss": train_loss, "learning_rate": self._lr(),
                 "elapsed_s": elapsed,
                 "val_loss": fields.get("val_loss"), "val_mean_dice": fields.get("val_mean_dice"),
                 "val_dice": {str(k): v for k, v in (fields.get("val_dice") or {}).items()},
                 "val_iou": {str(k): v for k, v in (fields.get("val_iou") or {}).items()}}
        self.history.append(entry)
        if improved:
            self._current_model().save(self.checkpoint_dir / "best")
        self._save_last(step, epoch)
        message = ""
        patience = cfg.early_stopping_patience
        if patience is not None and self.bad_epochs >= patience:
            message = f"early stopping: no improvement for {self.bad_epochs} epochs (best epoch {self.best_epoch})"
        return {**fields, "best": improved}, message

    def _validate(self) -> dict[str, Any]:
        from napari_medml.validation import validate

        return validate(self.network, self.val_regions, patch_size=self.patch_size, class_ids=self.class_ids,
                        loss_fn=self.loss_fn, device=self.device, amp=self.amp,
                        sw_batch_size=self.config.data.batch_size * 2)

    # --- checkpoints and models ---------------------------------------------------------

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _current_model(self, state: Mapping[str, torch.Tensor] | None = None) -> Model:
        network = self.network
        if state is not None:
            network.load_state_dict(state)
        provenance = {"split": self.split_note, "checkpoint_dir": str(self.checkpoint_dir),
                      "best_epoch": self.best_epoch, "label_mode": self.config.data.label_mode}
        if self.initial_weights is not None:
            provenance["initial_weights"] = self.initial_weights
        return Model(network, self.config, self.class_ids, self.in_channels, self.config.data.spatial_dims,
                     self.patch_size, self.spacing, self.normalization, history=self.history,
                     provenance=provenance)

    def _save_last(self, step: int, epoch: int) -> None:
        from napari_medml.bundle import write_checkpoint

        scalars = {"step": step, "epoch": epoch, "best_metric": self.best_metric, "best_epoch": self.best_epoch,
                   "bad_epochs": self.bad_epochs, "total_steps": self.total_steps}
        write_checkpoint(self._current_model(), self.checkpoint_dir / "last", self.optimizer,
                         self.plateau or self.scheduler, self.scaler, scalars)

    def _best_model(self) -> Model:
        if self.best_state is not None:
            return self._current_model(self.best_state)
        return self._current_model()

    def _restore(self) -> None:
        from napari_medml.bundle import optimizer_state

        state = self.resume_state
        assert state is not None
        self.optimizer.load_state_dict(optimizer_state(state, self.resume_tensors))
        sched = self.plateau or self.scheduler
        if sched is not None and state.get("scheduler"):
            sched.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.best_metric = state.get("best_metric")
        self.best_epoch = int(state.get("best_epoch") or 0)
        self.bad_epochs = int(state.get("bad_epochs") or 0)


def _mean(losses: list[torch.Tensor]) -> float:
    """Mean of the step losses since the last read (one device-to-host copy)."""
    return float(torch.stack(losses).float().mean()) if losses else float("nan")


def finetune_config(config: TrainConfig, steps: int, augment: AugmentConfig | None = None) -> TrainConfig:
    """A short dense fine-tuning run of ``config``: ``steps`` steps in one epoch, constant rate.

    No validation split (the corrections are few, and all of them should be learned), so
    the run ends with one checkpoint and no sliding-window pass; ``fit(init_model=...)``
    keeps the model's patch size, classes and normalisation.
    """
    data = replace(config.data, label_mode="dense", val_fraction=0.0)
    optim = replace(config.optim, epochs=1, steps_per_epoch=steps, schedule="constant",
                    max_minutes=None, early_stopping_patience=None)
    return replace(config, data=data, optim=optim, augment=config.augment if augment is None else augment)
