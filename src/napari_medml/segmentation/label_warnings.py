"""Warnings on the labels a segmentation run trains from: a class with too few labelled
voxels, masks saved with different ids (0/1 in some files, 0/255 in another), and dense
labels of a volume painted on one slice only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_medml.segmentation.data import Region
from napari_medml.segmentation.split import class_id_text, present_classes

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
