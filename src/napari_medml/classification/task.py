"""Classification as a task of the shared engine (:mod:`napari_medml.engine`).

:class:`ClassificationTask` holds what is particular to classifiers: the stratified
split, intensity normalisation, the network (with frozen stages), batches of whole
samples with augmentation, cross-entropy or focal loss, and the validation report
(confusion matrix, ROC). The loop, checkpoints, resume, early stopping and the
schedule are the engine's.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_medml.classification.model import _PREDICT_BATCH, Classifier, _normalize, load_classifier
from napari_medml.classification.data import ClassSamples
from napari_medml.classification.metrics import classification_report
from napari_medml.classification.split import stratified_split
from napari_medml.config import SIZED_CLASSIFIERS, AugmentConfig, OptimConfig, TrainConfig
from napari_medml.engine.devices import autocast
from napari_medml.engine.reports import StopToken, TrainReport
from napari_medml.engine.task import Evaluation
from napari_medml.errors import ConfigError, InputError

__all__ = ["ClassificationTask", "fit_classifier", "selection_key", "train_classifier"]


class ClassificationTask:
    """One classifier's data, network and loss (a :class:`~napari_medml.engine.task.TrainingTask`).

    Parameters
    ----------
    samples : ClassSamples
        Labelled (``y > 0``) and unlabelled samples of one level (image, object, tile).
    config : TrainConfig
    init_from : str, Path, model or None
        Transfer learning: copy the fitting weights of this bundle or model.
    base : Classifier, optional
        Resume: start from this classifier's weights, classes and normalisation.
    keep : collection of str
        With a start bundle: ``ModelConfig`` fields the user set that are not taken
        from it (``transfer.start_architecture``).
    start_step : int
        The step a resumed run continues from: it shifts the seeds of the draws, so that the
        run goes on with new batches instead of replaying its first ones (as segmentation does).
    """

    def __init__(self, samples: ClassSamples, config: TrainConfig, init_from: Any = None,
                 base: Classifier | None = None, keep: Collection[str] = (), start_step: int = 0) -> None:
        if base is None:  # a saved model keeps the settings it was trained with
            config.check_new_run()
        from napari_medml.engine.distributed import data_seed
        from napari_medml.nn.classification import build_classifier_network, freeze_stages
        from napari_medml.preprocessing.normalization import fit_normalization

        if config.task != "classification":
            raise ConfigError(f"fit_classifier trains classifiers; set task='classification' (got {config.task!r})")
        if not isinstance(samples, ClassSamples):
            raise InputError("fit_classifier needs ClassSamples (see napari_medml.classification.data)")
        source = init_from if init_from is not None else config.model.init_from
        self.taken: dict[str, Any] = {}
        if base is None and source is not None:  # the start bundle's network, so that its weights fit
            from napari_medml.classification.transfer import start_architecture

            config, self.taken = start_architecture(config, samples.spatial_dims, keep, source=source)
        sized = {"channels", "depth"} & set(keep)
        if base is None and sized and config.model.network not in SIZED_CLASSIFIERS:
            raise ConfigError(f"{config.model.network} has a fixed width and depth, so {' and '.join(sorted(sized))} "
                              "would be ignored: leave them out (they size smallcnn and unet-encoder)")
        self.samples, self.config, self.start_step = samples, config, start_step
        labelled = np.flatnonzero(samples.y > 0)
        class_ids = tuple(int(c) for c in np.unique(samples.y[labelled]))
        if len(class_ids) < 2:
            found = f"only class {class_ids[0]} is" if class_ids else "no class is"
            plural = "" if len(samples) == 1 else "s"
            raise InputError(f"{found} given among the {len(samples)} {samples.level}{plural}: give at least two "
                             "different classes, painted or in the classes file (a classifier learns to tell classes "
                             "apart)")
        if base is not None and class_ids != tuple(base.class_ids):
            raise InputError(f"the samples have classes {list(class_ids)} but the checkpoint was trained on "
                             f"{list(base.class_ids)}: resume with the same classes, or start a new run")
        self.class_ids = class_ids
        self.targets = np.searchsorted(np.asarray(class_ids), samples.y)
        self.train_idx, self.val_idx = stratified_split(samples.y, config.data.val_fraction, config.seed)
        counts = {c: int((samples.y[self.train_idx] == c).sum()) for c in class_ids}
        self.split_note = (f"{len(self.train_idx)} training / {len(self.val_idx)} validation {samples.level}s; "
                           f"training per class {counts}")
        single = [c for c in class_ids if (samples.y == c).sum() == 1]
        if single and len(self.val_idx):  # trial 38: its scores read as every class's
            many = len(single) > 1
            self.split_note += (f"; class{'es' if many else ''} {', '.join(map(str, single))} "
                                f"{'have' if many else 'has'} one labelled {samples.level}{' each' if many else ''}, "
                                f"kept for training, so the validation scores leave {'them' if many else 'it'} out "
                                "(label more to measure)")
        if samples.note:
            self.split_note += f"; {samples.note}"
        ic = samples.image_channels
        self.normalization = (dict(base.normalization) if base is not None else
                              fit_normalization([samples.x[self.train_idx, :ic].swapaxes(0, 1)],
                                                config.data.normalization))
        self.x = _normalize(np.array(samples.x, dtype=np.float32), self.normalization, ic)

        torch.manual_seed(config.seed + start_step)  # a resumed run's network comes from its checkpoint
        model_config = base.config.model if base is not None else config.model
        self.network = build_classifier_network(model_config, samples.spatial_dims, samples.x.shape[1],
                                                len(class_ids), input_size=samples.x.shape[2:])
        self.provenance: dict[str, Any] = {"initial_weights": "random (seed %d)" % config.seed}
        if base is not None:
            self.network.load_state_dict(base.network.state_dict())
            kept = ("initial_weights", "frozen_stages", "taken_from_start")
            self.provenance = {k: v for k, v in base.provenance.items() if k in kept}
        elif source is not None:
            from napari_medml.bundles.transfer import transfer_weights
            from napari_medml.classification.transfer import TAKEN_ADVICE

            self.provenance["initial_weights"] = initial = transfer_weights(self.network, source, advice=TAKEN_ADVICE)
            last = [name for name, m in self.network.named_modules() if isinstance(m, torch.nn.Linear)][-1:]
            initial["new_output"] = any(t.startswith(f"{last[0]}.") for t in initial["new_tensors"]) if last else False
            if self.taken:
                self.provenance["taken_from_start"] = dict(self.taken)
        config.model.check_freeze(base is not None or source is not None)
        self.frozen = freeze_stages(self.network, config.model.freeze_stages)
        if self.frozen:
            self.provenance["frozen_stages"] = config.model.freeze_stages
            if isinstance(self.provenance["initial_weights"], dict):  # what the bundle could not give trains
                from napari_medml.bundles.transfer import thaw_new_tensors

                self.provenance["initial_weights"]["thawed"] = thaw_new_tensors(
                    self.network, self.provenance["initial_weights"])
        _loss(config.optim, len(class_ids), torch.device("cpu"))  # a bad loss choice fails before training
        self.loss_fn: Callable[..., torch.Tensor] | None = None  # built on the device of the first outputs
        draws = data_seed(config.seed + start_step)  # each data-parallel process draws its own batches
        self.transform = _augmentation(config.augment, samples, draws)
        self.rng = np.random.default_rng(draws)
        self.batch_size = max(1, min(config.data.batch_size, len(self.train_idx)))
        from napari_medml.nn.norm_fit import check_norm_inputs

        check_norm_inputs(self.network, samples.x.shape[1:], self.batch_size,
                          f"the {'x'.join(str(s) for s in samples.x.shape[2:])} samples",
                          size_option="--input-size, or the Classify widget's input size",
                          depth=model_config.network in SIZED_CLASSIFIERS)
        self.queue: list[int] = []

    # --- TrainingTask ---------------------------------------------------------------------

    def start_message(self) -> str:
        from napari_medml.classification.transfer import describe_start, describe_taken

        note = self.split_note
        initial = self.provenance["initial_weights"]
        if self.start_step and isinstance(initial, dict):  # note 45: the start bundle's line read as if it loaded now
            note += (f"; the weights are the checkpoint's at step {self.start_step} (the run began with "
                     f"{initial['loaded']} of {initial['total']} tensors from {initial['source']})")
        started = describe_start(self.provenance, loaded=not self.start_step)
        if started:
            note += f"; {started}"
        taken = describe_taken(self.taken)
        return f"{note}\n{taken}" if taken else note

    def train_mode(self) -> None:
        self.network.train()
        for module in self.frozen:  # frozen stages keep their normalisation statistics too
            module.eval()

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        while len(self.queue) < self.batch_size:
            self.queue.extend(self.rng.permutation(self.train_idx).tolist())
        idx, self.queue = self.queue[: self.batch_size], self.queue[self.batch_size:]
        x = self.x[idx]
        if self.transform is not None:
            x = np.stack([self.transform(s) for s in x])
        return torch.from_numpy(x), torch.from_numpy(self.targets[idx])

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.loss_fn is None:
            self.loss_fn = _loss(self.config.optim, len(self.class_ids), outputs.device)
        return self.loss_fn(outputs, targets)

    def evaluate(self, device: torch.device, amp: bool) -> Evaluation:
        if not len(self.val_idx):
            return Evaluation(history={"val_loss": None})
        idx = self.val_idx
        self.network.eval()
        logits = []
        with torch.inference_mode(), autocast(amp):
            for start in range(0, len(idx), _PREDICT_BATCH):
                batch = torch.from_numpy(self.x[idx[start:start + _PREDICT_BATCH]]).to(device)
                logits.append(self.network(batch).float())
        out = torch.cat(logits)
        target = torch.from_numpy(self.targets[idx]).to(device)
        val_loss = float(self.loss(out, target))
        if not torch.isfinite(out).all():  # review 47: it said "fill the image's NaN" of a finite image
            raise ConfigError("the network's outputs became NaN or infinite: the training diverged; lower the "
                              "learning rate (--lr, the Classify widget's learning rate)")
        report = classification_report(self.samples.y[idx], torch.softmax(out, dim=1).cpu().numpy(),
                                       self.class_ids, class_names=self.config.class_names)
        scalars = {k: report[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "auc")
                   if report.get(k) is not None}
        key = selection_key(report, val_loss, self.config.optim.early_stopping_metric)
        return Evaluation(report={"val_loss": val_loss, "val_metrics": scalars, "val_report": report},
                          history={"val_loss": val_loss, **{f"val_{k}": v for k, v in scalars.items()}},
                          key=key, metrics={**report, "split": "validation"})

    def model(self, history: list[dict], provenance: Mapping[str, Any], metrics: Mapping[str, Any]) -> Classifier:
        s = self.samples
        provenance = {**self.provenance, "split": self.split_note, **provenance}
        return Classifier(self.network, self.config, self.class_ids, level=s.level, in_channels=s.x.shape[1],
                          image_channels=s.image_channels, spatial_dims=s.spatial_dims, input_size=s.x.shape[2:],
                          sample_params=s.params, normalization=self.normalization, metrics=dict(metrics),
                          history=list(history), provenance=provenance)


def _loss(config: OptimConfig, num_classes: int, device: torch.device) -> Callable[..., torch.Tensor]:
    """Cross-entropy (class weights, label smoothing) or MONAI's focal loss."""
    weight = None
    if config.class_weights is not None:
        if len(config.class_weights) != num_classes or any(w < 0 for w in config.class_weights):
            raise ConfigError(f"class weights (--class-weights) have {len(config.class_weights)} values but there are "
                              f"{num_classes} classes: give one weight >= 0 per class, in class-id order")
        weight = torch.as_tensor(config.class_weights, dtype=torch.float32, device=device)
    if config.loss == "ce":
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    if config.loss == "focal":
        from monai.losses import FocalLoss

        focal = FocalLoss(to_onehot_y=True, use_softmax=True, weight=weight, reduction="none")
        # per sample, the true class's term, as the segmentation focal loss: MONAI's "mean" also averaged
        # over the K classes (K - 1 of them 0), so the loss shrank with K (trial 44)
        return lambda logits, target: focal(logits.float(), target[:, None]).sum(1).mean()
    raise ConfigError(f"loss {config.loss!r} is for segmentation: classification uses 'ce' or 'focal' "
                      "(napari_medml.classification.model.classification_config(spatial_dims) gives a classifier's "
                      "defaults)")


