"""Classification: train a classifier on :class:`~napari_medml.classify_data.ClassSamples`,
use it, and save or load it as a bundle.

``fit_classifier`` is a generator of ``train.TrainReport`` that *returns* the best
:class:`Classifier`, like segmentation's ``train.fit``, so every front runs it the same
way. It reuses the engine's pieces: ``TrainReport``/``StopToken``, the optimizer and
schedule builders of ``train``, ``devices`` for CUDA/MPS/CPU and mixed precision,
``data`` for intensity normalisation, ``transforms.augmentation_transforms`` for
augmentation and ``bundle`` for the bundle format (``config.json`` +
``weights.safetensors``, atomic write, never pickle).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_medml.classify_data import ClassSamples, make_samples, prediction_table, tile_probability_map
from napari_medml.classify_data import class_labels as labels_from_classes
from napari_medml.classify_metrics import classification_report
from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig, from_dict, to_dict
from napari_medml.errors import BundleError, Cancelled, ConfigError, InputError
from napari_medml.train import StopToken, TrainReport

__all__ = ["ClassPrediction", "Classifier", "classification_config", "fit_classifier", "load_classifier",
           "stratified_split", "train_classifier"]

_REPORT_EVERY_S = 0.25
_PREDICT_BATCH = 64


def classification_config(spatial_dims: int = 2, **optim: Any) -> TrainConfig:
    """A sensible starting configuration for a small classification data set.

    ``smallcnn`` with batch norm, cross-entropy, AdamW with a cosine schedule, 30
    epochs of 20 steps of 16 samples, best epoch by validation accuracy. Keyword
    arguments replace ``OptimConfig`` fields.
    """
    return TrainConfig(
        task="classification",
        data=DataConfig(spatial_dims=spatial_dims, batch_size=16, val_fraction=0.2),
        model=ModelConfig(network="smallcnn", features=16, depth=4, norm="batch", dropout=0.1),
        optim=replace(OptimConfig(loss="ce", schedule="cosine", epochs=30, steps_per_epoch=20,
                                  early_stopping_metric="val_accuracy"), **optim),
    )


# --- the classifier -----------------------------------------------------------------------


@dataclass(frozen=True)
class ClassPrediction:
    """What :meth:`Classifier.classify` returns, ready for napari layers.

    Attributes
    ----------
    labels : np.ndarray
        Labels at the input's shape: each sample, object or tile filled with its class.
    table : dict
        Columns for the labels layer's ``features`` (index, class, ``prob_<id>``...).
    classes : np.ndarray
        Predicted class id per sample.
    proba : np.ndarray
        ``(N, K)`` probabilities, column k = ``class_ids[k]``.
    class_ids : tuple of int
    probabilities : np.ndarray or None
        Tile mode: ``(K, *image_shape)`` float32 probability map.
    """

    labels: np.ndarray
    table: dict
    classes: np.ndarray
    proba: np.ndarray
    class_ids: tuple[int, ...]
    probabilities: np.ndarray | None = None


class Classifier:
    """A classification network plus what is needed to use it on new data.

    Attributes
    ----------
    network : torch.nn.Module
    config : TrainConfig
    class_ids : tuple of int
        Output k -> class id (painted ids, unchanged).
    mode : {"image", "object", "tile"}
    in_channels, image_channels, spatial_dims : int
    input_size : tuple of int
    sample_params : dict
        How samples are made (``ClassSamples.params``: tile size, margin...).
    normalization : dict
        Intensity statistics of the image channels (``data.fit_normalization``).
    metrics : dict
        Validation report of the best epoch (``classify_metrics.classification_report``).
    history : list of dict
    provenance : dict
        Where the initial weights came from, the split, the best epoch.
    """

    def __init__(self, network: nn.Module, config: TrainConfig, class_ids: Sequence[int], *, mode: str,
                 in_channels: int, image_channels: int, spatial_dims: int, input_size: Sequence[int],
                 sample_params: Mapping[str, Any], normalization: dict, metrics: dict | None = None,
                 history: list[dict] | None = None, provenance: dict | None = None) -> None:
        self.network = network
        self.config = config
        self.class_ids = tuple(int(c) for c in class_ids)
        self.mode = mode
        self.in_channels = int(in_channels)
        self.image_channels = int(image_channels)
        self.spatial_dims = int(spatial_dims)
        self.input_size = tuple(int(s) for s in input_size)
        self.sample_params = dict(sample_params)
        self.normalization = normalization
        self.metrics = dict(metrics or {})
        self.history = list(history or [])
        self.provenance = dict(provenance or {})

    def __repr__(self) -> str:
        return (f"Classifier({self.config.model.network}, {self.mode} level, {self.spatial_dims}D, "
                f"class_ids={self.class_ids}, input_size={self.input_size})")

    @property
    def class_names(self) -> dict[int, str]:
        names = dict(self.config.class_names or {})
        return {c: str(names.get(c, f"class {c}")) for c in self.class_ids}

    def prepare(self, image: np.ndarray, *, instances: np.ndarray | None = None,
                class_labels: np.ndarray | None = None, channel_axis: int | None = None) -> ClassSamples:
        """Samples from new data, made the way the training samples were."""
        return make_samples(self.mode, image, self.sample_params, class_labels=class_labels,
                            instances=instances, channel_axis=channel_axis)

    def predict_proba(self, samples: ClassSamples | np.ndarray, *, stop: StopToken | None = None) -> np.ndarray:
        """Class probabilities ``(N, K)`` float32, column k = ``class_ids[k]``.

        Raises
        ------
        BundleError
            Samples of another mode or channel count than the classifier's.
        Cancelled
            Stopped through ``stop``.
        """
        from napari_medml.devices import amp_enabled, resolve_device

        x = self._inputs(samples)
        device = resolve_device(self.config.device)
        amp = amp_enabled(device, self.config.amp)
        self.network.to(device).eval()
        out = []
        with torch.inference_mode(), _autocast(amp):
            for start in range(0, len(x), _PREDICT_BATCH):
                if stop is not None and stop.stopped:
                    raise Cancelled("classification stopped")
                batch = torch.from_numpy(x[start:start + _PREDICT_BATCH]).to(device)
                out.append(torch.softmax(self.network(batch).float(), dim=1).cpu().numpy())
        k = len(self.class_ids)
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, k), np.float32)

    def predict(self, samples: ClassSamples | np.ndarray) -> np.ndarray:
        """The most probable class id per sample."""
        return np.asarray(self.class_ids, dtype=np.int64)[np.argmax(self.predict_proba(samples), axis=1)]

    def classify(self, image: np.ndarray, *, instances: np.ndarray | None = None,
                 channel_axis: int | None = None, stop: StopToken | None = None) -> ClassPrediction:
        """Classify every sample, object or tile of an image; results as layer data."""
        samples = self.prepare(image, instances=instances, channel_axis=channel_axis)
        proba = self.predict_proba(samples, stop=stop)
        classes = np.asarray(self.class_ids, dtype=np.int64)[np.argmax(proba, axis=1)]
        labels = labels_from_classes(samples, classes, instances=instances)
        table = prediction_table(samples, classes, proba, self.class_ids)
        prob_map = tile_probability_map(samples, proba) if samples.mode == "tile" else None
        return ClassPrediction(labels=labels, table=table, classes=classes, proba=proba,
                               class_ids=self.class_ids, probabilities=prob_map)

    def save(self, path: str | Path) -> Path:
        """Write a bundle folder (``config.json`` + ``weights.safetensors``), atomically."""
        return _write_bundle(self.description(), self.network, path)

    def description(self) -> dict:
        """The ``config.json`` content (keys shared with segmentation bundles, plus mode and metrics)."""
        from napari_medml.bundle import SCHEMA_VERSION, library_versions

        cfg = self.config
        return {
            "schema_version": SCHEMA_VERSION,
            "task": "classification",
            "mode": self.mode,
            "network": {"name": cfg.model.network, "arguments": to_dict(cfg.model),
                        "spatial_dims": self.spatial_dims, "in_channels": self.in_channels,
                        "out_channels": len(self.class_ids)},
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "image_channels": self.image_channels,
            "out_channels": len(self.class_ids),
            "class_ids": list(self.class_ids),
            "class_names": {str(c): n for c, n in self.class_names.items()},
            "input_size": list(self.input_size),
            "patch_size": list(self.input_size),
            "spacing": None,
            "sample_params": _plain(self.sample_params),
            "normalization": self.normalization,
            "metrics": self.metrics,
            "history": self.history,
            "versions": library_versions(),
            "seed": cfg.seed,
            "provenance": self.provenance,
            "train_config": to_dict(cfg),
        }

    def _inputs(self, samples: ClassSamples | np.ndarray) -> np.ndarray:
        from napari_medml.classify_data import _resize

        if isinstance(samples, ClassSamples):
            if samples.mode != self.mode:
                raise BundleError(f"this classifier was trained on {self.mode}-level samples, "
                                  f"not {samples.mode}-level: make {self.mode}-level samples")
            x = samples.x
        else:
            x = np.asarray(samples, dtype=np.float32)
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise BundleError(
                f"samples have shape {x.shape} but the classifier takes (N, {self.in_channels}, "
                f"{', '.join(str(s) for s in self.input_size)}): use images with {self.image_channels} "
                f"channel(s) in {self.spatial_dims}D"
            )
        if tuple(x.shape[2:]) != self.input_size:
            x = np.stack([_resize(s, self.input_size, order=1) for s in x]) if len(x) else x
        x = np.array(x, dtype=np.float32)  # a copy: the caller's samples stay untouched
        return _normalize(x, self.normalization, self.image_channels)


def _normalize(x: np.ndarray, stats: dict, image_channels: int) -> np.ndarray:
    """Normalise the image channels of ``(N, C, ...)`` in place (mask channels stay 0/1)."""
    from napari_medml.data import apply_normalization

    apply_normalization(x[:, :image_channels].swapaxes(0, 1), stats)
    return x


def _autocast(amp: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# --- bundles ------------------------------------------------------------------------------


def _write_bundle(description: dict, network: nn.Module, path: str | Path) -> Path:
    # bundle.write_bundle builds the segmentation description itself; until it takes a
    # prepared one, the same atomic temp-folder-then-rename write is done here.
    from safetensors.torch import save_file

    from napari_medml.bundle import _OWN_FILES, CONFIG_NAME, WEIGHTS_NAME

    target = Path(path).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise BundleError(f"cannot write a model bundle to {target}: a file of that name exists")
    if target.is_dir():
        foreign = [p.name for p in target.iterdir() if p.name not in _OWN_FILES]
        if foreign:
            raise BundleError(f"{target} exists and holds other files ({', '.join(sorted(foreign)[:3])}): "
                              "choose a new or empty folder for the bundle")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in network.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(description, indent=2))
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_classifier(path: str | Path) -> Classifier:
    """Load a classification bundle folder (never unpickles).

    Raises
    ------
    BundleError
        Missing or damaged files, a segmentation bundle, or weights that do not fit.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from napari_medml.bundle import CONFIG_NAME, WEIGHTS_NAME, load_weights, read_description
    from napari_medml.classify_models import build_classifier_network

    path = Path(path).expanduser()
    desc = read_description(path)
    if desc.get("task") != "classification":
        raise BundleError(f"{path} is a {desc.get('task')!r} bundle, not a classifier: load it as a "
                          "segmentation model, or choose a classification bundle")
    try:
        config = from_dict(TrainConfig, desc["train_config"])
        class_ids = tuple(int(c) for c in desc["class_ids"])
        spatial_dims, in_channels = int(desc["spatial_dims"]), int(desc["in_channels"])
        input_size = tuple(int(s) for s in desc["input_size"])
        network = build_classifier_network(config.model, spatial_dims, in_channels, len(class_ids),
                                           input_size=input_size)
        mode = desc["mode"]
        image_channels = int(desc.get("image_channels", in_channels))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BundleError(f"{path / CONFIG_NAME} does not describe a classifier this version can build "
                          f"({exc}): the bundle is damaged or from a newer version") from exc
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise BundleError(f"model bundle {path} has no {WEIGHTS_NAME}: the bundle is damaged")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{weights} cannot be read ({exc}): the bundle is damaged") from exc
    load_weights(network, state, str(weights))
    return Classifier(network, config, class_ids, mode=mode, in_channels=in_channels,
                      image_channels=image_channels, spatial_dims=spatial_dims, input_size=input_size,
                      sample_params=desc.get("sample_params") or {}, normalization=desc["normalization"],
                      metrics=desc.get("metrics") or {}, history=desc.get("history") or [],
                      provenance=desc.get("provenance") or {})


