"""The correct-and-retrain step: what a model learns from a user's corrections.

A corrected prediction is mostly the model's own answer: on a real image the user
changes a few percent of it. Taken whole as dense labels, that answer teaches nothing
new and the short run at the trained rate only moves the model away from what it had
learned. So the run is built from three parts, drawn in turn (the patch sampler draws a
class, then one image that holds it):

* the **reviewed voxels**: those the user changed, and a margin of
  :data:`REVIEW_MARGIN` voxels around each change, which the user saw and left as they
  are (:func:`reviewed_voxels`);
* the **model's own answer on the rest** of each corrected image, so that one
  correction does not redraw what nobody looked at;
* the **model's training data**, when the caller has it (the Train widget keeps it for
  the models it trained, and the corrections of earlier rounds are added), so that the
  model does not forget it.

Everything is encoded as scribbles (0 = not labelled) and learned at a tenth of the
model's rate (:data:`FINETUNE_RATE`).

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
           "finetune_config", "labelled_samples", "retrain_on_corrections", "reviewed_voxels"]

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
    """

    image: Any
    labels: Any
    spacing: tuple[float, ...] | None = None
    channel_axis: int | None = None
    background_id: int | None = None


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


def reviewed_voxels(corrected: np.ndarray, predicted: np.ndarray, margin: int = REVIEW_MARGIN) -> np.ndarray:
    """Voxels the user changed, and those within ``margin`` voxels of a change.

    Parameters
    ----------
    corrected, predicted : ndarray
        ``(*spatial)`` labels after and before the user's edits.
    margin : int
        Chebyshev distance in voxels (a box of side ``2 * margin + 1``).

    Returns
    -------
    ndarray of bool, ``(*spatial)``
    """
    from scipy import ndimage

    changed = np.asarray(corrected) != np.asarray(predicted)
    if margin <= 0 or not changed.any():
        return changed
    return ndimage.binary_dilation(changed, structure=np.ones((3,) * changed.ndim, bool), iterations=margin)


def correction_samples(images: Any, corrected: Any, predicted: Any, spacing: Any = None,
                       channel_axis: int | None = None) -> list[LabelledSample]:
    """The reviewed voxels of corrected predictions, as scribbles (the rest not labelled).

    What the Predict widget adds to a model's training data after fine-tuning, so that a
    later round does not forget this one.

    Parameters
    ----------
    images, corrected, predicted, spacing, channel_axis
        As for :func:`retrain_on_corrections`.

    Returns
    -------
    list of LabelledSample
        One per image that has a change.
    """
    out = []
    for sample, before in zip(labelled_samples(images, corrected, spacing, channel_axis),
                              _as_list(predicted)):
        reviewed = reviewed_voxels(sample.labels, before)
        if reviewed.any():
            out.append(_scribbles(sample, np.asarray(sample.labels), reviewed))
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
    if background_id is None:
        data = replace(config.data, label_mode="dense", val_fraction=0.0)
    else:
        data = replace(config.data, label_mode="sparse", background_id=int(background_id), val_fraction=0.0)
    optim = replace(config.optim, epochs=1, steps_per_epoch=steps, schedule="constant", warmup=0.0,
                    learning_rate=config.optim.learning_rate * FINETUNE_RATE,
                    max_minutes=None, early_stopping_patience=None)
    # no checkpoints: the trained model's folder (a Train bundle's) would get orphaned ones
    return replace(config, data=data, optim=optim, augment=config.augment if augment is None else augment,
                   checkpoint_dir=None)