def _augmentation(config: AugmentConfig, samples: ClassSamples, seed: int):  # noqa: ANN202
    """Per-sample augmentation ``(C, *spatial) -> (C, *spatial)``, or None when all is off."""
    if all(getattr(config, f).prob <= 0 for f in AugmentConfig.__dataclass_fields__):
        return None
    from napari_medml.augment.transforms import augmentation_transforms

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


def selection_key(report: Mapping[str, Any], val_loss: float, metric: str) -> tuple[float, float, float]:
    """The key that picks a classifier's best epoch (higher is better in every part).

    Parameters
    ----------
    report : mapping
        ``classification_report`` of the validation samples (``accuracy``, ``auc``).
    val_loss : float
        The validation loss.
    metric : {"val_accuracy", "val_loss", "val_dice"}
        ``OptimConfig.early_stopping_metric`` (``val_dice`` means accuracy here).

    Returns
    -------
    tuple of float
        Accuracy, then AUC (0 where there is none), then the negated loss: a network that puts
        every sample in one class early on ties in accuracy with a later one that ranks them
        well, and was kept; the AUC tells them apart. With ``val_loss``: the negated loss.
    """
    if metric == "val_loss":
        return (-float(val_loss), 0.0, 0.0)
    auc = report.get("auc")
    return (float(report["accuracy"]), 0.0 if auc is None else float(auc), -float(val_loss))


