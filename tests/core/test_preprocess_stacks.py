"""A recipe on a whole image (channels, time frames, RGB), the way training replays it;
and the training-spacing note that knows a recipe's resample."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import ndimage

from napari_medml.config import PreprocessStep
from napari_medml.errors import InputError
from napari_medml.io import Volume
from napari_medml.io.axes_resolve import split_samples
from napari_medml.io.spacing import spacing_note
from napari_medml.preprocessing.inputs import run_recipe_channels
from napari_medml.preprocessing.recipe import apply_step
from napari_medml.preprocessing.stacks import crop_volume_to_labels, plane_at, recipe_axes, run_recipe_volume

GAUSS = PreprocessStep("gaussian", {"sigma": 1.5})


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_channels_are_processed_one_by_one_and_keep_their_axes(rng):
    data = rng.normal(0, 1, (2, 6, 20, 24)).astype(np.float32)
    data[1] = data[1] * 50 + 300  # another intensity range: a shared statistic would mix them
    vol = Volume(data, (1.0, 2.0, 0.5, 0.5), (0.0, 4.0, 1.0, 2.0), name="two", axes="CZYX")
    for step in (PreprocessStep("percentile", {"low": 1.0, "high": 99.0}), GAUSS):
        out = run_recipe_volume(vol, (step,))
        assert out.axes == "CZYX" and out.data.shape == data.shape
        for k in range(2):
            expected, _ = apply_step(data[k], (2.0, 0.5, 0.5), step)
            np.testing.assert_allclose(out.data[k], expected, atol=1e-6)
        assert out.spacing == vol.spacing and out.origin == vol.origin
    np.testing.assert_array_equal(vol.data[1, 0, 0], data[1, 0, 0])  # the input is not modified


def test_channels_and_frames_match_the_training_replay(rng):
    """What training sees (split into frames, the recipe per channel) is what the widget shows."""
    data = rng.normal(100, 20, (3, 2, 16, 18)).astype(np.float32)
    vol = Volume(data, (1.0, 1.0, 0.8, 0.8), (0.0,) * 4, name="tc", axes="TCYX")
    steps = (PreprocessStep("zscore"), PreprocessStep("resample", {"target_spacing": [0.4, 0.4]}))
    out = run_recipe_volume(vol, steps)
    assert out.axes == "TCYX" and out.data.shape == (3, 2, 32, 36)
    assert out.spacing == pytest.approx((1.0, 1.0, 0.4, 0.4))
    images, _, spacings, channel = split_samples(data, np.zeros((3, 16, 18)), "TCYX", 2, (0.8, 0.8))
    for t, (sample, spacing) in enumerate(zip(images, spacings)):
        replayed, new_spacing, _ = run_recipe_channels(np.moveaxis(sample, channel, 0), spacing, steps)
        np.testing.assert_allclose(out.data[t], replayed, atol=1e-5)
        assert new_spacing == pytest.approx((0.4, 0.4))


def test_time_series_is_filtered_frame_by_frame_and_resampled_in_space_only(rng):
    data = rng.normal(0, 1, (4, 24, 20)).astype(np.float32)
    vol = Volume(data, (5.0, 1.0, 1.0), (0.0, 10.0, 20.0), name="tyx", axes="TYX")
    blurred = run_recipe_volume(vol, (PreprocessStep("gaussian", {"sigma": 2.0}),))
    for t in range(4):
        np.testing.assert_allclose(blurred.data[t], ndimage.gaussian_filter(data[t], 2.0, mode="nearest"),
                                   atol=1e-6)
    assert blurred.axes == "TYX"
    finer = run_recipe_volume(vol, (PreprocessStep("resample", {"target_spacing": [0.5, 0.5]}),))
    assert finer.data.shape == (4, 48, 40) and finer.axes == "TYX"
    assert finer.spacing == pytest.approx((5.0, 0.5, 0.5))
    # frames keep their times; voxel edges stay put in space
    assert finer.origin == pytest.approx((0.0, 10.0 - 0.25, 20.0 - 0.25))


def test_a_resample_target_for_the_wrong_axes_is_refused_with_the_fix(rng):
    vol = Volume(rng.normal(0, 1, (4, 12, 12)), (5.0, 2.0, 2.0), (0.0,) * 3, name="tyx", axes="TYX")
    with pytest.raises(InputError, match=r"'tyx' has 2 spatial axes \(y, x\); its frames are processed one by "
                                         r"one: give 2 values, e.g. '2, 2'"):
        run_recipe_volume(vol, (PreprocessStep("resample", {"target_spacing": [1, 1, 1]}),))


def test_rgb_is_processed_per_colour_and_stays_rgb(rng):
    data = rng.integers(0, 255, (30, 40, 3)).astype(np.uint8)
    vol = Volume(data, (0.5, 0.5), (1.0, 2.0), name="astro", meta={"rgb": True}, axes="YXC")
    out = run_recipe_volume(vol, (GAUSS,))
    assert out.axes == "YXC" and out.meta.get("rgb") and out.data.shape == data.shape
    for k in range(3):
        np.testing.assert_allclose(out.data[..., k], apply_step(data[..., k], (0.5, 0.5), GAUSS)[0], atol=1e-5)
    half = run_recipe_volume(vol, (PreprocessStep("resample", {"target_spacing": [1.0, 1.0]}),))
    assert half.data.shape == (15, 20, 3) and half.spacing == pytest.approx((1.0, 1.0))


def test_a_threshold_crop_that_differs_between_channels_is_refused():
    data = np.zeros((2, 20, 20), np.float32)
    data[0, 2:6, 2:6] = 1
    data[1, 10:18, 10:18] = 1
    vol = Volume(data, (1.0, 1.0, 1.0), (0.0,) * 3, name="two", axes="CYX")
    with pytest.raises(InputError, match="'two'.*crop to a labels layer instead"):
        run_recipe_volume(vol, (PreprocessStep("crop", {"threshold": 0.5}),))


def test_a_crop_that_finds_nothing_in_one_frame_keeps_its_kind_and_names_the_frame():
    """Callers add the fix by the error's class (NothingToCrop), not by its text (note 45)."""
    from napari_medml.preprocessing.recipe import NothingToCrop

    data = np.zeros((3, 10, 10), np.float32)
    data[:2, 2:5, 2:5] = 1  # the third frame is dark
    vol = Volume(data, (1.0, 1.0, 1.0), (0.0,) * 3, name="tyx", axes="TYX")
    with pytest.raises(NothingToCrop) as caught:
        run_recipe_volume(vol, (PreprocessStep("crop", {"threshold": 0.5}),))
    assert str(caught.value) == ("3 of the 3 frames: crop: no voxel is above the threshold 0.5 "
                                 "(its largest value is 0)")


