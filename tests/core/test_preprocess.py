"""Preprocessing operations give the right numbers; recipes chain and round-trip."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_medml.preprocessing import ops as ops
from napari_medml.preprocessing import recipe as pp
from napari_medml.config import DataConfig, PreprocessStep, TrainConfig
from napari_medml.errors import InputError


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).normal(100.0, 20.0, size=(12, 30, 40)).astype(np.float32)


def test_no_torch_at_import():
    code = "import napari_medml.preprocessing.recipe, napari_medml.preprocessing.ops, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_zscore(image):
    z = ops.zscore(image)
    assert z.dtype == np.float32
    assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-4
    mask = np.zeros(image.shape, bool)
    mask[:, :10] = True
    zm = ops.zscore(image, mask)
    assert abs(zm[mask].mean()) < 1e-4 and abs(zm[mask].std() - 1) < 1e-4
    # NaN-safe: statistics ignore NaN, NaN stays NaN.
    with_nan = image.copy()
    with_nan[0, 0, 0] = np.nan
    zn = ops.zscore(with_nan)
    assert np.isnan(zn[0, 0, 0]) and abs(np.nanmean(zn)) < 1e-4
    assert np.all(ops.zscore(np.full((4, 4), 7.0)) == 0)


def test_fill_nan_puts_the_smallest_value_or_the_one_given_where_values_are_not_finite():
    image = np.arange(12, dtype=np.float32).reshape(3, 4) + 5
    image[0, :2], image[2, 3] = np.nan, np.inf
    before = image.copy()
    filled = ops.fill_nonfinite(image)
    assert filled[0, 0] == filled[0, 1] == filled[2, 3] == 7.0 and np.isfinite(filled).all()
    np.testing.assert_array_equal(image, before)  # the input is kept
    assert (ops.fill_nonfinite(image, 0.0)[~np.isfinite(image)] == 0).all()
    with pytest.raises(InputError, match="every voxel is NaN or infinite"):
        ops.fill_nonfinite(np.full((2, 2), np.nan))
    # a recipe step, replayed as any other
    out = pp.run_recipe(image, (1.0, 1.0), (PreprocessStep("fill_nan", {"value": -1.0}),))
    assert out.image[0, 0] == -1.0
    assert pp.describe_step(PreprocessStep("fill_nan", {"value": -1.0})) == "fill NaN with -1"


def test_percentile_and_minmax(image):
    p = ops.percentile_rescale(image, 1, 99)
    assert p.min() == 0 and p.max() == 1
    lo, hi = np.percentile(image, [1, 99])
    inside = (image > lo) & (image < hi)
    np.testing.assert_allclose(p[inside], (image[inside] - lo) / (hi - lo), atol=1e-5)
    assert np.mean(p == 0) == pytest.approx(0.01, abs=0.002)
    m = ops.minmax(image)
    assert m.min() == 0 and m.max() == 1
    assert np.all(ops.minmax(np.full((3, 3), 5, np.int16)) == 0)


@pytest.mark.parametrize("preset", sorted(ops.CT_WINDOW_PRESETS))
def test_ct_window_presets(preset):
    level, width = ops.CT_WINDOW_PRESETS[preset]
    hu = np.array([level - width / 2, level, level + width / 2, -3000, 3000], dtype=np.int16)
    out = ops.ct_window(hu, level, width)
    np.testing.assert_allclose(out, [0, 0.5, 1, 0, 1], atol=1e-6)


def test_denoise(image):
    g = ops.gaussian_denoise(image, 1.0)
    assert g.std() < image.std() / 2 and abs(g.mean() - image.mean()) < 0.5
    # Physical sigma: 2 mm on 2 mm voxels is 1 voxel.
    np.testing.assert_allclose(ops.gaussian_denoise(image, 2.0, spacing=(2, 2, 2)), g, atol=1e-4)
    med = ops.median_denoise(image, 3)
    assert med.shape == image.shape and med.std() < image.std()
    spike = np.zeros((9, 9), np.float32)
    spike[4, 4] = 100
    assert ops.median_denoise(spike, 3).max() == 0


@pytest.mark.parametrize("shape", [(32, 40), (16, 24, 32)])
def test_clahe_range_2d_3d(shape):
    img = np.random.default_rng(1).gamma(2.0, 50.0, size=shape)
    out = ops.clahe(img, clip_limit=0.02)
    assert out.shape == shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1 and out.max() - out.min() > 0.5


def test_resample_spacing_and_shape(image):
    out, sp = ops.resample(image, (3.0, 1.0, 1.0), (1.5, 2.0, 2.0))
    assert out.shape == (24, 15, 20) and sp == (1.5, 2.0, 2.0)
    assert out.dtype == np.float32 and abs(out.mean() - image.mean()) < 1.0
    # Not evenly divisible: spacing is reported exactly (extent kept).
    out, sp = ops.resample(image, (1.0, 1.0, 1.0), (1.0, 1.0, 3.0))
    assert out.shape == (12, 30, 13)
    assert sp == pytest.approx((1.0, 1.0, 40 / 13))
    labels = (image > 100).astype(np.uint8) * 4
    lab, _ = ops.resample(labels, (3.0, 1.0, 1.0), (1.0, 0.5, 0.5), order=0)
    assert lab.dtype == np.uint8 and set(np.unique(lab)) == {0, 4}
    np.testing.assert_array_equal(lab[::3, ::2, ::2], labels)


def test_a_resample_too_large_for_memory_is_refused_before_it_is_made(image, monkeypatch):
    monkeypatch.setenv("NAPARI_MEDML_LAYER_MEMORY_MB", "4")
    with pytest.raises(InputError) as err:  # a 1.96 TiB allocation was tried (MemoryError)
        ops.resample(image, (3.0, 1.0, 1.0), (0.01, 0.01, 0.01))
    assert str(err.value) == ("resample: (12, 30, 40) voxels at that spacing become (3600, 3000, 4000), 160.9 GiB, "
                              "more than the 4 MiB this machine can spare (a quarter of the free memory; "
                              "NAPARI_MEDML_LAYER_MEMORY_MB sets it): choose a target spacing of about 0.363, "
                              "0.363, 0.363 or coarser")
    fine, _ = ops.resample(image, (3.0, 1.0, 1.0), (0.363, 0.363, 0.363))  # the advice fits
    assert fine.nbytes <= 4 * 2**20


def test_crop_to_mask_and_threshold(image):
    mask = np.zeros(image.shape, bool)
    mask[3:5, 10:20, 7] = True
    out, offset = ops.crop_to_mask(image, mask, margin=2)
    assert offset == (1, 8, 5) and out.shape == (6, 14, 5)
    np.testing.assert_array_equal(out, image[1:7, 8:22, 5:10])
    out, offset = ops.crop_to_mask(image, mask, margin=(0, 0, 50))
    assert offset == (3, 10, 0) and out.shape == (2, 10, 40)
    thr = ops.threshold_mask(np.array([1.0, np.nan, 5.0]), 2)
    np.testing.assert_array_equal(thr, [False, False, True])


def test_no_input_mutation(image):
    before = image.copy()
    mask = image > 100
    ops.zscore(image, mask)
    ops.percentile_rescale(image)
    ops.minmax(image)
    ops.ct_window(image, 40, 400)
    ops.gaussian_denoise(image, 1)
    ops.median_denoise(image, 3)
    ops.clahe(image)
    ops.resample(image, (1, 1, 1), (2, 2, 2))
    out, _ = ops.crop_to_mask(image, mask)
    out[...] = 0
    same, _ = ops.resample(image, (1, 1, 1), (1, 1, 1))
    same[...] = 0
    pp.apply_recipe(image, None, [])[0][...] = 0
    np.testing.assert_array_equal(image, before)


def test_recipe_chains_and_round_trips(image):
    hu = image * 10 - 900  # roughly -1100 .. 300 HU
    steps = (
        PreprocessStep("ct_window", {"preset": "lung"}),
        PreprocessStep("crop", {"threshold": 0.3, "margin": 1}),
        PreprocessStep("gaussian", {"sigma": 1.0, "physical": True}),
        PreprocessStep("resample", {"target_spacing": [1.5, 2.0, 2.0], "order": 1}),
        PreprocessStep("zscore"),
    )
    out, sp = pp.apply_recipe(hu, (3.0, 1.0, 1.0), steps)
    assert sp == pytest.approx((1.5, 2.0, 2.0))
    assert abs(out.mean()) < 1e-4 and abs(out.std() - 1) < 1e-3
    # By hand, step by step.
    x, s = hu, (3.0, 1.0, 1.0)
    for step in steps:
        x, s = pp.apply_step(x, s, step)
    np.testing.assert_allclose(out, x, atol=1e-6)
    # JSON round trip through the training config.
    config = TrainConfig(data=DataConfig(preprocessing=steps))
    back = TrainConfig.from_json(config.to_json())
    out2, sp2 = pp.apply_recipe(hu, (3.0, 1.0, 1.0), back.data.preprocessing)
    np.testing.assert_array_equal(out, out2)
    assert sp2 == sp
    assert [pp.describe_step(s) for s in back.data.preprocessing] == [
        "window lung",
        "crop >0.3",
        "gaussian 1",
        "resample 1.5x2x2",
        "z-score",
    ]


def test_recipe_geometry_restores_labels():
    img = np.zeros((10, 20, 30), np.float32)
    img[2:6, 5:15, 10:24] = 1.0
    steps = [
        PreprocessStep("crop", {"threshold": 0.5, "margin": 1}),
        PreprocessStep("resample", {"target_spacing": [1.0, 0.5, 0.5], "order": 0}),
    ]
    result = pp.run_recipe(img, (2.0, 1.0, 1.0), steps)
    assert result.image.shape == (12, 24, 32)
    # Crop offset (1, 4, 9) voxels, then half-voxel shifts of the resampling.
    assert result.shift == pytest.approx((1 * 2 - 0.5, 4 - 0.25, 9 - 0.25))
    back = result.restore((result.image > 0.5).astype(np.uint8))
    np.testing.assert_array_equal(back, (img > 0.5).astype(np.uint8))
    probs = result.restore(np.stack([result.image, result.image]), order=1)
    assert probs.shape == (2, *img.shape)


def test_operations_registry():
    assert set(pp.OPERATIONS) == {
        "zscore", "percentile", "minmax", "ct_window", "gaussian",
        "median", "clahe", "resample", "crop", "fill_nan",
    }  # fmt: skip
    out, sp = pp.OPERATIONS["median"](np.ones((5, 5)), (1.0, 1.0), size=3)
    assert out.shape == (5, 5) and sp == (1.0, 1.0)
    for name in ["percentile", "median", "clahe", "minmax"]:
        out, _ = pp.apply_step(np.arange(64.0).reshape(8, 8), None, PreprocessStep(name))
        assert out.shape == (8, 8)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda im: ops.gaussian_denoise(im, -1), "gaussian: sigma"),
        (lambda im: ops.ct_window(im, 40, 0), "ct_window: width"),
        (lambda im: ops.percentile_rescale(im, 90, 10), "percentile"),
        (lambda im: ops.median_denoise(im, 0), "median: size"),
        (lambda im: ops.clahe(im, clip_limit=0), "clahe: clip_limit"),
        (lambda im: ops.resample(im, (1, 1, 1), (1, 1)), "resample: target spacing"),
        (lambda im: ops.resample(im, (1, 1, 1), (1, 0, 1)), "resample: target spacing"),
        (lambda im: ops.crop_to_mask(im, np.zeros_like(im)), "crop: the mask is empty"),
        (lambda im: ops.crop_to_mask(im, np.ones(3)), r"crop: mask has shape \(3,\)"),
        (lambda im: ops.zscore(im, np.zeros(im.shape, bool)), "zscore"),
        (lambda im: pp.apply_step(im, None, PreprocessStep("sharpen")), "unknown preprocessing"),
        (lambda im: pp.apply_step(im, None, PreprocessStep("resample", {"target_spacing": [1]})),
         "resample: the image spacing"),
        (lambda im: pp.apply_step(im, None, PreprocessStep("crop", {"mask": "seg"})),
         "cannot be replayed"),
        (lambda im: pp.apply_step(im, None, PreprocessStep("crop")), "crop: .*threshold"),
        (lambda im: pp.apply_step(im, None, PreprocessStep("gaussian", {"sigma": 1, "s": 2})),
         r"gaussian: unknown parameter\(s\) \['s'\]"),
        (lambda im: pp.apply_step(im, None, PreprocessStep("gaussian")), "gaussian"),
        (lambda im: pp.apply_step(im, None, PreprocessStep("ct_window", {"preset": "liver"})),
         "unknown preset"),
        (lambda im: pp.apply_step(im, (1, 1), PreprocessStep("zscore")), "zscore: spacing"),
        (lambda im: pp.apply_step(im[None], None, PreprocessStep("zscore")), "per channel"),
    ],
)
def test_errors(image, call, match):
    with pytest.raises(InputError, match=match):
        call(image)


def test_a_recipe_crop_that_finds_nothing_says_whose_threshold_it_is():
    """Review 46: replayed on an image to predict, the crop said "choose a lower threshold",
    though the threshold is the model's recipe's."""
    from napari_medml.config import PreprocessStep
    from napari_medml.preprocessing.inputs import run_recipe_channels

    dark = np.full((1, 8, 12), 3.0, np.float32)
    with pytest.raises(InputError) as caught:
        run_recipe_channels(dark, (1.0, 1.0), (PreprocessStep("crop", {"threshold": 100.0}),))
    assert str(caught.value) == (
        "the preprocessing recipe's crop: no voxel is above the threshold 100 (its largest value is 3): this image "
        "has nothing its crop keeps (another intensity range than the image the crop was chosen on?): give images "
        "like that one, or train without the crop in the recipe")