# --- training -----------------------------------------------------------------------------


def train_classifier(samples: ClassSamples, config: TrainConfig, **kwargs: Any) -> Classifier:
    """Run :func:`fit_classifier` to the end and return the best classifier."""
    gen = fit_classifier(samples, config, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def fit_classifier(samples: ClassSamples, config: TrainConfig, *, stop: StopToken | None = None,
                   init_from: str | Path | Classifier | None = None) -> Generator[TrainReport, None, Classifier]:
    """Train a classifier on the labelled samples (``y > 0``).

    Parameters
    ----------
    samples : ClassSamples
        From ``classify_data`` (image, object or tile level); at least two classes.
    config : TrainConfig
        ``task="classification"``; ``optim.loss`` "ce" (class weights, label
        smoothing) or "focal"; ``data.val_fraction`` of each class is held out
        (stratified, ``seed``); ``model.freeze_stages`` first stages are frozen.
    stop : StopToken, optional
        Stops after the current step; the best classifier so far is returned.
    init_from : str, Path or Classifier, optional
        Start from the fitting weights of a bundle (classification or segmentation)
        or classifier; default ``config.model.init_from``.

    Yields
    ------
    TrainReport
        At least every quarter second of work and at every epoch end
        (``val_loss``, ``val_metrics``: accuracy, balanced_accuracy, macro_f1, auc).

    Returns
    -------
    Classifier
        The best epoch's classifier (validation accuracy, ties by loss; or by
        ``val_loss`` / the training loss).
    """
    if config.task != "classification":
        raise ConfigError(f"fit_classifier trains classifiers; set task='classification' (got {config.task!r})")
    run = _Run(samples, config, init_from)
    return (yield from run.loop(stop))


class _Run:
    """State of one run: split, normalisation, network, optimizer; ``loop`` is the body."""

    def __init__(self, samples: ClassSamples, config: TrainConfig, init_from: Any) -> None:
        from napari_medml.classify_models import build_classifier_network, freeze_stages
        from napari_medml.data import fit_normalization
        from napari_medml.devices import amp_enabled, resolve_device
        from napari_medml.optim import build_optimizer, build_scheduler

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
                yield TrainReport(step=step, epoch=epoch, total_steps=self.total_steps,
                                  train_loss=float(np.mean(losses)), learning_rate=self._lr(),
                                  elapsed_s=elapsed, eta_s=None if finished else elapsed / step * (self.total_steps - step),
                                  epoch_end=epoch_end, message=message, **fields)
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
            fields = {"val_loss": val_loss, "val_metrics": scalars}
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
