"""A live plot of training: loss (training, validation) and validation Dice per epoch."""

from __future__ import annotations

from typing import Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

__all__ = ["TrainingPlot"]


class TrainingPlot(FigureCanvasQTAgg):
    """A matplotlib canvas fed with ``TrainReport`` s; redraws at each epoch's end.

    Training loss is the mean of the reports' ``train_loss`` over the epoch.
    """

    def __init__(self) -> None:
        figure = Figure(figsize=(4.0, 3.2), dpi=90, layout="constrained")
        super().__init__(figure)
        self.setMinimumHeight(240)
        self._loss_ax, self._dice_ax = figure.subplots(2, 1, sharex=True)
        self.clear()

    def clear(self) -> None:
        """Forget all epochs (a new training run)."""
        self.epochs: list[int] = []
        self.train_loss: list[float] = []
        self.val_loss: list[float | None] = []
        self.val_dice: list[float | None] = []
        self._pending: list[float] = []
        self._redraw()

    def add(self, report: Any) -> None:
        """Take one report; at an epoch's end, add a point to each curve."""
        if report.train_loss == report.train_loss:  # not NaN
            self._pending.append(float(report.train_loss))
        if not report.epoch_end:
            return
        mean = sum(self._pending) / len(self._pending) if self._pending else float("nan")
        self._pending = []
        self.epochs.append(int(report.epoch))
        self.train_loss.append(mean)
        self.val_loss.append(report.val_loss)
        self.val_dice.append(report.val_mean_dice)
        self._redraw()

    def _redraw(self) -> None:
        loss, dice = self._loss_ax, self._dice_ax
        loss.clear()
        dice.clear()
        loss.plot(self.epochs, self.train_loss, "o-", ms=3, label="training loss")
        val = [(e, v) for e, v in zip(self.epochs, self.val_loss) if v is not None]
        if val:
            loss.plot(*zip(*val), "s-", ms=3, label="validation loss")
        loss.set_ylabel("loss")
        if loss.lines:
            loss.legend(loc="upper right", fontsize="small")
        d = [(e, v) for e, v in zip(self.epochs, self.val_dice) if v is not None]
        if d:
            dice.plot(*zip(*d), "o-", ms=3, color="tab:green", label="validation Dice")
        dice.set_ylim(0.0, 1.0)
        dice.set_ylabel("Dice")
        dice.set_xlabel("epoch")
        if dice.lines:
            dice.legend(loc="lower right", fontsize="small")
        self.draw_idle()
