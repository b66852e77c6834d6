"""Self-supervised pretraining: corruption, the round trip pretrain -> bundle -> train
--init-from -> predict through the API, reconstruction and the anomaly map."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from napari_medml import api
from napari_medml.engine.fit import run_to_end
from napari_medml.config import (AugmentConfig, DataConfig, ModelConfig, OptimConfig, PretrainConfig,
                                 TrainConfig)
from napari_medml.errors import ConfigError, InputError
from napari_medml.samples import phantom_3d, touching_objects_2d


def pretrain_config(dims: int, patch: tuple[int, ...], **pretrain: object) -> TrainConfig:
    return TrainConfig(task="pretraining", data=DataConfig(spatial_dims=dims, patch_size=patch, batch_size=2),
                       model=ModelConfig(channels=4, depth=2), augment=AugmentConfig.none(),
                       optim=OptimConfig(epochs=3, steps_per_epoch=6, learning_rate=3e-3),
                       pretrain=PretrainConfig(**pretrain), device="cpu", seed=0)


def test_mask_blocks_are_isotropic_in_mm_and_cover_the_ratio():
    from napari_medml.pretraining.data import Corruptor, block_sizes, checker_masks

    assert block_sizes(8, (2.0, 1.0, 1.0), 3) == (4, 8, 8)
    assert block_sizes(8, None, 2) == (8, 8)
    corrupt = Corruptor(PretrainConfig(corruption="mask", mask_ratio=0.5), (4, 8, 8))
    patch = np.ones((1, 16, 64, 64), np.float32)
    out, mask = corrupt(patch, np.random.default_rng(0))
    assert 0.3 < mask.mean() < 0.7
    assert (out[0][mask] == 0).all() and (out[0][~mask] == 1).all()
    first, second = checker_masks((10, 20, 20), (4, 8, 8))
    assert not (first & second).any() and (first | second).all()


def test_patch_shrinks_the_coarse_axis_first():
    from napari_medml.pretraining.data import choose_patch

    patch = choose_patch([(40, 200, 200)], (5.0, 1.0, 1.0), 4, 32 * 64 * 64)
    assert all(p % 4 == 0 for p in patch) and np.prod(patch) <= 32 * 64 * 64
    assert patch[1] == patch[2] and patch[0] * 5.0 <= patch[1] * 1.0 * 5  # Z is short in voxels, not in mm
    assert choose_patch([(10, 12)], None, 8, None) == (16, 16)  # small images: padded up to one patch


def test_config_choices_are_checked():
    with pytest.raises(ConfigError, match="mask_ratio"):
        PretrainConfig(mask_ratio=1.0)
    # trial 27: refused as a run, while such a stored config still loads (review 27)
    still = PretrainConfig(corruption="noise", noise_std=0.0)
    with pytest.raises(ConfigError, match="corruption 'noise' with noise_std 0 corrupts nothing"):
        api.train(np.ones((32, 32)), None, replace(pretrain_config(2, (32, 32)), pretrain=still))
    with pytest.raises(ConfigError, match="unlabeled"):
        api.train(np.zeros((32, 32)), np.zeros((32, 32), int), pretrain_config(2, (32, 32)))
    image = np.random.default_rng(0).random((30, 40), dtype=np.float32)
    with pytest.raises(InputError, match=re.escape("patch size (32, 48) is larger than the smallest image (30, 40): "
                                                   "use a patch of at most (30, 40)")):
        api.train(image, None, pretrain_config(2, (32, 48)))
    divisible = "must be divisible by 2 (2 ** (depth - 1) for depth 2): use (32, 32)"
    with pytest.raises(ConfigError, match=re.escape(divisible)):
        api.train(image, None, pretrain_config(2, (32, 33)))
    with pytest.raises(InputError, match="channel"):
        api.train([np.zeros((32, 32)), np.zeros((2, 32, 32))], None, pretrain_config(2, (32, 32)),
                  channel_axis=None)


@pytest.mark.parametrize("loss", ["mse", "mae"])
def test_pretraining_round_trip_through_the_api(tmp_path, loss):
    """pretrain (3D, anisotropic, two unlabeled volumes) -> bundle -> load_model ->
    train --init-from (the same network) -> predict."""
    p = phantom_3d(seed=0, shape=(16, 32, 32))
    other = phantom_3d(seed=1, shape=(16, 40, 36))
    config = pretrain_config(3, (8, 16, 16), loss=loss)
    model = api.train([p.image, other.image], None, config, spacing=p.spacing)
    losses = [h["val_loss"] for h in model.history]
    assert losses[-1] < losses[0]  # it learns to reconstruct
    bundle = model.save(tmp_path / "pretrained")
    loaded = api.load_model(bundle)
    assert type(loaded).__name__ == "ReconstructionModel" and loaded.config.pretrain.loss == loss
    assert loaded.spacing == p.spacing

    seg_config = TrainConfig(data=DataConfig(spatial_dims=3, patch_size=(8, 16, 16), batch_size=2),
                             model=ModelConfig(channels=4, depth=2, init_from=str(bundle), freeze_stages=1),
                             optim=OptimConfig(epochs=1, steps_per_epoch=3), augment=AugmentConfig.none(),
                             device="cpu")
    notes = []
    gen = api.fit(p.image, p.labels, seg_config, spacing=p.spacing)
    while True:
        try:
            notes.append(next(gen).message)
        except StopIteration as done:
            seg = done.value
            break
    start = seg.provenance["initial_weights"]
    assert start["task"] == "pretraining"
    assert start["loaded"] >= start["total"] - 4  # all but the last up-stage (its width is the classes)
    assert any("tensors of" in n for n in notes)  # the first report says where weights came from
    # the encoder's first stage kept its pretrained weights (frozen)
    name = next(k for k in seg.network.state_dict() if k.endswith("weight"))
    np.testing.assert_array_equal(seg.network.state_dict()[name].numpy(), loaded.network.state_dict()[name].numpy())
    pred = seg.predict(p.image, spacing=p.spacing)
    assert pred.labels.shape == p.image.shape


def test_reconstruction_and_anomaly_map_2d():
    """The error map is high where the image is unlike the rest (a bright square the
    network never saw); the reconstruction has the input's shape and intensity units."""
    s = touching_objects_2d(seed=0, shape=(96, 96))
    image = s.image.astype(np.float32)
    model = api.train(image, None, pretrain_config(2, (32, 32), noise_std=0.1))
    odd = image.copy()
    odd[40:52, 40:52] = image.max() * 2
    result = model.reconstruct(odd)
    assert result.image.shape == odd.shape and result.error.shape == odd.shape
    assert abs(float(result.image.mean()) - float(odd.mean())) < odd.std()
    assert result.error[40:52, 40:52].mean() > 3 * np.median(result.error)
    # a time series: frame by frame, each frame like a single image
    series = np.stack([odd, odd])
    frames = model.reconstruct(series, axes="TYX")
    assert frames.error.shape == series.shape
    np.testing.assert_allclose(frames.error[1], result.error, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("normalization", ["zscore", "zscore_nonzero", "ct", "percentile", "minmax", "none"])
def test_the_reconstruction_goes_back_to_intensity_units_under_every_normalization(normalization):
    """A model continued from a segmentation bundle keeps that bundle's (planned)
    normalization: every method's inverse gives the image back (clipped where it clips)."""
    from napari_medml.pretraining.model import _denormalize
    from napari_medml.preprocessing.normalization import apply_normalization, fit_normalization

    rng = np.random.default_rng(0)
    image = (rng.gamma(2.0, 300.0, size=(2, 24, 24)) + 500.0).astype(np.float32)  # (C, Y, X), far from z-units
    stats = fit_normalization([image], normalization, masks=[image[0] > 1000])
    back = _denormalize(apply_normalization(image.copy(), stats), stats)
    expected = image.copy()
    for c, ch in enumerate(stats["channels"]):
        if "low" in ch:  # ct, percentile and minmax clip
            expected[c] = np.clip(expected[c], ch["low"], ch["high"])
    np.testing.assert_allclose(back, expected, rtol=1e-4, atol=1e-2)


def test_multichannel_images_keep_their_channels():
    s = touching_objects_2d(seed=0, shape=(48, 48))
    image = np.stack([s.image, 1 - s.image], axis=-1).astype(np.float32)  # (Y, X, C)
    config = pretrain_config(2, (16, 16))
    model = api.train(image, None, config, channel_axis=-1)
    assert model.in_channels == 2 and model.network(__import__("torch").zeros(1, 2, 16, 16)).shape[1] == 2
    result = model.reconstruct(image, channel_axis=-1)
    assert result.image.shape == image.shape and result.error.shape == image.shape[:2]
    with pytest.raises(InputError, match="channel"):
        model.reconstruct(image[..., 0])


def _classifier_from(bundle) -> TrainConfig:
    """The unet-encoder classifier of two classes, started from ``bundle``, its first stage frozen."""

    from napari_medml.classification.model import classification_config

    config = classification_config(2, epochs=1, steps_per_epoch=2)
    return replace(config, data=replace(config.data, batch_size=4),
                   model=ModelConfig(network="unet-encoder", channels=4, depth=2, init_from=str(bundle),
                                     freeze_stages=1))


def test_a_classifier_starts_from_a_pretrained_bundle(tmp_path):
    """Classify's 'start from bundle': the 'unet-encoder' classifier carries the U-Net
    encoder's tensor names, so every encoder weight of a pretraining bundle fits."""
    from napari_medml.classification.data import image_samples
    from napari_medml.samples import shape_classes

    sc = shape_classes(seed=0, n=16, size=32)
    pretrained = api.train(list(sc.images), None, pretrain_config(2, (32, 32)))
    bundle = pretrained.save(tmp_path / "pretrained")
    config = _classifier_from(bundle)
    clf = api.train(image_samples(sc.images, labels=sc.labels, input_size=(32, 32)), None, config)
    start = clf.provenance["initial_weights"]
    assert start["task"] == "pretraining"
    encoder = [k for k in clf.network.state_dict() if not k.startswith("head")]
    assert start["loaded"] == len(encoder)  # the whole encoder, nothing of the head
    frozen = encoder[0]  # the first level's first convolution: frozen
    np.testing.assert_array_equal(clf.network.state_dict()[frozen].cpu().numpy(),  # on CUDA where there is one
                                  pretrained.network.state_dict()[frozen].cpu().numpy())
    # trial 39: and a segmentation U-Net starts from that classifier's encoder (it was always refused:
    # "only 18 of 37 learned tensors fit", the advice the width and depth it had)
    image = np.tile(sc.images[:1].astype(np.float32), (1, 2, 2))
    model, said = _train_from(clf.save(tmp_path / "classifier"), image, (image[0] > image.mean()).astype(np.uint8),
                              freeze=1)
    start = model.provenance["initial_weights"]
    assert start["task"] == "classification" and start["encoder_only"] and start["loaded"] == len(encoder)
    assert (f"started from {len(encoder)} of {start['total']} tensors of {tmp_path / 'classifier'} (classification); "
            f"the decoder and the output layer ({start['total'] - len(encoder)} tensors) start new: the bundle's "
            "classifier holds a U-Net encoder alone; the first encoder stage frozen") in said, said
    np.testing.assert_array_equal(model.network.state_dict()[frozen].cpu().numpy(),
                                  clf.network.state_dict()[frozen].cpu().numpy())


def _train_from(bundle, image, labels, *, freeze=0, depth=2):
    config = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(32, 32), batch_size=2),
                         model=ModelConfig(channels=4, depth=depth, init_from=str(bundle), freeze_stages=freeze),
                         optim=OptimConfig(epochs=1, steps_per_epoch=2), augment=AugmentConfig.none(),
                         device="cpu", seed=0)
    gen = api.fit(image, labels, config, channel_axis=0)
    notes = []
    while True:
        try:
            notes.append(next(gen).message)
        except StopIteration as done:
            return done.value, "\n".join(n for n in notes if n)


