"""Slices of a volume as the samples of a 2D network: a held-out slice's neighbours never train."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medml.errors import ConfigError, InputError
from napari_medml.segmentation import label_warnings, margin as validation_margin, sample_groups, split


def _slices(n: int) -> tuple[list, list]:
    """``n`` one-channel 2D samples whose image holds their own index (to tell them apart)."""
    return ([np.full((1, 16, 16), i, np.float32) for i in range(n)],
            [np.ones((16, 16), np.uint8) + (np.arange(16) > 8)[None].astype(np.uint8) for _ in range(n)])


def _indices(regions: list) -> list[int]:
    return [int(r.image[0, 0, 0]) for r in regions]


def test_the_trial_case_a_volume_among_2d_images_leaves_the_held_out_slices_neighbours_out() -> None:
    """Trial 19: a 31-slice volume and one 2D image, 20 % held out: the last 6 samples are slices
    25-30 and the image; slice 24 touched them and trained. Now it is left out, and said."""
    images, labels = _slices(32)
    train, val, note = split.split_train_val(images, labels, 0.2, groups=(31, 1))
    assert _indices(val) == list(range(26, 32))
    assert _indices(train) == list(range(25))  # slice 25 (next to 26) left out; without groups it trained
    assert "1 slice of the same volume within 1 of them left out of training" in note
    plain_train, _, plain_note = split.split_train_val(images, labels, 0.2)
    assert _indices(plain_train) == list(range(26)) and "left out" not in plain_note
    # a planned margin of 2 slices
    train, _, note = split.split_train_val(images, labels, 0.2, groups=(31, 1), margin=2)
    assert _indices(train) == list(range(24)) and "2 slices" in note and "within 2" in note


def test_a_fold_inside_a_volume_leaves_out_the_slices_on_both_sides() -> None:
    """``--folds 4`` on one 32-slice volume: fold 2 holds out slices 8-15; 7 and 16 do not train."""
    images, labels = _slices(32)
    train, val, note = split.split_fold(images, labels, 1, 4, groups=(32,))
    assert _indices(val) == list(range(8, 16))
    assert _indices(train) == [*range(7), *range(17, 32)]
    assert "2 slices of the same volume" in note
    train, _, _ = split.split_fold(images, labels, 1, 4, groups=(32,), margin=2)
    assert _indices(train) == [*range(6), *range(18, 32)]


def test_slices_of_another_volume_and_unrelated_images_still_train() -> None:
    """The gap is within one volume: a held-out volume's neighbour in the list is another one."""
    images, labels = _slices(30)
    train, val, _ = split.split_fold(images, labels, 1, 3, groups=(10, 10, 10))
    assert _indices(val) == list(range(10, 20)) and _indices(train) == [*range(10), *range(20, 30)]
    train, val, _ = split.split_fold(images, labels, 1, 3, groups=(1,) * 30)
    assert _indices(train) == [*range(10), *range(20, 30)]


def test_the_gap_narrows_rather_than_leave_nothing_to_train() -> None:
    images, labels = _slices(3)
    train, val, note = split.split_train_val(images, labels, 0.34, groups=(3,), margin=5)
    assert _indices(val) == [2] and _indices(train) == [0] and "within 1 of them" in note
    assert note.endswith("; the margin is 1 slice, not 5: the volume has too few slices to leave more out and "
                         "still train, so slices 2 away from a held-out one train and the validation score may read "
                         "high")
    train, val, note = split.split_train_val(images[:2], labels[:2], 0.5, groups=(2,))
    assert _indices(val) == [1] and _indices(train) == [0] and "left out of training" not in note
    # cases 38 s40: the plan said a margin of 1 and the held-out slice's neighbour trained without a word
    assert note.endswith("; the margin is 0 slices, not 1: the volume has too few slices to leave more out and "
                         "still train, so a neighbouring slice trains and the validation score may read high")


def test_groups_that_do_not_add_up_are_refused_in_one_line() -> None:
    images, labels = _slices(5)
    with pytest.raises(InputError, match=r"sample_groups \(3, 1\) add up to 4 samples but 5 images"):
        split.split_train_val(images, labels, 0.2, groups=(3, 1))
    with pytest.raises(InputError, match="add up to"):
        split.split_fold(images, labels, 0, 2, groups=(6,))
    import napari_medml as mm

    with pytest.raises(ConfigError, match="sample_groups"):
        mm.DataConfig(sample_groups=(3, 0))


def test_the_plan_leaves_five_percent_of_a_volumes_slices_and_says_why() -> None:
    margin, why = validation_margin.planned_margin((40, 40), (40, 40), 32, 1, 0.2, (32, 32), groups=(31, 1))
    assert margin == 2 and "2 slices of a volume" in why  # round(0.05 * 31)
    assert sample_groups.slice_margin((5, 1, 1)) == 1  # at least one slice
    assert validation_margin.planned_margin((40, 40), (40, 40), 3, 1, 0.2, (32, 32), groups=(1, 1, 1)) == (
        0, "several images: whole images are held out")


def test_the_slice_kept_for_its_class_is_not_then_left_out_by_the_margin() -> None:
    """Review 21: the split kept slice 25 in training for its class, then the margin beside
    held-out slice 26 left it out: 'training part has no foreground'."""
    n = 31
    images = [np.full((1, 16, 16), i, np.float32) for i in range(n)]
    labels = [np.ones((16, 16), np.uint8) for _ in range(n)]
    for z in range(25, n):  # the class only in the top slices
        labels[z][4:8, 4:8] = 2
    train, val, note = split.split_train_val(images, labels, 0.2, groups=(n,), margin=2)
    kept = _indices(train)
    assert any((labels[i] == 2).any() for i in kept), (kept, note)
    assert all(abs(i - j) > 2 for i in kept for j in _indices(val))  # the margin still holds
    assert label_warnings.missing_from_training(train, labels, (0, 1), note) is None


def test_label_warnings_read_a_volumes_slices_as_one_volume() -> None:
    """Review 21: a volume's slices under a 2D network were each taken for a mask file ('not the
    same id' for a volume whose slices hold different classes); trial 21: one painted slice."""
    from napari_medml.segmentation import label_warnings

    slices = [np.ones((8, 8), np.uint8) for _ in range(2)]
    slices[0][2:4, 2:4], slices[1][2:4, 2:4] = 2, 3  # class 1 on one slice, class 2 on the next
    assert label_warnings.masks_of_other_ids(slices, (0, 1, 2)) is not None  # as unrelated files
    assert label_warnings.masks_of_other_ids(slices, (0, 1, 2), groups=(2,)) is None  # one volume
    one = [np.ones((8, 8), np.uint8) for _ in range(6)]
    one[3][2:4, 2:4] = 2
    assert label_warnings.one_painted_slice(one) is None  # unrelated 2D images
    assert label_warnings.one_painted_slice(one, groups=(6,)).startswith(
        "warning: the labels hold their classes on 1 of 6 slices: in dense mode every other slice trains as "
        "background")
    assert label_warnings.one_painted_slice([np.stack(one)]) == label_warnings.one_painted_slice(one, groups=(6,))
