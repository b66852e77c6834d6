"""The train/validation split keeps every class in the training part, or says so."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medml.segmentation import label_warnings, split
from napari_medml.segmentation.data import Region
from napari_medml.errors import InputError


def test_single_image_split_holds_out_block_on_longest_axis():
    img = np.broadcast_to(np.arange(40, dtype=np.float32)[None, None, :, None], (1, 8, 40, 10)).copy()
    lab = np.ones((8, 40, 10), np.uint8)
    train, val, note = split.split_train_val([img], [lab], 0.2, context=(4, 16, 4))
    assert train[0].image.shape == (1, 8, 32, 10)
    # validation region = 8 held-out rows + 8 rows of unlabeled context
    assert val[0].image.shape == (1, 8, 16, 10)
    assert (val[0].label[:, :8] == 0).all() and (val[0].label[:, 8:] == 1).all()
    assert "axis 1" in note
    # the scored rows never appear in a training region
    assert val[0].image[0, 0, 8, 0] > train[0].image.max()


def test_split_several_images_holds_out_whole_images():
    imgs = [np.zeros((1, 8, 8), np.float32) + i for i in range(5)]
    labs = [np.ones((8, 8), np.uint8)] * 5
    train, val, _ = split.split_train_val(imgs, labs, 0.2)
    assert len(train) == 4 and len(val) == 1 and val[0].image.max() == 4
    train, val, _ = split.split_train_val(imgs, labs, 0.0)
    assert len(train) == 5 and not val


def test_object_only_in_the_default_block_moves_the_block_and_says_why():
    # case 14: the only object lies in the last 20 % of the longest axis
    lab = np.ones((16, 48, 32), np.uint8)
    lab[4:12, 40:47, 8:24] = 2
    img = np.zeros((1, *lab.shape), np.float32)
    train, val, note = split.split_train_val([img], [lab], 0.2, context=(8, 16, 16), class_ids=(0, 7))
    assert (train[0].label == 2).sum() == (lab == 2).sum()  # training sees all of class 7
    assert "class 7" in note and "held" in note
    assert label_warnings.missing_from_training(train, [lab], (0, 7), note) is None
    # the scored part of the validation region never overlaps the training region
    assert train[0].label.size + (val[0].label > 0).sum() == lab.size


def test_a_split_that_keeps_every_class_on_both_sides_is_preferred():
    lab = np.ones((8, 40, 40), np.uint8)
    lab[:, 34:, 2:10] = 2  # only in the default block (end of axis 1)
    img = np.zeros((1, *lab.shape), np.float32)
    train, val, note = split.split_train_val([img], [lab], 0.2)
    # the end of axis 2 would keep class 2 in training but not in validation; axis 0 keeps both
    assert "along axis 0 (Z)" in note
    assert split.present_classes(train[0].label) == {1, 2}
    assert split.present_classes(val[0].label) == {1, 2}


def test_several_images_hold_out_one_that_training_can_spare():
    imgs = [np.zeros((1, 8, 8), np.float32) + i for i in range(4)]
    labs = [np.ones((8, 8), np.uint8) for _ in range(4)]
    labs[3][2:4, 2:4] = 3  # class 3 only in the last image
    train, val, note = split.split_train_val(imgs, labs, 0.25, class_ids=(0, 1, 5))
    assert [v.image.max() for v in val] == [2.0]
    assert label_warnings.missing_from_training(train, labs, (0, 1, 5), note) is None
    assert "not the last" in note


def test_a_class_training_cannot_keep_is_named_in_a_warning():
    imgs = [np.zeros((1, 8, 8), np.float32) for _ in range(2)]
    labs = [np.ones((8, 8), np.uint8) for _ in range(2)]
    labs[0][1:3, 1:3] = 2
    labs[1][1:3, 1:3] = 3  # each image holds a class of its own: one is always held out
    train, val, note = split.split_train_val(imgs, labs, 0.5, class_ids=(0, 4, 9))
    warning = label_warnings.missing_from_training(train, labs, (0, 4, 9), note)
    assert warning is not None and "class 9" in warning and "--val-fraction 0" in warning
    # the fix the warning names works: no validation, nothing missing
    train, _, note = split.split_train_val(imgs, labs, 0.0)
    assert label_warnings.missing_from_training(train, labs, (0, 4, 9), note) is None


def test_a_training_part_without_foreground_is_refused():
    lab = np.ones((8, 8), np.uint8)
    held = lab.copy()
    held[2:4, 2:4] = 2
    train = [Region(np.zeros((1, 8, 8), np.float32), lab)]
    with pytest.raises(InputError, match="no foreground.*class 3.*--val-fraction 0"):
        label_warnings.missing_from_training(train, [lab, held], (0, 3), "validation on the last 1 of 2 images")
    # trial 44: a margin that took the foreground is named, with its option
    note = "validation on the last 5 of 24 voxels along axis 1 (X), 18 voxels of training labels next to it left out"
    with pytest.raises(InputError, match=r"is held out for validation or left out beside it \(validation on .*left "
                                         r"out\); a smaller validation margin \(--val-margin\), set the validation "
                                         r"fraction to 0 \(--val-fraction 0\)"):
        label_warnings.missing_from_training(train, [lab, held], (0, 3), note)


def test_a_default_block_without_foreground_gives_way_to_one_that_scores():
    """The last block along the longest axis holds only background: its Dice would be 0 whatever
    the model, so another end is held out (probe of case 14's kind)."""
    image = np.zeros((1, 8, 40, 16), np.float32)
    label = np.ones((8, 40, 16), np.uint8)  # encoded: 1 = background
    label[:, 2:14, 4:12] = 2  # the object, near the start of axis 1
    train, val, note = split.split_train_val([image], [label], 0.2)
    assert "held no foreground to score" in note and note.startswith("validation on the first 8 of 40")
    assert (val[0].label == 2).any() and (train[0].label == 2).any()
    # with no block that keeps the object in training and scores it, the note says what the Dice is worth
    thin = np.ones((8, 40, 16), np.uint8)
    thin[3:5, 18:22, 7:9] = 2  # out of every end block's reach: none can score it
    _, val, note = split.split_train_val([image], [thin], 0.2)
    assert "it holds no foreground, so its Dice says nothing of the model" in note and not (val[0].label == 2).any()


def test_a_moved_block_prefers_one_that_scores_and_says_when_none_can():
    """The only object in the default block (end of the longest axis): the block moves so
    training keeps it; a block that also scores part of it comes first, and when none can
    (trial 10's 2D TIFF, 14h), the note says the Dice is worth nothing, as for a default block."""
    image = np.zeros((1, 16, 56, 32), np.float32)
    label = np.ones((16, 56, 32), np.uint8)
    label[:, 48:55, 8:24] = 2  # every Z slice: a block along axis 0 keeps it in training and scores it
    train, val, note = split.split_train_val([image], [label], 0.2)
    assert (train[0].label == 2).any() and (val[0].label == 2).any(), note
    assert "held every voxel of class" in note and "says nothing" not in note
    flat = np.ones((40, 96), np.uint8)  # rows 10:30, cols 82:94: no other end block reaches it
    flat[10:30, 82:94] = 2
    train, val, note = split.split_train_val([np.zeros((1, 40, 96), np.float32)], [flat], 0.2)
    assert (train[0].label == 2).sum() == (flat == 2).sum() and not (val[0].label == 2).any()
    assert note == ("validation on the last 8 of 40 voxels along axis 0 (Y) (the default held-out block, the last 20 "
                    "voxels along axis 1 (X), held every voxel of class 1); it holds no foreground, so its Dice says "
                    "nothing of the model")


def test_held_out_images_without_foreground_give_way_to_ones_that_score_or_say_so():
    """Several images whose last ones are negatives (background only): their Dice is 0 whatever
    the model, so images with foreground are held out when training can spare one; when it
    cannot (the only annotated image), the note says the Dice is worth nothing (cases 45, 54)."""
    images = [np.zeros((1, 16, 16), np.float32) for _ in range(5)]
    labels = [np.ones((16, 16), np.uint8) for _ in range(5)]
    labels[1][4:9, 4:9] = 2
    labels[2][6:12, 3:8] = 2
    train, val, note = split.split_train_val(images, labels, 0.2)
    assert note == ("validation on image(s) 3 of 5 (not the last: the last ones hold no foreground to score)")
    assert len(val) == 1 and (val[0].label == 2).any() and sum((r.label == 2).any() for r in train) == 1
    only = [np.ones((16, 16), np.uint8) for _ in range(5)]
    only[4][4:9, 4:9] = 2
    train, val, note = split.split_train_val(images, only, 0.2)
    assert note == ("validation on image(s) 4 of 5 (not the last: they hold every voxel of a class that training "
                    "needs); it holds no foreground, so its Dice says nothing of the model")
    assert (train[-1].label == 2).any()
    # the same for an ensemble member's fold, of images and of blocks
    _, val, note = split.split_fold(images, labels, 4, 5)
    assert note == "fold 5 of 5: validation on image 5 of 5" + split.NO_FOREGROUND
    _, _, note = split.split_fold(images, labels, 1, 5)
    assert note == "fold 2 of 5: validation on image 2 of 5"
    block = np.ones((40, 16), np.uint8)
    block[30:36, 4:10] = 2
    notes = [split.split_fold([np.zeros((1, 40, 16), np.float32)], [block], k, 2)[2] for k in range(2)]
    assert notes[0].endswith(split.NO_FOREGROUND) and not notes[1].endswith(split.NO_FOREGROUND)


def test_validation_moves_to_images_with_foreground_only_if_a_third_of_it_still_trains():
    """Review 24: slices 1-4 of a 10-slice volume hold the foreground; holding out two of them
    (and, by the margin, their neighbours) would have trained on a quarter of it. The last
    slices stay held out, and the note says their Dice is worth nothing."""
    images = [np.zeros((1, 12, 12), np.float32) for _ in range(10)]
    labels = [np.ones((12, 12), np.uint8) for _ in range(10)]
    for k in range(4):
        labels[k][2:8, 2:8] = 2
    train, val, note = split.split_train_val(images, labels, 0.2, groups=(10,), margin=1)
    assert note.startswith("validation on the last 2 of 10 images") and note.endswith(split.NO_FOREGROUND)
    assert sum(int((r.label == 2).sum()) for r in train) == 4 * 36


def test_an_axis_is_named_by_its_number_and_letter():
    assert [split.axis_phrase(a, 3) for a in range(3)] == ["axis 0 (Z)", "axis 1 (Y)", "axis 2 (X)"]
    assert [split.axis_phrase(a, 2) for a in range(2)] == ["axis 0 (Y)", "axis 1 (X)"]
    assert split.axis_phrase(1, 4) == "axis 1"


def test_a_class_the_held_out_part_lacks_is_not_scored_and_the_note_says_so():
    """Cases 39 (163): class 2 only at the start of the longest axis, the held-out block at its end
    held class 1 alone, and the validation mean read 0.36 (class 1 0.72, class 2 scored 0 for a few
    false voxels) without a word."""
    import torch

    from napari_medml.segmentation.validation import missing_from_validation, selection_key, validate

    lab = np.ones((6, 40, 8), np.uint8)  # encoded: 1 background, 2 class 1, 3 class 2
    lab[1:5, 3:38, 2:6] = 2
    lab[1:5, 1:8, 2:6] = 3
    train, val, note = split.split_train_val([np.zeros((1, *lab.shape), np.float32)], [lab], 0.2)
    assert "holds no foreground" not in note and not (val[0].label == 3).any()
    assert missing_from_validation(val, [lab], (0, 1, 2)) == (
        "note: class 2 is not in the held-out part: its Dice is not scored, and the validation mean is over class 1 "
        "(label it in the held-out region too to measure it)")
    assert missing_from_validation(train, [lab], (0, 1, 2)) is None  # the training part holds both

    region = Region(np.zeros((1, 6, 16, 8), np.float32), lab[:, 24:])

    def network(answer: np.ndarray) -> torch.nn.Module:  # answers the same one-hot logits everywhere
        class Fixed(torch.nn.Module):
            def forward(self, x):
                return torch.from_numpy(np.eye(3, dtype=np.float32)[answer - 1].transpose(3, 0, 1, 2))[None] * 9
        return Fixed()

    def scores(answer: np.ndarray) -> dict:
        return validate(network(answer), [region], patch_size=(6, 16, 8), class_ids=(0, 1, 2),
                        loss_fn=lambda logits, gt, mask: logits.sum() * 0, device=torch.device("cpu"), amp=False,
                        sw_batch_size=1)

    right = scores(region.label.clip(1))
    assert right["val_dice"] == {1: 1.0} and right["val_mean_dice"] == 1.0 and right["val_false_classes"] == []
    wrong = region.label.clip(1).copy()
    wrong[2, 5, 3] = 3  # one voxel called class 2, which the held-out labels lack
    fields = scores(wrong)
    assert fields["val_dice"] == {1: pytest.approx(1.0, abs=0.01)} and fields["val_false_classes"] == [2]
    # the best epoch is judged by the mean the epoch line prints (the loss decides ties)
    assert selection_key(fields, "val_dice")[0] == fields["val_mean_dice"]


def test_a_run_says_which_classes_its_validation_leaves_unscored():
    from napari_medml import api
    from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig

    labels = np.zeros((6, 40, 8), np.uint8)
    labels[1:5, 3:38, 2:6] = 1
    labels[1:5, 1:8, 2:6] = 2  # only where the training part is
    image = np.random.default_rng(0).normal(size=labels.shape).astype(np.float32) + labels
    config = TrainConfig(data=DataConfig(patch_size=(4, 16, 8), batch_size=2), model=ModelConfig(channels=4, depth=2),
                         optim=OptimConfig(epochs=1, steps_per_epoch=2), augment=AugmentConfig.none(), device="cpu")
    gen = api.fit(image, labels, config)
    first = next(gen)
    assert "note: class 2 is not in the held-out part: its Dice is not scored" in first.message, first.message
    from napari_medml.engine.fit import run_to_end

    model = run_to_end(gen)
    (epoch,) = model.history
    assert set(epoch["val_dice"]) == {"1"} and epoch["val_mean_dice"] == epoch["val_dice"]["1"]