def test_a_reconstruction_layer_is_never_taken_as_the_segmentation_output_layer(tmp_path):
    """Two image channels and two classes: the pretraining network's output layer (one
    output per image channel) has the shape of the segmentation's (one per class) but
    means something else; it starts new, and the line says so. A segmentation bundle of
    the same shape passes its output layer on (fine-tuning a segmentation)."""
    s = touching_objects_2d(seed=0, shape=(64, 64))
    image = np.stack([s.image, 1 - s.image]).astype(np.float32)  # (C, Y, X), 2 channels
    labels = (s.labels > 0).astype(np.uint8)  # 2 classes with the background
    pretrained = api.train(image, None, pretrain_config(2, (32, 32)), channel_axis=0)
    bundle = pretrained.save(tmp_path / "pretrained")
    seg, notes = _train_from(bundle, image, labels)
    start = seg.provenance["initial_weights"]
    from napari_medml.nn.segmentation import output_tensors

    before, after = pretrained.network.state_dict(), seg.network.state_dict()
    head = output_tensors(seg.network, seg.config.model, 2, 2, 2, patch_size=(32, 32))
    assert head and all(before[k].shape == after[k].shape for k in head)  # it would fit
    assert start["new_head"] is True and head  # the output layer fits in shape but was not copied
    assert start["loaded"] == start["total"] - len(head)
    assert "the output layer starts new (the bundle's is for pretraining)" in notes

    seg_bundle = seg.save(tmp_path / "seg")
    tuned, _ = _train_from(seg_bundle, image, labels)
    assert tuned.provenance["initial_weights"]["new_head"] is False
    assert tuned.provenance["initial_weights"]["loaded"] == tuned.provenance["initial_weights"]["total"]


