"""Ensembles: K segmentation models trained on K folds, whose probabilities are averaged
and whose disagreement is the uncertainty.

``fit`` with ``DataConfig.folds`` K > 1 runs :func:`fit_ensemble`: one ordinary run per
fold (each validated on a different part, :func:`~napari_medml.segmentation.split.split_fold`),
reports renumbered across the folds. The bundle is a folder with ``config.json`` (the
first member's description plus an ``ensemble`` entry) and ``members/fold-<k>/``, each an
ordinary segmentation bundle, written under a temporary name and then renamed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_medml.bundles.format import DAMAGED, MEMBERS_NAME
from napari_medml.config import InferConfig, TrainConfig, to_dict
from napari_medml.engine.reports import StopToken, TrainReport
from napari_medml.errors import BundleError, InputError
from napari_medml.segmentation.model import Model, Prediction
from napari_medml.segmentation.planned_inference import planned_infer_config

__all__ = ["MEMBERS_FOLDER", "EnsembleModel", "combine", "fit_ensemble", "load_ensemble"]

MEMBERS_FOLDER = MEMBERS_NAME
# a fold's own facts: in its member's config.json, not the ensemble's
_MEMBER_PROVENANCE = ("split", "best_epoch", "checkpoint_dir", "steps", "elapsed_s", "stopped_in_first_epoch")


class EnsembleModel:
    """K segmentation models used as one: mean probabilities, disagreement as uncertainty.

    Parameters
    ----------
    members : sequence of Model
        Trained on the same classes, channels and dimensions (the folds of one run).
    provenance : dict, optional
    max_minutes : float, optional
        The whole run's time budget (``train --max-minutes``), kept in ``config``; the members'
        configs hold their shares of it. None: the first member's.
    """

    def __init__(self, members: Sequence[Model], provenance: dict | None = None,
                 max_minutes: float | None = None) -> None:
        if not members:
            raise BundleError("an ensemble needs at least one member model")
        first = members[0]
        for m in members[1:]:
            if (m.class_ids, m.in_channels, m.spatial_dims) != (first.class_ids, first.in_channels,
                                                               first.spatial_dims):
                raise BundleError("ensemble members differ in classes, channels or dimensions: train them "
                                  "on the same labels and images")
        self.members = list(members)
        self.config: TrainConfig = replace(first.config, data=replace(first.config.data, fold=None))
        if max_minutes is not None:  # trial 37: config.json said the first fold's share (0.333 of 1 minute)
            self.config = replace(self.config, optim=replace(self.config.optim, max_minutes=max_minutes))
        self.class_ids, self.in_channels = first.class_ids, first.in_channels
        self.spatial_dims, self.patch_size, self.spacing = first.spatial_dims, first.patch_size, first.spacing
        self.normalization = first.normalization
        self.history: list[dict] = []
        self.provenance = dict(provenance or {})

    def __repr__(self) -> str:
        return f"EnsembleModel({len(self.members)} x {self.members[0]!r})"

    def predict(self, image: Any, *, spacing: Sequence[float] | None = None, channel_axis: int | None = None,
                config: InferConfig | None = None, progress: Callable[[int, int], None] | None = None,
                stop: Any | None = None, axes: str | None = None) -> Prediction:
        """Segment with every member and combine (arguments as ``Model.predict``).

        Returns
        -------
        Prediction
            ``labels``: argmax of the members' mean probabilities (then post-processed);
            ``probabilities``: that mean; ``uncertainty``: the mutual information between
            the prediction and the member (entropy of the mean minus the mean entropy,
            in nats): 0 where the members' probabilities agree, larger where they disagree.
        """
        from napari_medml.segmentation.prediction import stack_predictions as _stack_predictions
        from napari_medml.segmentation.postprocess import postprocess

        config = planned_infer_config(self, config)
        plain = replace(config, return_probabilities=True, return_uncertainty=False, min_size=0,
                        fill_holes=False, keep_largest=False, instances="none")
        count = len(self.members)

        def member_probabilities() -> Iterator[np.ndarray]:
            for i, member in enumerate(self.members):
                def part(done: int, total: int, i: int = i) -> None:
                    if progress is not None:
                        progress(i * total + done, count * total)

                yield member.predict(image, spacing=spacing, channel_axis=channel_axis, config=plain,
                                     progress=part, stop=stop, axes=axes).probabilities

        mean, uncertainty = combine(member_probabilities(), count, uncertainty=config.return_uncertainty)
        labels = np.asarray(self.class_ids)[np.argmax(mean, axis=0)]
        labels = labels.astype(np.uint8 if max(self.class_ids) < 256 else np.uint32 if max(self.class_ids) < 2**32
                               else np.uint64)
        lead = labels.shape[: labels.ndim - self.spatial_dims]  # frames or slices: post-processed one by one
        parts = []
        for index in np.ndindex(*lead):
            part_labels, instances = postprocess(labels[index], config)
            parts.append(Prediction(labels=part_labels, instances=instances, class_ids=self.class_ids))
        done = parts[0] if not lead else _stack_predictions(parts, lead, self.class_ids)
        return Prediction(labels=done.labels, instances=done.instances, class_ids=self.class_ids,
                          probabilities=mean.astype(np.float16) if config.return_probabilities else None,
                          uncertainty=uncertainty)

    def _layout(self, image: Any, channel_axis: int | None, axes: str | None) -> tuple[int | None, tuple[int, ...]]:
        """The channel axis and the sample axes, as ``Model._layout`` (the members share them)."""
        return self.members[0]._layout(image, channel_axis, axes)

    def description(self) -> dict:
        """The ensemble's ``config.json``: the first member's description and the members."""
        desc = self.members[0].description()
        desc["task"] = "ensemble"
        desc["ensemble"] = {"members": [f"{MEMBERS_FOLDER}/fold-{k + 1}" for k in range(len(self.members))],
                            "combine": "mean of the members' probabilities",
                            "uncertainty": "mutual information (entropy of the mean - mean entropy)"}
        # each fold's own history and split are in its member's config.json; here every fold's epochs, each
        # named by its fold (review 49: fold 1's alone, and its split, checkpoints and best epoch as the ensemble's)
        desc["history"] = [{"fold": k + 1, **entry} for k, m in enumerate(self.members) for entry in m.history]
        own = {k: v for k, v in desc.get("provenance", {}).items() if k not in _MEMBER_PROVENANCE}
        provenance = {**own, "split": f"{len(self.members)} folds, each member validated on its own fold (its "
                                      f"config.json's provenance.split)", **self.provenance}
        plan = provenance.pop("plan", None)  # top-level, as in a single model's config.json
        desc["provenance"], desc["plan"] = provenance, plan or desc.get("plan")
        desc["train_config"] = to_dict(self.config)  # folds K, no single fold
        return desc

    def save(self, path: str | Path) -> Path:
        """Write the ensemble folder atomically (a temporary folder renamed into place)."""
        from napari_medml.bundles.format import CONFIG_NAME, write_bundle_files, write_bundle_folder

        description = self.description()

        def fill(folder: Path) -> None:
            for k, member in enumerate(self.members):
                # the run's plan in each member too: one predicted alone does as the ensemble (its test-time
                # augmentation; trial 37: a member alone predicted without it)
                own = member.description()
                own["plan"] = own.get("plan") or description.get("plan")
                write_bundle_files(own, member.network, folder / MEMBERS_FOLDER / f"fold-{k + 1}")
            (folder / CONFIG_NAME).write_text(json.dumps(description, indent=2))

        return write_bundle_folder(path, fill)


def combine(probabilities: Iterable[np.ndarray], count: int, *,
            uncertainty: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The members' mean probabilities and, when asked, their disagreement.

    The one combination used in memory (:meth:`EnsembleModel.predict`) and block by block
    (:func:`~napari_medml.segmentation.to_zarr.predict_to_zarr`), so both give the same labels.

    Parameters
    ----------
    probabilities : iterable of np.ndarray
        Each member's ``(K, *spatial)`` probabilities (float16 as ``Model.predict`` returns them).
    count : int
        How many members ``probabilities`` yields.
    uncertainty : bool
        Also return the mutual information.

    Returns
    -------
    mean : np.ndarray
        ``(K, *spatial)`` float32 mean probabilities.
    uncertainty : np.ndarray or None
        ``(*spatial)`` float32 mutual information between the prediction and the member
        (entropy of the mean minus the mean entropy, nats): 0 where the members agree.
    """
    mean: np.ndarray | None = None
    mean_entropy: np.ndarray | None = None
    for member in probabilities:
        probs = np.asarray(member).astype(np.float32)
        if uncertainty:
            h = _entropy(probs)
            mean_entropy = h if mean_entropy is None else mean_entropy + h
        mean = probs if mean is None else mean + probs
    if mean is None:
        raise BundleError("an ensemble needs at least one member model")
    mean /= count
    if not uncertainty:
        return mean, None
    return mean, np.maximum(_entropy(mean) - mean_entropy / count, 0.0).astype(np.float32)


