"""Live plots: training curves, a confusion matrix and ROC curves.

All are matplotlib figures drawn off the GUI thread. Importing matplotlib takes 0.5-0.7 s on a
2-core CPU, and napari imports a widget's module and builds the widget on the GUI thread: so a
plot starts as a panel of its height that says "loading the plot…", a worker imports matplotlib
and builds the figure and its axes, and the picture takes the text's place when that is done
(benchmarks/bench_open_widget.py). Data that comes before is kept and drawn then.

Each redraw is rendered by matplotlib's Agg backend in the plot's worker thread and shown as a
picture; the GUI thread only hands over the data and puts the finished image in place. Drawn on
the GUI thread (a Qt canvas), each epoch's redraw of the three Classify panels took 60-100 ms
apiece on an idle machine and stalled the GUI 0.5-1.6 s while a network trained beside it
(trial 17). A report may arrive after the dock widget was closed: it is not drawn.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from napari_medml._widgets._runner import Runner

__all__ = ["ConfusionMatrixPlot", "RocPlot", "TrainingPlot"]

DPI = 90
_NOTHING = object()  # no drawing waiting (a report plot's empty state is None)


class _Canvas(QWidget):
    """A plot's panel; its figure is built and drawn off the GUI thread (module docstring).

    Subclasses set up their data, then call ``_start``; ``_build(figure)`` makes the axes and
    ``_apply(state)`` puts a snapshot of the data on them (both in the worker: matplotlib
    objects only, no Qt); ``_state()`` takes that snapshot on the GUI thread, and
    ``_redraw()`` asks for a drawing of it (the latest one wins when drawings queue up).
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
        self.figure: Any = None  # the matplotlib Figure, once built (only the worker thread changes it)
        self.canvas: Any = None  # the QLabel that shows its latest drawing
        self._agg: Any = None
        self._pending: Any = _NOTHING  # a snapshot waiting to be drawn
        self._waiting = False
        self._runner = Runner("Plot", show_progress=False)
        self._runner.progress.native.setParent(self)  # hidden; its end (with the panel's) detaches the job

    @property
    def ready(self) -> bool:
        """Whether the plot is in place and shows all the data given so far."""
        return self.canvas is not None and not self._waiting and not self._runner.running

    def _start(self) -> None:
        figsize = self._figsize

        def job(stop: Any, report: Any) -> Any:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            figure = Figure(figsize=figsize, dpi=DPI)
            agg = FigureCanvasAgg(figure)
            self._build(figure)
            return figure, agg

        self._runner.start_soon(job, on_result=self._attach, on_done=self._draw_next)

    def _attach(self, built: Any) -> None:
        try:
            canvas = QLabel()
            canvas.setAlignment(Qt.AlignmentFlag.AlignCenter)
            canvas.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)  # any dock width
            self.layout().removeWidget(self.placeholder)
            self.placeholder.hide()
            self.placeholder.deleteLater()
            self.layout().addWidget(canvas)
        except RuntimeError as exc:  # the panel was closed meanwhile
            _ignore_if_deleted(exc)
            return
        (self.figure, self._agg), self.canvas = built, canvas
        self._redraw()

    def _build(self, figure: Any) -> None:
        raise NotImplementedError

    def _state(self) -> Any:
        """A snapshot of the data to draw (GUI thread; copies, not the lists that grow)."""
        raise NotImplementedError

    def _apply(self, state: Any) -> None:
        """Put ``state`` on the figure's axes (worker thread)."""
        raise NotImplementedError

    def _redraw(self) -> None:
        """Draw the current data in the worker; drawings asked for meanwhile become one."""
        if self.figure is None:
            return
        self._pending, self._waiting = self._state(), True
        if not self._runner.running:
            self._draw_next()

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._redraw()  # drawn again at the new size

    def _draw_next(self) -> None:
        if self._pending is _NOTHING or self.canvas is None:
            self._waiting = False
            return
        state, self._pending = self._pending, _NOTHING
        try:
            ratio = float(self.canvas.devicePixelRatioF())
            width, height = self.width(), self.height()
        except RuntimeError as exc:  # the panel was closed meanwhile
            _ignore_if_deleted(exc)
            return
        figure, agg = self.figure, self._agg
        if width < 50 or height < 50:  # not laid out yet: the figure's own size
            width, height = (int(v * DPI) for v in self._figsize)

        def job(stop: Any, report: Any) -> Any:
            self._apply(state)
            figure.set_dpi(DPI * ratio)
            figure.set_size_inches(width / DPI, height / DPI)
            agg.draw()
            return bytes(agg.buffer_rgba()), agg.get_width_height(), ratio

        self._runner.start(job, on_result=self._show, on_done=self._draw_next)

    def _show(self, drawn: Any) -> None:
        from qtpy.QtGui import QImage, QPixmap

        data, (width, height), ratio = drawn
        image = QImage(data, width, height, 4 * width, QImage.Format.Format_RGBA8888)
        pixmap = QPixmap.fromImage(image)
        pixmap.setDevicePixelRatio(ratio)
        try:
            self.canvas.setPixmap(pixmap)
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
        self._marks: list[Any] = []  # the fold marks drawn (worker thread)
        self.clear()
        self._start()

    def _build(self, figure: Any) -> None:
        metric = self.metric
        figure.subplots_adjust(left=0.16, right=0.97, top=0.97, bottom=0.17 if metric else 0.26, hspace=0.12)
        if metric:
            loss_ax, dice_ax = figure.subplots(2, 1, sharex=True)
        else:
            loss_ax, dice_ax = figure.subplots(1, 1), None
        # Lines are made once and updated in place at each drawing
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
        self._fold, self._shift = 0, 0  # the fold shown last, and its epochs' shift on the x axis
        self._breaks: list[tuple[float, int]] = []  # (x, fold) where an ensemble's next model starts
        self._redraw()

    def add(self, report: Any) -> None:
        """Take one report; at an epoch's end, add a point to each curve."""
        if not report.epoch_end:
            return
        fold = getattr(report, "fold", 0)
        if fold != self._fold and self.epochs:  # an ensemble's next model starts from scratch: a break, marked
            last = self.epochs[-1]
            self._break(last + 0.5, fold)
            # right after the last fold's epochs: the core counts fold k's from (k - 1) x the planned epochs,
            # which a time limit cuts short (trial 41: folds 2-4 drawn as dots at 51, 101, 151)
            self._shift = last + 1 - int(report.epoch)
        self._fold = fold
        self.epochs.append(int(report.epoch) + self._shift)
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

    def _state(self) -> Any:
        return (list(self.epochs), list(self.train_loss), list(self.val_loss), list(self.val_dice),
                list(self._breaks))

    def _apply(self, state: Any) -> None:
        epochs, train_loss, val_loss, val_dice, breaks = state
        for mark in self._marks:
            mark.remove()
        self._marks = []
        for x, fold in breaks:
            for ax in (self._loss_ax, self._dice_ax):
                if ax is not None:
                    self._marks.append(ax.axvline(x, ls=":", lw=0.8, color="grey"))
            ax = self._dice_ax or self._loss_ax
            self._marks.append(ax.text(x, 0.02, f" fold {fold}", transform=ax.get_xaxis_transform(),
                                       fontsize="x-small", color="grey"))
        self._train_line.set_data(epochs, train_loss)
        val = [(e, v) for e, v in zip(epochs, val_loss) if v is not None]
        self._val_line.set_data(*zip(*val)) if val else self._val_line.set_data([], [])
        if self._dice_ax is not None:
            dice = [(e, v) for e, v in zip(epochs, val_dice) if v is not None]
            self._dice_line.set_data(*zip(*dice)) if dice else self._dice_line.set_data([], [])
        for ax in (self._loss_ax, self._dice_ax):
            if ax is not None:
                ax.relim()
                ax.autoscale_view()
        if self._dice_ax is not None:
            self._dice_ax.set_ylim(0.0, 1.0)
        if epochs:
            (self._dice_ax or self._loss_ax).set_xlim(0.5, max(epochs) + 0.5)


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

    def _state(self) -> Any:
        return self._report  # a report is not changed once shown

    def _apply(self, report: Any) -> None:
        ax = self.ax
        ax.clear()
        if report is None:
            ax.set_title(self.title, fontsize="small")
            ax.set_axis_off()
        else:
            ax.set_axis_on()
            self._plot(ax, report)

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