def test_an_output_layer_of_another_size_starts_new_and_is_not_called_unfit(tmp_path):
    """One image channel pretrained, three classes segmented: the output layers differ in
    shape, which is no sign of another architecture (trial 18)."""
    p = phantom_2d_three_classes()
    pretrained = api.train(p[0], None, pretrain_config(2, (32, 32)))
    seg, notes = _train_from(pretrained.save(tmp_path / "pretrained"), p[0][None], p[1])
    start = seg.provenance["initial_weights"]
    assert start["other_outputs"] and start["unfit"] == 0
    assert "the output layer starts new (the bundle's is for pretraining)" in notes
    assert "do not fit this network" not in notes


def phantom_2d_three_classes() -> tuple[np.ndarray, np.ndarray]:
    s = touching_objects_2d(seed=0, shape=(64, 64))
    labels = np.where(s.labels > 0, 1 + s.labels % 2, 0).astype(np.uint8)  # classes 0, 1, 2
    return s.image.astype(np.float32), labels


def test_freezing_more_stages_than_the_encoder_has_is_refused(tmp_path):
    s = touching_objects_2d(seed=0, shape=(64, 64))
    pretrained = api.train(s.image, None, pretrain_config(2, (32, 32)))
    bundle = pretrained.save(tmp_path / "pretrained")
    labels = (s.labels > 0).astype(np.uint8)
    with pytest.raises(ConfigError, match=r"freeze_stages \(the widget.s frozen stages\) is 9 but this UNet has 1 "
                                          r"encoder stages .*choose 0-1"):
        _train_from(bundle, s.image[None], labels, freeze=9)
    seg, notes = _train_from(bundle, s.image[None], labels, freeze=1)
    assert seg.provenance["initial_weights"]["frozen_stages"] == 1
    assert "; the first encoder stage frozen" in notes


