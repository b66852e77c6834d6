"""The correct-and-retrain step: what a model learns from a user's corrections.

A corrected prediction is mostly the model's own answer: on a real image the user
changes a few percent of it. Taken whole as dense labels, that answer teaches nothing
new and the short run at the trained rate only moves the model away from what it had
learned. So the run is built from three parts, drawn in turn (the patch sampler draws a
class, then one image that holds it):

* the **reviewed voxels**: those the user changed, and a margin of
  :data:`REVIEW_MARGIN` voxels around each change in the plane it was painted in, which
  the user saw and left as they are (:func:`reviewed_voxels`);
* the **model's own answer on the rest** of each corrected image, so that one
  correction does not redraw what nobody looked at;
* the **model's training data**, when the caller has it (the Train widget keeps it for
  the models it trained, and the corrections of earlier rounds are added), so that the
  model does not forget it.

Everything is encoded as scribbles (0 = not labelled) and learned at a tenth of the
model's rate (:data:`FINETUNE_RATE`); the tuned model keeps the model's own settings, so
every round runs at that rate. A short run learns part of what was painted, so the new
prediction keeps the user's edits (:func:`keep_edits`).

Measured on real 2D nuclei (``benchmarks/real_data.nuclei_2d``, 512x512): a U-Net trained
300 steps on the left half, its prediction of the whole image corrected with the truth
within 2 pixels of its errors in the top 160 rows of the right half (16 % of those rows),
30 fine-tuning steps, mean of 5 seeds (``benchmarks/bench_correct_retrain.py --real``).
Dice of the whole image / the corrected rows / the right half's unreviewed rest: before
0.938 / 0.909 / 0.939; the three parts 0.939 / 0.923 / 0.942; without training data (a
model loaded from a bundle) 0.939 / 0.927 / 0.945; the corrected layer taken whole as
labels 0.932 / 0.910 / 0.935 (and at the trained rate, the earlier design, 0.927 / 0.915 /
0.938 with seed 0).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from napari_medml.config import AugmentConfig, TrainConfig
from napari_medml.engine.reports import StopToken, TrainReport
from napari_medml.errors import InputError

__all__ = ["FINETUNE_RATE", "REVIEW_MARGIN", "LabelledSample", "correction_samples", "describe_finetune",
           "finetune_config", "keep_edits", "labelled_samples", "retrain_on_corrections", "reviewed_voxels"]

REVIEW_MARGIN = 2
"""Voxels around each change taken as reviewed (the user saw them and kept them)."""

FINETUNE_RATE = 0.1
"""Fine-tuning runs at this share of the model's learning rate. On the real nuclei above
(seed 0; the reviewed voxels and the training data, without the model's own answer) a
tenth gave whole 0.941 / corrected 0.937, the trained rate 0.918 / 0.920 and a fortieth
0.938 / 0.932."""


@dataclass(frozen=True)
class LabelledSample:
    """One image and its labels, as ``segmentation.task.fit`` takes them.

    Attributes
    ----------
    image : array
        ``(*spatial)``, or with channels at ``channel_axis``; napari axis order.
    labels : array
        Integer labels of the image's spatial shape.
    spacing : tuple of float or None
        Voxel size in the image's units (mm or µm), one per spatial axis.
    channel_axis : int or None
    background_id : int or None
        None: dense labels, 0 is the background class. An id: scribbles, 0 is not
        labelled and this id is the background.
    origin : str
        ``"training"`` (what the model was trained on) or ``"corrections"`` (an earlier
        round's reviewed voxels, from :func:`correction_samples`).
    """

    image: Any
    labels: Any
    spacing: tuple[float, ...] | None = None
    channel_axis: int | None = None
    background_id: int | None = None
    origin: str = "training"


def labelled_samples(images: Any, labels: Any, spacing: Any = None, channel_axis: int | None = None,
                     background_id: int | None = None) -> list[LabelledSample]:
    """Pair images with labels (single arrays or sequences, as ``fit`` takes them).

    Raises
    ------
    InputError
        Different numbers of images and labels.
    """
    images = list(images) if isinstance(images, (list, tuple)) else [images]
    labels = list(labels) if isinstance(labels, (list, tuple)) else [labels]
    if len(images) != len(labels):
        raise InputError(f"{len(images)} image(s) but {len(labels)} labels: give one labels array per image")
    if isinstance(spacing, list):
        spacings = spacing
    else:
        spacings = [spacing] * len(images)
    return [LabelledSample(i, lab, None if s is None else tuple(float(v) for v in s), channel_axis, background_id)
            for i, lab, s in zip(images, labels, spacings)]


def reviewed_voxels(corrected: np.ndarray, predicted: np.ndarray, margin: int = REVIEW_MARGIN,
                    axes: Sequence[int] | None = None) -> np.ndarray:
    """Voxels the user changed, and those within ``margin`` voxels of a change in the plane
    they were painted in.

    Parameters
    ----------
    corrected, predicted : ndarray
        Labels after and before the user's edits, same shape (any axes).
    margin : int
        Chebyshev distance in voxels (a square of side ``2 * margin + 1``).
    axes : sequence of int, optional
        The axes the margin spans: the plane napari's brush paints in (the two axes on
        screen). Default: the last two. A change on one slice of a volume does not make
        the slices beside it reviewed: nobody looked at them.

    Returns
    -------
    ndarray of bool, the labels' shape
    """
    from scipy import ndimage

    changed = np.asarray(corrected) != np.asarray(predicted)
    if margin <= 0 or not changed.any():
        return changed
    plane = {a % changed.ndim for a in (range(changed.ndim)[-2:] if axes is None else axes)}
    structure = np.ones(tuple(3 if a in plane else 1 for a in range(changed.ndim)), bool)
    return ndimage.binary_dilation(changed, structure=structure, iterations=margin)


def keep_edits(new: np.ndarray, corrected: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """The new prediction with the user's edits kept: the ``corrected`` value on every
    ``edited`` voxel (of this round and earlier ones), the new answer elsewhere.

    A short fine-tune learns part of what was painted; the user should not have to paint
    it again. Arrays of one shape; returns a new array of ``new``'s dtype (or wider).
    """
    corrected = np.asarray(corrected)
    return np.where(edited, corrected, np.asarray(new)).astype(np.result_type(new, corrected), copy=False)


def correction_samples(images: Any, corrected: Any, predicted: Any, spacing: Any = None,
                       channel_axis: int | None = None, reviewed: Any = None) -> list[LabelledSample]:
    """The reviewed voxels of corrected predictions, as scribbles (the rest not labelled).

    What the Predict widget adds to a model's training data after fine-tuning, so that a
    later round does not forget this one.

    Parameters
    ----------
    images, corrected, predicted, spacing, channel_axis, reviewed
        As for :func:`retrain_on_corrections`.

    Returns
    -------
    list of LabelledSample
        One per image that has a change (``origin="corrections"``).
    """
    out = []
    samples = labelled_samples(images, corrected, spacing, channel_axis)
    masks = _as_list(reviewed) if reviewed is not None else [None] * len(samples)
    for sample, before, mask in zip(samples, _as_list(predicted), masks):
        mask = reviewed_voxels(sample.labels, before) if mask is None else np.asarray(mask, bool)
        if mask.any():
            out.append(replace(_scribbles(sample, np.asarray(sample.labels), mask), origin="corrections"))
    return out


def finetune_config(config: TrainConfig, steps: int, augment: AugmentConfig | None = None, *,
                    background_id: int | None = None) -> TrainConfig:
    """A short fine-tuning run of ``config``: ``steps`` steps in one epoch at a constant rate
    of :data:`FINETUNE_RATE` times the model's.

    No validation split (the corrections are few, and all of them should be learned), so
    the run ends with one checkpoint and no sliding-window pass; ``fit(init_model=...)``
    keeps the model's patch size, classes and normalisation. ``background_id``: scribble
    labels with that background id (None: dense labels).
    """
    # one run on all of it: an ensemble member's fold would hold out half of the corrections;
    # the training run's slice groups described its images, not these
    data = replace(config.data, val_fraction=0.0, folds=1, fold=None, sample_groups=None)
    if background_id is None:
        data = replace(data, label_mode="dense")
    else:
        data = replace(data, label_mode="sparse", background_id=int(background_id))
    optim = replace(config.optim, epochs=1, steps_per_epoch=steps, schedule="constant", warmup=0.0,
                    learning_rate=config.optim.learning_rate * FINETUNE_RATE,
                    max_minutes=None, early_stopping_patience=None)
    # no checkpoints: the trained model's folder (a Train bundle's) would get orphaned ones
    return replace(config, data=data, optim=optim, augment=config.augment if augment is None else augment,
                   checkpoint_dir=None)


def retrain_on_corrections(model: Any, images: Any, corrected: Any, steps: int, *, predicted: Any = None,
                           reviewed: Any = None, replay: Sequence[LabelledSample] = (), spacing: Any = None,
                           channel_axis: int | None = None, augment: AugmentConfig | None = None,
                           stop: StopToken | None = None) -> Generator[TrainReport, None, Any]:
    """Continue ``model`` on a user's corrections (see the module's description).

    Parameters
    ----------
    model : Model or EnsembleModel
        The model whose prediction was corrected. An ensemble continues every member in
        turn, each for ``steps`` steps (after a stop, the members not reached keep their weights).
    images, corrected : array or sequence of arrays
        As for ``segmentation.task.fit``: images in napari axis order and the corrected labels.
    steps : int
        Optimisation steps (one epoch, constant rate, no validation: see :func:`finetune_config`).
    predicted : array or sequence of arrays, optional
        The labels as the model predicted them, before the user's edits. Then the
        voxels within :data:`REVIEW_MARGIN` of a change are the user's labels and the
        rest is the model's answer, learned as a separate image. Without it every voxel
        of ``corrected`` is a label (a layer the user painted whole).
    reviewed : array or sequence of arrays of bool, optional
        With ``predicted``: the voxels to take as the user's (default
        :func:`reviewed_voxels` on the last two axes; the Predict widget gives the plane
        on screen).
    replay : sequence of LabelledSample
        The model's training data (and earlier rounds' :func:`correction_samples`),
        learned alongside so that the model keeps it.
    spacing, channel_axis, augment, stop
        As for ``fit``; ``augment`` replaces the model's augmentation.

    Returns
    -------
    Model or EnsembleModel
        The fine-tuned model (same classes, patch, normalisation and orientation); its
        ``provenance["finetuned"]`` holds the steps, the numbers of corrected images,
        training images, earlier rounds' corrections and reviewed voxels. Its config is
        the model's (a fine-tune's rate and steps are not the model's settings).

    Raises
    ------
    InputError
        Corrected labels that are empty everywhere, equal to ``predicted``, or holding a
        class id the model does not have.
    """
    samples = labelled_samples(images, corrected, spacing, channel_axis)
    if not any(np.any(s.labels) for s in samples):
        raise InputError("the corrected labels are empty: paint the corrections (or keep the prediction) first")
    _check_classes(model, samples)
    parts: list[tuple[LabelledSample, np.ndarray | None]] = []
    if predicted is None:
        parts = [(s, None) for s in samples]
    else:
        befores = _as_list(predicted)
        masks = _as_list(reviewed) if reviewed is not None else [None] * len(samples)
        if len(befores) != len(samples) or len(masks) != len(samples):
            raise InputError(f"{len(samples)} corrected labels but {len(befores)} predictions and "
                             f"{len(masks)} reviewed masks")
        for s, before, mask in zip(samples, befores, masks):
            mask = reviewed_voxels(s.labels, before) if mask is None else np.asarray(mask, bool)
            parts.append((s, mask))
            parts.append((replace(s, labels=before), ~mask))  # the model's answer where nobody looked
        if not any(mask.any() for s, mask in parts[0::2]):
            raise InputError("the corrected labels equal the prediction: paint the corrections first")
    learned = {"steps": int(steps), "corrected_images": len(samples),
               "training_images": sum(r.origin == "training" for r in replay),
               "earlier_corrections": sum(r.origin == "corrections" for r in replay),
               "reviewed_voxels": int(sum(np.asarray(s.labels).size if mask is None else mask.sum()
                                          for s, mask in parts[::1 if predicted is None else 2]))}
    if hasattr(model, "members"):  # an ensemble (planned under a time limit, or --folds): each member learns them
        from napari_medml.errors import NothingLearned

        tuned_members, taken = [], []
        for member in model.members:
            try:
                if stop is not None and stop.stopped:
                    raise NothingLearned("stopped")
                tuned = yield from retrain_on_corrections(  # the masks made once, for all members
                    member, images, corrected, steps, predicted=predicted,
                    reviewed=None if predicted is None else [mask for _, mask in parts[0::2]], replay=replay,
                    spacing=spacing, channel_axis=channel_axis, augment=augment, stop=stop)
            except NothingLearned:  # stopped before its first step: it stays as it was, the others' kept
                tuned_members.append(member)
                continue
            tuned_members.append(tuned)
            taken.append(int(tuned.provenance["finetuned"]["steps"]))
        if stop is not None and stop.stopped:  # the steps the members took, and how many of them learned
            if not taken:
                raise NothingLearned("stopped before the first fine-tuning step: the model is as it was")
            learned.update(steps=sum(taken), stopped=True, members_tuned=f"{len(taken)} of {len(model.members)}")
        # its own class: segmentation.ensemble imports segmentation.task
        return type(model)(tuned_members, provenance={**model.provenance, "finetuned": learned},
                           max_minutes=model.config.optim.max_minutes)

    from napari_medml.segmentation.task import fit

    background = _free_id([*model.class_ids, *(int(np.max(s.labels, initial=0)) for s, _ in parts),
                           *(int(np.max(r.labels, initial=0)) for r in replay)])
    encoded = [_scribbles(s, np.asarray(s.labels), mask, background) for s, mask in parts]
    encoded += [_scribbles(s, np.asarray(s.labels), None, background) for s in replay]
    encoded = [s for s in encoded if np.any(s.labels)]
    channel = _common_channel_axis(encoded)
    config = finetune_config(model.config, steps, augment, background_id=background)
    taken = [0]
    tuned = yield from _counting(fit([_channels_first(s, channel) for s in encoded], [s.labels for s in encoded],
                                     config, spacing=[s.spacing for s in encoded], channel_axis=channel, stop=stop,
                                     init_model=model), taken)  # fmt: skip
    tuned.config = model.config  # its own settings: the next fine-tune takes a tenth of its rate, not of this one's
    for key in ("orientation", "plan", "label_mode"):  # the grid it learned on; the plan (TTA, intensities)
        if model.provenance.get(key):
            tuned.provenance[key] = model.provenance[key]
    if stop is not None and stop.stopped:  # the steps it took before the Stop
        learned.update(steps=taken[0], stopped=True)
    tuned.provenance["finetuned"] = learned  # what it learned from: the Predict widget's status says it
    return tuned


def describe_finetune(name: str, learned: dict, corrected: str) -> str:
    """What a fine-tune learned from, in one line.

    Parameters
    ----------
    name : str
        The model's name.
    learned : dict
        The tuned model's ``provenance["finetuned"]``.
    corrected : str
        The corrected labels' name (a prediction whose edits were learned).
    """
    members = f"; {learned['members_tuned']} members" if learned.get("members_tuned") else ""
    stopped = f" (stopped{members})" if learned.get("stopped") else ""
    note = (f"'{name}' fine-tuned {learned.get('steps', 0)} steps{stopped} on the "
            f"{learned.get('reviewed_voxels', 0):,} "
            f"voxels you changed in '{corrected}' or saw beside a change")
    also = [f"its {n} training image(s)" for n in [learned.get("training_images", 0)] if n]
    also += [f"{n} earlier round(s) of corrections" for n in [learned.get("earlier_corrections", 0)] if n]
    return note + "".join(f" and {a}" for a in also)


def _counting(run: Generator[Any, None, Any], taken: list[int]) -> Generator[Any, None, Any]:
    """``run``'s reports passed on, the last one's step kept in ``taken[0]``; its result returned."""
    while True:
        try:
            report = next(run)
        except StopIteration as end:
            return end.value
        taken[0] = max(taken[0], int(getattr(report, "step", 0) or 0))
        yield report


def _as_list(arrays: Any) -> list:
    return list(arrays) if isinstance(arrays, (list, tuple)) else [arrays]


def _free_id(ids: Sequence[int]) -> int:
    """A label id above all of ``ids``: the scribble background of the fine-tuning run."""
    return int(max(ids)) + 1


def _check_classes(model: Any, samples: list[LabelledSample]) -> None:
    """Refuse ids the model does not have (before they could be taken for the free background id)."""
    present: set[int] = set()
    for s in samples:
        present.update(np.unique(np.asarray(s.labels)).tolist())
    extra = sorted(present - set(model.class_ids))
    if extra:
        known = ", ".join(str(c) for c in model.class_ids)
        raise InputError(f"the corrections hold class id(s) {', '.join(map(str, extra))} that the model does not "
                         f"know (its classes are {known}): paint only the model's classes, or train a new model with "
                         "the new class in Train")


def _scribbles(sample: LabelledSample, labels: np.ndarray, keep: np.ndarray | None,
               background: int | None = None) -> LabelledSample:
    """``sample`` with its labels as scribbles: background ``background``, 0 not labelled,
    voxels outside ``keep`` not labelled. ``background=None`` keeps the sample's own id."""
    target = background if background is not None else (sample.background_id or _free_id([int(labels.max())]))
    dtype = np.result_type(labels.dtype, np.min_scalar_type(target))
    out = labels.astype(dtype, copy=True)
    if sample.background_id is None:  # dense: 0 is the background class
        out[labels == 0] = target
    elif sample.background_id != target:
        out[labels == sample.background_id] = target
    if keep is not None:
        out[~keep] = 0
    return replace(sample, labels=out, background_id=target)


def _common_channel_axis(samples: list[LabelledSample]) -> int | None:
    """0 when any sample has channels (each is moved there), else None."""
    return 0 if any(s.channel_axis is not None for s in samples) else None


def _channels_first(sample: LabelledSample, channel: int | None) -> Any:
    """The image with its channels on axis 0 (a single channel added when it has none)."""
    if channel is None:
        return sample.image
    if sample.channel_axis is None:
        return np.asarray(sample.image)[None]
    return np.moveaxis(np.asarray(sample.image), sample.channel_axis, 0)
