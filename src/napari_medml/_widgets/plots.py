"""Live plots on Qt canvases: training curves, a confusion matrix and ROC curves.

All are matplotlib figures (``FigureCanvasQTAgg``), fed from the GUI thread. Importing
matplotlib takes 0.5-0.7 s on a 2-core CPU, and napari imports a widget's module and builds
the widget on the GUI thread: so a plot starts as a panel of its height that says "loading the
plot…", a worker imports matplotlib and builds the figure and its axes, and the Qt canvas
takes the text's place when that is done (benchmarks/bench_open_widget.py). Data that comes before is kept
and drawn then. A report may arrive after the dock widget was closed (the worker finishes
its step first): drawing on a deleted canvas is skipped instead of raising.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from napari_medml._widgets._runner import Runner

__all__ = ["ConfusionMatrixPlot", "RocPlot", "TrainingPlot"]


@functools.cache
def _qt_canvas_class() -> type:
    """``FigureCanvasQTAgg`` whose deferred draw is skipped once its Qt object is gone."""
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg

    class QtCanvas(FigureCanvasQTAgg):
        def draw(self) -> None:
            # draw_idle defers the real draw to a timer, which can fire after the widget closed
            try:
                super().draw()
            except RuntimeError as exc:
                _ignore_if_deleted(exc)

    return QtCanvas


class _Canvas(QWidget):
    """A plot's panel; its matplotlib canvas is built off the GUI thread (module docstring).

    Subclasses set up their data, then call ``_start``; ``_build(figure)`` makes the axes
    (in the worker: matplotlib objects only, no Qt) and ``_redraw`` shows the data (a no-op
    until the canvas is there).
    """

    def __init__(self, figsize: tuple[float, float], min_height: int) -> None:
        super().__init__()
        self.setMinimumHeight(min_height)
        self.setLayout(QVBoxLayout())
        self.layout().setContentsMargins(0, 0, 0, 0)
        self._figsize = figsize
        # what the panel says until its canvas comes (a second or more on a busy CPU)
        self.placeholder = QLabel("loading the plot…")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setEnabled(False)  # greyed: a state, not a control
        self.layout().addWidget(self.placeholder)
        self.figure: Any = None  # the matplotlib Figure, once the canvas is shown
        self.canvas: Any = None
        self._runner = Runner("Plot", show_progress=False)
        self._runner.progress.native.setParent(self)  # hidden; its end (with the panel's) detaches the job

    @property
    def ready(self) -> bool:
        """Whether the matplotlib canvas is in place (data added before is drawn then)."""
        return self.canvas is not None

    def _start(self) -> None:
        figsize = self._figsize

        def job(stop: Any, report: Any) -> Any:
            from matplotlib.figure import Figure

            _qt_canvas_class()  # imports the Qt backend here, not on the GUI thread
            figure = Figure(figsize=figsize, dpi=90)
            self._build(figure)
            return figure

        self._runner.start_soon(job, on_result=self._attach)

    def _attach(self, figure: Any) -> None:
        try:
            canvas = _qt_canvas_class()(figure)
            self.layout().removeWidget(self.placeholder)
            self.placeholder.hide()
            self.placeholder.deleteLater()
            self.layout().addWidget(canvas)
        except RuntimeError as exc:  # the panel was closed meanwhile
            _ignore_if_deleted(exc)
            return
        self.figure, self.canvas = figure, canvas
        self._redraw()

    def _build(self, figure: Any) -> None:
        raise NotImplementedError

    def _redraw(self) -> None:
        raise NotImplementedError

    def _draw(self) -> None:
        if self.canvas is None:
            return
        try:
            self.canvas.draw_idle()
        except RuntimeError as exc:
            _ignore_if_deleted(exc)


def _ignore_if_deleted(exc: RuntimeError) -> None:
    """Swallow Qt's "wrapped C/C++ object ... has been deleted"; re-raise anything else."""
    if "has been deleted" not in str(exc):
        raise exc


