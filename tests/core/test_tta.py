"""Test-time augmentation: the passes (flips; in 2D with square pixels, the 8 orientations of
the square), their inverses, and that every prediction path averages the same passes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_medml.config import DataConfig, InferConfig, ModelConfig, TrainConfig  # noqa: E402
from napari_medml.io import Volume, read_volume  # noqa: E402
from napari_medml.nn.segmentation import build_network  # noqa: E402
from napari_medml.segmentation.chunked import plan_blocks  # noqa: E402
from napari_medml.segmentation.model import Model  # noqa: E402
from napari_medml.segmentation.to_zarr import predict_to_zarr  # noqa: E402
from napari_medml.segmentation.tta import TTAPass, tta_passes  # noqa: E402

ROI = (16, 16)  # square: a network trained on it (and on square pixels) turned by quarter turns


def _orientations(image: np.ndarray) -> set[bytes]:
    return {np.ascontiguousarray(np.rot90(t, k)).tobytes() for t in (image, image.T) for k in range(4)}


def test_2d_tta_with_square_pixels_sees_the_8_orientations_of_the_square():
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    passes = tta_passes(2, True, (0.5, 0.5))
    assert len(passes) == 8 and passes[0] == TTAPass(2)
    seen = {np.ascontiguousarray(p.apply(torch.from_numpy(image)).numpy()).tobytes() for p in passes}
    assert seen == _orientations(image)  # each of the dihedral group once
    batch = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    for p in passes:
        turned = p.apply(batch)
        assert tuple(turned.shape[-2:]) == p.shape((5, 7))
        assert torch.equal(p.undo(turned), batch)


def test_other_images_get_one_flip_per_axis_and_no_tta_one_pass():
    assert [(p.flips, p.transposed) for p in tta_passes(3, True, (1.0, 1.0, 1.0))] == [
        ((), False), ((0,), False), ((1,), False), ((2,), False)]
    # rectangular pixels: a transpose would change the pixel shape the network learned
    assert [(p.flips, p.transposed) for p in tta_passes(2, True, (0.5, 1.0))] == [
        ((), False), ((0,), False), ((1,), False)]
    assert len(tta_passes(2, True, (1.0, 1.005))) == 8  # within 1 %: square
    assert len(tta_passes(2, True, None)) == 8  # no voxel size: pixels
    # an elongated patch: transposed windows would be mostly padding (its training never turned it a quarter)
    assert len(tta_passes(2, True, (1.0, 1.0), (64, 256))) == 3 and len(tta_passes(2, True, None, (32, 32))) == 8
    assert tta_passes(2, False, (1.0, 1.0)) == (TTAPass(2),)
    volume = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(1, 4, 5, 6)
    for p in tta_passes(3, True):
        assert torch.equal(p.undo(p.apply(volume)), volume)


def _model_2d(network: torch.nn.Module, spacing=(1.0, 1.0), patch=ROI) -> Model:
    cfg = TrainConfig(data=DataConfig(spatial_dims=2), model=ModelConfig(channels=4, depth=2))
    normalization = {"method": "zscore", "channels": [{"mean": 0.2, "std": 1.1}]}
    return Model(network, cfg, (0, 1, 3), 1, 2, patch, spacing, normalization)


@pytest.fixture(scope="module")
def unet() -> Model:
    torch.manual_seed(0)
    cfg = TrainConfig(data=DataConfig(spatial_dims=2), model=ModelConfig(channels=4, depth=2))
    return _model_2d(build_network(cfg.model, 2, 1, 3, patch_size=ROI, spacing=(1.0, 1.0)))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:41, :53]  # not square, and no window grid fits it exactly
    return (np.sin(y / 4.0) + np.cos(x / 3.0) * np.sin(y / 7.0) + 0.3 * rng.normal(size=y.shape)).astype(np.float32)


def test_tta_probabilities_are_the_mean_of_the_8_orientations_predicted_plainly(unet, image):
    # windows that tile the image in every orientation (48 = 3 x 16), without overlap:
    # a plain pass's softmax of the blended logits is then the windows' softmax that TTA averages
    image = np.concatenate([image, image[::-1]])[:48, :48]
    plain = InferConfig(return_probabilities=True, device="cpu", overlap=0.0, blend="constant")
    tta = unet.predict(image, config=InferConfig(tta=True, return_probabilities=True, device="cpu", overlap=0.0,
                                                 blend="constant"))
    turned_back = []
    for transposed in (False, True):
        for k in range(4):
            oriented = np.rot90(image.T if transposed else image, k)
            probs = unet.predict(np.ascontiguousarray(oriented), config=plain).probabilities.astype(np.float32)
            back = np.rot90(probs, -k, axes=(1, 2))
            turned_back.append(back.transpose(0, 2, 1) if transposed else back)
    expected = np.mean(turned_back, axis=0)
    # float16 probabilities on both sides
    np.testing.assert_allclose(tta.probabilities.astype(np.float32), expected, atol=2e-3)
    assert np.abs(turned_back[0] - turned_back[5]).max() > 1e-2  # the orientations do differ


def test_a_pointwise_network_gives_the_same_scores_in_every_orientation(image):
    torch.manual_seed(1)
    model = _model_2d(torch.nn.Conv2d(1, 3, 1))  # no spatial context: only misplaced voxels could differ
    config = InferConfig(return_probabilities=True, device="cpu")
    plain = model.predict(image, config=config).probabilities.astype(np.float32)
    tta = model.predict(image, config=InferConfig(tta=True, return_probabilities=True, device="cpu"))
    np.testing.assert_allclose(tta.probabilities.astype(np.float32), plain, atol=1e-3)


def test_progress_counts_the_windows_of_every_orientation(unet, image):
    calls = []
    unet.predict(image, config=InferConfig(tta=True, overlap=0.5, device="cpu"),
                 progress=lambda d, t: calls.append((d, t)))
    # 41x53 with 16x16 windows at stride 8: 5 x 6 in each of the 8 orientations
    assert calls[-1] == (8 * 5 * 6,) * 2


@pytest.mark.parametrize(("spacing", "patch", "passes"), [((1.0, 1.0), ROI, 8), ((1.0, 2.0), ROI, 3),
                                                         ((1.0, 1.0), (16, 24), 3)])
def test_blocks_give_the_whole_image_tta_prediction(tmp_path, unet, image, spacing, patch, passes):
    model = _model_2d(unet.network, spacing, patch)
    config = InferConfig(tta=True, return_probabilities=True, device="cpu")
    whole = model.predict(image, config=config)
    plan = plan_blocks(image.shape, patch, channels=1, classes=3, config=config, spacing=spacing, block=(16, 24))
    assert len(plan.passes) == len(model.tta_passes(config)) == passes and plan.count == 3 * 3
    volume = Volume(image, spacing, (0.0, 0.0), axes="YX")
    predict_to_zarr(model, volume, tmp_path / "pred.zarr", config=config, plan=plan,
                    probabilities=tmp_path / "probs.zarr")
    # the same windows, weights and order per pixel: identical, not merely close
    np.testing.assert_array_equal(np.asarray(read_volume(tmp_path / "pred.zarr").data), whole.labels)
    np.testing.assert_array_equal(np.asarray(read_volume(tmp_path / "probs.zarr").data), whole.probabilities)


def test_a_block_plan_with_other_passes_than_the_model_takes_is_refused(tmp_path, unet, image):
    """Review 35: a plan made without the model's spacing took 8 passes for a model of oblong
    pixels, whose own prediction takes 3; the blocks then differed from it without a word."""
    from napari_medml.errors import ConfigError

    model = _model_2d(unet.network, (1.0, 2.0))
    config = InferConfig(tta=True, device="cpu")
    plan = plan_blocks(image.shape, ROI, channels=1, classes=3, config=config, block=(16, 24))  # no spacing
    with pytest.raises(ConfigError, match=r"the block plan takes 8 test-time pass\(es\), the model's prediction 3: "
                       r"make the plan with plan_blocks\(\.\.\., config=config, spacing=model\.spacing\)"):
        predict_to_zarr(model, Volume(image, (1.0, 2.0), (0.0, 0.0), axes="YX"), tmp_path / "p.zarr", config=config,
                        plan=plan)
    assert not (tmp_path / "p.zarr").exists()
