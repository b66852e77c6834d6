"""The validation margin a plan chooses: the training labels left out beside a held-out part."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from napari_medml.segmentation import sample_groups
from napari_medml.segmentation.split import axis_phrase, holds_out_blocks

__all__ = ["planned_margin"]


def planned_margin(shape: Sequence[int], train_shape: Sequence[int], n_images: int, folds: int,
                   val_fraction: float, patch: Sequence[int],
                   groups: Sequence[int] | None = None) -> tuple[int, str]:
    """The validation margin a plan chooses, in voxels, and why.

    Where a block is held out (:func:`holds_out_blocks`), 5 % of the (median) image along its
    longest axis is left unlabeled between the training labels and the block, so that the
    block scores like a region the model has not seen; if the training part (an ensemble
    member's thinnest piece beside its fold's block) still holds the patch with it. Where
    whole images are held out and they are slices of volumes (``groups``), 5 % of the median
    volume's slices, at least 1, are left out of training beside each held-out slice
    (:func:`~napari_medml.segmentation.sample_groups.slice_margin`).

    Parameters
    ----------
    shape, train_shape : sequence of int
        The (median) image's spatial shape and the smallest training region after the split.
    n_images, folds : int
    val_fraction : float
    patch : sequence of int
        The planned patch size (voxels).
    groups : sequence of int, optional
        The number of consecutive images that are slices of one volume, per volume.
    """
    axis = int(np.argmax(shape))
    length = shape[axis]
    train_len = train_shape[axis] if folds > 1 else length - max(1, math.ceil(length * val_fraction))
    validated = folds > 1 or val_fraction > 0
    blocks = holds_out_blocks(n_images, folds)
    if not validated:
        return 0, "no validation"
    slices = sample_groups.slice_margin(groups)
    if not blocks and slices:
        return slices, (f"{slices} slice{'s' if slices != 1 else ''} of a volume left out of training beside each "
                        "held-out slice (the images are slices or frames of volumes; whole images are held out)")
    if not blocks:
        return 0, "several images: whole images are held out"
    margin = round(0.05 * length)
    if not margin or train_len - margin < patch[axis]:
        piece = "thinnest training piece of a fold" if folds > 1 else "training part"
        # trial 44: "the 16-voxel patch needs the 12 voxels" where the patch was padded past them
        along = f"{train_len} voxels of the {piece} along {axis_phrase(axis, len(shape))}"
        if not margin:
            return 0, f"no room: 5% of the image's {length} voxels along {axis_phrase(axis, len(shape))} is under one"
        room = "are fewer than" if train_len < patch[axis] else f"leave no {margin} beside"
        return 0, f"no room: the {along} {room} a {patch[axis]}-voxel patch"
    image = "the image" if n_images == 1 else "the median image"
    return margin, (f"5% of {image} between the training labels and the held-out block"
                    + (" of each fold" if folds > 1 else "")
                    + (f" in each image ({n_images} images, {folds} folds)" if n_images > 1 else ""))
