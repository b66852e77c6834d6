"""The learned instance target and its round trip through post-processing.

The round trips are the measurement behind the choice of target: post-processing
the *ideal* outputs (the target itself, as from a perfect network) must give the
true objects back exactly, and degraded outputs (blurred, noisy, as from a real
network) must still give them back.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_medml.errors import InputError
from napari_medml.instances.metrics import instance_scores
from napari_medml.instances.postprocess import InstanceParams, instances_from_outputs
from napari_medml.instances.targets import BOUNDARY, INTERIOR, instance_target, touching_boundaries
from napari_medml.samples import touching_objects_2d


def touching_spheres_3d(seed: int, shape=(24, 64, 64), spacing=(3.0, 1.0, 1.0)) -> np.ndarray:
    """Instance labels of touching spheres (radius 7-10 physical units) on an anisotropic grid.

    Each voxel belongs to the sphere it lies deepest inside, so neighbours share a flat border.
    """
    rng = np.random.default_rng(seed)
    extent = np.array(shape) * np.array(spacing)
    coords = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij")
    best = np.full(shape, np.inf)
    labels = np.zeros(shape, np.int32)
    centres: list[tuple[np.ndarray, float]] = []
    for _ in range(400):
        r = rng.uniform(7.0, 10.0)
        if centres and rng.random() < 0.8:
            c0, r0 = centres[rng.integers(len(centres))]
            v = rng.normal(size=3)
            c = c0 + v / np.linalg.norm(v) * rng.uniform(0.75, 0.95) * (r + r0)
        else:
            c = rng.uniform(r, extent - r)
        if np.any(c < r * 0.6) or np.any(c > extent - r * 0.6):
            continue
        if all(np.linalg.norm(c - c2) >= 0.75 * (r + r2) for c2, r2 in centres):
            centres.append((c, r))
        if len(centres) == 12:
            break
    for k, (c, r) in enumerate(centres, start=1):
        rho = np.sqrt(sum((g - ci) ** 2 for g, ci in zip(coords, c))) / r
        own = (rho <= 1.0) & (rho < best)
        labels[own] = k
        best[own] = rho[own]
    return labels


def test_classes_mark_only_borders_between_objects() -> None:
    labels = np.zeros((6, 10), np.uint16)
    labels[1:5, 1:5] = 7
    labels[1:5, 5:9] = 1000  # touches 7 along column 4|5; ids need not be contiguous
    original = labels.copy()
    target = instance_target(labels)
    np.testing.assert_array_equal(labels, original)  # input untouched
    assert target.classes.dtype == np.uint8 and target.distance.dtype == np.float32
    expected = np.zeros_like(target.classes)
    expected[1:5, 1:9] = INTERIOR
    expected[1:5, 4:6] = BOUNDARY  # one pixel on each side of the shared border
    np.testing.assert_array_equal(target.classes, expected)
    np.testing.assert_array_equal(touching_boundaries(labels), expected == BOUNDARY)


def test_distance_peaks_at_one_per_object_and_is_zero_outside() -> None:
    labels = touching_objects_2d(0).labels
    target = instance_target(labels, (1.0, 1.0))
    assert np.all(target.distance[labels == 0] == 0)
    inside = target.distance[labels > 0]
    assert inside.min() > 0 and inside.max() == pytest.approx(1.0)
    peaks = ndi.maximum(target.distance, labels, index=np.unique(labels)[1:])
    np.testing.assert_allclose(peaks, 1.0)


def test_distance_is_measured_in_physical_units() -> None:
    # A sphere of radius 12 on a (3, 1, 1) grid: the normalised distance falls by the
    # same amount 6 units from the centre along Z (2 slices) as along X (6 pixels).
    spacing = (3.0, 1.0, 1.0)
    z, y, x = np.meshgrid(np.arange(15) * 3.0, np.arange(41) * 1.0, np.arange(41) * 1.0, indexing="ij")
    labels = ((z - 21) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 <= 12**2).astype(np.uint8)
    d = instance_target(labels, spacing).distance
    assert d[7, 20, 20] == pytest.approx(1.0)
    assert d[5, 20, 20] == pytest.approx(d[7, 20, 14], abs=0.02)
    ignored = instance_target(labels).distance  # unit spacing: Z looks 3x shorter
    assert ignored[5, 20, 20] < ignored[7, 20, 14] - 0.1


def test_bad_labels_and_spacing_are_refused() -> None:
    with pytest.raises(InputError, match=r"labels hold non-integer values \(float32, e.g. 0.5\)"):
        instance_target(np.full((8, 8), 0.5, np.float32))
    with pytest.raises(InputError, match="labels have dtype complex64: labels must be integer object ids"):
        instance_target(np.zeros((8, 8), np.complex64))
    with pytest.raises(InputError, match="2D"):
        instance_target(np.zeros((2, 2, 8, 8), np.int32))
    with pytest.raises(InputError, match="spacing"):
        instance_target(np.zeros((8, 8), np.int32), (1.0, 0.0))
    with pytest.raises(InputError, match="negative"):
        instance_target(-np.ones((8, 8), np.int32))


def _correlated_noise(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    noise = ndi.gaussian_filter(rng.standard_normal(shape), 2.0)
    return (noise * (std / noise.std())).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ideal_outputs_give_the_true_objects_back(seed: int) -> None:
    sample = touching_objects_2d(seed)
    target = instance_target(sample.labels, sample.spacing)
    foreground = (target.classes > 0).astype(np.float32)
    pred = instances_from_outputs(foreground, target.distance, sample.spacing, InstanceParams())
    scores = instance_scores(sample.labels, pred)
    assert scores.at(0.5).f1 == 1.0
    assert scores.mean_average_precision == 1.0  # every object back voxel for voxel
    assert pred.max() == len(np.unique(sample.labels)) - 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_degraded_outputs_still_give_the_objects_back(seed: int) -> None:
    sample = touching_objects_2d(seed)
    target = instance_target(sample.labels, sample.spacing)
    foreground = (target.classes > 0).astype(np.float32)
    rng = np.random.default_rng(seed)
    blurred = (ndi.gaussian_filter(foreground, 2.0), ndi.gaussian_filter(target.distance, 2.0))
    noisy = tuple(ndi.gaussian_filter(a, 1.0) + _correlated_noise(rng, a.shape, 0.1)
                  for a in (foreground, target.distance))
    under_confident = (blurred[0], blurred[1] * 0.5)  # peaks at 0.5 instead of 1
    for fg, dist in (blurred, noisy, under_confident):
        m = instance_scores(sample.labels, instances_from_outputs(fg, dist, sample.spacing)).at(0.5)
        assert m.f1 >= 0.95
        assert abs(m.n_pred - m.n_true) <= 1


def test_3d_anisotropic_round_trip() -> None:
    spacing = (3.0, 1.0, 1.0)
    labels = touching_spheres_3d(0, spacing=spacing)
    n = len(np.unique(labels)) - 1
    assert n >= 8
    assert touching_boundaries(labels).any()  # the spheres really touch
    target = instance_target(labels, spacing)
    foreground = (target.classes > 0).astype(np.float32)
    exact = instance_scores(labels, instances_from_outputs(foreground, target.distance, spacing))
    assert exact.at(0.5).f1 == 1.0 and exact.at(0.5).n_pred == n
    # voxels on a border facing Z sit 3 units deep, those facing X 1 unit: the
    # watershed may put a few border voxels on the other side
    assert exact.mean_average_precision >= 0.9
    sigma = [1.5 / s for s in spacing]  # 1.5 physical units on every axis
    blurred = instances_from_outputs(ndi.gaussian_filter(foreground, sigma),
                                     ndi.gaussian_filter(target.distance, sigma), spacing)
    m = instance_scores(labels, blurred).at(0.5)
    assert m.f1 == 1.0 and m.n_pred == n


def test_huge_ids_give_the_same_target() -> None:
    labels = touching_objects_2d(2).labels.astype(np.int64)
    huge = np.where(labels > 0, labels * 10**9 + 7, 0)
    a, b = instance_target(labels), instance_target(huge)
    np.testing.assert_array_equal(a.classes, b.classes)
    np.testing.assert_array_equal(a.distance, b.distance)
