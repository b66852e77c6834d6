"""Instant stage helpers: strokes, hold-out, where to paint next, the forest's id mapping."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medml.errors import InputError
from napari_medml.live.instant import (
    InstantClassifier,
    InstantConfig,
    holdout_mask,
    stroke_components,
    stroke_counts,
    suggest_next,
)


def test_strokes_are_numbered_in_scan_order_and_every_fifth_is_held_out() -> None:
    scribbles = np.zeros((12, 40), np.int32)
    for k in range(6):  # six separate strokes of id 3, one of id 7 touching the first
        scribbles[2 * k, 5 + k:10 + k] = 3
    scribbles[1, 20:25] = 7
    scribbles[0, 9:12] = 7  # touches the first id-3 stroke: still its own stroke
    components, ids = stroke_components(scribbles)
    assert stroke_counts(ids) == {3: 6, 7: 2}
    assert ids[components[0, 5]] == 3 and components[0, 5] == 1
    assert len(set(components[scribbles == 7].tolist())) == 2
    held = holdout_mask(components, ids, every=5)
    assert set(np.unique(scribbles[held])) == {3}
    assert held[8].any() and not held[:8].any() and not held[10].any()  # the fifth id-3 stroke only
    assert not holdout_mask(components, ids, every=0).any()
    empty_components, empty_ids = stroke_components(np.zeros((4, 4), np.int32))
    assert not empty_components.any() and stroke_counts(empty_ids) == {}


def test_suggest_next_points_at_the_most_uncertain_unpainted_slice() -> None:
    unc = np.zeros((10, 32, 32), np.float32)
    unc[7, 10:20, 12:22] = 0.5  # unpainted, uncertain
    unc[2] = 0.6  # more uncertain, but painted everywhere
    scribbles = np.zeros(unc.shape, np.int32)
    scribbles[2] = 1
    hint = suggest_next(unc, scribbles)
    assert (hint.axis, hint.index) == (0, 7)
    assert hint.point[0] == 7 and 10 <= hint.point[1] < 20 and 12 <= hint.point[2] < 22
    flat = suggest_next(unc[7], scribbles[7])
    assert flat.axis is None and flat.index is None and 10 <= flat.point[0] < 20
    with pytest.raises(InputError, match="shape"):
        suggest_next(unc, scribbles[0])


def test_suggest_next_is_not_drawn_to_a_wide_mildly_unsure_background() -> None:
    """Trial 44: on the brain MRI the hint sent the user to slice 184 of 189, air: 78 % of the volume
    is a zero background the forest was mildly unsure of (0.05 each), and a slice of air summed to
    more than the slice with the most errors."""
    unc = np.zeros((40, 64, 64), np.float32)
    unc[30:, 4:60, 4:60] = 0.06  # air: wide, a little unsure
    unc[12, 20:26, 20:40] = 0.6  # a tissue border: clearly unsure
    hint = suggest_next(unc, np.zeros(unc.shape, np.int32))
    assert hint.index == 12 and 20 <= hint.point[1] < 26 and 20 <= hint.point[2] < 40, hint


def test_suggest_next_leaves_the_edges_of_the_image_out() -> None:
    """The first slice and the last column were the most uncertain of a real volume (the
    image ends there) and the hint pointed at voxel (0, 31, 56) of a 31x61x57 volume."""
    unc = np.full((31, 61, 57), 0.05, np.float32)
    unc[0] = 0.6  # the first slice
    unc[:, :, 53:] = 0.7  # the last columns
    unc[12, 20:30, 20:30] = 0.4  # an unsure region inside
    hint = suggest_next(unc, np.zeros(unc.shape, np.int32))
    assert hint.index == 12 and 20 <= hint.point[1] < 30 and 20 <= hint.point[2] < 30, hint
    assert hint.uncertainty > 0.05  # the mean over the whole slice, edges included
    small = np.zeros((8, 12), np.float32)  # too small for a band: an edge may be chosen
    small[:, 11] = 0.9
    assert suggest_next(small, np.zeros(small.shape, np.int32)).point[1] >= 10


def test_forest_maps_background_id_to_zero_and_keeps_class_ids() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    ids = np.where(x[:, 0] > 0.5, 9, np.where(x[:, 0] < -0.5, 5, 2))
    forest = InstantClassifier(InstantConfig(trees=10), background_id=5).fit(x, ids)
    labels = forest.labels_from_proba(forest.predict_proba(x))
    assert set(np.unique(labels)) == {0, 2, 9}
    assert np.mean(labels[ids == 9] == 9) > 0.95 and np.mean(labels[ids == 5] == 0) > 0.95
    keep = forest.sample(np.repeat([2, 9], [50, 5]), np.random.default_rng(0))
    assert len(keep) == 55
    capped = InstantClassifier(InstantConfig(max_samples_per_class=20)).sample(np.repeat([2, 9], [50, 5]),
                                                                                np.random.default_rng(0))
    assert len(capped) == 25
    with pytest.raises(InputError, match="at least one class"):
        InstantClassifier(InstantConfig()).fit(x, np.full(300, 2))


def test_same_scribbles_compares_every_voxel() -> None:
    """The GUI's check for new strokes (8 bytes at a time) finds one changed voxel anywhere,
    on arrays whose size is and is not a multiple of 8 bytes, and in another dtype."""
    from napari_medml.live.instant import same_scribbles

    for shape in ((16, 64, 64), (3, 5, 7)):
        a = np.zeros(shape, np.uint8)
        b = a.copy()
        assert same_scribbles(a, b) and not same_scribbles(a, None)
        b[-1, -1, -1] = 2
        assert not same_scribbles(a, b)
        assert not same_scribbles(a, a.astype(np.int32)) and not same_scribbles(a, a[:1])
