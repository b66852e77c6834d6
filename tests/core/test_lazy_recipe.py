"""A recipe of per-voxel steps replayed on a lazy image: the in-memory recipe's values, block by
block; the steps that need the whole image in memory are named and refused."""

from __future__ import annotations

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

from napari_medml.config import PreprocessStep as Step  # noqa: E402
from napari_medml.engine.reports import StopToken  # noqa: E402
from napari_medml.errors import Cancelled, ConfigError, InputError  # noqa: E402
from napari_medml.preprocessing.inputs import run_recipe_channels  # noqa: E402
from napari_medml.preprocessing.lazy_recipe import blockwise_refusal, replay_lazy, statistics_passes  # noqa: E402


def _image() -> np.ndarray:
    """Two channels of a 16-bit volume on far-apart scales, a NaN and an inf in them."""
    rng = np.random.default_rng(0)
    image = np.stack([rng.gamma(2.0, 300.0, (20, 35, 45)), 5000 + rng.normal(0, 40, (20, 35, 45))]).astype(np.float32)
    image[0, 3, 4, 5] = np.nan
    image[1, 7, 8, 9] = np.inf
    return image


@pytest.mark.parametrize("steps", [
    (Step("fill_nan"), Step("zscore")),
    (Step("fill_nan", {"value": 3.0}), Step("minmax"), Step("zscore")),
    (Step("fill_nan"), Step("ct_window", {"preset": "lung"})),
    (Step("fill_nan"), Step("ct_window", {"level": 5000, "width": 100}), Step("minmax")),
], ids=["zscore", "minmax-zscore", "lung-window", "window-minmax"])
def test_each_block_holds_the_whole_image_recipes_values(steps):
    image = _image()
    given = image.copy()
    expected = run_recipe_channels(image.copy(), None, steps)[0]  # per channel, as training and prediction run it
    lazy = replay_lazy(da.from_array(image, chunks=(1, 8, 16, 16)), steps)
    assert lazy.dtype == np.float32 and lazy.chunks[1:] == da.from_array(image, chunks=(1, 8, 16, 16)).chunks[1:]
    # dask sums the statistics in another order: a float32 rounding step of the mean at most
    np.testing.assert_allclose(lazy.compute(), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(lazy[:, 5:9, 20:, 3:30].compute(), expected[:, 5:9, 20:, 3:30], rtol=1e-6, atol=1e-6)
    assert np.isnan(lazy.compute()).sum() == np.isnan(expected).sum() == 0
    np.testing.assert_array_equal(image, given, strict=True)  # the input is never changed
    assert statistics_passes(steps) == sum(s.operation in ("zscore", "minmax") for s in steps) + (
        steps[0].params.get("value") is None)


def test_a_uint16_zarr_is_read_as_float32_as_in_memory(tmp_path):
    zarr = pytest.importorskip("zarr")
    raw = (np.random.default_rng(1).gamma(2.0, 900.0, (1, 12, 40, 40))).astype(np.uint16)
    store = zarr.open(str(tmp_path / "a.zarr"), mode="w", shape=raw.shape, chunks=(1, 4, 16, 16), dtype=raw.dtype)
    store[:] = raw
    steps = (Step("zscore"),)
    np.testing.assert_allclose(replay_lazy(store, steps).compute(),
                               run_recipe_channels(raw.astype(np.float32), None, steps)[0], rtol=1e-6, atol=1e-6)


def test_steps_that_need_the_whole_image_are_named():
    steps = (Step("zscore"), Step("clahe"), Step("gaussian", {"sigma": 1.5}),
             Step("percentile", {"low": 2, "high": 98}))
    line = blockwise_refusal(steps, "block-wise prediction", "predict in memory")
    assert line == ("the preprocessing recipe has step(s) that need the whole image in memory (clahe, "
                    "percentile 2-98): block-wise prediction replays only fill NaN, z-score, min-max, CT window, "
                    "gaussian and median steps, and a percentile clip as the first step of an integer image; "
                    "predict in memory")
    assert blockwise_refusal(steps[:1] + steps[2:3], "block-wise prediction", "predict in memory") is None
    with pytest.raises(ConfigError, match=r"\(clahe, percentile 2-98\)"):
        replay_lazy(da.zeros((1, 4, 8, 8)), steps)


@pytest.mark.parametrize("steps, spacing", [
    ((Step("fill_nan"), Step("gaussian", {"sigma": 1.5})), None),
    ((Step("fill_nan"), Step("gaussian", {"sigma": [0.5, 2.0, 3.0]}), Step("zscore")), None),
    ((Step("fill_nan"), Step("gaussian", {"sigma": 2.0, "physical": True}), Step("minmax")), (4.0, 1.0, 0.5)),
    ((Step("fill_nan"), Step("median", {"size": 3})), None),
    ((Step("fill_nan"), Step("median", {"size": [1, 4, 5]}), Step("zscore")), None),
], ids=["gaussian", "anisotropic-gaussian-zscore", "physical-gaussian-minmax", "median", "even-median-zscore"])
def test_filters_see_their_neighbours_across_blocks_as_in_memory(steps, spacing):
    # small chunks (4 x 6 x 7 voxels): the filters reach several blocks away, and into the image's edges
    image = _image()
    expected = run_recipe_channels(image.copy(), spacing, steps)[0]
    lazy = replay_lazy(da.from_array(image, chunks=(1, 4, 6, 7)), steps, spacing=spacing)
    np.testing.assert_allclose(lazy.compute(), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(lazy[:, 17:, :9, 40:].compute(), expected[:, 17:, :9, 40:], rtol=1e-6, atol=1e-6)
    # the filter is the block's: without its neighbours, the block edges would differ
    blockwise = np.concatenate([run_recipe_channels(image[:, k:k + 4].copy(), spacing, steps)[0]
                                for k in range(0, 20, 4)], axis=1)
    assert np.abs(blockwise - expected).max() > 1e-3


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32])
@pytest.mark.parametrize("steps", [
    (Step("percentile", {"low": 1, "high": 99.8}),),
    (Step("fill_nan"), Step("percentile", {"low": 0.5, "high": 99}), Step("zscore")),
    (Step("percentile", {"low": 0, "high": 100}), Step("gaussian", {"sigma": 1.0})),
], ids=["1-99.8", "after-fill-then-zscore", "0-100-then-gaussian"])
def test_a_percentile_clip_of_an_integer_image_has_the_in_memory_bounds(steps, dtype):
    # many repeated values and bounds that fall between two of them: the interpolation is NumPy's
    rng = np.random.default_rng(3)
    top = min(np.iinfo(dtype).max, 3000)
    image = np.stack([rng.integers(0, top, (9, 30, 31)), np.minimum(rng.poisson(7.5, (9, 30, 31)), top)])
    image = (image - (300 if dtype in (np.int16, np.int32) else 0)).astype(dtype)
    expected = run_recipe_channels(image.astype(np.float32), None, steps)[0]
    lazy = replay_lazy(da.from_array(image, chunks=(1, 4, 7, 9)), steps)
    np.testing.assert_allclose(lazy.compute(), expected, rtol=1e-6, atol=1e-6)
    assert statistics_passes(steps, dtype) == (steps[0].operation == "fill_nan") + (
        2 if np.dtype(dtype).itemsize > 2 else 1) + any(s.operation == "zscore" for s in steps)