def test_unnamed_axes():
    one = Volume(np.ones((3, 8, 8)), (1.0,) * 3, (0.0,) * 3, name="stack", axes="QYX")
    assert recipe_axes(one).spatial == (0, 1, 2)  # a plain stack is a volume, as a model reads it
    two = Volume(np.ones((2, 3, 8, 8)), (1.0,) * 4, (0.0,) * 4, name="npy", axes="QQYX")
    with pytest.raises(InputError, match="'npy' has axes QQYX.*axis labels"):
        run_recipe_volume(two, (GAUSS,))


def test_crop_to_labels_crops_every_channel_and_frame_alike():
    data = np.arange(2 * 3 * 10 * 12, dtype=np.float32).reshape(2, 3, 10, 12)  # T, C, Y, X
    labels = np.zeros((2, 10, 12), np.uint8)
    labels[0, 2:4, 3:5] = 1
    labels[1, 5:7, 8:9] = 2  # another frame: the box covers both
    vol = Volume(data, (1.0, 1.0, 2.0, 0.5), (0.0, 0.0, 10.0, 20.0), name="tc", axes="TCYX")
    image, cropped = crop_volume_to_labels(vol, labels, margin=1, labels_name="seg")
    np.testing.assert_array_equal(image.data, data[:, :, 1:8, 2:10])
    np.testing.assert_array_equal(cropped.data, labels[:, 1:8, 2:10])
    assert image.axes == "TCYX" and cropped.axes == "TYX" and cropped.is_labels
    assert image.origin == pytest.approx((0.0, 0.0, 12.0, 21.0))
    assert cropped.origin == pytest.approx((0.0, 12.0, 21.0)) and cropped.spacing == (1.0, 2.0, 0.5)
    with pytest.raises(InputError, match=r"labels 'seg' have shape \(10, 12\) but image 'tc'"):
        crop_volume_to_labels(vol, labels[0], labels_name="seg")


