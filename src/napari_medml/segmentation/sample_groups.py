"""Samples that are slices of one volume: which of them may train beside held-out ones.

A 2D network trained on volumes takes each slice (or each frame of a time series) as a
sample. Neighbouring slices of one volume are nearly the same image, and an object cut by
the slicing shows in several of them: a held-out slice scored next to a trained one
scores the model on what it has seen. ``groups`` gives, in order, how many consecutive
samples come from each volume (``(31, 1, 1)``: a volume's 31 slices, then two 2D images),
and the training samples within a gap of a held-out slice of the same volume are left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_medml.errors import InputError

__all__ = ["check_groups", "slice_margin", "training_samples"]


def check_groups(groups: Sequence[int] | None, n: int) -> np.ndarray | None:
    """The volume each of ``n`` samples belongs to (``(n,)`` int), or None without groups.

    Raises
    ------
    InputError
        The group sizes do not add up to the number of samples.
    """
    if groups is None:
        return None
    sizes = [int(g) for g in groups]
    if sum(sizes) != n or any(g < 1 for g in sizes):
        raise InputError(f"sample_groups {tuple(sizes)} add up to {sum(sizes)} samples but {n} images were given: "
                         "give the number of consecutive samples of each volume (slices or frames), or None")
    return np.repeat(np.arange(len(sizes)), sizes)


def slice_margin(groups: Sequence[int] | None) -> int:
    """The planned gap, in slices, between the held-out and the trained slices of a volume:
    5 % of the median volume's slices (as the planned margin of a held-out block), at least 1;
    0 when no volume gives more than one sample."""
    sizes = [int(g) for g in groups or () if g > 1]
    return max(1, round(0.05 * float(np.median(sizes)))) if sizes else 0


def training_samples(n: int, held_out: Sequence[int], groups: Sequence[int] | None,
                     margin: int) -> tuple[list[int], int, int]:
    """The samples that train when ``held_out`` are validated.

    Parameters
    ----------
    n : int
        Number of samples.
    held_out : sequence of int
        Indices of the validation samples.
    groups : sequence of int, optional
        Consecutive samples per volume (see the module); None: every sample its own image.
    margin : int
        Slices of a volume on either side of a held-out slice left out of training; at
        least 1 is left out (a neighbouring slice is nearly the same image). Narrowed when
        it would leave nothing to train on.

    Returns
    -------
    train : list of int
        Indices of the training samples, in order.
    gap : int
        The gap used (slices).
    dropped : int
        Number of samples left out of both parts.

    Raises
    ------
    InputError
        ``groups`` that do not add up to ``n``.
    """
    group = check_groups(groups, n)
    held = set(int(i) for i in held_out)
    rest = [i for i in range(n) if i not in held]
    if group is None:
        return rest, 0, 0
    for gap in range(max(1, int(margin)), -1, -1):
        near = {j for i in held for j in range(max(0, i - gap), min(n, i + gap + 1)) if group[j] == group[i]}
        kept = [j for j in rest if j not in near]
        if kept:
            return kept, gap, len(rest) - len(kept)
    return rest, 0, 0
