"""What a training run tells its front: ``TrainReport``s, and the ``StopToken`` a front
uses to stop it. Both are task-independent (see docs/ENGINE_API.md)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StopToken", "TrainReport"]


@dataclass(frozen=True)
class TrainReport:
    """Progress of a training run.

    Attributes
    ----------
    step, epoch : int
        Global optimisation step and epoch, both 1-based.
    total_steps : int
        Planned steps (epochs x steps per epoch).
    train_loss : float
        Mean training loss over the steps since the previous report; at an epoch's end,
        over the epoch's steps (the loss that judges the best epoch without validation).
    learning_rate : float
        The rate the last step used.
    elapsed_s, eta_s : float, float or None
        Seconds since the run (or its resumption) began, and the estimate of what is left.
    epoch_end : bool
        True on the report that closes an epoch; the ``val_*`` fields are set then.
    val_loss, val_dice, val_iou, val_mean_dice : validation results of segmentation
        (per foreground class id for the dicts).
    val_metrics : Mapping[str, float] or None
        Other scalar validation metrics (classification: accuracy, AUC, ...).
    val_report : Mapping or None
        A task's full validation report (classification: confusion matrix and ROC), so a
        front can draw it live.
    best : bool
        This epoch is the best so far (its checkpoint was written).
    message : str
        E.g. how the data were split, "stopped by user", "early stopping: ...".
    progress : float or None
        Share of the run done, 0-1: of its steps, or of its time limit when that ends it
        sooner (a time-limited run ends long before ``total_steps``); 1 on the last report.
    time_limit_s : float or None
        The run's time limit (``optim.max_minutes``), or None when its steps end it.
    fold, folds : int
        An ensemble's fold (1-based) and number of folds; 0 and 1 for one model.
    """

    step: int
    epoch: int
    total_steps: int
    train_loss: float
    learning_rate: float
    elapsed_s: float
    eta_s: float | None
    epoch_end: bool = False
    val_loss: float | None = None
    val_dice: Mapping[int, float] | None = None
    val_iou: Mapping[int, float] | None = None
    val_mean_dice: float | None = None
    val_metrics: Mapping[str, float] | None = None
    best: bool = False
    message: str = ""
    val_report: Mapping[str, Any] | None = field(default=None, hash=False, repr=False)
    progress: float | None = None
    time_limit_s: float | None = None
    fold: int = 0
    folds: int = 1


class StopToken:
    """Thread-safe stop flag; a widget's Stop button or Ctrl-C calls ``stop()``."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def stop(self) -> None:
        """Ask the run to stop after its current step."""
        self._event.set()

    @property
    def stopped(self) -> bool:
        """Whether ``stop()`` was called."""
        return self._event.is_set()