def _entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy over the class axis 0 (nats), with 0 log 0 = 0."""
    p = np.clip(probs, 1e-8, 1.0)
    return -(probs * np.log(p)).sum(0)


def load_ensemble(path: str | Path) -> EnsembleModel:
    """Load an ensemble folder (never unpickles).

    Raises
    ------
    BundleError
        Not an ensemble, or a member missing or damaged.
    """
    from napari_medml.bundles.format import read_description
    from napari_medml.segmentation.model import load_segmentation_model

    path = Path(path).expanduser()
    description = read_description(path)
    if description.get("task") != "ensemble" or "ensemble" not in description:
        raise BundleError(f"{path} is not an ensemble bundle: load it with napari_medml.load_model")
    names = description["ensemble"].get("members") if isinstance(description["ensemble"], dict) else None
    if not names or not all(isinstance(n, str) and ".." not in Path(n).parts for n in names):
        raise BundleError(f"{path / 'config.json'} lists no valid ensemble members: " + DAMAGED)
    members = []
    for name in names:
        member = load_segmentation_model(path / name)
        if isinstance(member, EnsembleModel):
            raise BundleError(f"{path / name} is an ensemble inside an ensemble: " + DAMAGED)
        members.append(member)
    provenance = dict(description.get("provenance") or {})
    if description.get("plan"):
        provenance["plan"] = description["plan"]
    optim = (description.get("train_config") or {}).get("optim") or {}
    budget = optim.get("max_minutes") if isinstance(optim, dict) else None
    budget = float(budget) if isinstance(budget, (int, float)) and not isinstance(budget, bool) else None
    return EnsembleModel(members, provenance=provenance, max_minutes=budget)


def fit_ensemble(images: Any, labels: Any, config: TrainConfig, *, spacing: Any = None,
                 channel_axis: int | None = None, stop: StopToken | None = None,
                 resume_from: str | Path | None = None, init_model: Any = None
                 ) -> Generator[TrainReport, None, EnsembleModel]:
    """Train ``config.data.folds`` models, one per fold, one after the other.

    Arguments as for ``segmentation.task.fit``; ``init_model`` is refused (an ensemble
    starts from scratch). ``resume_from`` (an earlier run's ``checkpoint_dir``) continues a
    stopped ensemble: the folds that finished are taken as they are, the stopped one
    continues from its ``last`` checkpoint, the others train.

    Reports count steps and epochs across all folds and say which fold runs; a time limit
    (``optim.max_minutes``) is the whole run's, each fold training for its share of what is
    left when it starts. Each fold keeps its checkpoints in ``<checkpoint_dir>/fold-<k>``
    (and, once finished, its model in ``member``). Stop ends the current fold
    with its best model and returns an ensemble of the folds trained so far.

    Returns
    -------
    EnsembleModel
    """
    from napari_medml.bundles.checkpoints import FOLD_MEMBER, check_same_network, has_checkpoint
    from napari_medml.errors import ConfigError, NothingLearned
    from napari_medml.segmentation.model import load_segmentation_model
    from napari_medml.segmentation.task import fit

    folds = config.data.folds
    if init_model is not None:
        raise ConfigError(f"an ensemble of {folds} folds trains from scratch: fine-tuning takes one model "
                          "(train without folds)")
    # each fold's checkpoints in <checkpoint_dir>/fold-<k> (a Stop leaves its "last" there, a finished
    # fold its model in "member"); without a checkpoint_dir nothing goes to disk (segmentation.task.fit)
    _check_every_fold(images, labels, config, spacing, channel_axis)
    base = None if config.checkpoint_dir is None else Path(config.checkpoint_dir)
    resumed = None if resume_from is None else Path(resume_from).expanduser()
    members = []
    # before: minutes the resumed run's earlier part spent (its finished folds, the stopped fold)
    started, outside, before = time.monotonic(), 0.0, 0.0
    for k in range(folds):
        folder = None if base is None else base / f"fold-{k + 1}"
        earlier = None if resumed is None else resumed / f"fold-{k + 1}"
        cfg = replace(config, data=replace(config.data, fold=k),
                      checkpoint_dir=None if folder is None else str(folder))
        if earlier is not None and (earlier / FOLD_MEMBER / "config.json").is_file():  # finished before the stop
            member = load_segmentation_model(earlier / FOLD_MEMBER)
            check_same_network(member.config, cfg)
            members.append(member)
            before += _member_minutes(member, config.optim.max_minutes, folds)
            continue
        if config.optim.max_minutes is not None:
            cfg = replace(cfg, optim=replace(cfg.optim, max_minutes=_fold_minutes(
                config.optim.max_minutes, before + (time.monotonic() - started) / 60, folds, k, outside)))
        # a stopped fold's earlier minutes count against its own limit in the loop, and against the later folds'
        before += _stopped_minutes(earlier)
        fold_started = time.monotonic()
        gen = fit(images, labels, cfg, spacing=spacing, channel_axis=channel_axis, stop=stop,
                  resume_from=earlier if has_checkpoint(earlier) else None)
        try:
            members.append((yield from _renumbered(gen, k, folds, config.optim.epochs,
                                                   sum(_member_steps(m) for m in members))))
        except NothingLearned:  # stopped before this fold's first step: the earlier folds make the ensemble
            if not members:
                raise
            break
        if cfg.optim.max_minutes is not None:  # setup and final validation lie outside a fold's limit
            outside = max(outside, (time.monotonic() - fold_started) / 60 - cfg.optim.max_minutes)
        if stop is not None and stop.stopped:
            break
        if folder is not None:  # a resumed run takes this fold as it is
            members[-1].save(folder / FOLD_MEMBER)
    from napari_medml.segmentation.split import NO_FOREGROUND

    # a fold whose held-out part holds no foreground has no Dice worth a number (None, "-")
    note = {"folds": folds, "trained": len(members),
            "member_best_val_dice": [None if NO_FOREGROUND in str(m.provenance.get("split", "")) else
                                     (m.history[int(m.provenance.get("best_epoch", 1)) - 1] if m.history
                                      else {}).get("val_mean_dice") for m in members],
            "member_steps": [_member_steps(m) for m in members]}
    return EnsembleModel(members, provenance={"ensemble": note}, max_minutes=config.optim.max_minutes)


def _member_steps(member: Any) -> int:
    """The steps a fold trained (its history's last; its provenance's when stopped within an epoch)."""
    last = int(member.history[-1].get("step", 0)) if member.history else 0
    return max(last, int(member.provenance.get("steps", 0) or 0))


def _member_minutes(member: Any, total: float | None, folds: int) -> float:
    """The minutes a fold that finished before a stop trained (its history's last ``elapsed_s``);
    its share of ``total`` when its history does not say."""
    elapsed = (member.history[-1] if member.history else {}).get("elapsed_s")
    if elapsed is None:
        return 0.0 if total is None else total / folds
    return float(elapsed) / 60


def _stopped_minutes(earlier: Path | None) -> float:
    """The minutes a stopped fold trained before the stop (its ``last`` checkpoint's ``elapsed_s``)."""
    from napari_medml.bundles.checkpoints import STATE_JSON

    try:
        state = json.loads((earlier / "last" / STATE_JSON).read_text()) if earlier is not None else {}
    except (OSError, ValueError):
        return 0.0  # no checkpoint (the fold starts afresh); a damaged one is refused when it is read
    return float(state.get("elapsed_s") or 0.0) / 60 if isinstance(state, dict) else 0.0


def _fold_minutes(total: float, spent: float, folds: int, k: int, outside: float) -> float:
    """The training time limit of fold ``k`` (0-based), in minutes: an equal share of what is
    left of the run's ``total`` after ``spent``, less the time a fold was seen to spend
    outside its limit (``outside``: setup and the final validation), so that the last folds
    are not starved; never under half the first fold's share, even if the run then takes
    longer than ``total`` (a member trained for a moment would be averaged in as an equal)."""
    share = (total - spent) / (folds - k) - outside
    return max(share, 0.5 * total / folds)


def _check_every_fold(images: Any, labels: Any, config: TrainConfig, spacing: Any, channel_axis: int | None) -> None:
    """Refuse, before any fold trains, folds whose training part has no foreground or is smaller
    than the patch size given (a fold that would stop the run after the others took their time)."""
    from napari_medml.segmentation import split
    from napari_medml.segmentation.label_warnings import missing_from_training
    from napari_medml.segmentation.prepare import choose_patch_size, read_inputs

    prepared, encoded, class_ids, spacings = read_inputs(images, labels, config, spacing=spacing,
                                                         channel_axis=channel_axis)
    for k in range(config.data.folds):
        train, _, note = split.split_fold(prepared, encoded, k, config.data.folds, margin=config.data.val_margin,
                                          groups=config.data.sample_groups)
        missing_from_training(train, encoded, class_ids, note)  # raises for a fold with nothing to learn
        if config.data.patch_size is not None:  # an automatic patch fits each fold as it trains
            try:
                choose_patch_size([r.label.shape for r in train], config, spacings[0], single=len(prepared) == 1)
            except InputError as exc:
                raise InputError(f"fold {k + 1} of {config.data.folds}: {exc} (fewer folds leave larger training "
                                 "parts)") from None


def _renumbered(gen: Generator[TrainReport, None, Model], k: int, folds: int, epochs: int,
                before: int) -> Generator[TrainReport, None, Model]:
    """Fold ``k``'s reports with steps and epochs counted across all folds: its steps after the
    ``before`` that the earlier folds trained (not their planned steps, which a time limit or
    early stopping cut short: fold 2 of a 1-minute run said step 1404 after 200: trial 43)."""
    try:
        while True:
            try:
                report = next(gen)
            except StopIteration as done:
                return done.value
            total = report.total_steps
            eta, done = report.eta_s, report.progress
            if eta is not None:  # the folds still to come take as long as this one
                eta += (folds - k - 1) * report.elapsed_s / max(done or report.step / total, 1e-6)
            # steps: those trained, of those trained plus those planned for this fold and the next ones, so
            # that the text and the bar agree after a fold stopped early (review 43); under a time limit, the clock
            left = before + total * (folds - k)
            clock = report.time_limit_s is not None and done is not None
            share = (k + done) / folds if clock else (report.step + before) / max(left, 1)
            yield replace(report, step=report.step + before, total_steps=left,
                          epoch=report.epoch + k * epochs, eta_s=eta, fold=k + 1, folds=folds,
                          progress=share)  # the split note names the fold
    except GeneratorExit:
        gen.close()  # the fold leaves its checkpoint
        raise