def test_the_pretraining_line_counts_the_images_voxels_and_channels():
    """Not the padded patch: a 20x24 image under a 24x24 patch (a multiple of 8 for depth 4) has 480 voxels."""
    from napari_medml.pretraining.task import PretrainingTask

    image = np.random.default_rng(0).random((2, 20, 24)).astype(np.float32)
    config = replace(pretrain_config(2, None), model=ModelConfig(channels=4, depth=4))
    task = PretrainingTask(config, image, channel_axis=0)
    assert task.start_message().startswith("pretraining on 1 unlabeled image(s), 480 voxels, 2 channels, patch 24x24")


def test_the_start_line_names_what_was_taken_and_frozen():
    from napari_medml.segmentation.task import start_note

    taken = {"loaded": 33, "total": 37, "source": "/b", "task": "pretraining", "new_head": True, "frozen_stages": 2}
    assert start_note(taken) == ("started from 33 of 37 tensors of /b (pretraining); the output layer starts new "
                                 "(the bundle's is for pretraining); the first 2 encoder stages frozen")
    assert start_note({**taken, "new_head": False, "frozen_stages": 0}) == \
        "started from 33 of 37 tensors of /b (pretraining)"
    # a classifier's U-Net encoder of batch norm into an instance-norm U-Net: both are said (review 38)
    encoder = {"loaded": 10, "total": 15, "source": "/c", "task": "classification", "encoder_only": True,
               "absent": 4, "norms": ["batch", "instance"]}
    assert start_note(encoder) == ("started from 10 of 15 tensors of /c (classification); the decoder and the output "
                                   "layer (5 tensors) start new (its instance norm layers: the bundle's network has "
                                   "batch norm): the bundle's classifier holds a U-Net encoder alone")


