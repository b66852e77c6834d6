"""What a task gives the training loop: the ``TrainingTask`` protocol and ``Evaluation``.

The loop (:mod:`napari_medml.engine.loop`) owns steps, epochs, reports, Stop and the
time limit, mixed precision, clipping, the best state, early stopping, the schedule
and checkpoints. A task (segmentation, classification, ...) supplies only what
differs: how it draws a batch, its loss, how it evaluates and which number decides
"best", and the model object it hands back. This mirrors MONAI's ``Trainer`` with a
per-task ``_iteration`` (``monai/engines/trainer.py``), as a generator of reports
instead of an ignite event loop, so that every front can drive it its own way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Evaluation", "TrainingTask"]


@dataclass(frozen=True)
class Evaluation:
    """One validation pass.

    Attributes
    ----------
    report : Mapping
        Keyword fields for the epoch's ``TrainReport`` (``val_loss``, ``val_dice``,
        ``val_metrics``, ``val_report``, ...).
    history : Mapping
        Columns the epoch adds to the model's training history (JSON-able).
    key : tuple of float or None
        Higher is better, compared in order (ties go to the next number); None lets
        the loop use the training loss.
    metrics : Mapping
        What the best epoch's model keeps as its validation metrics.
    """

    report: Mapping[str, Any] = field(default_factory=dict)
    history: Mapping[str, Any] = field(default_factory=dict)
    key: tuple[float, ...] | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)


class TrainingTask(Protocol):
    """The part of a training run that belongs to one task.

    ``network`` is built by the task (on the CPU); the loop moves it to the device,
    builds the optimizer over its trainable parameters and calls the methods below.
    """

    network: Any

    def start_message(self) -> str:
        """One line for the first report: how the data were split, where weights came from."""

    def train_mode(self) -> None:
        """Put the network in training mode (frozen parts may stay in eval mode)."""

    def next_batch(self) -> tuple[Any, Any]:
        """``(inputs, targets)`` on the CPU: a tensor of inputs, targets in any nesting of tensors."""

    def loss(self, outputs: Any, targets: Any) -> Any:
        """The scalar loss of the network's float32 ``outputs`` against ``targets`` (on the device)."""

    def evaluate(self, device: Any, amp: bool) -> Evaluation | None:
        """Validate the current network; None when the run has no validation data."""

    def model(self, history: list[dict], provenance: Mapping[str, Any], metrics: Mapping[str, Any]) -> Any:
        """The task's model object around the current network (has ``save``, ``description``)."""
