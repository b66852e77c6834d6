"""Live features: shapes, anisotropy, blockwise == whole image, cache budget, ilastik/skimage agreement."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medml.errors import InputError
from napari_medml.live.features import FeatureConfig, FeatureStack, multiscale_features, prepare_image


def _image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape, dtype=np.float32), 1.5) + 0.05 * rng.random(shape, dtype=np.float32)


def test_shapes_dtypes_and_names() -> None:
    stack = FeatureStack(_image((30, 40)))
    feats = stack.region(None)
    assert feats.shape == (30, 40, 1 + 5 * (3 + 2)) and feats.dtype == np.float32
    assert stack.names[:5] == ["intensity", "gaussian_1", "gradient_1", "dog_1", "hessian0_1"]
    vol = np.stack([_image((12, 20, 24)), _image((12, 20, 24), seed=1)], axis=1)  # (Z, C, Y, X)
    stack3 = FeatureStack(vol, spacing=(2.0, 1.0, 1.0), channel_axis=1, config=FeatureConfig(sigmas=(1.0, 2.0)))
    assert stack3.shape == (12, 20, 24)
    assert stack3.region((slice(2, 5), slice(None), 3)).shape == (3, 20, 1, 2 * (1 + 2 * 6))
    assert stack3.names[0] == "c0_intensity" and stack3.names[-1] == "c1_hessian2_2"


def test_anisotropy_smooths_the_same_millimetres_on_every_axis() -> None:
    delta = np.zeros((21, 41, 41), np.float32)
    delta[10, 20, 20] = 1.0
    stack = FeatureStack(delta, spacing=(2.0, 1.0, 1.0), config=FeatureConfig(sigmas=(2.0, 4.0)))
    g = stack.region(None)[..., stack.names.index("gaussian_4")]
    # 4 voxels of 1 mm in Y/X = 2 voxels of 2 mm in Z: the same physical distance, the same value
    assert g[12, 20, 20] == pytest.approx(g[10, 24, 20], rel=1e-4)
    assert g[10, 24, 20] == pytest.approx(g[10, 20, 24], rel=1e-4)
    iso_stack = FeatureStack(delta, config=FeatureConfig(sigmas=(2.0, 4.0)))
    iso = iso_stack.region(None)[..., iso_stack.names.index("gaussian_4")]
    # isotropic spacing: z falls off like y per voxel, so 2 z voxels are nearer than 4 y voxels
    assert iso[12, 20, 20] == pytest.approx(iso[10, 22, 20], rel=1e-4)
    assert iso[12, 20, 20] > iso[10, 24, 20] + 0.01


@pytest.mark.parametrize("shape", [(70, 90), (26, 45, 38)])
def test_blockwise_equals_whole_image(shape: tuple[int, ...]) -> None:
    image = _image(shape, seed=3)
    spacing = (1.0,) * len(shape) if len(shape) == 2 else (2.5, 1.0, 1.0)
    config = FeatureConfig(sigmas=(1.0, 2.0, 4.0), block=16, group_voxels=3000)
    stack = FeatureStack(image, spacing=spacing, config=config)
    assert np.prod(stack.grid) > 4
    whole = multiscale_features(prepare_image(image, None), spacing, config)
    # a region first (its blocks only), then the rest
    part = stack.region(tuple(slice(5, 12) for _ in shape))
    np.testing.assert_allclose(part, whole[tuple(slice(5, 12) for _ in shape)], atol=2e-5)
    assert 0 < len(stack._cache) < np.prod(stack.grid)
    np.testing.assert_allclose(stack.region(None), whole, atol=2e-5)
    coords = tuple(np.array([0, n // 2, n - 1]) for n in shape)
    np.testing.assert_allclose(stack.at(coords), whole[coords], atol=2e-5)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_slice_of_a_volume_is_read_from_its_plane_not_from_the_blocks_it_crosses(axis: int) -> None:
    image = _image((40, 36, 44), seed=4)
    spacing = (2.0, 1.0, 1.0)
    config = FeatureConfig(sigmas=(1.0, 2.0, 4.0), block=8)
    whole = multiscale_features(prepare_image(image, None), spacing, config)
    stack = FeatureStack(image, spacing=spacing, config=config)
    on_screen = tuple(slice(17, 18) if a == axis else slice(None) for a in range(3))
    np.testing.assert_array_equal(stack.region(on_screen), whole[on_screen])
    assert len(stack._cache) == 0 and list(stack._planes) == [(axis, 17)]
    # strokes painted on two slices: their planes, not the blocks around them
    rng = np.random.default_rng(0)
    coords = [rng.integers(0, n, 50) for n in image.shape]
    coords[axis] = np.repeat([17, 30], 25)
    coords = tuple(coords)
    np.testing.assert_array_equal(stack.at(coords), whole[coords])
    assert len(stack._cache) == 0 and set(stack._planes) == {(axis, 17), (axis, 30)}
    # a block's thin piece (a whole answer, piece by piece) is read from its block, not a whole plane
    piece = (slice(8, 16), slice(0, 8), slice(3, 4))
    np.testing.assert_array_equal(stack.region(piece), whole[piece])
    assert len(stack._cache) == 1 and len(stack._planes) == 2
    # points scattered through the volume are read from blocks
    scattered = tuple(rng.integers(0, n, 30) for n in image.shape)
    np.testing.assert_array_equal(stack.at(scattered), whole[scattered])
    assert len(stack._cache) > 1 and len(stack._planes) == 2


def test_budget_float16_and_eviction() -> None:
    image = _image((40, 50))
    config = FeatureConfig(sigmas=(1.0, 2.0), block=16, memory_budget=40 * 50 * 11 * 2 // 3)
    stack = FeatureStack(image, config=config)
    assert stack.dtype == np.float16
    full = stack.region(None)
    assert full.dtype == np.float32
    assert stack.nbytes <= config.memory_budget
    whole = multiscale_features(prepare_image(image, None), (1.0, 1.0), config)
    np.testing.assert_allclose(full, whole, rtol=2e-3, atol=2e-3)
    assert FeatureStack(image, config=FeatureConfig(sigmas=(1.0,))).dtype == np.float32


def test_features_agree_with_skimage_multiscale_basic_features() -> None:
    from skimage.feature import multiscale_basic_features

    image = _image((64, 64), seed=5)
    ours = FeatureStack(image, config=FeatureConfig(sigmas=(1.0, 2.0, 4.0))).region(None)
    theirs = multiscale_basic_features(image, sigma_min=1, sigma_max=4, num_sigma=3, workers=1)
    # per sigma: intensity, edges, Hessian eigenvalues 0 and 1
    names = FeatureStack(image, config=FeatureConfig(sigmas=(1.0, 2.0, 4.0))).names
    inner = (slice(12, -12), slice(12, -12))  # away from the border handling
    for k, s in enumerate(("1", "2", "4")):
        for ours_name, col in (("gaussian_" + s, 0), ("hessian0_" + s, 2), ("hessian1_" + s, 3)):
            a = ours[..., names.index(ours_name)][inner].ravel()
            b = theirs[..., 4 * k + col][inner].ravel()
            assert np.corrcoef(a, b)[0, 1] > 0.98, (ours_name, np.corrcoef(a, b)[0, 1])


def test_bad_inputs_raise_one_clear_error() -> None:
    with pytest.raises(InputError, match="2D .* or 3D"):
        FeatureStack(np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(InputError, match="spacing"):
        FeatureStack(np.zeros((8, 8), np.float32), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="NaN"):
        FeatureStack(np.full((8, 8), np.nan, np.float32))
    with pytest.raises(InputError, match="region"):
        FeatureStack(_image((8, 8))).region((slice(0, 4),))
    with pytest.raises(InputError, match=r"index 100 is outside axis 0 of the image's shape \(8, 8\) \(0 to 7\)$"):
        FeatureStack(_image((8, 8))).region((100, slice(None)))
    with pytest.raises(InputError, match="sigmas"):
        FeatureConfig(sigmas=(2.0, 1.0))
