"""The classification training loop behind :func:`napari_medml.classify.fit_classifier`.

:class:`ClassifierRun` holds one run's state (stratified split, normalisation,
network, optimizer, best epoch) and its ``loop`` is the generator body. It reuses the
engine's pieces: ``TrainReport``/``StopToken``, the optimizer and schedule builders of
``optim``, ``devices`` for CUDA/MPS/CPU and mixed precision, ``data`` for intensity
normalisation and ``transforms.augmentation_transforms`` for augmentation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_medml.classify import _PREDICT_BATCH, Classifier, _autocast, _normalize
from napari_medml.classify_data import ClassSamples
from napari_medml.classify_metrics import classification_report
from napari_medml.config import AugmentConfig, OptimConfig, TrainConfig
from napari_medml.errors import ConfigError, InputError
from napari_medml.train import StopToken, TrainReport

__all__ = ["ClassifierReport", "ClassifierRun", "stratified_split"]

_REPORT_EVERY_S = 0.25


@dataclass(frozen=True)
class ClassifierReport(TrainReport):
    """A ``TrainReport`` that also carries, at validated epoch ends, the full
    ``classify_metrics.classification_report`` (confusion matrix, ROC, per class) of
    that epoch, so a front can draw them live; ``val_metrics`` keeps the scalars."""

    val_report: Mapping[str, Any] | None = field(default=None, hash=False, repr=False)


class ClassifierRun:
    """State of one run: split, normalisation, network, optimizer; ``loop`` is the body."""

    def __init__(self, samples: ClassSamples, config: TrainConfig, init_from: Any) -> None:
        from napari_medml.classify_models import build_classifier_network, freeze_stages
        from napari_medml.data import fit_normalization
        from napari_medml.devices import amp_enabled, resolve_device
        from napari_medml.optim import build_optimizer, build_scheduler

        if config.task != "classification":
            raise ConfigError(f"fit_classifier trains classifiers; set task='classification' (got {config.task!r})")
        if not isinstance(samples, ClassSamples):
            raise InputError("fit_classifier needs ClassSamples (see napari_medml.classify_data)")
        self.samples, self.config = samples, config
        labelled = np.flatnonzero(samples.y > 0)
        class_ids = tuple(int(c) for c in np.unique(samples.y[labelled]))
        if len(class_ids) < 2:
            found = f"only class {class_ids[0]} is" if class_ids else "no class is"
            raise InputError(f"{found} painted among the {len(samples)} {samples.mode}s: paint at least two "
                             "different classes (a classifier learns to tell classes apart)")
        self.class_ids = class_ids
        targets = np.searchsorted(np.asarray(class_ids), samples.y)
        self.train_idx, self.val_idx = stratified_split(samples.y, config.data.val_fraction, config.seed)
        self.targets = targets
        counts = {c: int((samples.y[self.train_idx] == c).sum()) for c in class_ids}
        self.split_note = (f"{len(self.train_idx)} training / {len(self.val_idx)} validation {samples.mode}s; "
                           f"training per class {counts}")
        ic = samples.image_channels
        self.normalization = fit_normalization([samples.x[self.train_idx, :ic].swapaxes(0, 1)],
                                               config.data.normalization)
        self.x = _normalize(np.array(samples.x, dtype=np.float32), self.normalization, ic)

        torch.manual_seed(config.seed)
        self.device = resolve_device(config.device)
        self.amp = amp_enabled(self.device, config.amp)
        self.network = build_classifier_network(config.model, samples.spatial_dims, samples.x.shape[1],
                                                len(class_ids), input_size=samples.x.shape[2:])
        source = init_from if init_from is not None else config.model.init_from
        self.provenance: dict[str, Any] = {"initial_weights": "random (seed %d)" % config.seed}
        if source is not None:
            from napari_medml.bundle import transfer_weights

            self.provenance["initial_weights"] = transfer_weights(self.network, source)
        self.frozen = freeze_stages(self.network, config.model.freeze_stages)
        if self.frozen:
            self.provenance["frozen_stages"] = config.model.freeze_stages
        self.network.to(self.device)
        self.loss_fn = _loss(config.optim, len(class_ids), self.device)
        self.optimizer = build_optimizer(self.network, config)
        self.total_steps = config.optim.epochs * config.optim.steps_per_epoch
        self.scheduler, self.plateau = build_scheduler(self.optimizer, config, self.total_steps)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.transform = _augmentation(config.augment, samples, config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.batch_size = max(1, min(config.data.batch_size, len(self.train_idx)))
        self.queue: list[int] = []
        self.history: list[dict] = []
        self.best_key: tuple[float, float] | None = None
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_metrics: dict = {}
        self.bad_epochs = 0

    # --- the generator body ---------------------------------------------------------------

    def loop(self, stop: StopToken | None) -> Generator[TrainReport, None, Classifier]:
        cfg = self.config.optim
        spe = cfg.steps_per_epoch
        start = last_report = time.monotonic()
        losses: list[float] = []
        epoch_losses: list[float] = []
        note = self.split_note
        initial = self.provenance["initial_weights"]
        if isinstance(initial, dict):
            note += f"; {initial['loaded']} of {initial['total']} tensors from {initial['source']}"
        step = 0
        while step < self.total_steps:
            step += 1
            epoch = (step - 1) // spe + 1
            loss = self._train_step()
            losses.append(loss)
            epoch_losses.append(loss)
            now = time.monotonic()
            elapsed = now - start
            message, finished = "", False
            if stop is not None and stop.stopped:
                message, finished = "stopped by user", True
            elif cfg.max_minutes is not None and elapsed >= cfg.max_minutes * 60:
                message, finished = f"time limit of {cfg.max_minutes:g} min reached", True
            epoch_end = step % spe == 0 or step == self.total_steps
            fields: dict[str, Any] = {}
            if epoch_end:
                fields, early = self._end_epoch(step, epoch, float(np.mean(epoch_losses)), elapsed)
                epoch_losses = []
                if early and not finished:
                    message, finished = early, True
            if epoch_end or finished or now - last_report >= _REPORT_EVERY_S:
                if note:  # the first report says how the data were split and initialised
                    message, note = "; ".join(m for m in (note, message) if m), ""
                eta = None if finished else elapsed / step * (self.total_steps - step)
                yield ClassifierReport(step=step, epoch=epoch, total_steps=self.total_steps,
                                       train_loss=float(np.mean(losses)), learning_rate=self._lr(),
                                       elapsed_s=elapsed, eta_s=eta, epoch_end=epoch_end, message=message,
                                       **fields)
                losses, last_report = [], now
            if finished:
                break
        classifier = self._classifier(self.best_state)
        if self.config.checkpoint_dir:
            classifier.save(Path(self.config.checkpoint_dir) / "best")
        return classifier

    # --- steps ----------------------------------------------------------------------------

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        while len(self.queue) < self.batch_size:
            self.queue.extend(self.rng.permutation(self.train_idx).tolist())
        idx, self.queue = self.queue[: self.batch_size], self.queue[self.batch_size:]
        x = self.x[idx]
        if self.transform is not None:
            x = np.stack([self.transform(s) for s in x])
        return torch.from_numpy(x), torch.from_numpy(self.targets[idx])

    def _train_step(self) -> float:
        self.network.train()
        for module in self.frozen:  # frozen stages keep their normalisation statistics too
            module.eval()
        image, target = self._batch()
        image, target = image.to(self.device), target.to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with _autocast(self.amp):
            logits = self.network(image)
        loss = self.loss_fn(logits.float(), target)
        params = [p for p in self.network.parameters() if p.requires_grad]
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(params, 12.0)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 12.0)
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return float(loss.detach())

    def _evaluate(self, idx: np.ndarray) -> tuple[float, dict]:
        self.network.eval()
        logits = []
        with torch.inference_mode(), _autocast(self.amp):
            for start in range(0, len(idx), _PREDICT_BATCH):
                batch = torch.from_numpy(self.x[idx[start:start + _PREDICT_BATCH]]).to(self.device)
                logits.append(self.network(batch).float())
        out = torch.cat(logits)
        target = torch.from_numpy(self.targets[idx]).to(self.device)
        loss = float(self.loss_fn(out, target))
        proba = torch.softmax(out, dim=1).cpu().numpy()
        report = classification_report(self.samples.y[idx], proba, self.class_ids,
                                       class_names=self.config.class_names)
        return loss, report

    def _end_epoch(self, step: int, epoch: int, train_loss: float, elapsed: float) -> tuple[dict, str]:
        cfg = self.config.optim
        fields: dict[str, Any] = {}
        report: dict = {}
        if len(self.val_idx):
            val_loss, report = self._evaluate(self.val_idx)
            scalars = {k: report[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "auc")
                       if report.get(k) is not None}
            fields = {"val_loss": val_loss, "val_metrics": scalars, "val_report": report}
            # higher is better in both parts of the key; accuracy ties go to the lower loss
            key = (-val_loss, 0.0) if cfg.early_stopping_metric == "val_loss" else (report["accuracy"], -val_loss)
        else:
            key = (-train_loss, 0.0)
        if self.plateau is not None:
            self.plateau.step(key[0])
        improved = self.best_key is None or key > self.best_key
        if improved:
            self.best_key, self.best_epoch, self.bad_epochs = key, epoch, 0
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.network.state_dict().items()}
            self.best_metrics = {**report, "split": "validation", "epoch": epoch} if report else {}
        else:
            self.bad_epochs += 1
        self.history.append({"epoch": epoch, "step": step, "train_loss": train_loss, "learning_rate": self._lr(),
                             "elapsed_s": elapsed, "val_loss": fields.get("val_loss"),
                             **{f"val_{k}": v for k, v in (fields.get("val_metrics") or {}).items()}})
        if improved and self.config.checkpoint_dir:
            self._classifier(None).save(Path(self.config.checkpoint_dir) / "best")
        message = ""
        patience = cfg.early_stopping_patience
        if patience is not None and self.bad_epochs >= patience:
            message = f"early stopping: no improvement for {self.bad_epochs} epochs (best epoch {self.best_epoch})"
        return {**fields, "best": improved}, message

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _classifier(self, state: Mapping[str, torch.Tensor] | None) -> Classifier:
        if state is not None:
            self.network.load_state_dict(state)
        s = self.samples
        provenance = {**self.provenance, "split": self.split_note, "best_epoch": self.best_epoch}
        return Classifier(self.network, self.config, self.class_ids, mode=s.mode, in_channels=s.x.shape[1],
                          image_channels=s.image_channels, spatial_dims=s.spatial_dims, input_size=s.x.shape[2:],
                          sample_params=s.params, normalization=self.normalization, metrics=self.best_metrics,
                          history=self.history, provenance=provenance)


def stratified_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) of the labelled samples, ``val_fraction`` of each class held out.

    A class with a single sample stays in training; otherwise at least one sample of
    each class is held out when ``val_fraction > 0`` and at least one stays in training.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(y[y > 0]):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = 0
        if val_fraction > 0 and len(idx) >= 2:
            n_val = min(max(1, int(round(val_fraction * len(idx)))), len(idx) - 1)
        val.extend(idx[:n_val].tolist())
        train.extend(idx[n_val:].tolist())
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(val, dtype=np.int64))


def _loss(config: OptimConfig, num_classes: int, device: torch.device) -> Callable[..., torch.Tensor]:
    """Cross-entropy (class weights, label smoothing) or MONAI's focal loss."""
    weight = None
    if config.class_weights is not None:
        if len(config.class_weights) != num_classes or any(w < 0 for w in config.class_weights):
            raise ConfigError(f"class_weights has {len(config.class_weights)} values but there are {num_classes} "
                              "classes: give one weight >= 0 per class, in class-id order")
        weight = torch.as_tensor(config.class_weights, dtype=torch.float32, device=device)
    if config.loss == "ce":
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    if config.loss == "focal":
        from monai.losses import FocalLoss

        focal = FocalLoss(to_onehot_y=True, use_softmax=True, weight=weight)
        return lambda logits, target: focal(logits, target[:, None])
    raise ConfigError(f"loss {config.loss!r} is for segmentation: classification uses 'ce' or 'focal'")


def _augmentation(config: AugmentConfig, samples: ClassSamples, seed: int):  # noqa: ANN202
    """Per-sample augmentation ``(C, *spatial) -> (C, *spatial)``, or None when all is off."""
    if all(getattr(config, f).prob <= 0 for f in AugmentConfig.__dataclass_fields__):
        return None
    from napari_medml.transforms import augmentation_transforms

    ic, sd = samples.image_channels, samples.spatial_dims
    masks = samples.x.shape[1] - ic
    keys = ("image", "mask") if masks else ("image",)
    compose = augmentation_transforms(config, sd, keys=keys, seed=seed, spatial_shape=samples.x.shape[2:])

    def apply(x: np.ndarray) -> np.ndarray:
        item = {"image": x[:ic]}
        if masks:
            item["mask"] = x[ic:]  # 0/1 object mask: follows spatial transforms only (nearest)
        out = compose(item)
        parts = [out["image"].numpy()] + ([out["mask"].numpy().astype(np.float32)] if masks else [])
        return np.concatenate(parts).astype(np.float32, copy=False)

    return apply