def test_a_frozen_stage_trains_the_tensors_the_bundle_could_not_give(tmp_path):
    """Pretrained on 2-channel images, trained on 1-channel ones with the first stage frozen:
    the input layer starts new, so it must train (frozen, it stayed random for the whole run),
    while the stage's other tensors keep the bundle's values; the line says why and what."""
    s = touching_objects_2d(seed=0, shape=(64, 64))
    two = np.stack([s.image, 1 - s.image]).astype(np.float32)
    pretrained = api.train(two, None, pretrain_config(2, (32, 32)), channel_axis=0)
    bundle = pretrained.save(tmp_path / "pretrained")
    seg, notes = _train_from(bundle, s.image[None], (s.labels > 0).astype(np.uint8), freeze=1)
    start = seg.provenance["initial_weights"]
    new = [k for k in start["new_tensors"] if k.startswith("model.0.")]  # the first stage's
    assert new and start["thawed"] == len(new) == 2 and start["unfit"] == 2
    params = dict(seg.network.named_parameters())
    assert all(params[k].requires_grad for k in new)
    kept = [k for k in params if k.startswith("model.0.") and k not in new]
    assert kept and not any(params[k].requires_grad for k in kept)
    for k in kept:
        np.testing.assert_array_equal(params[k].detach().cpu().numpy(),
                                      pretrained.network.state_dict()[k].cpu().numpy())
    assert ("2 of the bundle's 15 tensors do not fit this network (2 take the input: 2 channels in the bundle's "
            "network, 1 in this one) and are not used") in notes
    assert "the first encoder stage frozen, except the 2 tensors of it that start new" in notes

    # resumed (or fine-tuned) from that model, the run freezes what its start froze: the optimizer's
    # parameters stay those of the checkpoint (else: "loaded state dict contains a parameter group that
    # doesn't match the size of optimizer's group"), and the bundle still says where the weights came from
    from napari_medml.segmentation.task import start_network

    again, weights = start_network(seg.config, 1, 2, (32, 32), None, base=seg)
    assert weights is None
    assert [k for k, p in again.named_parameters() if p.requires_grad] == \
        [k for k, p in seg.network.named_parameters() if p.requires_grad]


def test_the_line_tells_the_input_layer_from_other_tensors_that_do_not_fit(tmp_path):
    """A 2-channel bundle with batch norm, started from by a 1-channel instance-norm network:
    2 tensors take the input, the others are norm layers."""
    s = touching_objects_2d(seed=0, shape=(64, 64))
    two = np.stack([s.image, 1 - s.image]).astype(np.float32)
    config = pretrain_config(2, (32, 32))
    config = config.__class__(**{**config.__dict__, "model": ModelConfig(channels=4, depth=2, norm="batch")})
    bundle = api.train(two, None, config, channel_axis=0).save(tmp_path / "pretrained")
    _, notes = _train_from(bundle, s.image[None], (s.labels > 0).astype(np.uint8))
    assert "(2 take the input: 2 channels in the bundle's network, 1 in this one; " in notes
    assert "more: another norm, width or depth) and are not used" in notes


