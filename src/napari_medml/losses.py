"""Segmentation losses with an ignore mask, for scribble (sparse) labels.

MONAI's DiceLoss/DiceCELoss/FocalLoss have no ignore mask, and unlabeled voxels
must contribute nothing (not "background"), so the four losses are written here on
top of ``torch.nn.functional``.  All take ``logits`` (B, K, *spatial), ``target``
(B, *spatial) integer channel indices and ``mask`` (B, *spatial) bool (True =
labelled); in dense mode the mask is all True.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from napari_medml.config import OptimConfig
from napari_medml.errors import ConfigError

__all__ = ["LossFn", "build_loss", "masked_ce", "masked_dice", "masked_dice_ce", "masked_focal"]

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
_EPS = 1e-5


def _prepare(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if target.dim() == logits.dim():  # (B, 1, *spatial) -> (B, *spatial)
        target = target[:, 0]
    if mask.dim() == logits.dim():
        mask = mask[:, 0]
    target = torch.where(mask, target.long(), torch.zeros_like(target, dtype=torch.long))
    return target, mask.to(logits.dtype if logits.is_floating_point() else torch.float32)


def masked_ce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *,
              weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy averaged over labelled voxels (weighted like PyTorch's ``mean``)."""
    target, m = _prepare(logits, target, mask)
    per_voxel = F.cross_entropy(logits.float(), target, weight=weight, reduction="none",
                                label_smoothing=label_smoothing)
    norm = m if weight is None else m * weight[target]
    return (per_voxel * m).sum() / norm.sum().clamp_min(_EPS)


def masked_dice(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *,
                weight: torch.Tensor | None = None) -> torch.Tensor:
    """Soft Dice over the batch (nnU-Net's batch Dice), counting labelled voxels only."""
    target, m = _prepare(logits, target, mask)
    k = logits.shape[1]
    probs = torch.softmax(logits.float(), dim=1) * m.unsqueeze(1)
    onehot = F.one_hot(target, k).movedim(-1, 1).to(probs.dtype) * m.unsqueeze(1)
    dims = [0, *range(2, logits.dim())]
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + _EPS) / (denom + _EPS)
    if weight is None:
        return 1.0 - dice.mean()
    return 1.0 - (dice * weight).sum() / weight.sum().clamp_min(_EPS)


def masked_focal(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *,
                 weight: torch.Tensor | None = None, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al.) averaged over labelled voxels; ``weight`` acts as alpha."""
    target, m = _prepare(logits, target, mask)
    logp = torch.log_softmax(logits.float(), dim=1).gather(1, target.unsqueeze(1))[:, 0]
    per_voxel = -((1 - logp.exp()) ** gamma) * logp
    if weight is not None:
        per_voxel = per_voxel * weight[target]
    return (per_voxel * m).sum() / m.sum().clamp_min(_EPS)


def masked_dice_ce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *,
                   weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """Dice + cross-entropy, the nnU-Net default."""
    return (masked_dice(logits, target, mask, weight=weight)
            + masked_ce(logits, target, mask, weight=weight, label_smoothing=label_smoothing))


def build_loss(config: OptimConfig, num_classes: int,
               device: torch.device | str = "cpu") -> LossFn:
    """The loss named by ``config.loss`` with its class weights and label smoothing.

    Parameters
    ----------
    config : OptimConfig
        ``loss``, ``class_weights`` (one per output channel, background first) and
        ``label_smoothing``.
    num_classes : int
        Output channels, background included.
    device : torch.device or str
        Where the class weights live.

    Returns
    -------
    callable
        ``loss(logits, target, mask) -> scalar tensor``.
    """
    weight = _class_weights(config.class_weights, num_classes, device)
    smoothing = config.label_smoothing
    if config.loss == "ce":
        return lambda lo, t, m: masked_ce(lo, t, m, weight=weight, label_smoothing=smoothing)
    if config.loss == "dice":
        return lambda lo, t, m: masked_dice(lo, t, m, weight=weight)
    if config.loss == "dice_ce":
        return lambda lo, t, m: masked_dice_ce(lo, t, m, weight=weight, label_smoothing=smoothing)
    if config.loss == "focal":
        return lambda lo, t, m: masked_focal(lo, t, m, weight=weight)
    raise ConfigError(f"unknown loss {config.loss!r}: choose ce, dice, dice_ce or focal")


def _class_weights(weights: Sequence[float] | None, num_classes: int,
                   device: torch.device | str) -> torch.Tensor | None:
    if weights is None:
        return None
    if len(weights) != num_classes:
        raise ConfigError(
            f"class_weights has {len(weights)} values but the labels give {num_classes} classes "
            "(background first): give one weight per class"
        )
    if any(w < 0 for w in weights):
        raise ConfigError("class_weights must be >= 0")
    return torch.as_tensor(weights, dtype=torch.float32, device=device)
