"""Segmentation metrics against hand-computed values and a brute-force reference."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from napari_medml.errors import InputError
from napari_medml.segmentation.metrics import dice, evaluate, hausdorff95, iou


def test_dice_and_iou_on_known_arrays():
    gt = np.array([[0, 1, 1, 1], [0, 2, 2, 0]])
    pred = np.array([[1, 1, 1, 0], [0, 2, 0, 0]])
    # class 1: |P|=3, |G|=3, |P∩G|=2 ; class 2: |P|=1, |G|=2, |P∩G|=1
    assert dice(pred, gt) == pytest.approx({1: 4 / 6, 2: 2 / 3})
    assert iou(pred, gt) == pytest.approx({1: 2 / 4, 2: 1 / 2})


def test_perfect_and_disjoint():
    gt = np.zeros((8, 8), np.uint8)
    gt[2:5, 2:5] = 3
    assert dice(gt, gt) == {3: 1.0}
    assert iou(gt, gt) == {3: 1.0}
    assert hausdorff95(gt, gt) == {3: 0.0}
    shifted = np.roll(gt, 4, axis=1)
    assert dice(shifted, gt) == {3: 0.0}


def test_class_ids_are_the_union_and_not_contiguous():
    gt = np.array([0, 7, 7, 0, 0])
    pred = np.array([0, 7, 0, 42, 0])
    d = dice(pred, gt)
    assert set(d) == {7, 42}
    assert d[42] == 0.0  # predicted but absent from the ground truth
    assert d[7] == pytest.approx(2 / 3)


def test_missing_class_conventions():
    gt = np.zeros((10, 10), np.int32)
    gt[2:4, 2:4] = 1
    pred = np.zeros_like(gt)
    assert hausdorff95(pred, gt) == {1: math.inf}  # in one array only
    assert dice(pred, gt) == {1: 0.0}
    # explicitly requested class present in neither array: undefined
    assert math.isnan(dice(pred, gt, class_ids=[5])[5])
    assert math.isnan(iou(pred, gt, class_ids=[5])[5])
    assert math.isnan(hausdorff95(pred, gt, class_ids=[5])[5])
    # nothing to score at all
    assert dice(pred, pred) == {}


def test_hd95_single_voxels_anisotropic_spacing():
    gt = np.zeros((6, 8, 8), np.uint8)
    pred = np.zeros_like(gt)
    gt[2, 3, 3] = 1
    pred[3, 5, 3] = 1  # one slice (3 mm) and two rows (0.5 mm each) away
    hd = hausdorff95(pred, gt, spacing=(3.0, 0.5, 0.5))
    assert hd[1] == pytest.approx(math.sqrt(3.0**2 + 1.0**2))
    # in voxels when no spacing is given
    assert hausdorff95(pred, gt)[1] == pytest.approx(math.sqrt(1 + 4))


def test_hd95_ignores_a_few_outliers_unlike_max_hausdorff():
    gt = np.zeros((1, 40, 40), np.uint8)
    gt[0, 5, 5:35] = 1  # a line of 30 surface voxels
    pred = gt.copy()
    pred[0, 30, 20] = 1  # one stray voxel 25 rows away
    hd = hausdorff95(pred, gt, spacing=(1.0, 2.0, 1.0))
    # 30 of 31 prediction surface distances are 0: the 95th percentile is 0
    assert hd[1] == pytest.approx(0.0)


def _reference_hd95(p, g, spacing):
    """Brute force: boundary voxels, all pairwise physical distances, 95th percentiles."""

    def surface(mask):
        return np.argwhere(mask ^ ndimage.binary_erosion(mask)) * np.asarray(spacing)

    sp, sg = surface(p), surface(g)
    d = cdist(sp, sg)
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


def test_hd95_matches_brute_force_on_random_blobs():
    rng = np.random.default_rng(0)
    spacing = (2.5, 0.8, 1.1)
    gt = np.zeros((16, 24, 24), np.int16)
    pred = np.zeros_like(gt)
    zz, yy, xx = np.indices(gt.shape)
    for cid, centre in ((1, (8, 8, 8)), (4, (7, 15, 16))):
        r = ((zz - centre[0]) * 2.5) ** 2 + ((yy - centre[1]) * 0.8) ** 2 + ((xx - centre[2]) * 1.1) ** 2
        gt[r < 36] = cid
        noisy = r + rng.normal(0, 6, r.shape) < 30
        pred[noisy] = cid
    hd = hausdorff95(pred, gt, spacing)
    assert set(hd) == {1, 4}
    for cid in (1, 4):
        expected = _reference_hd95(pred == cid, gt == cid, spacing)
        assert hd[cid] == pytest.approx(expected, rel=1e-4, abs=1e-4)
        assert hd[cid] > 0


def test_hd95_of_surfaces_too_large_for_torch_quantile_is_still_computed(monkeypatch):
    """Trial 50: a noisy 200x512x512 mask's surface passed torch.quantile's 2**24 values, and
    evaluate ended in "RuntimeError: quantile() input tensor is too large" (the widget hung)."""
    import torch

    rng = np.random.default_rng(0)
    spacing = (2.5, 0.8, 1.1)
    zz, yy, xx = np.indices((16, 24, 24))
    r = ((zz - 8) * 2.5) ** 2 + ((yy - 8) * 0.8) ** 2 + ((xx - 8) * 1.1) ** 2
    gt, pred = (r < 36).astype(np.uint8), (r + rng.normal(0, 6, r.shape) < 30).astype(np.uint8)
    expected = _reference_hd95(pred == 1, gt == 1, spacing)

    def too_large(*args, **kwargs):
        raise RuntimeError("quantile() input tensor is too large")

    monkeypatch.setattr(torch, "quantile", too_large)
    assert hausdorff95(pred, gt, spacing)[1] == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_evaluate_is_strict_json_with_means():
    gt = np.zeros((4, 12, 12), np.uint8)
    gt[1:3, 2:6, 2:6] = 1
    gt[1:3, 7:10, 7:10] = 2
    pred = gt.copy()
    pred[1:3, 2:6, 2:4] = 0  # half of class 1 lost
    pred[pred == 2] = 0  # class 2 missed entirely
    result = evaluate(pred, gt, spacing=(2.0, 1.0, 1.0))
    text = json.dumps(result, allow_nan=False)  # raises on nan/inf
    assert json.loads(text) == result
    assert set(result["classes"]) == {"1", "2"}
    c1, c2 = result["classes"]["1"], result["classes"]["2"]
    assert c1["dice"] == pytest.approx(2 * 16 / (16 + 32))
    assert c1["iou"] == pytest.approx(0.5)
    assert c1["hd95"] > 0 and c1["gt_voxels"] == 32 and c1["pred_voxels"] == 16
    assert c2 == {"dice": 0.0, "iou": 0.0, "hd95": None, "gt_voxels": 18, "pred_voxels": 0}
    assert result["mean_dice"] == pytest.approx((c1["dice"] + 0.0) / 2)
    assert result["mean_hd95"] is None  # a missed class: infinite, never the found classes' mean
    assert result["spacing"] == [2.0, 1.0, 1.0]


def test_float_labels_are_accepted_when_whole_numbered():
    gt = np.array([[0.0, 1.0], [2.0, 2.0]])
    assert dice(gt, gt.astype(np.uint8)) == {1: 1.0, 2: 1.0}


@pytest.mark.parametrize(
    ("pred", "gt", "spacing", "match"),
    [
        (np.zeros((3, 4), int), np.zeros((4, 3), int), None, "shape"),
        (np.full((3, 3), 0.5), np.zeros((3, 3), int), None, "integer"),
        (np.zeros((3, 3), int), np.zeros((3, 3), int), (1.0,), "spacing"),
        (np.zeros((3, 3), int), np.zeros((3, 3), int), (1.0, -1.0), "spacing"),
    ],
)
def test_bad_inputs_raise_input_error(pred, gt, spacing, match):
    with pytest.raises(InputError, match=match):
        hausdorff95(pred, gt, spacing)


def test_mean_hd95_skips_only_classes_in_neither_array_and_binary_merges_ids():
    from napari_medml.segmentation.metrics import evaluation_notes

    gt = np.zeros((10, 10), np.uint8)
    gt[2:5, 2:5] = 255
    pred = (gt > 0).astype(np.uint8)
    result = evaluate(pred, gt)
    assert (result["mean_dice"], result["mean_hd95"]) == (0.0, None)
    notes = evaluation_notes(result, "prediction 'p'", "labels 'g'", "--binary")
    assert notes == [
        "warning: labels 'g' use id 255 and prediction 'p' id 1, no foreground id in common, so every class "
        "scores Dice 0. A 0/255 mask against a 0/1 prediction? Score foreground against background with "
        "--binary, or write the labels with the prediction's ids (255 -> 1)",
        "classes 1 (only in prediction 'p'), 255 (only in labels 'g'): HD95 infinite, so hd95 and mean_hd95 "
        "are null; mean_dice and mean_iou count such a class as 0",
    ]
    # instance maps scored as classes: a few ids of each side and their count, not a line per id
    many_gt, many_pred = np.zeros((40, 40), np.int32), np.zeros((40, 40), np.int32)
    for k in range(12):
        many_gt[3 * k, 0:3] = k + 1
        many_pred[3 * k, 20:23] = k + 20
    many = evaluation_notes(evaluate(many_pred, many_gt), "prediction 'p'", "labels 'g'", "--binary")
    assert many[-1] == ("classes 1, 2, 3, 4, 5, ... (12) only in labels 'g'; 20, 21, 22, 23, 24, ... (12) only in "
                        "prediction 'p': HD95 infinite, so hd95 and mean_hd95 are null; mean_dice and mean_iou "
                        "count such a class as 0")
    merged = evaluate(pred, gt, binary=True)
    assert (list(merged["classes"]), merged["mean_dice"], merged["mean_hd95"]) == (["1"], 1.0, 0.0)
    assert evaluation_notes(merged, "p", "g", "--binary") == []
    empty = evaluate(np.zeros((4, 4), int), np.zeros((4, 4), int))
    assert empty["mean_hd95"] is None and empty["mean_dice"] is None  # nothing scored, and the notes say why
    assert evaluation_notes(empty, "prediction 'p'", "labels 'g'", "--binary") == [
        "labels 'g' and prediction 'p' hold no foreground (only 0): there is no class to score, so the means are "
        "null; check that these are the files you meant"]


def test_the_public_evaluate_scores_classes_foreground_and_instances():
    import napari_medml as mm

    truth = np.zeros((20, 20), np.uint8)
    truth[2:8, 2:8], truth[10:16, 10:16] = 1, 2
    pred = truth.copy()
    pred[2:8, 2:5] = 0
    classes = mm.evaluate(pred, truth, spacing=(0.5, 0.5))
    assert classes["classes"]["2"]["dice"] == 1.0 and classes["classes"]["1"]["dice"] == pytest.approx(2 / 3)
    assert classes["spacing"] == [0.5, 0.5] and isinstance(classes["notes"], list)
    assert mm.evaluate(pred, truth, level="binary")["classes"]["1"]["dice"] == pytest.approx(2 * 54 / 126)
    objects = mm.evaluate(pred, truth, level="instances")
    assert objects["n_true"] == 2 and objects["f1_at_0.5"] == 1.0  # object 1 still overlaps by half
    with pytest.raises(ValueError, match="level must be"):
        mm.evaluate(pred, truth, level="objects")


def test_the_public_evaluate_refuses_what_it_cannot_score_and_keeps_huge_ids():
    import napari_medml as mm

    truth = np.zeros((6, 6), np.int64)
    truth[1:4, 1:4] = 1
    with pytest.raises(InputError, match="negative ids"):
        mm.evaluate(truth - 1, truth)
    with pytest.raises(InputError, match="4 axes"):
        mm.evaluate(truth[None, None], truth[None, None])
    with pytest.raises(InputError, match="one voxel size per axis"):
        mm.evaluate(truth, truth, spacing=2.0)
    # a list of pairs was scored as one volume (HD95 across images), or a NumPy "inhomogeneous shape"
    for given in ([truth] * 3, [truth, truth[:4]]):
        with pytest.raises(InputError) as info:
            mm.evaluate(given, given)
        assert str(info.value) == (
            f"prediction is a list of {len(given)}: evaluate scores one prediction against its labels; call it once "
            "for each pair, [evaluate(p, t) for p, t in zip(predictions, truths)]")
    big = np.where(truth > 0, np.uint64(2**63 + 5), np.uint64(0))  # napari Labels may hold uint64 ids
    scores = mm.evaluate(big, truth)["classes"]
    assert scores[str(2**63 + 5)]["pred_voxels"] == 9 and scores["1"]["gt_voxels"] == 9  # was rounded away


def test_labels_that_are_not_integer_class_ids_are_refused_with_the_reason():
    """Trial 47: string labels were said to hold "fractional values"."""
    gt = np.zeros((4, 4), np.uint8)
    with pytest.raises(InputError, match=r"^prediction must hold integer class ids, got dtype <U1: pass a labels "
                                         r"array of integers$"):
        evaluate(np.full((4, 4), "a"), gt)
    with pytest.raises(InputError, match="got dtype float64 with fractional values: pass a labels array, not an"):
        evaluate(np.full((4, 4), 0.5), gt)


def test_progress_counts_each_class_hd95_and_what_it_raises_ends_the_scoring():
    """Note 49: Evaluate's HD95 could not be cancelled; the public evaluate reports each class
    (of each frame) before its HD95, and a stop raised there ends it."""
    from napari_medml import evaluate as public_evaluate
    from napari_medml.errors import Cancelled

    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, (2, 12, 16, 16))
    pred = rng.integers(0, 4, (2, 12, 16, 16))
    seen = []
    report = public_evaluate(pred[0], gt[0], progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 3), (1, 3), (2, 3)]
    assert report == public_evaluate(pred[0], gt[0])  # the same numbers
    seen.clear()
    public_evaluate(pred, gt, frames_axis=0, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(k, 6) for k in range(6)]  # 3 classes in each of 2 frames

    def stop_after_one(done, total):
        if done >= 1:
            raise Cancelled("stopped")
        seen.append(done)

    seen.clear()
    with pytest.raises(Cancelled):
        public_evaluate(pred[0], gt[0], progress=stop_after_one)
    assert seen == [0]
