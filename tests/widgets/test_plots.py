"""The training, confusion-matrix and ROC plots draw in a worker thread: the GUI thread only
hands over the data and shows the finished picture (drawn on it, each epoch's redraw stalled
napari 0.5-1.6 s while a network trained beside it)."""

from __future__ import annotations

import threading

import pytest

from napari_medml.engine.reports import TrainReport


@pytest.fixture
def draws(monkeypatch):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    threads: list[threading.Thread] = []
    draw = FigureCanvasAgg.draw

    def recorded(self):
        threads.append(threading.current_thread())
        return draw(self)

    monkeypatch.setattr(FigureCanvasAgg, "draw", recorded)
    return threads


def _report(epoch: int, **extra) -> TrainReport:
    return TrainReport(epoch=epoch, step=10 * epoch, total_steps=30, train_loss=1.0 / epoch, learning_rate=1e-3,
                       elapsed_s=1.0, eta_s=1.0, epoch_end=True, val_loss=1.2 / epoch, val_mean_dice=0.2 * epoch,
                       **extra)


def test_training_curves_are_drawn_off_the_gui_thread(make_napari_viewer, open_widget, qtbot, draws):
    viewer = make_napari_viewer()
    plot = open_widget(viewer, "train").plot
    for epoch in (1, 2, 3):
        plot.add(_report(epoch))
    qtbot.waitUntil(lambda: plot.ready, timeout=120000)  # everything given is on screen
    assert draws and all(t is not threading.main_thread() for t in draws)
    assert list(plot._train_line.get_xdata()) == [1, 2, 3]
    assert list(plot._dice_line.get_ydata()) == pytest.approx([0.2, 0.4, 0.6])
    assert not plot.canvas.pixmap().isNull() and plot.canvas.pixmap().width() > 100
    plot.clear()
    qtbot.waitUntil(lambda: plot.ready, timeout=30000)
    assert list(plot._train_line.get_xdata()) == []


def test_report_panels_are_drawn_off_the_gui_thread(make_napari_viewer, open_widget, qtbot, draws):
    viewer = make_napari_viewer()
    widget = open_widget(viewer, "classify")
    report = {"confusion_matrix": [[30, 2], [5, 27]], "class_ids": [1, 2], "n": 64, "epoch": 3,
              "per_class": [{"class": 1, "name": "smooth", "auc": 0.9}, {"class": 2, "name": "rough", "auc": 0.9}],
              "roc": [{"class": c, "fpr": [0.0, 0.1, 1.0], "tpr": [0.0, 0.8, 1.0]} for c in (1, 2)]}
    widget.confusion.show(report)
    widget.roc.show(report)
    qtbot.waitUntil(lambda: widget.confusion.ready and widget.roc.ready, timeout=120000)
    assert draws and all(t is not threading.main_thread() for t in draws)
    assert widget.confusion.matrix == [[30, 2], [5, 27]]
    assert widget.confusion.ax.get_title() == "confusion matrix (n=64, epoch 3)"
    assert "smooth AUC 0.900" not in [t.get_text() for t in widget.roc.ax.get_legend().get_texts()]  # positive class
    assert [t.get_text() for t in widget.roc.ax.get_legend().get_texts()] == ["rough AUC 0.900"]