def test_a_percentile_of_a_float_image_or_after_other_steps_is_refused_with_the_way_that_works():
    with pytest.raises(InputError, match=r"^a percentile clip is replayed block by block only on an integer image, "
                                         r"and this one is float32: predict in memory"):
        replay_lazy(da.zeros((1, 4, 8, 8), dtype=np.float32), (Step("percentile"),))
    steps = (Step("zscore"), Step("percentile"))
    assert "(percentile 1-99)" in blockwise_refusal(steps, "block-wise prediction", "predict in memory")
    with pytest.raises(ConfigError, match=r"\(percentile 1-99\).*and a percentile clip as the first step of an "
                                          "integer image"):
        replay_lazy(da.zeros((1, 4, 8, 8), dtype=np.uint16), steps)
    wide = np.zeros((1, 4, 8, 8), np.int32)
    wide[0, 0, 0, 0] = 1 << 21  # a histogram of one bin per value would hold 2 million bins per block
    with pytest.raises(InputError, match=r"^a percentile clip of an image whose values span more than 1048576 "):
        replay_lazy(da.from_array(wide), (Step("percentile"),))
    with pytest.raises(InputError, match="percentile: need 0 <= low < high <= 100"):
        replay_lazy(da.zeros((1, 4, 8, 8), dtype=np.uint16), (Step("percentile", {"low": 50, "high": 5}),))


