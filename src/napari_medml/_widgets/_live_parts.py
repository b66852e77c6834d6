"""Pieces of the Live widget: what its display job reports, and knowing when the dock closes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtCore import QEvent, QObject

__all__ = ["Answer", "OnClose", "session_status"]


@dataclass(frozen=True)
class Answer:
    """One answer of the display job: labels of ``region`` (None: the whole image)."""

    region: tuple | None
    labels: np.ndarray
    uncertainty: np.ndarray | None
    status: dict


class OnClose(QObject):
    """Calls back when the widget leaves its dock (napari's remove_dock_widget un-parents it)."""

    def __init__(self, widget: Any, callback: Any) -> None:
        super().__init__(widget)
        self._widget, self._callback = widget, callback
        widget.installEventFilter(self)

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.ParentChange and self._widget.parent() is None:
            self._callback()
        return False


def session_status(session: Any) -> dict:
    """What the status line shows: the stage on screen, held-out scores, stroke counts, training."""
    return {"stage": session.stage, "scores": session.scores, "counts": session.stroke_counts,
            "training": session.training}
