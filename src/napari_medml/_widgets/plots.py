"""Live plots on Qt canvases: training curves, a confusion matrix and ROC curves.

All are matplotlib figures (``FigureCanvasQTAgg``); they are fed from the GUI thread.
A report may arrive after the dock widget was closed (the worker finishes its step
first): drawing on a deleted canvas is skipped instead of raising.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

__all__ = ["ConfusionMatrixPlot", "RocPlot", "TrainingPlot"]


class _Canvas(FigureCanvasQTAgg):
    """A figure canvas whose redraws are skipped once its Qt object is gone."""

    def __init__(self, figsize: tuple[float, float], min_height: int) -> None:
        super().__init__(Figure(figsize=figsize, dpi=90))
        self.setMinimumHeight(min_height)

    def _draw(self) -> None:
        try:
            self.draw_idle()
        except RuntimeError as exc:
            _ignore_if_deleted(exc)

    def draw(self) -> None:
        # draw_idle defers the real draw to a timer, which can fire after the widget closed
        try:
            super().draw()
        except RuntimeError as exc:
            _ignore_if_deleted(exc)


def _ignore_if_deleted(exc: RuntimeError) -> None:
    """Swallow Qt's "wrapped C/C++ object ... has been deleted"; re-raise anything else."""
    if "has been deleted" not in str(exc):
        raise exc


class TrainingPlot(_Canvas):
    """A matplotlib canvas fed with ``TrainReport`` s; redraws at each epoch's end.

    Training loss is the mean of the reports' ``train_loss`` over the epoch. The lower
    panel shows validation Dice (``metric="dice"``, segmentation) or a scalar of
    ``report.val_metrics`` such as ``"accuracy"`` (classification); ``metric=None``
    shows the loss panel alone (pretraining).
    """

    def __init__(self, metric: str | None = "dice") -> None:
        # metric None: the loss panel alone (pretraining has no Dice or accuracy to show)
        super().__init__((4.0, 3.2) if metric else (4.0, 1.9), 240 if metric else 150)
        figure = self.figure
        figure.subplots_adjust(left=0.16, right=0.97, top=0.97, bottom=0.13 if metric else 0.22, hspace=0.12)
        self.metric = metric
        if metric:
            self._loss_ax, self._dice_ax = figure.subplots(2, 1, sharex=True)
        else:
            self._loss_ax, self._dice_ax = figure.subplots(1, 1), None
        # Lines are made once and updated in place: a redraw on the GUI thread stays cheap.
        (self._train_line,) = self._loss_ax.plot([], [], "o-", ms=3, label="training loss")
        (self._val_line,) = self._loss_ax.plot([], [], "s-", ms=3, label="validation loss")
        self._loss_ax.set_ylabel("loss")
        self._loss_ax.legend(loc="upper right", fontsize="small")
        self._dice_line = None
        if self._dice_ax is not None:
            label = "Dice" if metric == "dice" else metric.replace("_", " ")
            (self._dice_line,) = self._dice_ax.plot([], [], "o-", ms=3, color="tab:green",
                                                    label=f"validation {label}")
            self._dice_ax.set_ylim(0.0, 1.0)
            self._dice_ax.set_ylabel(label)
            self._dice_ax.legend(loc="lower right", fontsize="small")
        (self._dice_ax or self._loss_ax).set_xlabel("epoch")
        self._marks: list[Any] = []
        self.clear()

    def clear(self) -> None:
        """Forget all epochs (a new training run)."""
        self.epochs: list[int] = []
        self.train_loss: list[float] = []
        self.val_loss: list[float | None] = []
        self.val_dice: list[float | None] = []  # the lower panel's metric
        self._pending: list[float] = []
        self._fold = 0
        for mark in self._marks:
            mark.remove()
        self._marks = []
        self._redraw()

    def add(self, report: Any) -> None:
        """Take one report; at an epoch's end, add a point to each curve."""
        if report.train_loss == report.train_loss:  # not NaN
            self._pending.append(float(report.train_loss))
        if not report.epoch_end:
            return
        mean = sum(self._pending) / len(self._pending) if self._pending else float("nan")
        self._pending = []
        fold = getattr(report, "fold", 0)
        if fold != self._fold and self.epochs:  # an ensemble's next model starts from scratch: a break, marked
            self._break(self.epochs[-1] + 0.5, fold)
        self._fold = fold
        self.epochs.append(int(report.epoch))
        self.train_loss.append(mean)
        self.val_loss.append(report.val_loss)
        if self.metric == "dice":
            self.val_dice.append(report.val_mean_dice)
        else:
            self.val_dice.append((report.val_metrics or {}).get(self.metric))
        self._redraw()

    def _break(self, x: float, fold: int) -> None:
        """End the curves at ``x`` (a NaN point) and mark where fold ``fold`` begins."""
        nan = float("nan")
        for values in (self.train_loss, self.val_loss, self.val_dice):
            values.append(nan)
        self.epochs.append(x)
        for ax in (self._loss_ax, self._dice_ax):
            if ax is not None:
                self._marks.append(ax.axvline(x, ls=":", lw=0.8, color="grey"))
        ax = self._dice_ax or self._loss_ax
        self._marks.append(ax.text(x, 0.02, f" fold {fold}", transform=ax.get_xaxis_transform(),
                                   fontsize="x-small", color="grey"))

    def _redraw(self) -> None:
        self._train_line.set_data(self.epochs, self.train_loss)
        val = [(e, v) for e, v in zip(self.epochs, self.val_loss) if v is not None]
        self._val_line.set_data(*zip(*val)) if val else self._val_line.set_data([], [])
        if self._dice_ax is not None:
            dice = [(e, v) for e, v in zip(self.epochs, self.val_dice) if v is not None]
            self._dice_line.set_data(*zip(*dice)) if dice else self._dice_line.set_data([], [])
        for ax in (self._loss_ax, self._dice_ax):
            if ax is not None:
                ax.relim()
                ax.autoscale_view()
        if self._dice_ax is not None:
            self._dice_ax.set_ylim(0.0, 1.0)
        if self.epochs:
            (self._dice_ax or self._loss_ax).set_xlim(0.5, max(self.epochs) + 0.5)
        self._draw()


