"""The train/validation split of a segmentation run, chosen so training sees every class.

Whole images are held out when there are several; with one image, a block at one end of
an axis. The default is the last images, or the last block along the longest axis; when
that would hold out every voxel of a class, another choice that keeps every class in
the training part is taken and the note says so. :func:`missing_from_training` tells
what the final training part still lacks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from napari_medml.errors import InputError
from napari_medml.segmentation import sample_groups
from napari_medml.segmentation.data import Region

__all__ = ["axis_phrase", "class_id_text", "holds_out_blocks", "present_classes", "split_fold",
           "split_train_val"]


def axis_phrase(axis: int, ndim: int) -> str:
    """``"axis 2 (X)"``: a spatial axis by its number and letter, so a user whose file names
    its axes otherwise (a NIfTI's x, y, z are its last three in reverse) knows which it is.

    Parameters
    ----------
    axis : int
        The axis of a ``(Z, Y, X)`` or ``(Y, X)`` array.
    ndim : int
        The array's number of spatial axes; other than 2 or 3, the number alone.
    """
    letters = {2: "YX", 3: "ZYX"}.get(ndim)
    return f"axis {axis} ({letters[axis]})" if letters and 0 <= axis < ndim else f"axis {axis}"


# ends the split note of a held-out part without foreground (the last line of a run reads it)
NO_FOREGROUND = "; it holds no foreground, so its Dice says nothing of the model"


def present_classes(label: np.ndarray) -> set[int]:
    """Encoded values (``channel + 1``, 0 = unlabeled) present in a ``uint8`` labels array."""
    return _present(_class_counts(label))


def _class_counts(label: np.ndarray) -> np.ndarray:
    return np.bincount(np.asarray(label, dtype=np.uint8).ravel(), minlength=256)


def _present(counts: np.ndarray) -> set[int]:
    return {int(v) for v in np.flatnonzero(counts) if v > 0}


def class_id_text(values: Sequence[int], class_ids: Sequence[int] | None) -> str:
    """The user's label ids of encoded label values (0 unlabelled, ``v`` >= 1 the class
    ``class_ids[v - 1]``, 1 the background), as "3, 7"; ``v - 1`` where the ids are not known.

    Parameters
    ----------
    values : sequence of int
        Encoded label values, 1 and up.
    class_ids : sequence of int or None
        The label id of each class, the background's first.

    Returns
    -------
    str
    """
    ids = [class_ids[v - 1] if class_ids is not None and v - 1 < len(class_ids) else v - 1 for v in values]
    return ", ".join(str(i) for i in ids)


def split_train_val(images: list[np.ndarray], labels: list[np.ndarray], val_fraction: float,
                    context: Sequence[int] | None = None, class_ids: Sequence[int] | None = None, margin: int = 0,
                    groups: Sequence[int] | None = None) -> tuple[list[Region], list[Region], str]:
    """Hold out whole images, or with one image a block at one end of an axis.

    Parameters
    ----------
    images : list of np.ndarray
        ``(C, *spatial)`` each.
    labels : list of np.ndarray
        Encoded labels (``channel + 1``, 0 unlabeled), ``(*spatial)`` uint8 each.
    val_fraction : float
        Share held out, in [0, 1).
    context : sequence of int, optional
        The validation block of a single image may reach this many voxels (one patch)
        into the training part as *unlabeled* image context, so that sliding-window
        inference sees real neighbours instead of padding; only the held-out block is
        scored. Train regions never overlap the held-out block.
    class_ids : sequence of int, optional
        Class id of each channel, for the note.
    margin : int
        With one image: the training labels this many voxels next to the held-out block
        are left out (unlabeled; the image stays), so that structures cut by the border
        are not learned on one side and scored on the other: the validation score then
        predicts the score on a region the model has not seen. A block held out along
        another axis than the longest (the default one held no foreground) keeps at most
        what leaves a patch (``context``) of training labels along that axis. With several images that
        are slices of a volume (``groups``): the slices of that volume this many on either
        side of a held-out slice (at least 1) are left out of training.
    groups : sequence of int, optional
        The number of consecutive images that are slices (or frames) of one volume, per
        volume (:mod:`~napari_medml.segmentation.sample_groups`); None: unrelated images.

    Returns
    -------
    train, val : list of Region
    note : str
        A sentence describing the split (and why it is not the default, if it is not).

    Raises
    ------
    InputError
        A single image too small to hold out a block; ``groups`` that do not add up to the
        number of images.
    """
    n = len(images)
    sample_groups.check_groups(groups, n)
    if val_fraction <= 0:
        return [Region(i, l) for i, l in zip(images, labels)], [], "no validation (val_fraction = 0)"
    counts = [_class_counts(lab) for lab in labels]  # one pass over the labels: classes and foreground
    present = [_present(c) for c in counts]
    every = set().union(*present)
    if not holds_out_blocks(n, 1):
        foreground = [int(c[2:].sum()) for c in counts]  # encoded 2 and up
        return _split_images(images, labels, present, every, foreground, val_fraction, class_ids, groups, margin)
    shape = labels[0].shape
    n_blocks = [max(1, int(math.ceil(s * val_fraction))) for s in shape]
    axes = sorted(range(len(shape)), key=lambda a: -shape[a])  # longest first (ties: first axis)
    candidates = [(a, end) for end in ("last", "first") for a in axes if shape[a] - n_blocks[a] >= 1]
    default = (axes[0], "last")
    if default not in candidates:
        raise InputError(f"image of shape {shape} is too small to hold out a validation block of val_fraction="
                         f"{val_fraction:g} of it: lower the validation share, or set val_fraction=0 (no validation)")
    chosen, why = default, ""
    lost = every - _block_classes(labels[0], *default, n_blocks[default[0]], train=True)

    def scored(c: tuple[int, str]) -> set[int]:  # foreground classes (encoded 2 and up) in a held-out block
        return {v for v in _block_classes(labels[0], *c, n_blocks[c[0]], train=False) if v >= 2}

    if not lost and not scored(default) and every - {1}:
        # a block without foreground scores Dice 0 whatever the model: hold out one that has some
        keeps = [c for c in candidates if not every - _block_classes(labels[0], *c, n_blocks[c[0]], train=True)]
        # the most classes scored; then the longest axis, as the default
        scoring = sorted((c for c in keeps if scored(c)), key=lambda c: (-len(scored(c)), c[0] != default[0]))
        if scoring:
            chosen = scoring[0]
            why = (f" (the default held-out block, the last {n_blocks[default[0]]} voxels along "
                   f"{axis_phrase(default[0], len(shape))}, held no foreground to score)")
        else:
            why = NO_FOREGROUND
    if lost:
        fits = [c for c in candidates if not every - _block_classes(labels[0], *c, n_blocks[c[0]], train=True)]
        both = [c for c in fits if not every - _block_classes(labels[0], *c, n_blocks[c[0]], train=False)]
        if both or fits:
            # of those, one that scores foreground (the most classes; stable: candidates' order)
            chosen = sorted(both or fits, key=lambda c: -len(scored(c)))[0]
            why = (f" (the default held-out block, the last {n_blocks[default[0]]} voxels along "
                   f"{axis_phrase(default[0], len(shape))}, held every voxel of class "
                   f"{class_id_text(sorted(lost), class_ids)})")
            if not scored(chosen):
                why += NO_FOREGROUND
    axis, end = chosen
    asked = max(0, int(margin))
    if axis != default[0] and asked and context is not None:
        # the margin was planned to leave a patch of training labels along the longest axis; along the axis the
        # block moved to it leaves one there too (review 43: 15 of 32 slices went, 17 left for a 24-slice patch)
        margin = min(asked, max(0, shape[axis] - n_blocks[axis] - int(context[axis])))
    margin = max(0, min(int(margin), shape[axis] - n_blocks[axis] - 1))
    train, val = _cut(images[0], labels[0], axis, end, n_blocks[axis], context, margin)
    note = (f"validation on the {end} {n_blocks[axis]} of {shape[axis]} voxels along "
            f"{axis_phrase(axis, len(shape))}{why}")
    if margin:
        note += f", {margin} voxels of training labels next to it left out"
    if margin != asked and axis != default[0]:
        note += (f"; the margin is {margin} voxels, not {asked}: along this axis the training part keeps a patch "
                 f"({int(context[axis])} voxels) of labels")
    return [train], [val], note


MIN_FOLD_BLOCK = 8  # voxels: a thinner fold block leaves pieces too thin for a patch (a 2-voxel patch axis)


def holds_out_blocks(n_images: int, folds: int) -> bool:
    """Whether validation holds out a block of each image (one image, or fewer images than
    ``folds``) rather than whole images (:func:`split_train_val`, :func:`split_fold`)."""
    return n_images < max(folds, 2)


def split_fold(images: list[np.ndarray], labels: list[np.ndarray], fold: int, folds: int,
               context: Sequence[int] | None = None, margin: int = 0,
               groups: Sequence[int] | None = None) -> tuple[list[Region], list[Region], str]:
    """Fold ``fold`` of ``folds`` (an ensemble member's split): each fold validates on a
    different part, and together the folds validate on all of the data.

    With at least ``folds`` images, fold k holds out the k-th of ``folds`` consecutive
    groups of images, and the slices of a volume (``groups``, as in :func:`split_train_val`)
    next to a held-out one do not train; otherwise it holds out the
    k-th of ``folds`` equal blocks along each image's longest axis (the parts before and
    after it train). A held-out block takes up to ``context`` voxels of unlabeled
    neighbours, as in :func:`split_train_val`.

    Parameters
    ----------
    margin : int
        Blocks: the training labels this many voxels on either side of the held-out block
        are left out (unlabeled; the image stays); slices of a volume: as in
        :func:`split_train_val`.
    groups : sequence of int, optional
        As in :func:`split_train_val`.

    Raises
    ------
    InputError
        An image too small to cut into ``folds`` blocks of at least ``MIN_FOLD_BLOCK``
        voxels; ``groups`` that do not add up to the number of images.
    """
    n = len(images)
    sample_groups.check_groups(groups, n)
    if not holds_out_blocks(n, folds):
        lo_i, hi_i = fold * n // folds, (fold + 1) * n // folds
        kept, gap, dropped = sample_groups.training_samples(n, range(lo_i, hi_i), groups, margin)
        train = [Region(images[i], labels[i]) for i in kept]
        val = [Region(images[i], labels[i]) for i in range(lo_i, hi_i)]
        which = f"image {lo_i + 1}" if hi_i - lo_i == 1 else f"images {lo_i + 1}-{hi_i}"
        present = [present_classes(lab) for lab in labels]
        return train, val, (f"fold {fold + 1} of {folds}: validation on {which} of {n}"
                            + _left_out(gap, dropped, groups, margin)
                            + _empty_note(set().union(*present), set().union(*present[lo_i:hi_i])))
    train, val = [], []
    margin = max(0, int(margin))
    for image, label in zip(images, labels):
        shape = label.shape
        axis = max(range(len(shape)), key=lambda a: shape[a])
        if shape[axis] // folds < MIN_FOLD_BLOCK:
            most = shape[axis] // MIN_FOLD_BLOCK
            raise InputError(f"an image of shape {shape} cut into {folds} folds gives blocks of {shape[axis] // folds} "
                             f"voxels along {axis_phrase(axis, len(shape))}, fewer than {MIN_FOLD_BLOCK}: "
                             + (f"use at most {most} folds" if most >= 2 else "train one model (folds 1)"))
        start, stop = fold * shape[axis] // folds, (fold + 1) * shape[axis] // folds
        extra = max(0, int(context[axis]) - (stop - start)) if context is not None else 0
        lo, hi = max(0, start - extra // 2), min(shape[axis], stop + extra - extra // 2)
        val_label = label[_block(shape, axis, lo, hi)].copy()
        val_label[_block(val_label.shape, axis, 0, start - lo)] = 0  # context only: never scored
        val_label[_block(val_label.shape, axis, stop - lo, None)] = 0
        val.append(Region(image[(slice(None), *_block(shape, axis, lo, hi))], val_label))
        for a, b, edge in ((0, start, "last"), (stop, shape[axis], "first")):  # the edge touching the block
            if b > a:
                part = _block(shape, axis, a, b)
                train.append(Region(image[(slice(None), *part)], _unlabel_edge(label[part], axis, edge, margin)))
    note = (f"fold {fold + 1} of {folds}: validation on block {fold + 1} of {folds} along each image's "
            "longest axis")
    if margin:
        note += f", {margin} voxels of training labels on either side of it left out"
    every = set().union(*(present_classes(lab) for lab in labels))
    return train, val, note + _empty_note(every, set().union(*(present_classes(r.label) for r in val)))


def _empty_note(every: set[int], held: set[int]) -> str:
    """:data:`NO_FOREGROUND` when the labels hold foreground (``every``: their classes) but the held-out
    part (``held``: its classes) holds none."""
    return NO_FOREGROUND if every - {1} and not {v for v in held if v >= 2} else ""


def _split_images(images: list[np.ndarray], labels: list[np.ndarray], present: list[set[int]], every: set[int],
                  foreground: list[int], val_fraction: float, class_ids: Sequence[int] | None,
                  groups: Sequence[int] | None, margin: int) -> tuple[list[Region], list[Region], str]:
    """Hold out whole images: the last ones, skipping any whose removal loses a class (and leaving out of
    training the slices of a volume next to a held-out one); when those hold no foreground, ones that do."""
    n = len(images)
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    def scores(indices: Sequence[int]) -> bool:  # any foreground (encoded 2 and up) to score
        return any(v >= 2 for i in indices for v in present[i])
    val_idx = _held_out(n, n_val, list(reversed(range(n))), present, every, groups, margin)
    why = "they hold every voxel of a class that training needs"
    if every - {1} and not scores(val_idx):
        # held-out images without foreground score Dice 0 whatever the model (as blocks do above): hold out
        # ones with some if training keeps every class and a third of the foreground (the margin drops more)
        first = sorted(reversed(range(n)), key=lambda i: not scores([i]))
        other = _held_out(n, n_val, first, present, every, groups, margin, fill=False)
        if len(other) == n_val and scores(other) and 3 * sum(
                foreground[j] for j in sample_groups.training_samples(n, other, groups, margin)[0]) >= sum(foreground):
            val_idx, why = other, "the last ones hold no foreground to score"
    kept, gap, dropped = sample_groups.training_samples(n, val_idx, groups, margin)
    train = [Region(images[i], labels[i]) for i in kept]
    val = [Region(images[i], labels[i]) for i in val_idx]
    numbers = ", ".join(str(i + 1) for i in val_idx)
    which = (f"the last {n_val} of {n} images" if val_idx == list(range(n - n_val, n))
             else f"image(s) {numbers} of {n} (not the last: {why})")
    note = _empty_note(every, set().union(*(present[i] for i in val_idx)))
    return train, val, f"validation on {which}" + _left_out(gap, dropped, groups, margin) + note


def _held_out(n: int, n_val: int, order: Sequence[int], present: list[set[int]], every: set[int],
              groups: Sequence[int] | None, margin: int, fill: bool = True) -> list[int]:
    """Up to ``n_val`` images to hold out, taken in ``order``, skipping any whose removal loses a
    class (without the slices the margin leaves out beside held-out ones); with ``fill``, the
    last images make up the number when no choice keeps every class."""
    val_idx: list[int] = []
    for i in order:
        if len(val_idx) == n_val:
            break
        kept = sample_groups.training_samples(n, sorted((*val_idx, i)), groups, margin)[0]
        rest = set().union(*(present[j] for j in kept))
        if not every - rest:
            val_idx.append(i)
    for i in reversed(range(n) if fill else []):  # no choice keeps every class: the last images
        if len(val_idx) < n_val and i not in val_idx:
            val_idx.append(i)
    return sorted(val_idx)


def _left_out(gap: int, dropped: int, groups: Sequence[int] | None = None, margin: int = 0) -> str:
    """The split note's words on the slices of a volume left out beside held-out ones, and on a margin
    (``margin`` slices asked, at least 1, of the volumes in ``groups``) that had to be narrowed."""
    text = "" if not dropped else (f", {dropped} slice{'s' if dropped != 1 else ''} of the same volume within "
                                   f"{gap} of them left out of training (neighbouring slices or frames are nearly "
                                   "the same image)")
    asked = max(1, int(margin)) if groups is not None else 0
    if gap < asked:  # cases 38 s40: the plan said 1 slice left out, and a 2-slice volume trained its neighbour
        near = "a neighbouring slice trains" if gap == 0 else f"slices {gap + 1} away from a held-out one train"
        text += (f"; the margin is {gap} slice{'s' if gap != 1 else ''}, not {asked}: the volume has too few slices "
                 f"to leave more out and still train, so {near} and the validation score may read high")
    return text


def _block(shape: Sequence[int], axis: int, start: int, stop: int | None) -> tuple[slice, ...]:
    index = [slice(None)] * len(shape)
    index[axis] = slice(start, stop)
    return tuple(index)


def _block_classes(label: np.ndarray, axis: int, end: str, n_block: int, *, train: bool) -> set[int]:
    size = label.shape[axis]
    cut = size - n_block if end == "last" else n_block
    first_part = _block(label.shape, axis, 0, cut)
    second_part = _block(label.shape, axis, cut, None)
    is_first_train = end == "last"
    part = first_part if is_first_train == train else second_part
    return present_classes(label[part])


def _cut(image: np.ndarray, label: np.ndarray, axis: int, end: str, n_block: int,
         context: Sequence[int] | None, margin: int = 0) -> tuple[Region, Region]:
    size = label.shape[axis]
    train_len = size - n_block
    extra = min(train_len, max(0, int(context[axis]) - n_block)) if context is not None else 0
    if end == "last":
        tr, va, ctx = (_block(label.shape, axis, 0, train_len), _block(label.shape, axis, train_len - extra, None),
                       _block(label.shape, axis, 0, extra))
    else:
        tr, va = _block(label.shape, axis, n_block, None), _block(label.shape, axis, 0, n_block + extra)
        ctx = _block(label.shape, axis, n_block, n_block + extra)
    val_label = label[va].copy()
    val_label[ctx] = 0  # context only: unlabeled, never scored
    train_label = _unlabel_edge(label[tr], axis, end, margin)
    return Region(image[(slice(None), *tr)], train_label), Region(image[(slice(None), *va)], val_label)


def _unlabel_edge(label: np.ndarray, axis: int, edge: str, margin: int) -> np.ndarray:
    """``label`` with its ``margin`` voxels at the ``edge`` ("first" or "last") of ``axis``
    unlabeled (0): the training labels next to a held-out block (a copy; ``label`` itself
    when ``margin`` is 0)."""
    if not margin:
        return label
    label = label.copy()
    n = label.shape[axis]
    label[_block(label.shape, axis, max(0, n - margin), None) if edge == "last" else
          _block(label.shape, axis, 0, margin)] = 0
    return label
