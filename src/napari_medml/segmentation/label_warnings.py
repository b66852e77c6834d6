"""Warnings on the labels a segmentation run trains from: a class with too few labelled
voxels, masks saved with different ids (0/1 in some files, 0/255 in another), dense labels
of a volume painted on one slice only, and a class the training part of a split lacks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_medml.errors import InputError
from napari_medml.segmentation.data import Region
from napari_medml.segmentation.split import class_id_text, present_classes

__all__ = ["FEW_VOXELS", "few_voxels", "masks_of_other_ids", "missing_from_training", "one_painted_slice"]


FEW_VOXELS = 10  # labelled voxels of a class below which a run cannot tell it from noise


def few_voxels(train_regions: Sequence[Region], class_ids: Sequence[int]) -> str | None:
    """A warning naming the foreground classes with fewer than ``FEW_VOXELS`` labelled voxels in
    the training part, or None: a run on one labelled voxel saved a model that found nothing.

    Parameters
    ----------
    train_regions : sequence of Region
        The training part after the split (labels encoded ``channel + 1``, 0 unlabeled).
    class_ids : sequence of int
        Class id per channel (background first).
    """
    counts = np.zeros(256, np.int64)
    for region in train_regions:
        counts += np.bincount(np.asarray(region.label, dtype=np.uint8).ravel(), minlength=256)
    few = [(v, int(counts[v])) for v in range(2, len(class_ids) + 1) if 0 < counts[v] < FEW_VOXELS]
    if not few:
        return None
    said = ", ".join(f"class {class_id_text([v], class_ids)}: {n} voxel{'s' if n != 1 else ''}" for v, n in few)
    return (f"warning: too few labelled voxels to learn from ({said}, in the training part): label at least "
            f"{FEW_VOXELS} voxels of each class, e.g. a few brush strokes")


def _volumes(labels: Sequence[np.ndarray], groups: Sequence[int] | None) -> list[list[np.ndarray]]:
    """``labels`` as the volumes they came from: runs of ``groups`` samples (the slices of one
    volume under a 2D network), or each on its own."""
    if not groups or sum(groups) != len(labels):
        return [[label] for label in labels]
    starts = np.cumsum([0, *groups])
    return [list(labels[a:b]) for a, b in zip(starts[:-1], starts[1:])]


def masks_of_other_ids(labels: Sequence[np.ndarray], class_ids: Sequence[int],
                       groups: Sequence[int] | None = None) -> str | None:
    """A warning when several label images each hold background and one other id, but not
    the same id (masks saved as 0/1 in some files and 0/255 in another), or None: training
    learns them as different classes, and a class seen in one file only.

    Parameters
    ----------
    labels : sequence of np.ndarray
        Every image's labels, encoded ``channel + 1`` (dense: 1 is the background).
    class_ids : sequence of int
        Class id per channel (background first).
    groups : sequence of int, optional
        ``DataConfig.sample_groups``: the slices of one volume count as one labels image.
    """
    volumes = _volumes(labels, groups)
    if len(volumes) < 2:
        return None
    each = [set().union(*(present_classes(label) for label in volume)) - {1} for volume in volumes]
    if any(len(codes) != 1 for codes in each) or len(set().union(*each)) < 2:
        return None
    groups: dict[int, list[int]] = {}
    for i, codes in enumerate(each):
        groups.setdefault(next(iter(codes)), []).append(i + 1)
    said = "; ".join(f"id {class_id_text([code], class_ids)} in labels {', '.join(map(str, images))}"
                     for code, images in sorted(groups.items()))
    return (f"warning: each labels image holds one object id besides the background, but not the same one ({said}): "
            "training learns them as different classes. If they are masks of one class, give every mask the same "
            "id (e.g. labels > 0)")


def one_painted_slice(labels: Sequence[np.ndarray], groups: Sequence[int] | None = None) -> str | None:
    """A warning when dense labels of a volume hold their classes on one slice only (trial 21:
    the other 15 slices trained as background without a word), or None.

    Parameters
    ----------
    labels : sequence of np.ndarray
        Every image's dense labels, encoded ``channel + 1`` (1 is the background), ``(Z, Y, X)``
        for a volume; a 2D image is warned about only among the slices of its volume.
    groups : sequence of int, optional
        ``DataConfig.sample_groups``: runs of 2D samples that are the slices of one volume.
    """
    volumes = _volumes(labels, groups)
    for i, volume in enumerate(volumes):
        if len(volume) == 1 and np.ndim(volume[0]) == 3:
            slices = list(np.asarray(volume[0]))
        elif len(volume) > 1 and all(np.ndim(label) == 2 for label in volume):
            slices = volume
        else:
            continue
        painted = sum(bool((np.asarray(label) >= 2).any()) for label in slices)
        if len(slices) >= 4 and painted == 1:
            which = f" of image {i + 1}" if len(volumes) > 1 else ""
            return (f"warning: the labels{which} hold their classes on 1 of {len(slices)} slices: in dense mode "
                    "every other slice trains as background; if those slices are not labelled yet, train with "
                    "scribbles (sparse labels: unpainted voxels are ignored) or a 2D network on that slice")
    return None


def missing_from_training(train_regions: Sequence[Region], labels: Sequence[np.ndarray], class_ids: Sequence[int],
                          split_note: str) -> str | None:
    """A warning naming the classes the training part lacks, or None.

    Parameters
    ----------
    train_regions : sequence of Region
        The training part after the split.
    labels : sequence of np.ndarray
        All encoded labels (training and held out).
    class_ids : sequence of int
        Class id per channel (background first).
    split_note : str
        How the data were split, for the message.

    Raises
    ------
    InputError
        When the training part has no foreground at all (nothing to learn).
    """
    seen = set().union(*(present_classes(r.label) for r in train_regions))
    every = set().union(*(present_classes(lab) for lab in labels))
    lost = sorted(every - seen)
    if not lost:
        return None
    # an ensemble's folds each hold out a part: the validation fraction does not apply
    fix = ("train one model (--folds 1)" if split_note.startswith("fold ")
           else "set the validation fraction to 0 (--val-fraction 0)")
    margin = " left out" in split_note  # trial 44: a --val-margin of 100 on 24 voxels was never named
    if margin:
        fix = f"a smaller validation margin (--val-margin), {fix}"
    if not {v for v in seen if v >= 2}:
        raise InputError(f"the training part has no foreground: every labelled voxel of class "
                         f"{class_id_text([v for v in lost if v >= 2], class_ids)} is held out for validation"
                         f"{' or left out beside it' if margin else ''} ({split_note}); {fix}, or label foreground "
                         "in more of the data")
    return (f"warning: class {class_id_text(lost, class_ids)} is not in the training part, only in the held-out "
            f"validation data ({split_note}): the model cannot learn it; {fix}, or label it in more of the data")