def _class_label(report: Mapping[str, Any], cid: int) -> str:
    for entry in report.get("per_class", []):
        if entry["class"] == cid and entry.get("name"):
            return str(entry["name"])
    return str(cid)


class ConfusionMatrixPlot(_Canvas):
    """The confusion matrix of a ``classification_report`` (rows = true class).

    Colours are row-normalised (recall per class); each cell shows its count.
    """

    def __init__(self) -> None:
        super().__init__((3.2, 2.8), 200)
        self.ax = self.figure.add_subplot(1, 1, 1)
        self.figure.subplots_adjust(left=0.24, right=0.97, top=0.88, bottom=0.2)
        self.matrix: list[list[int]] | None = None
        self.clear()

    def clear(self) -> None:
        """An empty panel (a new run)."""
        self.matrix = None
        self.ax.clear()
        self.ax.set_title("confusion matrix", fontsize="small")
        self.ax.set_axis_off()
        self._draw()

    def show(self, report: Mapping[str, Any]) -> None:
        """Draw ``report["confusion_matrix"]`` with the class names."""
        import numpy as np

        matrix = np.asarray(report["confusion_matrix"], dtype=float)
        self.matrix = matrix.astype(int).tolist()
        names = [_class_label(report, c) for c in report["class_ids"]]
        ax = self.ax
        ax.clear()
        ax.set_axis_on()
        rows = matrix.sum(axis=1, keepdims=True)
        ax.imshow(matrix / np.where(rows > 0, rows, 1), cmap="Blues", vmin=0.0, vmax=1.0)
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, f"{int(count)}", ha="center", va="center", fontsize="small",
                    color="white" if rows[i, 0] and count / rows[i, 0] > 0.6 else "black")
        ticks = range(len(names))
        ax.set_xticks(ticks, names, fontsize="x-small")
        ax.set_yticks(ticks, names, fontsize="x-small")
        ax.set_xlabel("predicted", fontsize="small")
        ax.set_ylabel("true", fontsize="small")
        epoch = f", epoch {report['epoch']}" if "epoch" in report else ""
        ax.set_title(f"confusion matrix (n={report['n']}{epoch})", fontsize="small")
        self._draw()


class RocPlot(_Canvas):
    """ROC curves of a ``classification_report``: the positive class for two classes,
    one-vs-rest per class otherwise; AUC in the legend."""

    def __init__(self) -> None:
        super().__init__((3.2, 2.8), 200)
        self.ax = self.figure.add_subplot(1, 1, 1)
        self.figure.subplots_adjust(left=0.18, right=0.97, top=0.88, bottom=0.17)
        self.clear()

    def clear(self) -> None:
        """An empty panel (a new run)."""
        self.ax.clear()
        self.ax.set_title("ROC", fontsize="small")
        self.ax.set_axis_off()
        self._draw()

    def show(self, report: Mapping[str, Any]) -> None:
        """Draw ``report["roc"]`` (and the chance diagonal)."""
        ax = self.ax
        ax.clear()
        ax.set_axis_on()
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
        curves = list(report.get("roc", []))
        ids = list(report.get("class_ids", []))
        if len(ids) == 2:  # the two one-vs-rest curves mirror each other: show the positive one
            curves = [c for c in curves if c["class"] == ids[1]]
        aucs = {e["class"]: e.get("auc") for e in report.get("per_class", [])}
        for curve in curves:
            auc = aucs.get(curve["class"])
            text = f"{_class_label(report, curve['class'])}" + (f" AUC {auc:.3f}" if auc is not None else "")
            ax.plot(curve["fpr"], curve["tpr"], "-", lw=1.5, label=text)
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.02)
        ax.set_xlabel("false positive rate", fontsize="small")
        ax.set_ylabel("true positive rate", fontsize="small")
        ax.tick_params(labelsize="x-small")
        if curves:
            ax.legend(loc="lower right", fontsize="x-small")
        ax.set_title("ROC (validation)", fontsize="small")
        self._draw()
