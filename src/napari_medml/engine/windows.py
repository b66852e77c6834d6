"""Sliding-window prediction shared by the tasks: how many windows MONAI visits, and the
network wrapped as its predictor (counts windows for a progress bar, obeys a stop token,
float16 autocast on CUDA)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from napari_medml.engine.devices import autocast
from napari_medml.errors import raise_if_stopped

__all__ = ["count_windows", "window_predictor"]


def count_windows(spatial: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Windows MONAI's ``sliding_window_inference`` visits (its scan-interval rule).

    Parameters
    ----------
    spatial : sequence of int
        The image's spatial shape.
    roi : sequence of int
        The window (patch) size, same axes.
    overlap : float
        In [0, 1).

    Returns
    -------
    int
        Windows per pass over the image.
    """
    n = 1
    for size, r in zip(spatial, roi):
        size = max(size, r)
        interval = r if size == r else max(int(r * (1 - overlap)), 1)
        n *= int(math.ceil((size - r) / interval)) + 1 if size > r else 1
    return n


def window_predictor(network: torch.nn.Module, total: int, *, amp: bool = False,
                     progress: Callable[[int, int], None] | None = None, stop: Any | None = None,
                     scores: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     what: str = "prediction") -> Callable[[torch.Tensor], torch.Tensor]:
    """``network`` as MONAI's sliding window calls it: a window batch in, scores out.

    Parameters
    ----------
    network : torch.nn.Module
        On the windows' device, in eval mode.
    total : int
        Windows in all passes (``progress`` counts up to it).
    amp : bool
        float16 autocast (CUDA; see ``engine.devices.amp_enabled``).
    progress : callable, optional
        Called with ``(done, total)`` windows after each batch.
    stop : StopToken, optional
        Once stopped, ``Cancelled`` is raised at the next batch.
    scores : callable, optional
        Turns the network's output ``(B, K, *patch)`` (float32) into what is blended;
        default the output itself.
    what : str
        The job in words, for the ``Cancelled`` message ("reconstruction").

    Returns
    -------
    callable
        ``(B, C, *patch)`` -> ``(B, K, *patch)`` float32.
    """
    done = 0

    def predictor(window: torch.Tensor) -> torch.Tensor:
        nonlocal done
        raise_if_stopped(stop, f"{what} stopped")
        with autocast(amp):
            out = network(window)
        out = out.float()
        done += window.shape[0]
        if progress is not None:
            progress(min(done, total), total)
        return scores(out) if scores is not None else out

    return predictor
