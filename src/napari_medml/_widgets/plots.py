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
        figure = Figure(figsize=(4.0, 3.2), dpi=90)
        figure.subplots_adjust(left=0.16, right=0.97, top=0.97, bottom=0.13, hspace=0.12)
        super().__init__(figure)
        self.setMinimumHeight(240)
        self._loss_ax, self._dice_ax = figure.subplots(2, 1, sharex=True)
        # Lines are made once and updated in place: a redraw on the GUI thread stays cheap.
        (self._train_line,) = self._loss_ax.plot([], [], "o-", ms=3, label="training loss")
        (self._val_line,) = self._loss_ax.plot([], [], "s-", ms=3, label="validation loss")
        (self._dice_line,) = self._dice_ax.plot([], [], "o-", ms=3, color="tab:green",
                                                label="validation Dice")
        self._loss_ax.set_ylabel("loss")
        self._loss_ax.legend(loc="upper right", fontsize="small")
        self._dice_ax.set_ylim(0.0, 1.0)
        self._dice_ax.set_ylabel("Dice")
        self._dice_ax.set_xlabel("epoch")
        self._dice_ax.legend(loc="lower right", fontsize="small")
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
        self._train_line.set_data(self.epochs, self.train_loss)
        val = [(e, v) for e, v in zip(self.epochs, self.val_loss) if v is not None]
        self._val_line.set_data(*zip(*val)) if val else self._val_line.set_data([], [])
        dice = [(e, v) for e, v in zip(self.epochs, self.val_dice) if v is not None]
        self._dice_line.set_data(*zip(*dice)) if dice else self._dice_line.set_data([], [])
        for ax in (self._loss_ax, self._dice_ax):
            ax.relim()
            ax.autoscale_view()
        self._dice_ax.set_ylim(0.0, 1.0)
        if self.epochs:
            self._dice_ax.set_xlim(0.5, max(self.epochs) + 0.5)
        self.draw_idle()