def train_classifier(samples: ClassSamples, config: TrainConfig, *, stop: StopToken | None = None,
                     init_from: str | Path | Classifier | None = None, resume_from: str | Path | None = None,
                     keep: Collection[str] = ()) -> Classifier:
    """Run :func:`fit_classifier` to the end and return the best classifier.

    Parameters
    ----------
    samples, config, stop, init_from, resume_from, keep
        As :func:`fit_classifier`.

    Returns
    -------
    Classifier

    Raises
    ------
    ConfigError, InputError
        As :func:`fit_classifier`.
    """
    from napari_medml.engine.fit import run_to_end

    return run_to_end(fit_classifier(samples, config, stop=stop, init_from=init_from, resume_from=resume_from,
                                     keep=keep))


def fit_classifier(samples: ClassSamples, config: TrainConfig, *, stop: StopToken | None = None,
                   init_from: str | Path | Classifier | None = None, resume_from: str | Path | None = None,
                   keep: Collection[str] = ()) -> Generator[TrainReport, None, Classifier]:
    """Train a classifier on the labelled samples (``y > 0``).

    Parameters
    ----------
    samples : ClassSamples
        From ``classification.data.image_samples``, ``classification.levels.object_samples`` or
        ``tile_samples`` (image, object or tile level); at least two classes.
    config : TrainConfig
        ``task="classification"``; ``optim.loss`` "ce" (class weights, label
        smoothing) or "focal"; ``data.val_fraction`` of each class is held out
        (stratified, ``seed``); ``model.freeze_stages`` first stages are frozen;
        ``checkpoint_dir``: where ``best`` and ``last`` checkpoints go.
    stop : StopToken, optional
        Stops after the current step (leaving ``last``); the best classifier so far
        is returned.
    init_from : str, Path or Classifier, optional
        Start from the fitting weights of a bundle (classification, segmentation or
        pretraining) or classifier; default ``config.model.init_from``. The network,
        width, depth and norm are then the bundle's (a U-Net's gives ``unet-encoder``;
        ``transfer.start_architecture``), the first report says so and
        ``provenance["taken_from_start"]`` keeps it.
    resume_from : str or Path, optional
        A checkpoint folder (or an earlier run's ``checkpoint_dir``): continue its
        network, optimizer, schedule, step count and history.
    keep : collection of str
        With a start bundle: the ``ModelConfig`` fields (``"network"``, ``"channels"``,
        ``"depth"``) that stay as ``config`` sets them (the command line's given options).

    Yields
    ------
    TrainReport
        At least every quarter second of work and at every epoch end
        (``val_loss``, ``val_metrics``: accuracy, balanced_accuracy, macro_f1, auc;
        ``val_report``: the full report with confusion matrix and ROC).

    Returns
    -------
    Classifier
        The best epoch's classifier (validation accuracy, ties by loss; or by
        ``val_loss`` / the training loss).

    Raises
    ------
    InputError
        Fewer than two painted classes, or classes that differ from the checkpoint's.
    BundleError
        A damaged or missing checkpoint.
    """
    from napari_medml.engine.fit import resume_point
    from napari_medml.engine.loop import run

    resume = base = None
    if resume_from is not None:
        base, resume = resume_point(resume_from, load_classifier)
    start_step = int(resume.state["step"]) if resume is not None else 0
    task = ClassificationTask(samples, config, init_from, base=base, keep=keep, start_step=start_step)
    return (yield from run(task, config, stop=stop, checkpoint_dir=config.checkpoint_dir, resume=resume))