def test_a_classifier_trains_the_tensors_of_its_frozen_stages_that_start_new(tmp_path):
    from napari_medml.classification.data import image_samples
    from napari_medml.samples import shape_classes

    sc = shape_classes(seed=0, n=16, size=32)
    two = [np.stack([im, 1 - im]).astype(np.float32) for im in sc.images[:4]]
    pretrained = api.train(two, None, pretrain_config(2, (32, 32)), channel_axis=0)
    bundle = pretrained.save(tmp_path / "pretrained")
    config = _classifier_from(bundle)
    gen = api.fit(image_samples(sc.images, labels=sc.labels, input_size=(32, 32)), None, config)
    first = next(gen).message
    for _ in gen:
        pass
    assert "(its input layer takes 1 channel, the bundle's 2: it starts new)" in first
    assert "; the first encoder stage frozen, except the 2 tensors of it that start new" in first
    # a network given that the bundle's weights cannot fit is refused before its norm is checked (trial 27:
    # resnet18 was told to use batch norm, and then that no weights fit)
    from napari_medml.classification.transfer import start_architecture

    resnet = replace(config, model=replace(config.model, network="resnet18"))
    with pytest.raises(InputError, match=r"holds a 'unet' network, whose weights fit only the classifier "
                       r"'unet-encoder', not 'resnet18': leave out --network to take it"):
        start_architecture(resnet, 2, keep={"network"}, source=bundle)


def test_a_2d_bundle_under_a_3d_network_is_refused_though_its_biases_fit(tmp_path):
    """Biases and norm scales are about half of a U-Net's tensors and fit in 2D and 3D alike: a
    depth-4 3D network took 21 of its 37 tensors from a 2D bundle, not one convolution kernel."""
    from napari_medml.bundles.transfer import transfer_weights
    from napari_medml.nn.segmentation import build_network

    s = touching_objects_2d(seed=0, shape=(64, 64))
    config = pretrain_config(2, (32, 32))
    config = config.__class__(**{**config.__dict__, "model": ModelConfig(channels=4, depth=4),
                                 "optim": OptimConfig(epochs=1, steps_per_epoch=1)})
    bundle = api.train(s.image, None, config).save(tmp_path / "pretrained")
    network = build_network(ModelConfig(channels=4, depth=4), 3, 1, 2, patch_size=(16, 32, 32))
    with pytest.raises(InputError, match=r"only 0 of this network's \d+ convolution kernels fit .* the bundle's "
                                         r"network is 2D and this one 3D: train a 2D network"):
        transfer_weights(network, bundle)
    # the other way, the fix must not be a 3D network for a 2D image (trial 27: it was, and was refused)
    volume = phantom_3d(seed=0, shape=(16, 32, 32)).image
    config3 = replace(config, data=replace(config.data, spatial_dims=3, patch_size=(16, 32, 32)))
    bundle3 = api.train(volume, None, config3).save(tmp_path / "pretrained3d")
    network2 = build_network(ModelConfig(channels=4, depth=4), 2, 1, 2, patch_size=(32, 32))
    with pytest.raises(InputError, match=r"the bundle's network is 3D and this one 2D: on volumes, train a 3D network "
                                         r"\(--spatial-dims 3; the widget.s 2D/3D\); on 2D images, start from a bundle "
                                         r"pretrained on 2D"):
        transfer_weights(network2, bundle3)


def test_a_batch_norm_network_says_which_of_its_tensors_the_bundle_lacks(tmp_path):
    # an instance-norm bundle under a batch-norm network: "started from 22 of 56 tensors", without a word
    s = touching_objects_2d(seed=0, shape=(64, 64))
    bundle = api.train(s.image[None], None, pretrain_config(2, (32, 32)), channel_axis=0).save(tmp_path / "pre")
    run = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(32, 32), batch_size=2),
                      model=ModelConfig(channels=4, depth=2, norm="batch", init_from=str(bundle)),
                      optim=OptimConfig(epochs=1, steps_per_epoch=1), augment=AugmentConfig.none(), device="cpu")
    gen = api.fit(s.image[None], (s.labels > 0).astype(np.uint8), run, channel_axis=0)
    first = next(gen).message
    absent = run_to_end(gen).provenance["initial_weights"]["absent"]
    assert absent > 0 and (f"; {absent} of this network's tensors are not in the bundle and start new (its batch "
                           "norm layers: the bundle's network has instance norm)") in first, first