def test_a_filter_with_bad_parameters_is_refused_before_any_pass():
    with pytest.raises(InputError, match="sigma"):
        replay_lazy(da.zeros((1, 4, 8, 8)), (Step("gaussian", {"sigma": [1, 2]}),))
    with pytest.raises(InputError, match="median: size must be a whole number"):
        replay_lazy(da.zeros((1, 4, 8, 8)), (Step("median", {"size": 0}),))


def test_nans_a_channel_without_finite_values_and_unknown_parameters_are_refused():
    image = _image()
    image[1] = np.nan
    with pytest.raises(InputError, match="every voxel is NaN or infinite"):
        replay_lazy(da.from_array(image), (Step("fill_nan"),))
    # a recipe that does not fill first: NaN and inf are refused by the first statistics pass, before any block
    # (a single inf made min-max's range infinite and z-score's mean: blocks were predicted from a blank input)
    with pytest.raises(InputError, match=r"^image contains 2 NaN or infinite value\(s\): fill them first"):
        replay_lazy(da.from_array(_image()), (Step("minmax"),))
    with pytest.raises(InputError, match=r"^image contains 2 NaN or infinite value\(s\)"):
        replay_lazy(da.from_array(_image()), (Step("ct_window", {"preset": "lung"}), Step("zscore")))
    with pytest.raises(InputError, match="sigma"):
        replay_lazy(da.from_array(image), (Step("zscore", {"sigma": 1}),))


def test_stop_ends_a_statistics_pass():
    stop = StopToken()
    stop.stop()
    with pytest.raises(Cancelled):
        replay_lazy(da.from_array(_image(), chunks=(1, 4, 8, 8)), (Step("fill_nan"), Step("zscore")), stop=stop)


def test_a_recipe_that_fills_first_trains_and_predicts_images_with_nans():
    """In memory as block by block: the NaN checks let an image through when the recipe's first
    step fills them (no other step sees them), and refuse it otherwise."""
    from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
    from napari_medml.preprocessing.inputs import fills_nonfinite
    from napari_medml.samples import phantom_3d
    from napari_medml.segmentation.task import train

    p = phantom_3d(0)
    crop = (slice(16, 32), slice(16, 80), slice(16, 80))
    image = p.image[crop].astype(np.float32)
    image[0, :5, :5] = np.nan  # outside a scanner's field of view
    given = image.copy()
    steps = (Step("fill_nan"), Step("zscore"))
    assert fills_nonfinite(steps) and not fills_nonfinite(steps[::-1]) and not fills_nonfinite(())

    def config(recipe: tuple) -> TrainConfig:
        return TrainConfig(data=DataConfig(patch_size=(16, 32, 32), batch_size=2, preprocessing=recipe),
                           augment=AugmentConfig.none(), model=ModelConfig(channels=4, depth=3),
                           optim=OptimConfig(epochs=1, steps_per_epoch=3), device="cpu", seed=0)

    model = train(image, p.labels[crop], config(steps), spacing=p.spacing)
    filled = np.where(np.isnan(image), np.nanmin(image), image)
    np.testing.assert_array_equal(model.predict(image).labels, model.predict(filled).labels)
    np.testing.assert_array_equal(image, given, strict=True)  # the caller's image keeps its NaNs
    with pytest.raises(InputError, match="25 NaN or infinite value"):
        train(image, p.labels[crop], config(steps[::-1]), spacing=p.spacing)


