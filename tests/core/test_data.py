"""Input checks, class ids, label encoding, normalization, split, patch size, sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_medml.segmentation import data
from napari_medml.preprocessing import normalization
from napari_medml.errors import InputError


def test_prepare_image_checks_dims_channels_and_finiteness():
    img = np.zeros((4, 8, 8), np.float32)
    out = data.prepare_image(img, channel_axis=None, spatial_dims=3)
    assert out.shape == (1, 4, 8, 8) and out.dtype == np.float32
    out[:] = 1
    assert img.max() == 0  # never a view of the input
    assert data.prepare_image(np.zeros((8, 8, 2)), channel_axis=-1, spatial_dims=2).shape == (2, 8, 8)
    with pytest.raises(InputError, match="2 spatial dimensions.*3D"):
        data.prepare_image(np.zeros((8, 8)), channel_axis=None, spatial_dims=3)
    with pytest.raises(InputError, match="channel_axis"):
        data.prepare_image(np.zeros((2, 8, 8)), channel_axis=None, spatial_dims=2)
    bad = img.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        data.prepare_image(bad, channel_axis=None, spatial_dims=3)
    inf = img.copy()
    inf[1, 1, 1] = np.inf
    with pytest.raises(InputError, match="infinite"):
        data.prepare_image(inf, channel_axis=None, spatial_dims=3)


def test_prepare_labels_checks_shape():
    with pytest.raises(InputError, match=r"shape \(8, 8\).*\(4, 8, 8\)"):
        data.prepare_labels(np.zeros((8, 8), np.uint8), (4, 8, 8))
    with pytest.raises(InputError, match="integer"):
        data.prepare_labels(np.full((4, 4), 0.5), (4, 4))


def test_class_ids_dense_and_errors():
    lab = np.array([[0, 1], [5, 7]])
    assert data.find_class_ids([lab], "dense", 0) == (0, 1, 5, 7)
    with pytest.raises(InputError, match="empty"):
        data.find_class_ids([np.zeros((4, 4), int)], "dense", 0)
    assert data.find_class_ids([np.array([[1, 2]])], "dense", 0) == (0, 1, 2)
    with pytest.raises(InputError, match="only class 3"):
        data.find_class_ids([np.full((4, 4), 3)], "dense", 0)


def test_class_ids_sparse_and_errors():
    lab = np.array([[0, 9], [2, 4]])
    assert data.find_class_ids([lab], "sparse", 9) == (0, 2, 4)
    with pytest.raises(InputError, match="empty"):
        data.find_class_ids([np.zeros((4, 4), int)], "sparse", 9)
    with pytest.raises(InputError, match="background id 9"):
        data.find_class_ids([np.array([[0, 2]])], "sparse", 9)
    with pytest.raises(InputError, match="only the background"):
        data.find_class_ids([np.array([[0, 9]])], "sparse", 9)


def test_encode_labels_dense_and_sparse():
    lab = np.array([[0, 1], [5, 7]])
    np.testing.assert_array_equal(data.encode_labels(lab, (0, 1, 5, 7), "dense", 0), [[1, 2], [3, 4]])
    scribbles = np.array([[0, 9], [5, 0]])
    np.testing.assert_array_equal(data.encode_labels(scribbles, (0, 5), "sparse", 9), [[0, 1], [2, 0]])


@pytest.mark.parametrize("method", ["zscore", "percentile", "minmax", "none"])
def test_normalization_uses_training_statistics(method):
    rng = np.random.default_rng(0)
    img = (rng.normal(5, 2, (2, 16, 16)) * np.array([1, 10])[:, None, None]).astype(np.float32)
    stats = normalization.fit_normalization([img], method)
    assert stats["method"] == method and len(stats["channels"]) == 2
    out = normalization.apply_normalization(img.copy(), stats)
    if method == "zscore":
        assert np.allclose(out.mean((1, 2)), 0, atol=1e-4) and np.allclose(out.std((1, 2)), 1, atol=1e-3)
    elif method in ("percentile", "minmax"):
        assert out.min() >= 0 and out.max() <= 1
    else:
        np.testing.assert_array_equal(out, img)


def test_auto_patch_size_is_anisotropic_divisible_and_within_budget():
    patch = data.auto_patch_size((64, 256, 256), (4.0, 1.0, 1.0), 3, 64, 8, bytes_per_voxel=512)
    assert all(p % 8 == 0 for p in patch)
    assert math.prod(patch) * 512 <= 64 * 2**20
    # the coarse axis keeps fewer voxels, the extent in mm stays comparable
    assert patch[0] < patch[1]
    assert patch[0] * 4.0 >= 0.5 * patch[1]
    small = data.auto_patch_size((20, 30), None, 2, 1024, 8)
    assert small == (16, 24)


def test_patch_sampler_shapes_foreground_share_and_seed():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(1, 64, 64)).astype(np.float32)
    lab = np.ones((64, 64), np.uint8)
    lab[30:34, 30:34] = 2  # 16 foreground pixels of 4096
    regions = [data.Region(img, lab)]
    s1 = data.PatchSampler(regions, (16, 16), 4, 0.5, sparse=False, transform=None, seed=1)
    hits = 0
    for _ in range(50):
        image, label = s1.batch()
        assert image.shape == (4, 1, 16, 16) and label.shape == (4, 1, 16, 16)
        hits += int((label == 2).flatten(1).any(1).sum())
    assert 0.4 <= hits / 200 <= 0.8
    a = data.PatchSampler(regions, (16, 16), 2, 0.5, sparse=False, transform=None, seed=3).batch()
    b = data.PatchSampler(regions, (16, 16), 2, 0.5, sparse=False, transform=None, seed=3).batch()
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()


def test_patch_sampler_balances_classes_across_images_where_monai_balances_within_each():
    """Why the centre draw is ours: class 3 is painted only in the second image. MONAI's
    per-image draw (``generate_label_classes_crop_centers`` with equal ratios, as
    ``RandCropByLabelClassesd`` does on each image) centres a third as many patches on it
    as on class 2; ours draws a class first, so both get half of the foreground patches."""
    from monai.transforms.utils import generate_label_classes_crop_centers, map_classes_to_indices

    img = np.zeros((1, 48, 48), np.float32)
    first, second = np.ones((48, 48), np.uint8), np.ones((48, 48), np.uint8)
    first[10:20, 10:20] = 2
    second[10:20, 10:20] = 2
    second[30:34, 30:34] = 3  # rare, and in one image only
    sampler = data.PatchSampler([data.Region(img, first), data.Region(img, second)], (8, 8), 1, 1.0,
                                sparse=False, transform=None, seed=0)
    ours = [sampler.regions[r].label[c] for r, c in (sampler._pick() for _ in range(4000))]
    ours_share = np.mean(np.array(ours) == 3)

    state = np.random.RandomState(0)
    theirs = []
    for k in range(4000):  # the data loader visits both images equally often
        lab = (first, second)[k % 2]
        indices = map_classes_to_indices(lab[None], 4)
        ratios = [0, 0, 1, 1]  # the foreground classes, equally
        (centre,) = generate_label_classes_crop_centers((8, 8), 1, lab.shape, indices, ratios, state, warn=False)
        theirs.append(lab[tuple(int(c) for c in centre)])
    theirs_share = np.mean(np.array(theirs) == 3)
    assert ours_share == pytest.approx(0.5, abs=0.04)
    assert theirs_share == pytest.approx(0.25, abs=0.04)  # half as often: the library piece's balance is per image


def test_patch_sampler_index_lists_skip_unlabelled_and_background_voxels():
    img = np.zeros((1, 32, 32), np.float32)
    lab = np.zeros((32, 32), np.uint8)  # sparse: 0 unpainted, 1 painted background, 2 a class
    lab[0, :] = 1
    lab[5, 5:9] = 2
    dense = data.PatchSampler([data.Region(img, lab)], (8, 8), 1, 1.0, sparse=False, transform=None, seed=0)
    assert set(dense.centres) == {2} and sorted(dense.centres[2][0][1]) == [5 * 32 + x for x in range(5, 9)]
    sparse = data.PatchSampler([data.Region(img, lab)], (8, 8), 1, 1.0, sparse=True, transform=None, seed=0,
                               max_indices=10)
    assert set(sparse.centres) == {1, 2} and len(sparse.centres[1][0][1]) == 10  # thinned evenly