class TrainingPlot(_Canvas):
    """A matplotlib canvas fed with ``TrainReport`` s; redraws at each epoch's end.

    Training loss is the epoch's mean (an epoch-end report's ``train_loss``). The lower
    panel shows validation Dice (``metric="dice"``, segmentation) or a scalar of
    ``report.val_metrics`` such as ``"accuracy"`` (classification); ``metric=None``
    shows the loss panel alone (pretraining).
    """

    def __init__(self, metric: str | None = "dice") -> None:
        # metric None: the loss panel alone (pretraining has no Dice or accuracy to show)
        super().__init__((4.0, 3.2) if metric else (4.0, 1.9), 240 if metric else 150)
        self.metric = metric
        self._marks: list[Any] = []  # fold marks drawn, for self._breaks[:len(...)]
        self._marked = 0
        self.clear()
        self._start()

    def _build(self, figure: Any) -> None:
        metric = self.metric
        figure.subplots_adjust(left=0.16, right=0.97, top=0.97, bottom=0.13 if metric else 0.22, hspace=0.12)
        if metric:
            loss_ax, dice_ax = figure.subplots(2, 1, sharex=True)
        else:
            loss_ax, dice_ax = figure.subplots(1, 1), None
        # Lines are made once and updated in place: a redraw on the GUI thread stays cheap.
        (self._train_line,) = loss_ax.plot([], [], "o-", ms=3, label="training loss")
        (self._val_line,) = loss_ax.plot([], [], "s-", ms=3, label="validation loss")
        loss_ax.set_ylabel("loss")
        loss_ax.legend(loc="upper right", fontsize="small")
        self._dice_line = None
        if dice_ax is not None:
            label = "Dice" if metric == "dice" else metric.replace("_", " ")
            (self._dice_line,) = dice_ax.plot([], [], "o-", ms=3, color="tab:green", label=f"validation {label}")
            dice_ax.set_ylim(0.0, 1.0)
            dice_ax.set_ylabel(label)
            dice_ax.legend(loc="lower right", fontsize="small")
        (dice_ax or loss_ax).set_xlabel("epoch")
        self._loss_ax, self._dice_ax = loss_ax, dice_ax

    def clear(self) -> None:
        """Forget all epochs (a new training run)."""
        self.epochs: list[float] = []
        self.train_loss: list[float] = []
        self.val_loss: list[float | None] = []
        self.val_dice: list[float | None] = []  # the lower panel's metric
        self._fold = 0
        self._breaks: list[tuple[float, int]] = []  # (x, fold) where an ensemble's next model starts
        for mark in self._marks:
            mark.remove()
        self._marks, self._marked = [], 0
        self._redraw()

    def add(self, report: Any) -> None:
        """Take one report; at an epoch's end, add a point to each curve."""
        if not report.epoch_end:
            return
        fold = getattr(report, "fold", 0)
        if fold != self._fold and self.epochs:  # an ensemble's next model starts from scratch: a break, marked
            self._break(self.epochs[-1] + 0.5, fold)
        self._fold = fold
        self.epochs.append(int(report.epoch))
        self.train_loss.append(float(report.train_loss))
        self.val_loss.append(report.val_loss)
        if self.metric == "dice":
            self.val_dice.append(report.val_mean_dice)
        else:
            self.val_dice.append((report.val_metrics or {}).get(self.metric))
        self._redraw()

    def _break(self, x: float, fold: int) -> None:
        """End the curves at ``x`` (a NaN point); fold ``fold`` begins there (marked when drawn)."""
        nan = float("nan")
        for values in (self.train_loss, self.val_loss, self.val_dice):
            values.append(nan)
        self.epochs.append(x)
        self._breaks.append((x, fold))

    def _mark_breaks(self) -> None:
        for x, fold in self._breaks[self._marked:]:
            for ax in (self._loss_ax, self._dice_ax):
                if ax is not None:
                    self._marks.append(ax.axvline(x, ls=":", lw=0.8, color="grey"))
            ax = self._dice_ax or self._loss_ax
            self._marks.append(ax.text(x, 0.02, f" fold {fold}", transform=ax.get_xaxis_transform(),
                                       fontsize="x-small", color="grey"))
        self._marked = len(self._breaks)

    def _redraw(self) -> None:
        if self.canvas is None:
            return
        self._mark_breaks()
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


class _ReportPlot(_Canvas):
    """One panel drawn from a ``classification_report``; empty (its title only) until one."""

    title = ""
    margins: dict[str, float] = {}

    def __init__(self) -> None:
        super().__init__((3.2, 2.8), 200)
        self.clear()
        self._start()

    def _build(self, figure: Any) -> None:
        self.ax = figure.add_subplot(1, 1, 1)
        figure.subplots_adjust(**self.margins)

    def clear(self) -> None:
        """An empty panel (a new run)."""
        self._report: Mapping[str, Any] | None = None
        self._redraw()

    def show(self, report: Mapping[str, Any]) -> None:
        """Draw ``report``."""
        self._report = report
        self._redraw()

    def _redraw(self) -> None:
        if self.canvas is None:
            return
        ax = self.ax
        ax.clear()
        if self._report is None:
            ax.set_title(self.title, fontsize="small")
            ax.set_axis_off()
        else:
            ax.set_axis_on()
            self._plot(ax, self._report)
        self._draw()

    def _plot(self, ax: Any, report: Mapping[str, Any]) -> None:
        raise NotImplementedError


class ConfusionMatrixPlot(_ReportPlot):
    """The confusion matrix of a ``classification_report`` (rows = true class).

    Colours are row-normalised (recall per class); each cell shows its count.
    """

    title = "confusion matrix"
    margins = {"left": 0.24, "right": 0.97, "top": 0.88, "bottom": 0.2}

    @property
    def matrix(self) -> list[list[int]] | None:
        """The counts shown (None before a report)."""
        return None if self._report is None else [[int(n) for n in row] for row in self._report["confusion_matrix"]]

    def _plot(self, ax: Any, report: Mapping[str, Any]) -> None:
        import numpy as np

        matrix = np.asarray(report["confusion_matrix"], dtype=float)
        names = [_class_label(report, c) for c in report["class_ids"]]
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


class RocPlot(_ReportPlot):
    """ROC curves of a ``classification_report``: the positive class for two classes,
    one-vs-rest per class otherwise; AUC in the legend."""

    title = "ROC"
    margins = {"left": 0.18, "right": 0.97, "top": 0.88, "bottom": 0.17}

    def _plot(self, ax: Any, report: Mapping[str, Any]) -> None:
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
