"""``napari-medml predict --channel K``: one channel of a multi-channel file for a one-channel
model (trial 44: a two-channel confocal file could not be segmented by a nuclei model without
first writing its channel out by hand)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
from napari_medml.samples import touching_objects_2d

from test_console_script import run


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from napari_medml.segmentation.task import train

    s = touching_objects_2d(0, shape=(48, 64))
    config = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(32, 32), val_fraction=0.0),
                         augment=AugmentConfig.none(), model=ModelConfig(channels=4, depth=2),
                         optim=OptimConfig(epochs=1, steps_per_epoch=3), device="cpu")
    folder = tmp_path_factory.mktemp("channel")
    model = train(s.image.astype(np.float32), (s.labels > 0).astype(np.uint8), config)
    return model.save(folder / "model"), s.image.astype(np.float32)


def test_one_channel_of_a_two_channel_file_is_segmented_as_that_channel_alone(bundle, tmp_path) -> None:
    model, image = bundle
    other = np.random.default_rng(1).normal(0, 1, image.shape).astype(np.float32)
    tifffile.imwrite(tmp_path / "two.tif", np.stack([other, image]), imagej=True,
                     resolution=(1 / 0.5, 1 / 0.5), metadata={"axes": "CYX", "unit": "um"})
    tifffile.imwrite(tmp_path / "one.tif", image, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"axes": "YX", "unit": "um"})
    refused = run("predict", "--model", model, "--image", tmp_path / "two.tif", "--out", tmp_path / "p.tif",
                  "--device", "cpu", tmp=tmp_path)
    assert refused.returncode == 1 and refused.stderr.strip().endswith(
        "or take one of its channels with --channel (0 to 1)"), refused.stderr
    done = run("predict", "--model", model, "--image", tmp_path / "two.tif", "--out", tmp_path / "p.tif",
               "--device", "cpu", "--channel", "1", tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    alone = run("predict", "--model", model, "--image", tmp_path / "one.tif", "--out", tmp_path / "q.tif",
                "--device", "cpu", tmp=tmp_path)
    assert alone.returncode == 0, alone.stderr
    with tifffile.TiffFile(tmp_path / "p.tif") as p, tifffile.TiffFile(tmp_path / "q.tif") as q:
        np.testing.assert_array_equal(p.asarray(), q.asarray())
        assert p.asarray().shape == image.shape
        assert p.pages[0].tags["XResolution"].value == q.pages[0].tags["XResolution"].value  # 0.5 um kept
    bad = run("predict", "--model", model, "--image", tmp_path / "two.tif", "--out", tmp_path / "p.tif",
              "--device", "cpu", "--channel", "2", tmp=tmp_path)
    assert bad.returncode == 1 and "--channel 2: image" in bad.stderr and "has 2 channels: give 0 to 1" in bad.stderr
    none = run("predict", "--model", model, "--image", tmp_path / "one.tif", "--out", tmp_path / "q.tif",
               "--device", "cpu", "--channel", "0", tmp=tmp_path)
    assert none.returncode == 1 and "has no channel axis (axes YX): leave --channel out" in none.stderr
    # review 44: a (2, Y, X) .npy is read as a stack; the fix names --axes
    np.save(tmp_path / "two.npy", np.stack([other, image]))
    stack = run("predict", "--model", model, "--image", tmp_path / "two.npy", "--out", tmp_path / "r.tif",
                "--device", "cpu", "--channel", "1", tmp=tmp_path)
    assert stack.returncode == 1 and "if axis 0 holds the channels, say so with --axes CYX" in stack.stderr
    named = run("predict", "--model", model, "--image", tmp_path / "two.npy", "--out", tmp_path / "r.tif",
                "--device", "cpu", "--channel", "1", "--axes", "CYX", tmp=tmp_path)
    assert named.returncode == 0, named.stderr
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "r.tif"), tifffile.imread(tmp_path / "q.tif"))


def test_channel_with_a_model_of_as_many_channels_as_the_file_says_drop_it(tmp_path) -> None:
    """Trial 48: --channel 1 with a 2-channel model on a 2-channel file said the file 'has 1' channel."""
    from napari_medml.segmentation.task import train

    s = touching_objects_2d(0, shape=(48, 64))
    two = np.stack([s.image, -s.image]).astype(np.float32)
    config = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(32, 32), val_fraction=0.0),
                         augment=AugmentConfig.none(), model=ModelConfig(channels=4, depth=2),
                         optim=OptimConfig(epochs=1, steps_per_epoch=2), device="cpu")
    model = train(two, (s.labels > 0).astype(np.uint8), config, channel_axis=0).save(tmp_path / "model")
    tifffile.imwrite(tmp_path / "two.tif", two, imagej=True, metadata={"axes": "CYX"})
    refused = run("predict", "--model", model, "--image", tmp_path / "two.tif", "--out", tmp_path / "p.tif",
                  "--device", "cpu", "--channel", "1", tmp=tmp_path)
    assert refused.returncode == 1 and refused.stderr.strip().endswith(
        f"--channel 1 takes one channel, for a one-channel model; this model takes 2 channels and image "
        f"'{tmp_path / 'two.tif'}' has them (axes CYX): drop --channel"), refused.stderr
    done = run("predict", "--model", model, "--image", tmp_path / "two.tif", "--out", tmp_path / "p.tif",
               "--device", "cpu", tmp=tmp_path)
    assert done.returncode == 0 and tifffile.imread(tmp_path / "p.tif").shape == (48, 64), done.stderr
