"""Masked losses: unlabeled voxels never matter; dense masks agree with the usual losses."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from napari_medml.config import OptimConfig  # noqa: E402
from napari_medml.errors import ConfigError  # noqa: E402
from napari_medml.nn.losses import build_loss, masked_ce, masked_dice, masked_focal  # noqa: E402


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


# --- the library-based losses give the numbers of the hand-written ones they replaced ---


def _reference(name, logits, target, mask, weight=None, smoothing=0.0):
    """The hand-written masked losses of schema 1, kept here as the reference."""
    import torch.nn.functional as F

    m = mask.float()
    if name == "ce":
        t = torch.where(mask, target, torch.zeros_like(target))
        per = F.cross_entropy(logits, t, weight=weight, reduction="none", label_smoothing=smoothing)
        norm = m if weight is None else m * weight[t]
        return (per * m).sum() / norm.sum().clamp_min(1e-5)
    if name == "dice":
        t = torch.where(mask, target, torch.zeros_like(target))
        probs = torch.softmax(logits, 1) * m[:, None]
        onehot = F.one_hot(t, logits.shape[1]).movedim(-1, 1).float() * m[:, None]
        dims = [0, *range(2, logits.dim())]
        dice = (2 * (probs * onehot).sum(dims) + 1e-5) / (probs.sum(dims) + onehot.sum(dims) + 1e-5)
        return 1 - dice.mean() if weight is None else 1 - (dice * weight).sum() / weight.sum()
    if name == "focal":
        t = torch.where(mask, target, torch.zeros_like(target))
        logp = torch.log_softmax(logits, 1).gather(1, t[:, None])[:, 0]
        per = -((1 - logp.exp()) ** 2) * logp
        if weight is not None:
            per = per * weight[t]
        return (per * m).sum() / m.sum().clamp_min(1e-5)
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["ce", "dice", "focal"])
@pytest.mark.parametrize("weighted", [False, True])
def test_library_losses_match_the_hand_written_reference(name, weighted):
    logits, target, mask = _batch(5)
    weight = torch.tensor([1.0, 2.0, 0.5]) if weighted else None
    fn = {"ce": masked_ce, "dice": masked_dice, "focal": masked_focal}[name]
    kwargs = {"weight": weight}
    if name == "ce":
        kwargs["label_smoothing"] = 0.1
    ref = _reference(name, logits, target, mask, weight, 0.1 if name == "ce" else 0.0)
    assert float(fn(logits, target, mask, **kwargs)) == pytest.approx(float(ref), rel=1e-5, abs=1e-6)


def test_monai_masked_dice_counts_unlabeled_voxels_so_it_is_not_used():
    """MONAI's MaskedDiceLoss masks logits and target before the softmax: an unlabeled
    voxel then counts as a uniform prediction of class 0. Ours ignores it, as a Dice over
    the labelled voxels alone does."""
    from monai.losses import DiceLoss, MaskedDiceLoss

    logits, target, mask = _batch(6)
    picked = logits.movedim(1, -1)[mask].T[None]  # (1, K, N) labelled voxels only
    only_labelled = DiceLoss(softmax=True, to_onehot_y=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)(
        picked, target[mask][None, None])
    ours = masked_dice(logits, target, mask)
    theirs = MaskedDiceLoss(softmax=True, to_onehot_y=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)(
        logits, target[:, None], mask=mask[:, None].float())
    assert float(ours) == pytest.approx(float(only_labelled), rel=1e-4)
    assert abs(float(theirs) - float(only_labelled)) > 0.05