def retrain_on_corrections(model: Any, images: Any, corrected: Any, steps: int, *, predicted: Any = None,
                           replay: Sequence[LabelledSample] = (), spacing: Any = None,
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
    replay : sequence of LabelledSample
        The model's training data (and earlier rounds' :func:`correction_samples`),
        learned alongside so that the model keeps it.
    spacing, channel_axis, augment, stop
        As for ``fit``; ``augment`` replaces the model's augmentation.

    Returns
    -------
    Model or EnsembleModel
        The fine-tuned model (same classes, patch, normalisation and orientation); its
        ``provenance["finetuned"]`` holds the steps, the numbers of corrected and replayed
        images and of reviewed voxels.

    Raises
    ------
    InputError
        Corrected labels that are empty everywhere, or equal to ``predicted``.
    """
    samples = labelled_samples(images, corrected, spacing, channel_axis)
    if not any(np.any(s.labels) for s in samples):
        raise InputError("the corrected labels are empty: paint the corrections (or keep the prediction) first")
    parts: list[tuple[LabelledSample, np.ndarray | None]] = []
    if predicted is None:
        parts = [(s, None) for s in samples]
    else:
        befores = _as_list(predicted)
        if len(befores) != len(samples):
            raise InputError(f"{len(samples)} corrected labels but {len(befores)} predictions")
        for s, before in zip(samples, befores):
            reviewed = reviewed_voxels(s.labels, before)
            parts.append((s, reviewed))
            parts.append((replace(s, labels=before), ~reviewed))  # the model's answer where nobody looked
        if not any(mask.any() for s, mask in parts[0::2]):
            raise InputError("the corrected labels equal the prediction: paint the corrections first")
    learned = {"steps": int(steps), "corrected_images": len(samples), "replayed_images": len(replay),
               "reviewed_voxels": int(sum(np.asarray(s.labels).size if mask is None else mask.sum()
                                          for s, mask in parts[::1 if predicted is None else 2]))}
    if hasattr(model, "members"):  # an ensemble (planned under a time limit, or --folds): each member learns them
        tuned_members = []
        for member in model.members:
            if stop is not None and stop.stopped:
                tuned_members.append(member)
                continue
            tuned_members.append((yield from retrain_on_corrections(
                member, images, corrected, steps, predicted=predicted, replay=replay, spacing=spacing,
                channel_axis=channel_axis, augment=augment, stop=stop)))
        # its own class: segmentation.ensemble imports segmentation.task
        return type(model)(tuned_members, provenance={**model.provenance, "finetuned": learned})

    from napari_medml.segmentation.task import fit

    background = _free_id(model.class_ids)
    encoded = [_scribbles(s, np.asarray(s.labels), mask, background) for s, mask in parts]
    encoded += [_scribbles(s, np.asarray(s.labels), None, background) for s in replay]
    encoded = [s for s in encoded if np.any(s.labels)]
    channel = _common_channel_axis(encoded)
    config = finetune_config(model.config, steps, augment, background_id=background)
    tuned = yield from fit([_channels_first(s, channel) for s in encoded], [s.labels for s in encoded], config,
                           spacing=[s.spacing for s in encoded], channel_axis=channel, stop=stop, init_model=model)
    for key in ("orientation", "plan", "label_mode"):  # the grid it learned on; the plan (TTA, intensities)
        if model.provenance.get(key):
            tuned.provenance[key] = model.provenance[key]
    tuned.provenance["finetuned"] = learned  # what it learned from: the Predict widget's status says it
    return tuned


def describe_finetune(name: str, learned: dict, corrected: str, edits: bool) -> str:
    """What a fine-tune learned from, in one line.

    Parameters
    ----------
    name : str
        The model's name.
    learned : dict
        The tuned model's ``provenance["finetuned"]``.
    corrected : str
        The corrected labels' name.
    edits : bool
        Whether the prediction was known (then the reviewed voxels were learned), or the
        whole layer.
    """
    voxels, replayed = learned.get("reviewed_voxels", 0), learned.get("replayed_images", 0)
    note = f"'{name}' fine-tuned {learned.get('steps', 0)} steps on "
    note += (f"the {voxels:,} voxels you changed in '{corrected}' or saw beside a change" if edits
             else f"all {voxels:,} voxels of '{corrected}'")
    return note + (f" and its {replayed} training image(s)" if replayed else "")


def _as_list(arrays: Any) -> list:
    return list(arrays) if isinstance(arrays, (list, tuple)) else [arrays]


def _free_id(class_ids: Sequence[int]) -> int:
    """A label id no class uses: the scribble background of the fine-tuning run."""
    return int(max(class_ids)) + 1


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
