"""Out-of-core volumes: Zarr/OME-Zarr reading and writing, block-wise prediction into Zarr
(same labels as whole-volume prediction, resume, Stop), lazy training data."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
zarr = pytest.importorskip("zarr")
da = pytest.importorskip("dask.array")

from napari_medml.config import DataConfig, InferConfig, ModelConfig, OptimConfig, TrainConfig  # noqa: E402
from napari_medml.engine.reports import StopToken  # noqa: E402
from napari_medml.errors import Cancelled, ConfigError, InputError  # noqa: E402
from napari_medml.io import Volume, read_volume, write_volume  # noqa: E402
from napari_medml.io.zarr import choose_level, create_ome_zarr, read_levels, read_zarr  # noqa: E402
from napari_medml.nn.segmentation import build_network  # noqa: E402
from napari_medml.segmentation.chunked import plan_blocks, window_starts  # noqa: E402
from napari_medml.segmentation.model import Model  # noqa: E402
from napari_medml.segmentation.to_zarr import predict_to_zarr  # noqa: E402

ROI = (16, 16, 16)


def _model(classes: tuple[int, ...] = (0, 2, 5)) -> Model:
    torch.manual_seed(0)
    cfg = TrainConfig(data=DataConfig(spatial_dims=3), model=ModelConfig(channels=4, depth=2))
    net = build_network(cfg.model, 3, 1, len(classes), patch_size=ROI, spacing=(1.0, 1.0, 1.0))
    return Model(net, cfg, classes, 1, 3, ROI, (1.0, 1.0, 1.0),
                 {"method": "zscore", "channels": [{"mean": 0.1, "std": 1.5}]})  # fmt: skip


@pytest.fixture(scope="module")
def model() -> Model:
    return _model()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:28, :34, :30]
    return (np.sin(z / 4.0) + np.cos(y / 5.0) * np.sin(x / 3.0) + 0.3 * rng.normal(size=z.shape)).astype(np.float32)


# --- io --------------------------------------------------------------------------------------


def test_ome_zarr_round_trip_keeps_spacing_origin_axes_and_unit(tmp_path):
    data = np.random.default_rng(1).random((2, 6, 10, 12), dtype=np.float32)
    volume = Volume(data, (1.0, 2.5, 0.5, 0.25), (0.0, 10.0, -3.0, 1.5), None, False, "cells", {"unit": "um"}, "CZYX")
    write_volume(tmp_path / "cells.ome.zarr", volume)
    back = read_volume(tmp_path / "cells.ome.zarr")
    assert isinstance(back.data, da.Array)  # lazy: nothing read yet
    assert back.axes == "CZYX" and back.spacing == volume.spacing and back.origin == volume.origin
    assert back.meta["unit"] == "um" and back.name == "cells" and not back.is_labels
    np.testing.assert_array_equal(np.asarray(back.data), data)
    attrs = json.loads((tmp_path / "cells.ome.zarr" / ".zattrs").read_text())["multiscales"][0]
    assert [a["name"] for a in attrs["axes"]] == ["c", "z", "y", "x"]
    assert attrs["axes"][1]["unit"] == "micrometer"
    assert attrs["datasets"][0]["coordinateTransformations"][0] == {"type": "scale", "scale": [1.0, 2.5, 0.5, 0.25]}


def test_labels_and_nifti_affine_survive_zarr(tmp_path):
    affine = np.array([[0, 0, -2.0, 5], [0, 1.5, 0, 1], [0.5, 0, 0, 2], [0, 0, 0, 1]])
    labels = (np.arange(4 * 5 * 6).reshape(4, 5, 6) % 3).astype(np.uint16)
    volume = Volume(da.from_array(labels, chunks=2), (2.0, 1.5, 0.5), (5.0, 1.0, 2.0), affine, True, "seg")
    write_volume(tmp_path / "organ.zarr", volume)
    back = read_volume(tmp_path / "organ.zarr")
    assert back.is_labels and back.data.dtype == np.uint16
    np.testing.assert_array_equal(back.affine, affine)
    np.testing.assert_array_equal(np.asarray(back.data), labels)


def test_multiscale_levels_and_level_matching_a_model_spacing(tmp_path):
    group = zarr.open_group(str(tmp_path / "pyramid.ome.zarr"), mode="w", zarr_format=2)
    full = np.random.default_rng(2).random((8, 16, 16), dtype=np.float32)
    datasets = []
    for k, factor in enumerate((1, 2, 4)):
        group.create_array(str(k), data=full[::1, ::factor, ::factor])
        datasets.append({"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": [2.0, 0.5 * factor, 0.5 * factor]}]})
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": n, "type": "space"} for n in "zyx"],
                                   "datasets": datasets}]  # fmt: skip
    levels, axes, _ = read_levels(tmp_path / "pyramid.ome.zarr")
    assert axes == "ZYX" and [lv.data.shape for lv in levels] == [(8, 16, 16), (8, 8, 8), (8, 4, 4)]
    assert choose_level(levels, axes, (2.0, 1.0, 1.0)) == 1
    assert choose_level(levels, axes, None) == 0
    chosen = read_zarr(tmp_path / "pyramid.ome.zarr", "match", target_spacing=(2.0, 2.0, 2.0))
    assert chosen.spacing == (2.0, 2.0, 2.0) and chosen.meta["level"] == 2
    with pytest.raises(InputError, match="3 resolution level"):
        read_zarr(tmp_path / "pyramid.ome.zarr", 5)
    # trial 50: a level opened by its folder (the "open a coarser level" of refusals) lay at scale 1, origin 0
    level = read_volume(tmp_path / "pyramid.ome.zarr" / "2")
    assert level.axes == "ZYX" and level.data.shape == (8, 4, 4) and level.spacing == (2.0, 2.0, 2.0)
    np.testing.assert_array_equal(np.asarray(level.data), full[:, ::4, ::4])


def test_bad_zarr_inputs_say_what_to_do(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_volume(tmp_path / "missing.zarr")
    group = zarr.open_group(str(tmp_path / "two.zarr"), mode="w")
    group.create_array("a", shape=(4, 4), dtype="f4")
    group.create_array("b", shape=(4, 4), dtype="f4")
    with pytest.raises(InputError, match="2 arrays"):
        read_volume(tmp_path / "two.zarr")
    create_ome_zarr(tmp_path / "taken.zarr", (4, 4), "u1", axes="YX", spacing=(1, 1), origin=(0, 0))
    with pytest.raises(InputError, match="already exists"):
        create_ome_zarr(tmp_path / "taken.zarr", (4, 4), "u1", axes="YX", spacing=(1, 1), origin=(0, 0))
    # trial 42: a pyramid missing a level folder raised a bare KeyError: '1'
    import shutil

    pyramid = tmp_path / "pyramid.ome.zarr"
    group = zarr.open_group(str(pyramid), mode="w", zarr_format=2)
    for k, size in enumerate((8, 4)):
        group.create_array(str(k), shape=(size, size), dtype="f4")
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "y"}, {"name": "x"}], "datasets": [
        {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": [2.0**k] * 2}]} for k in (0, 1)]}]
    shutil.rmtree(pyramid / "1")
    with pytest.raises(InputError, match=r"pyramid.ome.zarr' lists resolution level '1' in its OME-Zarr metadata "
                                         r"but holds no such array \(a level folder is missing\)"):
        read_volume(pyramid)


def test_an_npy_of_complex_or_text_values_is_refused_in_one_line(tmp_path):
    """Trial 42: napari's thumbnail raised a bare NotImplementedError for a complex .npy."""
    np.save(tmp_path / "k.npy", np.zeros((4, 4), np.complex64))
    np.save(tmp_path / "t.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(InputError, match=r"k.npy' holds complex values \(complex64\); save its magnitude"):
        read_volume(tmp_path / "k.npy")
    with pytest.raises(InputError, match=r"t.npy' holds <U1 values, not numbers"):
        read_volume(tmp_path / "t.npy")


# --- block-wise prediction ------------------------------------------------------------------------


@pytest.mark.parametrize("size,roi,overlap", [(100, 16, 0.5), (16, 16, 0.5), (10, 16, 0.25), (37, 16, 0.25),
                                              (64, 32, 0.0), (50, 20, 0.7)])
def test_window_grid_is_monais(size, roi, overlap):
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    padded = max(size, roi)
    interval = _get_scan_interval((padded,), (roi,), 1, (overlap,))
    assert window_starts(size, roi, overlap) == [s[0].start for s in dense_patch_slices((padded,), (roi,), interval)]


@pytest.mark.parametrize("tta", [False, True])
def test_blocks_give_the_whole_volume_prediction(tmp_path, model, image, tta):
    config = InferConfig(tta=tta, return_probabilities=True, return_uncertainty=True, device="cpu")
    given = image.copy()
    whole = model.predict(image, config=config)
    plan = plan_blocks(image.shape, ROI, channels=1, classes=3, config=config, block=(16, 24, 20))
    assert plan.count == 2 * 2 * 2 and plan.windows > plan.whole_windows
    volume = Volume(image, (2.0, 1.0, 1.0), (4.0, 0.0, 0.0), axes="ZYX", meta={"unit": "mm"})
    result = predict_to_zarr(model, volume, tmp_path / "pred.zarr", config=config, plan=plan,
                             probabilities=tmp_path / "probs.zarr", uncertainty=tmp_path / "unc.zarr")
    assert result.computed == 8 and result.resumed == 0
    labels = read_volume(tmp_path / "pred.zarr")
    assert labels.is_labels and labels.spacing == (2.0, 1.0, 1.0) and labels.origin == (4.0, 0.0, 0.0)
    assert labels.meta["unit"] == "mm"
    np.testing.assert_array_equal(image, given)  # the caller's array is never changed
    # the same windows, weights and order per voxel: identical, not merely close
    np.testing.assert_array_equal(np.asarray(labels.data), whole.labels)
    assert set(np.unique(whole.labels)) <= {0, 2, 5} and len(np.unique(whole.labels)) > 1
    probs = read_volume(tmp_path / "probs.zarr")
    assert probs.axes == "CZYX"
    np.testing.assert_array_equal(np.asarray(probs.data), whole.probabilities)
    np.testing.assert_allclose(np.asarray(read_volume(tmp_path / "unc.zarr").data), whole.uncertainty, atol=1e-6)


def test_a_lazy_multichannel_input_is_read_block_by_block(tmp_path, image):
    torch.manual_seed(0)
    cfg = TrainConfig(data=DataConfig(spatial_dims=3), model=ModelConfig(channels=4, depth=2))
    net = build_network(cfg.model, 3, 2, 2, patch_size=ROI, spacing=(1.0, 1.0, 1.0))
    model = Model(net, cfg, (0, 1), 2, 3, ROI, None, {"method": "none", "channels": [{}, {}]})
    two = np.stack([image, image[::-1]])
    write_volume(tmp_path / "two.ome.zarr", Volume(two, (1.0,) * 4, (0.0,) * 4, axes="CZYX"))
    lazy = read_volume(tmp_path / "two.ome.zarr")
    plan = plan_blocks(image.shape, ROI, channels=2, classes=2, config=InferConfig(), block=(32, 32, 32))
    predict_to_zarr(model, lazy, tmp_path / "pred.zarr", plan=plan)
    whole = model.predict(two, channel_axis=0).labels
    np.testing.assert_array_equal(np.asarray(read_volume(tmp_path / "pred.zarr").data), whole)


def test_plan_fits_the_memory_budget_and_prefers_few_halos():
    config = InferConfig(overlap=0.5)
    one = plan_blocks((256, 256, 256), (64, 64, 64), channels=1, classes=3, config=config, memory_mb=4096)
    assert one.count == 1 and one.windows == one.whole_windows
    small = plan_blocks((256, 256, 256), (64, 64, 64), channels=1, classes=3, config=config, memory_mb=800)
    assert small.count > 1 and small.memory_bytes <= 800 * 2**20
    assert all(b % 64 == 0 for b in small.block)
    huge = plan_blocks((4096, 4096, 4096), (64, 64, 64), channels=1, classes=3, config=config, memory_mb=1024)
    assert huge.memory_bytes <= 1024 * 2**20 and huge.windows / huge.whole_windows < 1.6
    assert "block(s)" in huge.describe() and "MiB" in huge.describe()


def test_stop_leaves_a_store_that_resumes_without_recomputing(tmp_path, model, image):
    config = InferConfig(device="cpu")
    plan = plan_blocks(image.shape, ROI, channels=1, classes=3, config=config, block=(16, 16, 32))
    volume = Volume(image, (1.0,) * 3, (0.0,) * 3, axes="ZYX")
    stop, seen = StopToken(), []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        if done >= total // 2:
            stop.stop()

    with pytest.raises(Cancelled):
        predict_to_zarr(model, volume, tmp_path / "pred.zarr", config=config, plan=plan, progress=progress, stop=stop)
    attrs = zarr.open_group(str(tmp_path / "pred.zarr"), mode="r").attrs["napari_medml"]["prediction"]
    finished = attrs["done"]
    assert 0 < len(finished) < plan.count and not attrs["complete"]

    run = []  # windows the network runs
    hook = model.network.register_forward_hook(lambda module, inputs, output: run.append(inputs[0].shape[0]))
    try:
        result = predict_to_zarr(model, volume, tmp_path / "pred.zarr", config=config, plan=plan)
    finally:
        hook.remove()
    assert result.resumed == len(finished) and result.computed == plan.count - len(finished)

    def windows(index: int) -> int:
        return int(np.prod([len(window_starts(r.stop - r.start, 16, config.overlap)) for r in plan.read_region(index)]))

    assert sum(run) == sum(windows(i) for i in range(plan.count) if i not in finished) < plan.windows
    np.testing.assert_array_equal(np.asarray(read_volume(tmp_path / "pred.zarr").data),
                                  model.predict(image, config=config).labels)
    assert zarr.open_group(str(tmp_path / "pred.zarr"), mode="r").attrs["napari_medml"]["prediction"]["complete"]


def test_a_store_of_another_run_is_never_overwritten(tmp_path, model, image):
    volume = Volume(image, (1.0,) * 3, (0.0,) * 3, axes="ZYX")
    write_volume(tmp_path / "mine.zarr", Volume(image, (1.0,) * 3, (0.0,) * 3, axes="ZYX"))
    with pytest.raises(InputError, match="remove it or choose another"):
        predict_to_zarr(model, volume, tmp_path / "mine.zarr")
    np.testing.assert_array_equal(np.asarray(read_volume(tmp_path / "mine.zarr").data), image)
    predict_to_zarr(model, volume, tmp_path / "pred.zarr", config=InferConfig(device="cpu"))
    other = _model((0, 1, 2))
    with pytest.raises(InputError, match="same model, image and block plan"):
        predict_to_zarr(other, volume, tmp_path / "pred.zarr", config=InferConfig(device="cpu"))


def test_whole_map_options_and_recipes_are_refused_blockwise(tmp_path, model, image):
    volume = Volume(image, (1.0,) * 3, (0.0,) * 3, axes="ZYX")
    with pytest.raises(ConfigError, match="whole map"):
        predict_to_zarr(model, volume, tmp_path / "p.zarr", config=InferConfig(fill_holes=True))
    with pytest.raises(InputError, match="one 3D image"):
        predict_to_zarr(model, Volume(np.stack([image] * 2), (1.0,) * 4, (0.0,) * 4, axes="TZYX"),
                        tmp_path / "p.zarr")
    assert not (tmp_path / "p.zarr").exists()


def _recipe_model(steps: tuple) -> Model:
    from dataclasses import replace

    model = _model()
    model.config = replace(model.config, data=replace(model.config.data, preprocessing=steps))
    return model


def test_a_recipe_of_per_voxel_steps_is_replayed_block_by_block(tmp_path, image):
    """A model trained with Preprocess > fill NaN and z-score (per image) predicts a lazy 16-bit
    volume with NaNs block by block: the labels of the whole filled volume in memory."""
    from napari_medml.config import PreprocessStep

    model = _recipe_model((PreprocessStep("fill_nan"), PreprocessStep("zscore")))
    raw = (image * 800 + 20000).astype(np.float32)  # a far scale: only the recipe's z-score brings it back
    raw[0, :3, :4] = np.nan
    filled = np.where(np.isnan(raw), np.nanmin(raw), raw).astype(np.float32)
    config = InferConfig(return_probabilities=True, device="cpu")
    whole = model.predict(raw, config=config)  # in memory too the recipe fills the NaNs first
    assert len(np.unique(whole.labels)) > 1
    np.testing.assert_array_equal(model.predict(filled, config=config).labels, whole.labels)
    plan = plan_blocks(image.shape, ROI, channels=1, classes=3, config=config, block=(16, 24, 20))
    lazy = Volume(da.from_array(raw, chunks=(7, 17, 15)), (1.0,) * 3, (0.0,) * 3, axes="ZYX")
    predict_to_zarr(model, lazy, tmp_path / "pred.zarr", config=config, plan=plan,
                    probabilities=tmp_path / "probs.zarr")
    np.testing.assert_array_equal(np.asarray(read_volume(tmp_path / "pred.zarr").data), whole.labels)
    np.testing.assert_allclose(np.asarray(read_volume(tmp_path / "probs.zarr").data), whole.probabilities,
                               atol=1e-3)  # float16 on disk
    # without the recipe the raw intensities reach the network: another answer
    assert not np.array_equal(_model().predict(filled).labels, whole.labels)


def test_a_recipe_with_filters_is_replayed_block_by_block_with_the_volumes_spacing(tmp_path, image):
    """A model trained on Preprocess > gaussian (physical sigma) and median layers predicts a lazy
    anisotropic volume block by block: each block filtered with its neighbours' voxels, the
    sigma divided by the volume's own voxel size, as in memory."""
    from napari_medml.config import PreprocessStep

    model = _recipe_model((PreprocessStep("gaussian", {"sigma": 2.0, "physical": True}),
                           PreprocessStep("median", {"size": 3}), PreprocessStep("zscore")))
    raw = (image * 800 + 20000).astype(np.float32)
    config = InferConfig(device="cpu", tta=False)
    spacing = (2.0, 1.0, 0.5)
    whole = model.predict(raw, spacing=spacing, config=config)
    assert len(np.unique(whole.labels)) > 1
    plan = plan_blocks(image.shape, ROI, channels=1, classes=3, config=config, block=(16, 24, 20))
    lazy = Volume(da.from_array(raw, chunks=(7, 17, 15)), spacing, (0.0,) * 3, axes="ZYX")
    predict_to_zarr(model, lazy, tmp_path / "pred.zarr", config=config, plan=plan)
    np.testing.assert_array_equal(np.asarray(read_volume(tmp_path / "pred.zarr").data), whole.labels)
    # the sigma is the volume's: at 1 voxel per unit the same recipe smooths Y and X less
    assert not np.array_equal(model.predict(raw, spacing=(1.0, 1.0, 1.0), config=config).labels, whole.labels)


def test_a_volume_in_another_unit_replays_the_recipe_in_the_models_and_stores_its_own(tmp_path, image):
    """Review 53: block by block, the physical sigma was divided by the voxel size in the image's unit
    (mm), not the model's (µm) that the network is run at: a sigma of 2 µm became 2 mm."""
    from napari_medml.config import PreprocessStep
    from napari_medml.io.units import in_model_unit

    model = _recipe_model((PreprocessStep("gaussian", {"sigma": 2.0, "physical": True}), PreprocessStep("zscore")))
    raw = (image * 800 + 20000).astype(np.float32)
    config = InferConfig(device="cpu", tta=False)
    whole = model.predict(raw, spacing=(2.0, 1.0, 0.5), config=config)  # in µm
    plan = plan_blocks(image.shape, ROI, channels=1, classes=3, config=config, block=(16, 24, 20))
    mm = Volume(da.from_array(raw, chunks=(7, 17, 15)), (0.002, 0.001, 0.0005), (0.5, 0.0, 0.0), axes="ZYX",
                meta={"unit": "mm"})
    converted, factor = in_model_unit(mm, "um")
    assert factor == pytest.approx(1000.0)
    predict_to_zarr(model, converted, tmp_path / "pred.zarr", config=config, plan=plan)
    stored = read_volume(tmp_path / "pred.zarr")
    np.testing.assert_array_equal(np.asarray(stored.data), whole.labels)
    assert stored.meta["unit"] == "mm" and stored.spacing == (0.002, 0.001, 0.0005) and stored.origin == (0.5, 0, 0)


def test_the_same_weights_with_another_recipe_do_not_resume_a_store(tmp_path, image):
    """Review 29: the run's identity held the weights and the image, not the recipe, so a model
    with a min-max recipe resumed the blocks of the same weights with a z-score one."""
    from napari_medml.config import PreprocessStep

    volume = Volume(image, (1.0,) * 3, (0.0,) * 3, axes="ZYX")
    predict_to_zarr(_recipe_model((PreprocessStep("zscore"),)), volume, tmp_path / "p.zarr",
                    config=InferConfig(device="cpu"))
    with pytest.raises(InputError, match="same model, image and block plan"):
        predict_to_zarr(_recipe_model((PreprocessStep("minmax"),)), volume, tmp_path / "p.zarr",
                        config=InferConfig(device="cpu"))


@pytest.mark.parametrize(("change", "error"), [
    (lambda a: np.full_like(a, np.nan), "contains 28560 NaN or infinite value"),  # all 28x34x30, not filled first
    (lambda a: np.where(np.arange(a.size).reshape(a.shape) == 700, np.inf, a), "contains 1 NaN or infinite value"),
    (lambda a: a > 0, "dtype bool: give a numeric image"),
], ids=["all-nan", "one-inf", "bool"])
def test_an_image_the_recipe_cannot_take_is_refused_before_any_store(tmp_path, image, change, error):
    """Review 29: one inf made min-max's range infinite, and 12 blocks were predicted from a blank
    input before the block that held it failed; refusals left empty stores that refused the next run."""
    from napari_medml.config import PreprocessStep

    model = _recipe_model((PreprocessStep("minmax"),))
    volume = Volume(da.from_array(change(image), chunks=8), (1.0,) * 3, (0.0,) * 3, axes="ZYX")
    with pytest.raises(InputError, match=error):
        predict_to_zarr(model, volume, tmp_path / "p.zarr", config=InferConfig(device="cpu"),
                        probabilities=tmp_path / "q.zarr")
    assert not (tmp_path / "p.zarr").exists() and not (tmp_path / "q.zarr").exists()


@pytest.mark.parametrize("steps", [(), ("ct_window",)], ids=["no-recipe", "window"])
def test_a_new_run_refused_at_its_first_block_leaves_no_store(tmp_path, model, image, steps):
    """Review 29: NaN found in the first block (no statistics pass to find them before) left empty
    stores, and the run of the mended image was then refused as another run's store."""
    from napari_medml.config import PreprocessStep

    chosen = _recipe_model(tuple(PreprocessStep(s, {"preset": "lung"}) for s in steps)) if steps else model
    bad = image.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN or infinite value"):
        predict_to_zarr(chosen, Volume(da.from_array(bad, chunks=8), (1.0,) * 3, (0.0,) * 3, axes="ZYX"),
                        tmp_path / "p.zarr", config=InferConfig(device="cpu"), probabilities=tmp_path / "q.zarr")
    assert not (tmp_path / "p.zarr").exists() and not (tmp_path / "q.zarr").exists()
    good = Volume(da.from_array(image, chunks=8), (1.0,) * 3, (0.0,) * 3, axes="ZYX")
    assert predict_to_zarr(chosen, good, tmp_path / "p.zarr", config=InferConfig(device="cpu")).computed > 0


def test_recipe_steps_that_need_the_whole_image_are_refused_blockwise(tmp_path, image):
    from napari_medml.config import PreprocessStep

    model = _recipe_model((PreprocessStep("zscore"), PreprocessStep("percentile", {"low": 1, "high": 99})))
    volume = Volume(da.from_array(image), (1.0,) * 3, (0.0,) * 3, axes="ZYX")
    with pytest.raises(ConfigError, match=r"need the whole image in memory \(percentile 1-99\): block-wise prediction "
                                          r"replays only .*; train without those steps, or predict in memory "
                                          r"\(command line: a NIfTI/TIFF --out\)"):
        predict_to_zarr(model, volume, tmp_path / "p.zarr")
    assert not (tmp_path / "p.zarr").exists()


def test_a_stop_during_the_recipes_statistics_leaves_a_store_that_resumes(tmp_path, image):
    from napari_medml.config import PreprocessStep

    model = _recipe_model((PreprocessStep("zscore"),))
    volume = Volume(da.from_array(image, chunks=8), (1.0,) * 3, (0.0,) * 3, axes="ZYX")
    stop = StopToken()
    stop.stop()
    with pytest.raises(Cancelled):
        predict_to_zarr(model, volume, tmp_path / "p.zarr", config=InferConfig(device="cpu"), stop=stop)
    result = predict_to_zarr(model, volume, tmp_path / "p.zarr", config=InferConfig(device="cpu"))
    assert result.computed == result.plan.count
    np.testing.assert_array_equal(np.asarray(read_volume(tmp_path / "p.zarr").data), model.predict(image).labels)


# --- training from lazy images ----------------------------------------------------------------------


class _Counting:
    """An array that records the largest region read from it (dask reads it chunk by chunk)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, array.ndim
        self.largest = 0

    def __getitem__(self, key):
        out = self.array[key]
        self.largest = max(self.largest, out.size)
        return out


def test_training_from_lazy_images_reads_patches_never_the_volume():
    from napari_medml.config import AugmentConfig, OptimConfig
    from napari_medml.samples import phantom_3d
    from napari_medml.segmentation.metrics import dice
    from napari_medml.segmentation.task import train

    p = phantom_3d(0)
    crop = (slice(16, 32), slice(16, 80), slice(16, 80))
    image, labels = _Counting(p.image[crop]), _Counting(p.labels[crop])
    config = TrainConfig(data=DataConfig(patch_size=(16, 32, 32), batch_size=2, val_fraction=0.0),
                         augment=AugmentConfig.none(), model=ModelConfig(channels=8, depth=3),
                         optim=OptimConfig(epochs=1, steps_per_epoch=30, learning_rate=3e-3), device="cpu")
    model = train(da.from_array(image, chunks=(8, 16, 16)), da.from_array(labels, chunks=(8, 16, 16)), config,
                  spacing=p.spacing)
    assert image.largest <= 8 * 16 * 16 and labels.largest <= 8 * 16 * 16  # chunk by chunk only
    scores = dice(model.predict(p.image[crop]).labels, p.labels[crop])
    assert scores[1] > 0.8 and scores[2] > 0.6, scores
    # statistics from a sample of blocks: close to those of the whole image
    stats = model.normalization["channels"][0]
    assert abs(stats["mean"] - p.image[crop].mean()) < 0.1 * p.image[crop].std()


def test_lazy_training_holds_out_a_block_and_replays_per_voxel_recipes(tmp_path):
    from napari_medml.config import PreprocessStep
    from napari_medml.samples import phantom_3d
    from napari_medml.segmentation.prepare import prepare_training_data

    p = phantom_3d(0)
    image, labels = da.from_array(p.image, chunks=16), da.from_array(p.labels, chunks=16)
    config = TrainConfig(data=DataConfig(patch_size=(16, 32, 32), val_fraction=0.2))
    prepared = prepare_training_data(image, labels, config, spacing=p.spacing, channel_axis=None)
    (train_region,) = prepared.train_regions
    (val,) = prepared.val_regions
    axis = int(np.argmax(p.image.shape))
    assert train_region.label.shape[axis] + val.label.shape[axis] == p.image.shape[axis]
    assert isinstance(val.image, np.ndarray) and val.label.any() and "validation on a" in prepared.split_note
    assert prepared.warnings == []  # the held-out block holds every class
    # review 38: a class only outside the held-out block is said, as in memory
    extra = p.labels.copy()
    extra[2:6, 2:6, 2:6] = 4
    lacking = prepare_training_data(image, da.from_array(extra, chunks=16), config, spacing=p.spacing,
                                    channel_axis=None)
    assert lacking.warnings == ["note: class 4 is not in the held-out part: its Dice is not scored, and the "
                                "validation mean is over classes 1, 2, 3 (label it in the held-out region too to "
                                "measure it)"]
    # per-voxel steps are replayed lazily, with the statistics of the whole image (held-out block included)
    recipe = TrainConfig(data=DataConfig(patch_size=(16, 32, 32), val_fraction=0.2,
                                         preprocessing=(PreprocessStep("zscore"),)))
    replayed = prepare_training_data(image, labels, recipe, spacing=p.spacing, channel_axis=None)
    z = (p.image - p.image.mean()) / p.image.std()
    where = tuple(slice(0, n) for n in replayed.val_regions[0].image.shape[1:])
    region = replayed.train_regions[0].image[(slice(None), *where)]
    stats = replayed.normalization["channels"][0]
    np.testing.assert_allclose(region[0] * stats["std"] + stats["mean"], z[where], atol=1e-4)
    # filters too: each block with its neighbours' voxels, a physical sigma in the image's own voxel size
    from napari_medml.preprocessing.inputs import run_recipe_channels

    steps = (PreprocessStep("gaussian", {"sigma": 2.0, "physical": True}), PreprocessStep("median", {"size": 3}))
    filtered = prepare_training_data(image, labels, TrainConfig(data=DataConfig(
        patch_size=(16, 32, 32), val_fraction=0.2, preprocessing=steps)), spacing=p.spacing, channel_axis=None)
    expected = run_recipe_channels(p.image[None].astype(np.float32), p.spacing, steps)[0][0]
    region = filtered.train_regions[0].image[(slice(None), *where)]
    stats = filtered.normalization["channels"][0]
    np.testing.assert_allclose(region[0] * stats["std"] + stats["mean"], expected[where], atol=1e-3)
    whole = TrainConfig(data=DataConfig(preprocessing=(PreprocessStep("clahe"),)))
    with pytest.raises(ConfigError, match=r"whole image in memory \(clahe\): training on lazy"):
        prepare_training_data(image, labels, whole, spacing=p.spacing, channel_axis=None)


def _ct_scan(foreground: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Air at -1000 HU and a labelled organ of soft tissue (40 ± 10 HU) at ``foreground``."""
    rng = np.random.default_rng(0)
    image = np.full((32, 64, 64), -1000.0, np.float32)
    labels = np.zeros(image.shape, np.uint8)
    labels[foreground] = 1
    image[labels == 1] = rng.normal(40.0, 10.0, size=int(labels.sum()))
    return image, labels


@pytest.mark.parametrize("foreground", [(slice(8, 24), slice(16, 48), slice(16, 48)),
                                        (slice(1, 7), slice(1, 7), slice(57, 63))],  # one of 256 tiles, not drawn
                         ids=["organ", "small-organ"])
def test_lazy_ct_normalization_is_fitted_on_the_labelled_foreground_as_in_memory(foreground):
    from napari_medml.segmentation.prepare import prepare_training_data

    image, labels = _ct_scan(foreground)
    config = TrainConfig(data=DataConfig(spatial_dims=3, patch_size=(8, 8, 8), val_fraction=0.0, normalization="ct"),
                         model=ModelConfig(channels=4, depth=2))
    whole = prepare_training_data(image, labels, config, spacing=None, channel_axis=None).normalization
    lazy = prepare_training_data(da.from_array(image, chunks=16), da.from_array(labels, chunks=16), config,
                                 spacing=None, channel_axis=None).normalization
    stats, fg = lazy["channels"][0], image[labels == 1]
    assert whole["channels"][0]["low"] > 0  # the organ's percentiles, not the air's -1000
    assert np.percentile(fg, 0.5) - 1 < stats["low"] < stats["high"] < np.percentile(fg, 99.5) + 1
    assert abs(stats["mean"] - 40.0) < 2.0 and abs(stats["std"] - 10.0) < 2.0


def test_lazy_training_takes_a_boolean_mask_as_class_1():
    from napari_medml.segmentation.prepare import prepare_training_data

    image, labels = _ct_scan((slice(8, 24), slice(16, 48), slice(16, 48)))
    config = TrainConfig(data=DataConfig(spatial_dims=3, patch_size=(16, 32, 32), val_fraction=0.2))
    mask = labels.astype(bool)
    whole = prepare_training_data(image, mask, config, spacing=None, channel_axis=None)
    lazy = prepare_training_data(da.from_array(image, chunks=16), da.from_array(mask, chunks=16), config,
                                 spacing=None, channel_axis=None)
    assert whole.class_ids == lazy.class_ids == (0, 1)
    (region,) = lazy.train_regions
    np.testing.assert_array_equal(region.label[:, :32], labels[:, :32] + 1)  # encoded: class id + 1


def test_a_lazy_patch_the_image_cannot_hold_is_refused_with_a_patch_or_a_way_out(monkeypatch):
    """Review 44's doubt: a lazy image is not padded, so a patch must fit it; the refusal gives one
    that does. Review 46: a thin Zarr with the automatic patch crashed in the network; a thin image
    that fits in memory is read whole (that axis padded), and one that does not is refused."""
    from napari_medml.io.memory import MEMORY_ENV
    from napari_medml.segmentation.prepare import prepare_training_data

    rng = np.random.default_rng(0)
    image = rng.normal(size=(16, 40, 40)).astype(np.float32)
    labels = (image > 0.5).astype(np.uint8)
    thin = (da.from_array(image[:3], chunks=8), da.from_array(labels[:3], chunks=8))
    anisotropic = {"spacing": (5.0, 1.0, 1.0), "channel_axis": None}
    auto = TrainConfig(data=DataConfig(val_fraction=0.0), model=ModelConfig(depth=3, channels=4))
    given = replace(auto, data=replace(auto.data, patch_size=(8, 32, 32)))
    # thin and small: read into memory, where the automatic patch pads the 3 slices to 4
    whole = prepare_training_data(*thin, auto, **anisotropic)
    assert isinstance(whole.train_regions[0].image, np.ndarray) and whole.patch_size == (4, 40, 40)
    with pytest.raises(InputError, match=r"use a patch of at most \(4, 32, 32\)"):  # the in-memory line
        prepare_training_data(*thin, given, **anisotropic)
    assert prepare_training_data(*thin, replace(given, data=replace(given.data, patch_size=(4, 32, 32))),
                                 **anisotropic).train_regions
    # review 46: a fine-tune (or a resume) of a model whose patch is thicker than the image, the same
    from napari_medml.segmentation.task import train as train_model

    tiny = replace(auto, optim=OptimConfig(epochs=1, steps_per_epoch=1), device="cpu")
    model = train_model(image[:3], labels[:3], tiny, spacing=(5.0, 1.0, 1.0))
    assert model.patch_size[0] == 4
    tuned = prepare_training_data(*thin, tiny, base=model, **anisotropic)
    assert isinstance(tuned.train_regions[0].image, np.ndarray)
    # too large for memory (a budget of 1 KiB here): patch by patch, so every patch must fit
    monkeypatch.setenv(MEMORY_ENV, str(1 / 1024))
    wide = replace(auto, data=replace(auto.data, patch_size=(16, 64, 32)))
    with pytest.raises(ConfigError, match=r"^patch_size \(16, 64, 32\) must be divisible by 4 and fit the image "
                                          r"\(16, 40, 40\): use \(16, 40, 32\)$"):
        prepare_training_data(da.from_array(image, chunks=8), da.from_array(labels, chunks=8), wide,
                              spacing=(1.0,) * 3, channel_axis=None)
    out = ("which has 3 voxels along axis 0 and is too large to read into memory, where that axis would be padded: "
           "use the DynUNet network \\('dynunet'\\), which does not halve an axis that short, or crop the image")
    with pytest.raises(ConfigError, match=r"^patch_size \(8, 32, 32\) must .*" + out):
        prepare_training_data(*thin, given, **anisotropic)
    with pytest.raises(ConfigError, match=r"^the automatic patch \(4, 40, 40\) would .*" + out):
        prepare_training_data(*thin, auto, **anisotropic)
    with pytest.raises(ConfigError, match=r"^patch_size \(4, 40, 40\) must .*" + out):  # the fine-tune's
        prepare_training_data(*thin, tiny, base=model, **anisotropic)
    dyn = replace(given, model=replace(given.model, network="dynunet"), data=replace(given.data,
                                                                                    patch_size=(3, 32, 32)))
    lazy = prepare_training_data(*thin, dyn, **anisotropic)  # the way out it names
    assert lazy.train_regions
