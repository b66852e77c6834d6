"""Validation of a segmentation network during training: sliding-window inference on
the held-out regions, loss and per-class Dice/IoU over the labelled voxels only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["missing_from_validation", "selection_key", "validate"]


def validate(network: torch.nn.Module, regions: Sequence[Any], *, patch_size: Sequence[int],
             class_ids: Sequence[int], loss_fn: Callable[..., torch.Tensor], device: torch.device,
             amp: bool, sw_batch_size: int) -> dict[str, Any]:
    """Score ``network`` on ``regions`` (``data.Region``: labels encoded ``channel + 1``, 0 unlabeled).

    Counts are accumulated on the device and read back once at the end (one sync).
    Leaves the network in eval mode.

    Returns
    -------
    dict
        ``val_loss``, ``val_dice`` and ``val_iou`` (class id -> value, for the classes the
        held-out labels hold), ``val_mean_dice`` (their mean), ``val_metrics`` (``accuracy``)
        and ``val_false_classes`` (the ids of classes predicted there that the labels lack).
    """
    from monai.inferers import sliding_window_inference

    network.eval()
    k = len(class_ids)
    # int64 counts (exact, and float64 is missing on MPS); the loss sum in float32
    counts = torch.zeros(3, k, dtype=torch.int64, device=device)  # tp, fp, fn per channel
    totals = torch.zeros(2, dtype=torch.int64, device=device)  # labelled, correct
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)
    ctx = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
    with torch.inference_mode(), ctx:
        for region in regions:
            x = torch.from_numpy(region.image)[None].to(device)
            logits = sliding_window_inference(x, tuple(patch_size), sw_batch_size=sw_batch_size,
                                              predictor=network, overlap=0.25, mode="gaussian")
            logits = (logits.as_tensor() if hasattr(logits, "as_tensor") else logits).float()
            label = torch.from_numpy(region.label)[None].to(device)
            mask = label > 0
            gt = label.long() - 1
            n = mask.sum()
            loss_sum += loss_fn(logits, gt, mask).float() * n
            totals[0] += n
            pred = logits.argmax(1)
            totals[1] += ((pred == gt) & mask).sum()
            for c in range(1, k):
                p, g = (pred == c) & mask, (gt == c) & mask
                counts[0, c] += (p & g).sum()
                counts[1, c] += (p & ~g).sum()
                counts[2, c] += (~p & g).sum()
    (tp, fp, fn) = counts.cpu().numpy().astype(np.float64)
    labelled, correct = (float(v) for v in totals.cpu())
    loss_total = float(loss_sum.cpu())
    dice, iou, false = {}, {}, []
    for c in range(1, k):
        if tp[c] + fn[c] > 0:  # a class the held-out labels hold; one they lack is not scored (as nnU-Net: its
            dice[int(class_ids[c])] = float(2 * tp[c] / (2 * tp[c] + fp[c] + fn[c]))  # 0 halved the mean of two
            iou[int(class_ids[c])] = float(tp[c] / (tp[c] + fp[c] + fn[c]))
        elif fp[c] > 0:
            false.append(int(class_ids[c]))
    return {"val_loss": loss_total / max(labelled, 1.0), "val_dice": dice, "val_iou": iou,
            "val_mean_dice": float(np.mean(list(dice.values()))) if dice else None,
            "val_metrics": {"accuracy": correct / max(labelled, 1.0)}, "val_false_classes": false}


def selection_key(fields: Mapping[str, Any], metric: str) -> tuple[float, ...] | None:
    """The key that picks the best epoch (higher is better) from :func:`validate`'s fields.

    Parameters
    ----------
    fields : mapping
        :func:`validate`'s result.
    metric : {"val_dice", "val_loss", "val_accuracy"}
        ``OptimConfig.early_stopping_metric``.

    Returns
    -------
    tuple of float or None
        The metric (the loss negated), then the negated validation loss, which decides between
        epochs of equal metric. For ``val_dice``, the mean Dice of the classes the validation
        labels hold (``val_mean_dice``, as printed); where they hold none, 1 when no foreground
        is predicted there (nothing to find, nothing found; MONAI's
        ``DiceMetric(ignore_empty=False)``) and 0 when some is (``val_false_classes``), so an
        epoch that predicts none can become the best. None when nothing was scored.
    """
    loss = fields.get("val_loss")
    if metric == "val_loss":
        return None if loss is None else (-float(loss),)
    if metric == "val_accuracy":
        value = (fields.get("val_metrics") or {}).get("accuracy")
    elif loss is None:  # no labelled voxel was held out: nothing was scored
        return None
    else:
        value = fields.get("val_mean_dice")  # the mean the epoch line prints
        if value is None:  # no class held out: nothing to find, and none found is right
            value = 0.0 if fields.get("val_false_classes") else 1.0
    if value is None:
        return None
    return (float(value),) if loss is None else (float(value), -float(loss))


def missing_from_validation(val_regions: Sequence[Any], labels: Sequence[np.ndarray],
                            class_ids: Sequence[int]) -> str | None:
    """A note naming the foreground classes the held-out labels lack, or None.

    Parameters
    ----------
    val_regions : sequence of Region
        The held-out part after the split (labels encoded ``channel + 1``, 0 unlabeled).
    labels : sequence of np.ndarray
        All encoded labels (training and held out).
    class_ids : sequence of int
        Class id per channel (background first).

    Returns
    -------
    str or None
        None also when the held-out part holds no foreground at all (the split's own note
        says so).
    """
    from napari_medml.segmentation.split import class_id_text, present_classes

    held = {v for v in set().union(*(present_classes(r.label) for r in val_regions)) if v >= 2}
    lost = sorted({v for v in set().union(*(present_classes(lab) for lab in labels)) if v >= 2} - held)
    if not held or not lost:
        return None
    many = len(lost) > 1
    return (f"note: class{'es' if many else ''} {class_id_text(lost, class_ids)} {'are' if many else 'is'} not in the "
            f"held-out part: {'their' if many else 'its'} Dice is not scored, and the validation mean is over "
            f"class{'es' if len(held) > 1 else ''} {class_id_text(sorted(held), class_ids)} (label "
            f"{'them' if many else 'it'} in the held-out region too to measure {'them' if many else 'it'})")