@pytest.mark.parametrize("image, said", [(np.zeros((0, 16, 16), np.float32), "has no voxels (shape (0, 16, 16))"),
                                         (np.zeros((8, 8), bool), "is constant")])
def test_an_empty_or_constant_boolean_image_is_refused_in_one_line(image, said):
    from napari_medml.preprocessing.inputs import check_not_constant

    with pytest.raises(InputError, match=re.escape(f"image 'x.npy' {said}")):
        check_not_constant(image, "image 'x.npy'")
    mask = np.zeros((8, 8), bool)
    mask[2:4] = True
    check_not_constant(mask, "image 'x.npy'")  # a mask with both values passes (np.ptp refused any boolean)


def test_images_of_different_voxel_sizes_are_resampled_to_their_median_in_any_order():
    # the task took the first image's spacing for all: blocks and patch changed with the order of the images
    fine = phantom_3d(seed=0, shape=(32, 48, 48)).image  # voxel size 1 x 0.5 x 0.5
    coarse = phantom_3d(seed=1, shape=(16, 24, 24)).image  # the same extent at 2 x 1 x 1
    third = phantom_3d(seed=2, shape=(16, 24, 24)).image
    images, sizes = [fine, coarse, third], [(1.0, 0.5, 0.5), (2.0, 1.0, 1.0), (2.0, 1.0, 1.0)]
    config = pretrain_config(3, (8, 16, 16), corruption="mask", mask_block=4)
    config = replace(config, optim=replace(config.optim, epochs=1, steps_per_epoch=1))
    reports, models = [], []
    for order in ([0, 1, 2], [1, 2, 0]):
        gen = api.fit([images[i] for i in order], None, config, spacing=[sizes[i] for i in order])
        reports.append(next(gen).message)
        models.append(run_to_end(gen))
    for message, model in zip(reports, models):
        assert model.spacing == (2.0, 1.0, 1.0)  # the median
        assert [(s.operation, s.params) for s in model.config.data.preprocessing] == [
            ("resample", {"target_spacing": (2.0, 1.0, 1.0)})]
        assert "voxel sizes 1x0.5x0.5, 2x1x1: each is resampled to their median 2x1x1" in message
    # the fine image's reconstruction comes back on its own grid
    assert models[0].reconstruct(fine, spacing=sizes[0]).image.shape == fine.shape


def test_a_dynunet_of_other_kernel_sizes_is_named_as_such_and_each_tensor_counts_once(tmp_path):
    # a DynUNet pretrained at 3 x 1 x 1 mm (first kernels 1 x 3 x 3) started one at 1 mm (3 x 3 x 3):
    # the line blamed another norm, width or depth, and counted the skip_layers aliases twice
    p = phantom_3d(seed=0, shape=(16, 32, 32))
    net = ModelConfig(network="dynunet", channels=4, depth=3)
    config = replace(pretrain_config(3, (16, 32, 32)), model=net)
    config = replace(config, optim=replace(config.optim, epochs=1, steps_per_epoch=1))
    bundle = api.train(p.image, None, config, spacing=(3.0, 1.0, 1.0)).save(tmp_path / "pretrained")
    start = TrainConfig(data=DataConfig(spatial_dims=3, patch_size=(16, 16, 32), batch_size=2),
                        model=replace(net, init_from=str(bundle)), optim=OptimConfig(epochs=1, steps_per_epoch=1),
                        augment=AugmentConfig.none(), device="cpu", seed=0)
    gen = api.fit(p.image, p.labels, start, spacing=(1.0, 1.0, 1.0))
    notes = "\n".join(r.message for r in [next(gen)] if r.message)
    model = run_to_end(gen)
    weights = model.provenance["initial_weights"]
    unique = {t.data_ptr() for t in model.network.state_dict().values()}
    assert weights["total"] == len(unique) < len(model.network.state_dict())
    assert weights["kernel_unfit"] >= 1
    assert (f"{weights['kernel_unfit']} have other kernel sizes: a DynUNet plans its kernels from the voxel size "
            "and patch, and the bundle's were planned for others") in notes


