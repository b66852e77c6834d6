"""Instance metrics against hand-computed cases (StarDist matching, DSB 2018 AP)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medml.errors import InputError
from napari_medml.instances.metrics import (
    AP_THRESHOLDS,
    DSB_THRESHOLDS,
    instance_scores,
    match_instances,
    overlaps,
    sum_matchings,
)


def hand_case() -> tuple[np.ndarray, np.ndarray]:
    """Three true objects, three predictions; IoUs worked out by hand.

    true 1 (8 px) vs pred 5 (6 px inside it): IoU 6/8 = 0.75
    true 2 (8 px) vs pred 7 (6 px inside it + 1 px of background): IoU 6/(8+7-6) = 2/3
    true 3 (2 px): missed (false negative); pred 9 (4 px on background): false positive
    """
    true = np.zeros((6, 8), np.uint16)
    true[0:2, 0:4] = 1
    true[2:4, 2:6] = 2
    true[5, 6:8] = 3
    pred = np.zeros((6, 8), np.int32)
    pred[0:2, 0:3] = 5
    pred[2:4, 3:6] = 7
    pred[1, 4] = 7
    pred[4:6, 0:2] = 9
    return true, pred


def test_overlap_table_by_hand() -> None:
    true, pred = hand_case()
    table = overlaps(true, pred)
    pairs = {(int(t), int(p)): float(i) for t, p, i in zip(table.true_ids, table.pred_ids, table.iou)}
    assert pairs == pytest.approx({(1, 5): 0.75, (2, 7): 2 / 3})
    assert (table.n_true, table.n_pred) == (3, 3)


def test_match_at_half_by_hand() -> None:
    true, pred = hand_case()
    m = match_instances(true, pred, 0.5)
    assert (m.n_true, m.n_pred, m.tp, m.fp, m.fn) == (3, 3, 2, 1, 1)
    assert m.precision == pytest.approx(2 / 3)
    assert m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.average_precision == pytest.approx(2 / 4)  # DSB: tp / (tp + fp + fn)
    assert m.mean_matched_iou == pytest.approx((0.75 + 2 / 3) / 2)


def test_dsb_mean_average_precision_by_hand() -> None:
    true, pred = hand_case()
    scores = instance_scores(true, pred)
    # the default: AP at IoU 0.5, 0.55, ..., 0.9 and their mean
    assert [m.threshold for m in scores.matchings] == list(AP_THRESHOLDS)
    assert AP_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
    # 0.5-0.65: both matches (AP 2/4); 0.7 and 0.75: only IoU 0.75 (AP 1/5); above: none
    expected = [0.5] * 4 + [0.2] * 2 + [0.0] * 3
    assert [m.average_precision for m in scores.matchings] == pytest.approx(expected)
    assert scores.mean_average_precision == pytest.approx(2.4 / 9)
    # the DSB 2018 leaderboard's list adds 0.95 (one more zero in the mean)
    dsb = instance_scores(true, pred, thresholds=DSB_THRESHOLDS)
    assert DSB_THRESHOLDS == (*AP_THRESHOLDS, 0.95)
    assert dsb.mean_average_precision == pytest.approx(2.4 / 10)
    assert scores.at(0.75).tp == 1  # IoU exactly at the threshold counts (>=, as StarDist)
    assert scores.at(0.8).f1 == 0.0
    json.dumps(scores.to_dict())  # JSON-ready for reports and the CLI


def test_one_to_one_matching_is_optimal_below_half() -> None:
    # Row of pixels: true A = 0..9, B = 10..15; pred Y = 0..3, X = 4..13.
    # IoU(A, X) = 6/14, IoU(A, Y) = 4/10, IoU(B, X) = 4/12. Greedy by IoU takes A-X
    # and leaves B alone (1 match); the Hungarian matching pairs A-Y and B-X (2).
    true = np.zeros((1, 16), np.int32)
    true[0, 0:10] = 1
    true[0, 10:16] = 2
    pred = np.zeros((1, 16), np.int32)
    pred[0, 0:4] = 1
    pred[0, 4:14] = 2
    m = match_instances(true, pred, 0.3)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert m.mean_matched_iou == pytest.approx((0.4 + 4 / 12) / 2)
    assert match_instances(true, pred, 0.42).tp == 1  # only A-X is good enough


def test_perfect_and_empty_cases() -> None:
    true, _ = hand_case()
    renumbered = np.where(true > 0, true + 100, 0)  # ids need not agree or be contiguous
    perfect = instance_scores(true, renumbered)
    assert perfect.mean_average_precision == 1.0
    assert perfect.at(0.9).f1 == 1.0
    empty = np.zeros_like(true)
    missed = match_instances(true, empty)
    assert (missed.tp, missed.fp, missed.fn, missed.precision, missed.recall, missed.f1) == (0, 0, 3, 0, 0, 0)
    nothing = match_instances(empty, empty)
    assert (nothing.f1, nothing.average_precision, nothing.precision, nothing.recall) == (1, 1, 1, 1)


def test_thousands_of_objects_3d() -> None:
    # 20 x 20 x 10 = 4000 cubes; the prediction shifts each by one voxel along X
    true = np.zeros((40, 80, 80), np.int32)
    grid = np.arange(4000).reshape(20, 10, 20)
    cell = np.kron(grid + 1, np.ones((2, 8, 4), np.int32))
    true[:, :, :] = cell
    true[:, :, 3::4] = 0  # gaps between cubes along X: 3 voxels per cube row
    pred = np.roll(true, 1, axis=2)
    scores = instance_scores(true, pred, thresholds=(0.3, 0.5))
    # each cube 2x8x3 = 48 voxels, shifted by one: overlap 32, IoU 32 / 64 = 0.5
    assert scores.at(0.5).tp == 4000
    assert scores.at(0.3).tp == 4000
    assert scores.at(0.5).mean_matched_iou == pytest.approx(0.5)


def test_pooling_adds_counts() -> None:
    true, pred = hand_case()
    pooled = sum_matchings([instance_scores(true, pred), instance_scores(true, true)])
    m = pooled.at(0.5)
    assert (m.n_true, m.n_pred, m.tp, m.fp, m.fn) == (6, 6, 5, 1, 1)
    assert m.average_precision == pytest.approx(5 / 7)


def test_bad_inputs_name_the_fault() -> None:
    true, pred = hand_case()
    with pytest.raises(InputError, match="shape"):
        match_instances(true, pred[:, :4])
    with pytest.raises(InputError, match=r"predicted labels hold non-integer values \(float64, e.g. 2.5\)"):
        match_instances(true, pred / 2.0)
    # whole-number floats are ids (the labels' one rule, segmentation.label_values)
    assert match_instances(true, pred.astype(float)) == match_instances(true, pred)


def test_a_class_mask_is_told_apart_from_instances_even_thin_diagonal_ones():
    """Trial 41: a 0/1 mask of many nuclei scored as instances gave AP 0 without a word; review 41:
    three diagonal one-pixel lines (instances) were counted as 120 objects."""
    from napari_medml.instances.notes import merged_objects_notes

    objects = np.zeros((40, 60), np.int32)
    for k in range(12):
        y, x = divmod(k, 4)
        objects[y * 12 + 2:y * 12 + 8, x * 14 + 2:x * 14 + 9] = k + 1
    mask = (objects > 0).astype(np.uint8)
    notes = merged_objects_notes(objects, mask, "labels 't'", "prediction 'p'", "score classes")
    assert notes == ["warning: prediction 'p' hold 1 id over 12 separate objects, each id scored as one object, "
                     "so the scores say little: give each object its own id (e.g. scipy.ndimage.label), or score "
                     "classes"]
    assert merged_objects_notes(objects, objects, "t", "p", "fix") == []
    lines = np.zeros((40, 40), np.int32)
    for k in range(3):
        idx = np.arange(40)
        lines[idx, (idx + 12 * k) % 40] = k + 1  # one-pixel diagonals, corners touching
    assert merged_objects_notes(lines, lines, "t", "p", "fix") == []
    # review 43: truth with no object scored 1.0 (nothing predicted) or 0 without a word
    assert merged_objects_notes(np.zeros((4, 4)), np.ones((4, 4), bool), "labels 't'", "prediction 'p'", "fix") == [
        "note: labels 't' hold no object, so every object of prediction 'p' is a false positive: precision, F1 and "
        "AP are 0 whatever it holds"]
    assert merged_objects_notes(np.zeros((4, 4)), np.zeros((4, 4)), "labels 't'", "prediction 'p'", "fix") == [
        "note: labels 't' hold no object, nor does prediction 'p': precision, recall, F1 and AP are 1 by this "
        "report's convention (nothing to find, nothing found; StarDist's matching says 0) and say nothing of a model"]
