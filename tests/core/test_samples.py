"""Synthetic sample data: shapes, dtypes, content, determinism and speed."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_medml import samples
from napari_medml._sample_data import phantom_3d as phantom_layers
from napari_medml._sample_data import shape_classes as shape_layers
from napari_medml._sample_data import touching_objects_2d as objects_layers
from napari_medml.errors import InputError


@pytest.fixture(scope="module")
def phantom() -> samples.Phantom3D:
    return samples.phantom_3d(seed=0)


@pytest.fixture(scope="module")
def objects() -> samples.Objects2D:
    return samples.touching_objects_2d(seed=0)


@pytest.fixture(scope="module")
def shapes() -> samples.ShapeClasses:
    return samples.shape_classes(seed=0)


def test_phantom_arrays(phantom: samples.Phantom3D) -> None:
    assert phantom.image.shape == phantom.labels.shape == (48, 96, 96)
    assert phantom.image.dtype == np.float32
    assert phantom.labels.dtype == np.uint8
    assert phantom.spacing == (2.0, 1.0, 1.0)
    assert len(set(phantom.spacing)) > 1  # anisotropic
    assert set(np.unique(phantom.labels)) == {0, 1, 2, 3}
    assert set(phantom.class_names) == {1, 2, 3}
    assert np.isfinite(phantom.image).all()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_phantom_every_class_in_last_quarter(seed: int, axis: int) -> None:
    # a held-out block along any axis (the longest included) must hold every class
    labels = samples.phantom_3d(seed=seed).labels
    block = np.take(labels, range(labels.shape[axis] * 3 // 4, labels.shape[axis]), axis=axis)
    counts = np.bincount(block.ravel(), minlength=4)
    assert (counts[1:] >= 200).all(), f"seed {seed}, axis {axis}: class voxel counts {counts}"


@pytest.mark.parametrize("seed", range(6))
def test_phantom_default_validation_block_is_substantial(seed: int) -> None:
    # the engine holds out the last fifth along the longest axis (Y for the default
    # shape): every class must fill enough of it for a meaningful validation Dice
    labels = samples.phantom_3d(seed=seed).labels
    block = labels[:, -int(np.ceil(0.2 * labels.shape[1])) :]
    counts = np.bincount(block.ravel(), minlength=4)
    assert counts[1] >= 8000 and counts[2] >= 4000 and counts[3] >= 500, counts


def test_phantom_content(phantom: samples.Phantom3D) -> None:
    image, labels = phantom.image, phantom.labels
    means = [float(image[labels == k].mean()) for k in range(4)]
    assert means == sorted(means)  # background < body < organ < lesion
    # neighbouring classes separated by ~3-4 noise standard deviations, but overlapping
    noise = float(np.median([image[labels == k].std() for k in range(4)]))
    cnr = np.diff(means) / noise
    assert ((cnr > 2.5) & (cnr < 6)).all(), cnr
    # lesions are a few compact blobs, not specks: >= 6 voxels radius in-plane
    lesions, n = ndi.label(labels == 3)
    assert 3 <= n <= 9
    sizes = np.bincount(lesions.ravel())[1:]
    assert sizes.min() >= 200


def test_phantom_shape_and_spacing_options() -> None:
    p = samples.phantom_3d(seed=5, shape=(32, 64, 80), spacing=(3.0, 0.8, 0.8))
    assert p.image.shape == p.labels.shape == (32, 64, 80)
    assert p.spacing == (3.0, 0.8, 0.8)
    assert set(np.unique(p.labels)) == {0, 1, 2, 3}
    with pytest.raises(InputError, match="3D shape"):
        samples.phantom_3d(shape=(64, 64))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="too small"):
        samples.phantom_3d(shape=(8, 64, 64))


def test_objects_arrays(objects: samples.Objects2D) -> None:
    assert objects.image.shape == objects.labels.shape == (256, 256)
    assert objects.image.dtype == np.float32
    assert objects.labels.dtype == np.int32
    assert objects.spacing == (1.0, 1.0)
    ids = np.unique(objects.labels)
    assert ids[0] == 0 and 20 <= len(ids) - 1 <= 30
    assert (ids == np.arange(len(ids))).all()  # consecutive instance ids


def test_objects_touch_and_are_connected(objects: samples.Objects2D) -> None:
    labels = objects.labels
    touching: set[int] = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        shared = (a != b) & (a > 0) & (b > 0)
        touching |= set(a[shared].tolist()) | set(b[shared].tolist())
    assert len(touching) >= 0.6 * labels.max()
    for k in range(1, labels.max() + 1):
        assert ndi.label(labels == k)[1] == 1, f"object {k} is in pieces"
    # objects are brighter than background
    assert objects.image[labels > 0].mean() > objects.image[labels == 0].mean() + 0.3


def test_shape_classes_arrays(shapes: samples.ShapeClasses) -> None:
    assert shapes.images.shape == shapes.labels.shape == (64, 64, 64)
    assert shapes.images.dtype == np.float32
    assert shapes.labels.dtype == np.uint8
    assert shapes.classes.shape == (64,)
    assert dict(shapes.class_names) == {1: "smooth", 2: "irregular"}
    assert np.bincount(shapes.classes, minlength=3)[1:].tolist() == [32, 32]
    for i, cls in enumerate(shapes.classes):
        assert set(np.unique(shapes.labels[i])) == {0, int(cls)}


def test_shape_classes_are_separable_by_outline(shapes: samples.ShapeClasses) -> None:
    # solidity (area / convex hull area) alone nearly separates the classes,
    # so a small CNN has an easy, learnable signal
    from skimage.measure import regionprops

    solidity = np.array([regionprops((m > 0).astype(np.uint8))[0].solidity for m in shapes.labels])
    smooth, irregular = solidity[shapes.classes == 1], solidity[shapes.classes == 2]
    assert smooth.min() > irregular.max()


def test_shape_classes_odd_n() -> None:
    s = samples.shape_classes(seed=3, n=9, size=32)
    assert s.images.shape == (9, 32, 32)
    assert abs(int((s.classes == 1).sum()) - int((s.classes == 2).sum())) <= 1


def test_bad_arguments_name_the_fix() -> None:
    with pytest.raises(InputError, match="2D shape"):
        samples.touching_objects_2d(shape=(16, 16))
    with pytest.raises(InputError, match="n >= 2"):
        samples.shape_classes(n=1)


GENERATORS: dict[str, Callable[[int], object]] = {
    "phantom_3d": lambda seed: samples.phantom_3d(seed=seed),
    "touching_objects_2d": lambda seed: samples.touching_objects_2d(seed=seed),
    "shape_classes": lambda seed: samples.shape_classes(seed=seed),
}


def _arrays(sample: object) -> list[np.ndarray]:
    return [v for v in vars(sample).values() if isinstance(v, np.ndarray)]


@pytest.mark.parametrize("name", list(GENERATORS))
def test_deterministic(name: str) -> None:
    make = GENERATORS[name]
    a, b, c = make(0), make(0), make(1)
    for x, y in zip(_arrays(a), _arrays(b)):
        np.testing.assert_array_equal(x, y)
    # a different seed changes every array (image and labels alike)
    assert all(not np.array_equal(x, z) for x, z in zip(_arrays(a), _arrays(c)))


@pytest.mark.parametrize("name", list(GENERATORS))
def test_fast(name: str) -> None:
    make = GENERATORS[name]
    make(0)  # warm caches (imports, FFT plans)

    def seconds() -> float:
        start = time.perf_counter()
        make(7)
        return time.perf_counter() - start

    assert min(seconds() for _ in range(3)) < 1.0  # the fastest of three: another job may share the machine


def test_samples_are_frozen(phantom: samples.Phantom3D) -> None:
    with pytest.raises(AttributeError):
        phantom.spacing = (1.0, 1.0, 1.0)  # type: ignore[misc]


def test_sample_data_layer_tuples() -> None:
    image, labels = phantom_layers()
    assert image[2] == "image" and labels[2] == "labels"
    assert image[1]["name"] == "phantom" and labels[1]["name"] == "phantom [ground truth]"
    assert image[1]["scale"] == labels[1]["scale"] == (2.0, 1.0, 1.0)
    assert image[0].shape == labels[0].shape

    image, labels = objects_layers()
    assert (image[2], labels[2]) == ("image", "labels")
    assert labels[0].dtype == np.int32

    image, labels = shape_layers()
    assert (image[2], labels[2]) == ("image", "labels")
    classes = labels[1]["metadata"]["sample_classes"]
    assert len(classes) == image[0].shape[0] == labels[0].shape[0]
    assert [int(labels[0][i].max()) for i in range(len(classes))] == classes