def test_plane_at_the_viewers_point():
    data = np.arange(2 * 4 * 5 * 6).reshape(2, 4, 5, 6)
    vol = Volume(data, (1.0, 2.0, 0.5, 0.5), (0.0, 0.0, 1.0, 2.0), name="v", axes="CZYX")
    plane = plane_at(vol, (1.0, 2.4, 0.0, 0.0))
    np.testing.assert_array_equal(plane.data, data[1, 2])
    assert plane.axes == "YX" and plane.spacing == (0.5, 0.5) and plane.origin == (1.0, 2.0)
    rgb = Volume(np.zeros((5, 6, 3)), (1.0, 1.0), (0.0, 0.0), meta={"rgb": True}, axes="YXC")
    assert plane_at(rgb, (0.0, 0.0)).data.shape == (5, 6, 3) and plane_at(rgb, (0, 0)).axes == "YXC"


def test_spacing_note_compares_the_spacing_after_the_recipes_resample():
    resample = PreprocessStep("resample", {"target_spacing": [2.0, 2.0, 2.0]})
    assert spacing_note((4.0, 2.0, 2.0), (2.0, 2.0, 2.0), "image 'a'", recipe=(resample,)) is None
    assert spacing_note((4.0, 2.0, 2.0), (2.0, 2.0, 2.0), "image 'a'",
                        recipe=[{"operation": "resample", "params": {"target_spacing": [2, 2, 2]}}]) is None
    warned = spacing_note((4.0, 2.0, 2.0), (2.0, 2.0, 2.0), "image 'a'", recipe=(PreprocessStep("zscore"),))
    assert warned and "voxel size 4 x 2 x 2" in warned and "trained at 2 x 2 x 2" in warned
    # a 2D model on a volume resampled in 3D: the in-plane values are compared
    assert spacing_note((1.0, 1.0), (2.0, 2.0), "image 'a'", recipe=(resample,)) is None


def test_training_replay_refuses_channels_cropped_to_different_boxes():
    image = np.zeros((2, 20, 20), np.float32)
    image[0, 2:6, 2:6] = 1
    image[1, 10:18, 10:18] = 1
    with pytest.raises(InputError, match="another box in each channel.*crop to labels"):
        run_recipe_channels(image, (1.0, 1.0), (PreprocessStep("crop", {"threshold": 0.5}),))


def test_a_recipe_too_large_for_all_frames_together_is_refused(rng, monkeypatch):
    movie = Volume(rng.normal(size=(6, 32, 32)).astype(np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), name="movie",
                   axes="TYX")
    monkeypatch.setenv("NAPARI_MEDML_LAYER_MEMORY_MB", "1")  # one frame at 0.25 (128 x 128, 64 KiB x 6) fits
    step = PreprocessStep("resample", {"target_spacing": (0.05, 0.05)})  # 640 x 640 floats, 1.6 MiB a frame
    with pytest.raises(InputError, match="resample: .* voxels at that spacing become"):
        run_recipe_volume(movie, [step])
    monkeypatch.setenv("NAPARI_MEDML_LAYER_MEMORY_MB", "0.3")  # 64 KiB a frame, 384 KiB for 6
    with pytest.raises(InputError) as err:
        run_recipe_volume(movie, [PreprocessStep("resample", {"target_spacing": (0.25, 0.25)})])
    assert str(err.value) == ("the recipe makes 64 KiB of each of the 6 frames of 'movie', 384 KiB in all, more "
                              "than the 307 KiB this machine can spare: resample to a coarser spacing, or crop first")



@pytest.mark.parametrize("step, spacing", [
    (PreprocessStep("median", {"size": 5}), (1.0, 1.0, 1.0)),
    (PreprocessStep("median", {"size": [3, 7, 5]}), (1.0, 1.0, 1.0)),
    (PreprocessStep("gaussian", {"sigma": 1.5}), (2.0, 1.0, 1.0)),
    (PreprocessStep("gaussian", {"sigma": [2.0, 1.0, 0.5], "physical": True}), (2.0, 0.5, 1.0)),
])
def test_a_large_median_or_gaussian_runs_in_slabs_equal_to_the_whole(rng, monkeypatch, step, spacing):
    """Note 48: a median of 7 on one volume held Cancel (and napari's closing) for 16 s; slab by
    slab, with a halo of the filter's reach, it stops within a slab and gives the same voxels."""
    from napari_medml.preprocessing import slabs

    monkeypatch.setattr(slabs, "SLAB_VOXELS", 2**15)
    data = rng.normal(0, 1, (24, 200, 80)).astype(np.float32)
    vol = Volume(data, spacing, (0.0, 0.0, 0.0), name="vol", axes="ZYX")
    seen = []
    out = run_recipe_volume(vol, (step,), progress=lambda done, total: seen.append((done, total)))
    whole, _ = apply_step(data, spacing, step)
    np.testing.assert_array_equal(out.data, whole)
    assert len(seen) >= 2 and seen[-1][0] == seen[-1][1] == len(seen), seen  # slab by slab
    assert out.spacing == vol.spacing and out.origin == vol.origin