def test_frozen_stages_keep_their_batch_norm_statistics(tmp_path):
    # the frozen stages' weights stayed, but their running means and variances followed the new data
    s = touching_objects_2d(seed=0, shape=(64, 64))
    config = replace(pretrain_config(2, (32, 32)), model=ModelConfig(channels=4, depth=2, norm="batch"))
    bundle = api.train(s.image[None], None, config, channel_axis=0).save(tmp_path / "pretrained")
    run = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(32, 32), batch_size=2),
                      model=ModelConfig(channels=4, depth=2, norm="batch", init_from=str(bundle), freeze_stages=1),
                      optim=OptimConfig(epochs=1, steps_per_epoch=2), augment=AugmentConfig.none(), device="cpu")
    model = api.train(3 * s.image[None] + 1, (s.labels > 0).astype(np.uint8), run, channel_axis=0)
    start = api.load_model(bundle).network.state_dict()
    after = model.network.state_dict()
    frozen = [k for k in after if k.startswith("model.0.") and k.endswith(("running_mean", "running_var"))]
    assert frozen, list(after)
    for k in frozen:
        np.testing.assert_array_equal(after[k].numpy(), start[k].numpy())
    later = [k for k in after if k.startswith("model.1.") and k.endswith("running_mean")]
    assert any(not np.array_equal(after[k].numpy(), start[k].numpy()) for k in later)
    # review 27: a new input layer (a bundle of 2 channels) changes what every norm after it sees: they follow
    two = replace(config, model=ModelConfig(channels=4, depth=2, norm="batch"))
    bundle2 = api.train(np.stack([s.image, 1 - s.image]), None, two, channel_axis=0).save(tmp_path / "two")
    run2 = replace(run, model=replace(run.model, init_from=str(bundle2)))
    model2 = api.train(3 * s.image[None] + 1, (s.labels > 0).astype(np.uint8), run2, channel_axis=0)
    assert model2.provenance["initial_weights"]["thawed"] == 2
    start2, after2 = api.load_model(bundle2).network.state_dict(), model2.network.state_dict()
    assert all(not np.array_equal(after2[k].numpy(), start2[k].numpy()) for k in frozen if k.endswith("mean"))


def test_a_dynunet_bundles_skip_layer_names_count_once_under_another_norm(tmp_path):
    # review 27: the bundle's tensors the new network lacks counted once per name (130 of 147 for 65 of 82)
    from napari_medml.bundles.transfer import transfer_weights
    from napari_medml.nn.segmentation import build_network

    batch = ModelConfig(network="dynunet", channels=4, depth=3, norm="batch")
    model = api.train(phantom_3d(seed=0, shape=(16, 32, 32)).image, None,
                      replace(pretrain_config(3, (16, 32, 32)), model=batch), spacing=(1.0, 1.0, 1.0))
    distinct = len({t.data_ptr() for t in model.network.state_dict().values()})
    assert distinct < len(model.network.state_dict())  # its skip_layers reach the same tensors again
    network = build_network(replace(batch, norm="instance"), 3, 1, 1, patch_size=(16, 32, 32),
                            spacing=(1.0, 1.0, 1.0))
    weights = transfer_weights(network, model.save(tmp_path / "dyn"))
    assert weights["bundle_tensors"] == distinct
    assert weights["unfit"] == distinct - weights["loaded"]


def test_a_norm_only_mismatch_advises_the_bundles_norm(tmp_path):
    # review 27: a batch-norm DynUNet from an instance-norm bundle of the same width and depth was
    # refused with the advice to train with that width and depth, which it had
    from napari_medml.bundles.transfer import transfer_weights
    from napari_medml.nn.segmentation import build_network

    net = ModelConfig(network="dynunet", channels=4, depth=3)
    model = api.train(phantom_3d(seed=0, shape=(16, 32, 32)).image, None,
                      replace(pretrain_config(3, (16, 32, 32)), model=net), spacing=(1.0, 1.0, 1.0))
    batch = build_network(replace(net, norm="batch"), 3, 1, 2, patch_size=(16, 32, 32), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(InputError, match=r"the bundle's network has width 4, depth 3 and instance norm: train with "
                                         r"the same \(--features 4 --depth 3 --norm instance; in the widget"):
        transfer_weights(batch, model.save(tmp_path / "dyn"))