class _Counting:
    """An array that counts the voxels read from it."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, array.ndim
        self.read = 0

    def __getitem__(self, key):
        out = self.array[key]
        self.read += out.size
        return out


def test_the_statistics_of_all_channels_take_one_pass_and_numpy_is_wrapped_in_small_chunks():
    """Review 29: a pass per channel read chunks holding every channel (RGB, channel-last Zarr)
    once per channel; a NumPy image got dask's automatic chunks, so each block of a block-wise
    prediction transformed far more than itself."""
    rgb = (np.random.default_rng(2).random((3, 16, 40, 40)) * 255).astype(np.uint8)
    counting = _Counting(rgb)
    lazy = da.from_array(counting, chunks=(3, 8, 20, 20))  # every chunk holds the three channels
    replay_lazy(lazy, (Step("zscore"), Step("minmax")))
    assert counting.read == 2 * rgb.size  # one pass per step that needs statistics, not per channel
    volume = np.zeros((1, 100, 300, 300), np.float32)
    assert max(max(c) for c in replay_lazy(volume, (Step("ct_window", {"preset": "lung"}),)).chunks[1:]) == 64
    assert max(max(c) for c in replay_lazy(volume[:, 0], (Step("zscore"),)).chunks[1:]) == 300  # 2D: up to 512


def test_statistics_of_a_filtered_image_are_taken_slab_by_slab_with_its_nans_counted():
    """The memory benchmark: dask's reduction over a filtered 3 GiB volume ran out of a 1.5 GiB
    address space; the slab-by-slab pass gives the same numbers, counts NaN and inf, and stops."""
    steps = (Step("gaussian", {"sigma": 1.0}), Step("zscore"))
    with pytest.raises(InputError, match=r"^image contains 2 NaN or infinite value\(s\)"):
        replay_lazy(da.from_array(_image(), chunks=(1, 4, 7, 9)), steps)
    finite = np.nan_to_num(_image(), nan=0.0, posinf=0.0)
    expected = run_recipe_channels(finite.copy(), None, steps)[0]
    np.testing.assert_allclose(replay_lazy(da.from_array(finite, chunks=(1, 4, 7, 9)), steps).compute(), expected,
                               rtol=1e-6, atol=1e-6)
    stop = StopToken()
    stop.stop()
    with pytest.raises(Cancelled):
        replay_lazy(da.from_array(finite, chunks=(1, 4, 7, 9)), steps, stop=stop)
    # a filter alone (no pass to count them first): each block refuses the NaN and inf where they are,
    # not the hundreds of voxels the filter would spread them to (review 30: "648 NaN" for one)
    finite[0, 5, 8, 10] = np.nan  # one, so that one block refuses (with two, whichever thread reads first)
    with pytest.raises(InputError, match=r"^image contains 1 NaN or infinite value\(s\) in the region \[4:8, 7:14, "
                                         r"9:18\]: fill them first"):
        replay_lazy(da.from_array(finite, chunks=(1, 4, 7, 9)), steps[:1]).compute()


def test_a_filter_reaching_across_an_axis_and_huge_integers():
    """Review 30: a reach beyond a few slices stopped in dask's "overlapping depth 12 is larger than
    your array 5"; an int64 percentile beyond 2^53 in NumPy's "Too many bins"."""
    image = _image()[:, :5]
    steps = (Step("fill_nan"), Step("gaussian", {"sigma": [3.0, 1.0, 1.0]}), Step("zscore"))
    np.testing.assert_allclose(replay_lazy(da.from_array(image, chunks=(1, 2, 7, 9)), steps).compute(),
                               run_recipe_channels(image.copy(), None, steps)[0], rtol=1e-6, atol=1e-6)
    big = (np.arange(2 * 4 * 8 * 8).reshape(2, 4, 8, 8) % 50 + 2**62).astype(np.int64)
    with pytest.raises(InputError, match=r"^a percentile clip of an image with integers beyond 2\^53 is not"):
        replay_lazy(da.from_array(big), (Step("percentile"),))