def test_a_stop_ends_a_slab_filter_between_two_slabs_and_each_part_counts_its_slabs(rng, monkeypatch):
    from napari_medml.engine.reports import StopToken
    from napari_medml.errors import Cancelled
    from napari_medml.preprocessing import slabs

    monkeypatch.setattr(slabs, "SLAB_VOXELS", 2**14)
    vol = Volume(rng.normal(0, 1, (2, 16, 64, 64)).astype(np.float32), (1.0, 1.0, 1.0, 1.0), (0.0,) * 4,
                 name="two", axes="CZYX")
    step = PreprocessStep("median", {"size": 3})
    seen = []
    run_recipe_volume(vol, (step,), progress=lambda done, total: seen.append((done, total)))
    per_part = seen[0][1] // 2
    assert per_part > 2 and seen == [(k, 2 * per_part) for k in range(1, 2 * per_part + 1)], seen
    token, calls = StopToken(), []

    def stop_at_second(done: int, total: int) -> None:
        calls.append(done)
        if done == 2:
            token.stop()

    with pytest.raises(Cancelled):
        run_recipe_volume(vol, (step,), stop=token, progress=stop_at_second)
    assert calls == [1, 2]  # no slab after the stop


def test_steps_that_are_not_local_filters_run_whole(rng):
    from napari_medml.preprocessing.slabs import filter_reach

    for step in (PreprocessStep("zscore", {}), PreprocessStep("clahe", {}), PreprocessStep("resample", {
            "target_spacing": [1.0, 1.0, 1.0]}), PreprocessStep("crop", {"threshold": 0.5})):
        assert filter_reach(step, (1.0, 1.0, 1.0), 3) is None
    assert filter_reach(PreprocessStep("median", {"size": 7}), None, 3) == (3, 3, 3)
    assert filter_reach(PreprocessStep("gaussian", {"sigma": 2.0, "physical": True}), (4.0, 1.0, 1.0), 3) == (2, 8, 8)


@pytest.mark.parametrize("params, operation", [({"sigma": -1.0}, "gaussian"), ({"size": 0}, "median"),
                                               ({"size": 2.5}, "median"), ({"sigma": [1.0, 2.0]}, "gaussian"),
                                               ({"sigma": 1.0, "bogus": 1}, "gaussian")])
def test_a_bad_filter_parameter_on_a_large_volume_gets_the_steps_own_line(monkeypatch, params, operation):
    """Review 50: a negative sigma reached dask as a negative halo, with dask's error."""
    from napari_medml.preprocessing import slabs

    monkeypatch.setattr(slabs, "SLAB_VOXELS", 2**12)
    vol = Volume(np.zeros((16, 64, 64), np.float32), (1.0,) * 3, (0.0,) * 3, name="v", axes="ZYX")
    step = PreprocessStep(operation, params)
    with pytest.raises(InputError) as whole:
        apply_step(vol.data, (1.0,) * 3, step)
    with pytest.raises(InputError, match=re.escape(str(whole.value))):
        run_recipe_volume(vol, (step,))


def test_slabs_equal_the_whole_on_2d_integers_nan_and_channels(rng, monkeypatch):
    from napari_medml.preprocessing import slabs

    monkeypatch.setattr(slabs, "SLAB_VOXELS", 2**12)
    ints = Volume(rng.integers(0, 4000, (300, 90)).astype(np.uint16), (1.0, 1.0), (0.0, 0.0), name="i", axes="YX")
    nan = rng.normal(0, 1, (2, 8, 120, 40)).astype(np.float32)
    nan[1, 3, 50, 7] = np.nan
    chans = Volume(nan, (1.0, 2.0, 1.0, 1.0), (0.0,) * 4, name="c", axes="CZYX")
    for vol, step in ((ints, PreprocessStep("median", {"size": 5})), (chans, GAUSS),
                      (chans, PreprocessStep("median", {"size": 3}))):
        seen = []
        out = run_recipe_volume(vol, (step,), progress=lambda done, total: seen.append(total))
        assert seen[0] > len(vol.data) if vol.axes == "CZYX" else seen[0] > 1  # slab by slab
        parts = [vol.data] if vol.axes == "YX" else list(vol.data)
        whole = np.stack([apply_step(p, vol.spacing[-p.ndim:], step)[0] for p in parts]).reshape(out.data.shape)
        assert out.data.dtype == whole.dtype
        np.testing.assert_array_equal(out.data, whole)
