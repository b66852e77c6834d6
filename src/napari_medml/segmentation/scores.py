"""In-place operations on the blended scores ``(K, *spatial)`` and the input
``(C, *spatial)`` of a prediction, on their device: softmax, argmax to uint8 labels,
intensity normalisation; and the label dtype for the class ids."""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["argmax_uint8", "label_dtype", "normalize_", "softmax_"]


def softmax_(logits: torch.Tensor) -> None:
    """Softmax over the channel axis of ``(K, *spatial)``, in place: no second volume."""
    logits.sub_(logits.amax(0, keepdim=True)).exp_()
    logits.div_(logits.sum(0, keepdim=True))


def argmax_uint8(probs: torch.Tensor) -> np.ndarray:
    """Channel argmax of ``(K, *spatial)`` scores as a uint8 host array ``spatial``, on the
    tensor's device; ties go to the first channel, as ``torch.argmax``. A NaN score never wins
    (``torch.argmax`` picks it); the scores of a prediction are finite (its input is checked).

    Class by class, keeping the best score so far: torch's CPU argmax over the first
    (outermost) axis took 10 s for 3 x 200 x 512 x 512 on 2 cores, this 0.5 s. Chunked
    along the first spatial axis so that no int64 or second score volume is made; only
    the uint8 labels are copied from a GPU.
    """
    out = np.empty(tuple(probs.shape[1:]), dtype=np.uint8)
    step = max(1, 2**24 // max(1, math.prod(probs.shape[2:])))
    for start in range(0, probs.shape[1], step):
        part = probs[:, start:start + step]
        labels = torch.zeros(part.shape[1:], dtype=torch.uint8, device=part.device)
        best = part[0].clone()
        for k in range(1, part.shape[0]):
            labels.masked_fill_(part[k] > best, k)
            torch.maximum(best, part[k], out=best)
        out[start:start + step] = labels.cpu().numpy()
    return out


def normalize_(x: torch.Tensor, stats: dict) -> None:
    """``normalization.apply_normalization`` on a ``(C, *spatial)`` tensor, in place (same float32 arithmetic)."""
    method = stats.get("method", "none")
    for c, s in enumerate(stats.get("channels", [])):
        if method == "ct":
            x[c].clamp_(s["low"], s["high"])
        if method in ("zscore", "zscore_nonzero", "ct"):
            x[c].sub_(s["mean"]).div_(max(s["std"], 1e-8))
        elif method in ("percentile", "minmax"):
            x[c].clamp_(s["low"], s["high"]).sub_(s["low"]).div_(max(s["high"] - s["low"], 1e-8))


def label_dtype(max_id: int) -> type:
    """The smallest unsigned integer dtype that holds label ids up to ``max_id``."""
    return (np.uint8 if max_id < 256 else np.uint16 if max_id < 65536 else np.uint32 if max_id < 2**32
            else np.uint64)
