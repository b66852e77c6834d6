"""Masked losses: unlabeled voxels never matter; dense masks agree with the usual losses."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from napari_medml.config import OptimConfig  # noqa: E402
from napari_medml.errors import ConfigError  # noqa: E402
from napari_medml.losses import build_loss, masked_ce, masked_dice  # noqa: E402


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 8, 8, 8, generator=g)
    target = torch.randint(0, 3, (2, 8, 8, 8), generator=g)
    mask = torch.rand(2, 8, 8, 8, generator=g) < 0.1
    return logits, target, mask


@pytest.mark.parametrize("name", ["ce", "dice", "dice_ce", "focal"])
def test_unlabeled_voxels_do_not_change_the_loss(name):
    logits, target, mask = _batch()
    loss = build_loss(OptimConfig(loss=name, class_weights=(1.0, 2.0, 0.5)), 3)
    before = loss(logits, target, mask)
    changed = logits.clone()
    changed[~mask.unsqueeze(1).expand_as(changed)] = torch.randn(int((~mask).sum()) * 3) * 10
    other_target = torch.where(mask, target, (target + 1) % 3)
    after = loss(changed, other_target, mask)
    assert torch.isfinite(before)
    assert float(after) == pytest.approx(float(before), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", ["ce", "dice", "dice_ce", "focal"])
def test_loss_gradients_vanish_at_unlabeled_voxels(name):
    logits, target, mask = _batch(1)
    logits.requires_grad_(True)
    build_loss(OptimConfig(loss=name), 3)(logits, target, mask).backward()
    grad_unlabeled = logits.grad.abs().sum(1)[~mask]
    assert float(grad_unlabeled.max()) == 0.0
    assert float(logits.grad.abs().sum()) > 0


def test_dense_mask_matches_pytorch_and_monai():
    from monai.losses import DiceLoss

    logits, target, _ = _batch(2)
    full = torch.ones_like(target, dtype=torch.bool)
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert float(masked_ce(logits, target, full)) == pytest.approx(float(ce), rel=1e-5)
    monai_dice = DiceLoss(softmax=True, to_onehot_y=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)
    ref = monai_dice(logits, target.unsqueeze(1))
    assert float(masked_dice(logits, target, full)) == pytest.approx(float(ref), rel=1e-4)


def test_perfect_prediction_has_low_loss():
    _, target, mask = _batch(3)
    logits = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float() * 20
    for name in ("ce", "dice", "dice_ce", "focal"):
        assert float(build_loss(OptimConfig(loss=name), 3)(logits, target, mask)) < 1e-3


def test_empty_mask_gives_zero_not_nan():
    logits, target, mask = _batch(4)
    for name in ("ce", "dice_ce", "focal"):
        value = build_loss(OptimConfig(loss=name), 3)(logits, target, torch.zeros_like(mask))
        assert torch.isfinite(value)


def test_class_weights_must_match_classes():
    with pytest.raises(ConfigError, match="one weight per class"):
        build_loss(OptimConfig(class_weights=(1.0, 2.0)), 3)
