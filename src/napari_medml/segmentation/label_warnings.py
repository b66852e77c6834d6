"""Warnings on the labels a segmentation run trains from: a class with too few labelled
voxels, masks saved with different ids (0/1 in some files, 0/255 in another), and dense
labels of a volume painted on one slice only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_medml.segmentation.data import Region
from napari_medml.segmentation.split import _names, present_classes

__all__ = ["FEW_VOXELS", "few_voxels", "masks_of_other_ids", "one_painted_slice"]


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
    said = ", ".join(f"class {_names([v], class_ids)}: {n} voxel{'s' if n != 1 else ''}" for v, n in few)
    return (f"warning: too few labelled voxels to learn from ({said}, in the training part): label at least "
            f"{FEW_VOXELS} voxels of each class, e.g. a few brush strokes")


def masks_of_other_ids(labels: Sequence[np.ndarray], class_ids: Sequence[int]) -> str | None:
    """A warning when several label images each hold background and one other id, but not
    the same id (masks saved as 0/1 in some files and 0/255 in another), or None: training
    learns them as different classes, and a class seen in one file only.

    Parameters
    ----------
    labels : sequence of np.ndarray
        Every image's labels, encoded ``channel + 1`` (dense: 1 is the background).
    class_ids : sequence of int
        Class id per channel (background first).
    """
    if len(labels) < 2:
        return None
    each = [present_classes(label) - {1} for label in labels]
    if any(len(codes) != 1 for codes in each) or len(set().union(*each)) < 2:
        return None
    groups: dict[int, list[int]] = {}
    for i, codes in enumerate(each):
        groups.setdefault(next(iter(codes)), []).append(i + 1)
    said = "; ".join(f"id {_names([code], class_ids)} in labels {', '.join(map(str, images))}"
                     for code, images in sorted(groups.items()))
    return (f"warning: each labels image holds one object id besides the background, but not the same one ({said}): "
            "training learns them as different classes. If they are masks of one class, give every mask the same "
            "id (e.g. labels > 0)")


def one_painted_slice(labels: Sequence[np.ndarray]) -> str | None:
    """A warning when dense labels of a volume hold their classes on one slice only (trial 21:
    the other 15 slices trained as background without a word), or None.

    Parameters
    ----------
    labels : sequence of np.ndarray
        Every image's dense labels, encoded ``channel + 1`` (1 is the background), ``(Z, Y, X)``
        for a volume; 2D labels are never warned about.
    """
    for i, label in enumerate(labels):
        if np.ndim(label) != 3 or label.shape[0] < 4:
            continue
        painted = int(np.count_nonzero((np.asarray(label) >= 2).any(axis=(1, 2))))
        if painted == 1:
            which = f" of image {i + 1}" if len(labels) > 1 else ""
            return (f"warning: the labels{which} hold their classes on 1 of {label.shape[0]} slices: in dense mode "
                    "every other slice trains as background; if those slices are not labelled yet, train with "
                    "scribbles (sparse labels: unpainted voxels are ignored) or a 2D network on that slice")
    return None
