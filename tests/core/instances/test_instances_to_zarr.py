"""Learned instances block by block into Zarr: the same objects as the whole-volume
prediction, resume after Stop, other parameters without the network, the halo check."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
zarr = pytest.importorskip("zarr")

from napari_medml.config import DataConfig, InferConfig, ModelConfig, TrainConfig  # noqa: E402
from napari_medml.engine.reports import StopToken  # noqa: E402
from napari_medml.errors import Cancelled, InputError  # noqa: E402
from napari_medml.instances.metrics import instance_scores  # noqa: E402
from napari_medml.instances.model import InstanceModel  # noqa: E402
from napari_medml.instances.postprocess import InstanceParams  # noqa: E402
from napari_medml.instances.to_zarr import instances_to_zarr, map_paths, plan_instance_blocks  # noqa: E402
from napari_medml.io import Volume, read_volume  # noqa: E402
from napari_medml.segmentation.label_blocks import label_blocks  # noqa: E402

ROI = (12, 16, 16)
SPACING = (2.0, 1.0, 1.0)


def _model(params: InstanceParams) -> InstanceModel:
    """A 3x3x3 convolution standing in for a trained network: foreground where the blobs
    are bright, the distance logit rising to their centres (plus small random taps, so
    that the windows' blending matters)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 4, 3, padding=1)
    with torch.no_grad():
        conv.weight.normal_(0.0, 0.02)
        conv.weight[:, 0, 1, 1, 1] += torch.tensor([-12.0, 12.0, 0.0, 10.0])
        conv.bias.copy_(torch.tensor([3.0, -3.0, -1.0, -6.0]))
    config = TrainConfig(task="instances", data=DataConfig(spatial_dims=3, patch_size=ROI),
                         model=ModelConfig(channels=4, depth=2))  # fmt: skip
    return InstanceModel(conv, config, 1, 3, ROI, SPACING, {"method": "none", "channels": [{}]}, params)


def _blobs(shape: tuple[int, ...], count: int, seed: int) -> np.ndarray:
    """Gaussian blobs (some touching) on a noisy background; 1 at their centres."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    image = np.zeros(shape, np.float32)
    for _ in range(count):
        centre = rng.uniform(2, np.array(shape) - 2)
        radius = rng.uniform(2.5, 4.5)
        d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, SPACING))
        image = np.maximum(image, np.exp(-d2 / (2 * radius**2)))
    return image + 0.03 * rng.normal(size=shape).astype(np.float32)


def _same_partition(a: np.ndarray, b: np.ndarray) -> None:
    """Every object of ``a`` is exactly one object of ``b`` (IoU 1): equal up to the ids."""
    assert np.array_equal(a > 0, b > 0)
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]).astype(np.int64), axis=1)
    assert pairs.shape[1] == len(np.unique(a[a > 0])) == len(np.unique(b[b > 0]))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return _blobs((30, 70, 62), 45, seed=0)


@pytest.mark.parametrize("tta", [False, True])
def test_blocks_give_the_whole_volume_instances(tmp_path, image, tta):
    params = InstanceParams(foreground_threshold=0.5, seed_height=0.1, min_size=20.0)
    model = _model(params)
    config = InferConfig(tta=tta, device="cpu", overlap=0.25)
    whole = model.predict(image, spacing=SPACING, config=config)
    plan = plan_instance_blocks(model, image.shape, 1, config, block=(16, 32, 24))
    assert plan.count == 2 * 3 * 3
    volume = Volume(image, SPACING, (4.0, 0.0, 0.0), axes="ZYX", meta={"unit": "um"})
    result = instances_to_zarr(model, volume, tmp_path / "pred.zarr", config=config, plan=plan)
    assert result.computed == plan.count and result.labelled == plan.count and result.resumed == 0
    maps = map_paths(tmp_path / "pred.zarr")
    assert result.stores == {"labels": tmp_path / "pred.zarr", **maps}
    # stage 1: the maps are the whole-volume network outputs, bit for bit
    np.testing.assert_array_equal(np.asarray(read_volume(maps["foreground"]).data), whole.foreground)
    np.testing.assert_array_equal(np.asarray(read_volume(maps["distance"]).data), whole.distance)
    labels = read_volume(tmp_path / "pred.zarr")
    assert labels.is_labels and labels.spacing == SPACING and labels.origin == (4.0, 0.0, 0.0)
    blocks = np.asarray(labels.data)
    n = len(np.unique(whole.labels)) - 1
    assert n > 20 and result.objects == n
    _same_partition(whole.labels, blocks)
    m = instance_scores(whole.labels, blocks).at(0.5)
    assert (m.f1, m.n_pred, m.n_true) == (1.0, n, n)
    # ids: 1 + the flat index of the object's first voxel
    first = np.unique(blocks.ravel(), return_index=True)
    assert np.array_equal(first[0][1:], first[1][1:] + 1)


def test_stop_resumes_and_new_parameters_reuse_the_maps(tmp_path, image):
    model = _model(InstanceParams(seed_height=0.1))
    config = InferConfig(device="cpu", overlap=0.25)
    plan = plan_instance_blocks(model, image.shape, 1, config, block=(16, 32, 32))
    volume = Volume(image, SPACING, (0.0,) * 3, axes="ZYX")
    stop = StopToken()

    def progress(done: int, total: int) -> None:
        if done >= total // 3:
            stop.stop()

    with pytest.raises(Cancelled):
        instances_to_zarr(model, volume, tmp_path / "a.zarr", config=config, plan=plan, progress=progress, stop=stop)
    run = []
    hook = model.network.register_forward_hook(lambda module, inputs, output: run.append(inputs[0].shape[0]))
    try:
        result = instances_to_zarr(model, volume, tmp_path / "a.zarr", config=config, plan=plan)
        assert 0 < result.resumed < plan.count and result.computed == plan.count - result.resumed
        windows = sum(run)
        # other post-processing: a new labels store from the same maps, no network run
        other = InstanceParams(seed_height=0.3, min_size=40.0)
        again = instances_to_zarr(model, volume, tmp_path / "b.zarr", config=config, plan=plan, params=other,
                                  maps=map_paths(tmp_path / "a.zarr"))  # fmt: skip
        assert sum(run) == windows and again.computed == 0 and again.resumed == plan.count
    finally:
        hook.remove()
    whole = model.predict(image, spacing=SPACING, config=config)
    _same_partition(whole.labels, np.asarray(read_volume(tmp_path / "a.zarr").data))
    _same_partition(whole.relabel(other).labels, np.asarray(read_volume(tmp_path / "b.zarr").data))
    # the same labels store asked for with other parameters is refused, never overwritten, with the fix
    # that labels again from the kept maps (review 33)
    with pytest.raises(InputError, match="holds objects labelled from these maps with other post-processing "
                                         "options .*: remove it and run the same command again"):
        instances_to_zarr(model, volume, tmp_path / "a.zarr", config=config, plan=plan, params=other)


def test_an_object_larger_than_the_halo_grows_it_or_is_refused(tmp_path):
    bar = np.zeros((8, 40), np.int32)
    bar[2:5, 3:37] = 1  # one object 34 voxels long
    from scipy import ndimage as ndi

    from napari_medml.segmentation.chunked import plan_blocks

    plan = plan_blocks(bar.shape, (8, 8), channels=1, classes=2, block=(8, 8))
    geometry = {"spacing": [1.0, 1.0], "origin": [0.0, 0.0], "unit": None}

    def components(region: np.ndarray) -> np.ndarray:
        return ndi.label(region)[0]

    grown = label_blocks([bar], components, tmp_path / "grown.zarr", plan=plan, halo=(2, 4), run={},
                         geometry=geometry, spatial_axes="YX")  # fmt: skip
    out = np.asarray(read_volume(tmp_path / "grown.zarr").data)
    assert grown.objects == 1 and grown.grown > 0
    assert set(np.unique(out)) == {0, 2 * 40 + 3 + 1}  # one id: 1 + flat index of the first voxel
    with pytest.raises(InputError, match="give a larger halo"):
        label_blocks([bar], components, tmp_path / "small.zarr", plan=plan, halo=(1, 1), run={},
                     geometry=geometry, spatial_axes="YX")  # fmt: skip


def test_the_widgets_folder_path_reads_lazily_and_relabels_from_disk(tmp_path, image):
    from napari_medml.instances.to_zarr import instances_to_folder

    model = _model(InstanceParams(seed_height=0.1))
    config = InferConfig(device="cpu", overlap=0.25)
    got = instances_to_folder(model, image, tmp_path, axes="ZYX", spacing=SPACING, config=config, memory_mb=16)
    assert type(got.labels).__module__.startswith("dask")
    whole = model.predict(image, spacing=SPACING, config=config)
    _same_partition(whole.labels, np.asarray(got.labels))
    other = InstanceParams(seed_height=0.3)
    _same_partition(whole.relabel(other).labels, np.asarray(got.relabel(other).labels))
    again = instances_to_folder(model, image, tmp_path, axes="ZYX", spacing=SPACING, config=config, memory_mb=16)
    _same_partition(np.asarray(again.labels), np.asarray(got.labels))


@pytest.mark.parametrize("method", ["connected", "watershed"])
def test_a_segmentation_models_instances_block_by_block(tmp_path, image, method):
    """``InferConfig.instances`` on a segmentation model: the labels block-wise, then the
    split block by block with a halo: the same objects as the whole-map split."""
    from napari_medml.segmentation.model import Model
    from napari_medml.segmentation.to_zarr import predict_to_zarr

    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 2, 3, padding=1)
    with torch.no_grad():
        conv.weight.normal_(0.0, 0.02)
        conv.weight[:, 0, 1, 1, 1] += torch.tensor([-10.0, 10.0])
        conv.bias.copy_(torch.tensor([2.0, -2.0]))
    config = TrainConfig(data=DataConfig(spatial_dims=3, patch_size=ROI), model=ModelConfig(channels=4, depth=2))
    model = Model(conv, config, (0, 1), 1, 3, ROI, SPACING, {"method": "none", "channels": [{}]})
    infer = InferConfig(device="cpu", overlap=0.25, instances=method)
    whole = model.predict(image, config=infer)
    plan = plan_instance_blocks(model, image.shape, 1, infer, block=(16, 32, 24))
    volume = Volume(image, SPACING, (0.0,) * 3, axes="ZYX")
    result = predict_to_zarr(model, volume, tmp_path / "seg.zarr", config=infer, plan=plan)
    assert result.stores["instances"] == tmp_path / "seg.instances.zarr"
    np.testing.assert_array_equal(np.asarray(read_volume(tmp_path / "seg.zarr").data), whole.labels)
    blocks = np.asarray(read_volume(tmp_path / "seg.instances.zarr").data)
    n = len(np.unique(whole.instances)) - 1
    assert n > 10
    if method == "connected":
        _same_partition(whole.instances, blocks)
        return
    # the watershed on a Euclidean distance map meets exact ties (equal distances at two
    # seeds): skimage breaks them by its heap's order over the whole map, so a few voxels
    # between two touching objects may go the other way; the objects are the same
    m = instance_scores(whole.instances, blocks).at(0.5)
    assert (m.f1, m.n_pred, m.n_true) == (1.0, n, n)
    mask = whole.instances > 0
    pairs, counts = np.unique(np.stack([whole.instances[mask], blocks[mask]]).astype(np.int64), axis=1,
                              return_counts=True)  # fmt: skip
    best = {}
    for (a, _b), c in zip(pairs.T, counts):
        best[a] = max(best.get(a, 0), c)
    assert 1 - sum(best.values()) / mask.sum() < 0.002


def test_the_table_measured_block_by_block_is_the_whole_tables(image):
    from napari_medml.instances.measure import measure_image_instances
    from napari_medml.instances.measure_blocks import measure_blocks

    model = _model(InstanceParams(seed_height=0.1))
    labels = model.predict(image, spacing=SPACING, config=InferConfig(device="cpu", overlap=0.25)).labels
    labels = np.where(labels > 0, labels + 1000, 0).astype(np.uint32)  # any ids
    origin = (4.0, -2.0, 1.5)
    whole = measure_image_instances(labels, image, spacing=SPACING, origin=origin)
    blocks = measure_blocks(labels, image[None], block=(7, 16, 20), spacing=SPACING, origin=origin)
    assert list(blocks) == list(whole) and len(whole["index"]) > 20
    for name, column in whole.items():
        np.testing.assert_allclose(blocks[name], column, rtol=1e-10, err_msg=name)


def test_an_instance_model_with_a_minmax_recipe_is_replayed_block_by_block(tmp_path, image):
    """The network maps of a model trained on a min-max-scaled layer, from a raw 12-bit volume
    read lazily: those of the volume scaled whole in memory, and the same objects."""
    from dataclasses import replace

    from napari_medml.config import PreprocessStep

    params = InstanceParams(foreground_threshold=0.5, seed_height=0.1, min_size=20.0)
    model = _model(params)
    model.config = replace(model.config, data=replace(model.config.data, preprocessing=(PreprocessStep("minmax"),)))
    raw = image * 3000 + 400  # the blobs' 0-1 range on another scale: only the recipe brings it back
    config = InferConfig(device="cpu", overlap=0.25)
    whole = model.predict(raw, spacing=SPACING, config=config)
    assert len(np.unique(whole.labels)) > 20
    plan = plan_instance_blocks(model, image.shape, 1, config, block=(16, 32, 24))
    import dask.array as da

    volume = Volume(da.from_array(raw, chunks=(10, 20, 20)), SPACING, (0.0,) * 3, axes="ZYX")
    instances_to_zarr(model, volume, tmp_path / "pred.zarr", config=config, plan=plan)
    maps = map_paths(tmp_path / "pred.zarr")
    np.testing.assert_allclose(np.asarray(read_volume(maps["foreground"]).data), whole.foreground, atol=1e-5)
    _same_partition(whole.labels, np.asarray(read_volume(tmp_path / "pred.zarr").data))
