"""The augmentation preview is the training pipeline: same builder arguments (patch, spacing),
channels moved together, label ids exact at any magnitude."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import napari_medml.augment.transforms as transforms
from napari_medml.augment import augmentation_transforms, compact_ids, preview, preview_window
from napari_medml.config import AugmentConfig, AugmentSpec, DataConfig, ModelConfig, OptimConfig, TrainConfig
from napari_medml.errors import InputError


def only(*names: str, strength: float = 1.0, prob: float = 1.0) -> AugmentConfig:
    return dataclasses.replace(AugmentConfig.none(), **{n: AugmentSpec(prob, strength) for n in names})


def objects(shape: tuple[int, ...] = (40, 48), offset: int = 0) -> np.ndarray:
    """Rectangles with ids 1..6 (+ offset) at distinct, off-centre places."""
    lab = np.zeros(shape, np.int64)
    k = 0
    for y in range(2, shape[-2] - 8, 12):
        for x in range(3, shape[-1] - 9, 15):
            k += 1
            lab[..., y:y + 5 + k % 3, x:x + 7] = k + offset
    return lab


def test_compact_ids_round_trip_keeps_zero_first():
    for labels in (np.array([[0, 2**40], [7, 2**40]]), np.array([[-5, 3], [3, 2**33]]), np.array([9, 2**30])):
        compact, table = compact_ids(labels)
        np.testing.assert_array_equal(table[compact], labels)
        assert table[0] == 0 and compact.max() == len(table) - 1
        assert np.array_equal(compact == 0, labels == 0)  # padding (0) maps back to background


@pytest.mark.parametrize("dtype", [np.int64, np.uint32, np.int32])
def test_big_ids_survive_the_training_transforms(dtype):
    lab = objects(offset=2**25).astype(dtype)
    lab[lab > 0] += np.arange((lab > 0).sum(), dtype=dtype) % 2  # neighbours 2**25 + k and + k + 1
    ids, counts = np.unique(lab, return_counts=True)
    compose = augmentation_transforms(only("flip", "rotate90", prob=0.5), 2, seed=0, spatial_shape=lab.shape)
    for _ in range(4):
        out = compose({"image": lab[None] * 1.0, "label": lab[None]})
        got, got_counts = np.unique(out["label"].numpy(), return_counts=True)
        np.testing.assert_array_equal(got, ids)  # float32 would merge these ids
        np.testing.assert_array_equal(got_counts, counts)
        assert set(out) == {"image", "label"}  # the id table does not leak
    affine = augmentation_transforms(only("affine"), 2, seed=1)
    out = affine({"image": lab[None] * 1.0, "label": lab[None]})
    assert set(np.unique(out["label"].numpy())) <= set(ids.tolist())


def test_preview_all_off_returns_huge_ids_exactly():
    lab = objects(offset=2**25)
    lab[0, 0] = 2**25 + 1_000_001
    for dtype in (np.int64, np.uint32):
        _, samples = preview(lab * 1.0, lab.astype(dtype), AugmentConfig.none(), n=2)
        assert samples.dtype == dtype
        np.testing.assert_array_equal(samples[1], lab)


def test_flipped_labels_stay_on_the_bright_objects():
    lab = objects(offset=2**25)
    img = np.where(lab > 0, 200.0, 10.0)
    images, samples = preview(img, lab, only("flip", "rotate90", prob=0.5), n=6, seed=2, patch_size=(40, 48))
    assert any(not np.array_equal(s, lab) for s in samples)
    for image, sample in zip(images, samples):
        assert np.all(image[sample > 0] > 150) and np.all(image[sample == 0] < 60)
        assert set(np.unique(sample)) == set(np.unique(lab))


def test_rgb_and_channel_first_images_keep_their_channels():
    lab = objects()
    bright = np.where(lab > 0, 250.0, 5.0)
    rgb = np.stack([bright, 255 - bright, np.full_like(bright, 128)], axis=-1)
    images, samples = preview(rgb, lab, only("flip"), n=4, seed=1, channel_axis=-1)
    assert images.shape == (4, 40, 48, 3) and samples.shape == (4, 40, 48)
    for image, sample in zip(images, samples):  # one draw moves every channel and the labels
        np.testing.assert_allclose(image[..., 0] + image[..., 1], 255.0, atol=1e-3)
        np.testing.assert_allclose(image[..., 2], 128.0, atol=1e-3)
        assert np.all(image[..., 0][sample > 0] > 200)
    vol = np.stack([np.stack([bright] * 6), np.stack([255 - bright] * 6)])  # (C, Z, Y, X)
    images, samples = preview(vol, np.stack([lab] * 6), only("flip"), n=2, channel_axis=0, patch_size=(6, 40, 48))
    assert images.shape == (2, 2, 6, 40, 48) and samples.shape == (2, 6, 40, 48)
    np.testing.assert_allclose(images[:, 0] + images[:, 1], 255.0, atol=1e-3)


def test_preview_window_is_the_patch_around_the_centre():
    assert preview_window((40, 48), (32, 32)) == (slice(4, 36), slice(8, 40))
    assert preview_window((40, 48), (32, 32), (0, 100)) == (slice(0, 32), slice(16, 48))
    assert preview_window((10, 40, 48), (64, 16), (5, 20, 24)) == (slice(0, 10), slice(0, 40), slice(16, 32))


def test_square_patch_gives_quarter_turns_and_small_images_are_padded():
    lab = objects()
    crop = lab[preview_window(lab.shape, (32, 32))]
    _, samples = preview(crop * 1.0, crop, only("rotate90"), n=12, seed=0, patch_size=(32, 32))
    assert any(np.array_equal(s, np.rot90(crop)) or np.array_equal(s, np.rot90(crop, 3)) for s in samples)
    images, samples = preview(lab[:30, :20] * 1.0, lab[:30, :20], AugmentConfig.none(), n=1, patch_size=(32, 32))
    assert images.shape == (1, 32, 32) and np.all(samples[0, 30:] == 0) and np.all(samples[0, :, 20:] == 0)
    np.testing.assert_array_equal(samples[0, :30, :20], lab[:30, :20])
    with pytest.raises(InputError, match="larger than patch_size"):
        preview(lab * 1.0, lab, AugmentConfig(), patch_size=(32, 32))
    with pytest.raises(InputError, match="patch_size"):
        preview(lab * 1.0, lab, AugmentConfig(), patch_size=(64,))


def test_preview_and_training_call_the_builder_with_the_same_arguments(monkeypatch):
    calls = []
    builder = transforms.augmentation_transforms

    def spy(*args, **kwargs):
        calls.append((args[1:], {k: v for k, v in kwargs.items() if k != "seed"}))
        return builder(*args, **kwargs)

    monkeypatch.setattr(transforms, "augmentation_transforms", spy)  # the one builder both call
    lab = np.stack([objects((40, 48))] * 12).astype(np.uint8)
    img = np.where(lab > 0, 1.0, 0.0) + np.random.default_rng(0).normal(0, 0.1, lab.shape)
    spacing, patch = (5.0, 1.0, 1.0), (8, 32, 32)
    cfg = only("affine", "rotate90", strength=2.0)
    window = preview_window(lab.shape, patch)
    preview(img[window], lab[window], cfg, n=1, spacing=spacing, patch_size=patch)
    from napari_medml.segmentation.task import SegmentationTask

    config = TrainConfig(data=DataConfig(spatial_dims=3, patch_size=patch, val_fraction=0.0), augment=cfg,
                         model=ModelConfig(channels=4, depth=2), optim=OptimConfig(epochs=1, steps_per_epoch=1),
                         device="cpu")
    SegmentationTask(config, img.astype(np.float32), lab, spacing=spacing)
    assert len(calls) == 2
    assert calls[0] == calls[1]
    assert calls[0][1]["spacing"] == spacing and tuple(calls[0][1]["spatial_shape"]) == patch


def test_progress_comes_before_each_sample_and_what_it_raises_ends_the_preview():
    """Note 49: the Augmentation preview could not be cancelled; it reports each sample and a
    stop raised there ends it."""
    from napari_medml.errors import Cancelled

    image = np.random.default_rng(0).normal(size=(40, 48)).astype(np.float32)
    seen = []
    images, _ = preview(image, objects(), only("flip"), n=3, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 3), (1, 3), (2, 3)] and images.shape == (3, 40, 48)

    def stop_at_two(done, total):
        if done == 2:
            raise Cancelled("stopped")
        seen.append(done)

    seen.clear()
    with pytest.raises(Cancelled):
        preview(image, objects(), only("flip"), n=5, progress=stop_at_two)
    assert seen == [0, 1]
