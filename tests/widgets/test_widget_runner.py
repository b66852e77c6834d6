"""The runner: a core job in napari's thread_worker, progress, Stop, errors as notifications."""

from __future__ import annotations

import threading
import time

import pytest
from magicgui.widgets import PushButton
from napari.utils.notifications import NotificationSeverity

from napari_medml._widgets._job import _import_stack
from napari_medml._widgets._runner import Runner, format_eta, progress_of
from napari_medml.errors import Cancelled, InputError


@pytest.fixture(autouse=True, scope="module")
def _stack_imported() -> None:
    # a process's first job imports torch and MONAI (seconds) before it runs: the timeouts
    # below are for the jobs, whichever test runs first
    _import_stack()


class _Token:
    def __init__(self) -> None:
        self._event = threading.Event()

    def stop(self) -> None:
        self._event.set()

    @property
    def stopped(self) -> bool:
        return self._event.is_set()


def _runner():
    start, stop = PushButton(text="Start"), PushButton(text="Stop")
    return Runner("Job", [start], stop, token_factory=_Token), start, stop


def test_generator_job_reports_and_returns(qtbot):
    runner, start, stop = _runner()
    reports, results, threads = [], [], []

    def job(token, report):
        def gen():
            for i in range(1, 4):
                threads.append(threading.current_thread())
                yield (i, 3)
            return "model"

        return gen()

    runner.start(job, on_report=reports.append, on_result=results.append)
    assert not start.enabled and stop.enabled
    qtbot.waitUntil(lambda: not runner.running, timeout=5000)
    assert reports == [(1, 3), (2, 3), (3, 3)]
    assert results == ["model"]
    assert start.enabled and not stop.enabled
    assert threads[0] is not threading.main_thread()


def test_progress_bar_moves_a_few_times_a_second(qtbot):
    # every change of the bar repaints the window: reports coming faster than BAR_EVERY_S
    # move it only now and then (and at the end); on_report gets them all
    runner, _, _ = _runner()
    reports, values = [], []
    runner.progress.changed.connect(values.append)

    def job(token, report):
        def gen():
            for i in range(1, 51):
                time.sleep(0.002)
                yield (i, 50)
            return None

        return gen()

    runner.start(job, on_report=reports.append)
    assert runner.progress.visible and runner.progress_text == "Job..."
    qtbot.waitUntil(lambda: not runner.running, timeout=5000)
    assert reports == [(i, 50) for i in range(1, 51)]
    assert values[-1] == 50 and runner.progress_text == "Job: 50/50"
    assert 1 <= len(values) <= 10
    assert not runner.progress.visible  # hidden once the job is done


def test_callback_reports_arrive_in_gui_thread(qtbot):
    runner, _, _ = _runner()
    seen = []

    def job(token, report):
        for i in range(5):
            report((i + 1, 5))
        return 42

    runner.start(job, on_report=lambda r: seen.append((r, threading.current_thread())))
    qtbot.waitUntil(lambda: not runner.running, timeout=5000)
    assert [r for r, _ in seen] == [(i, 5) for i in range(1, 6)]
    assert all(t is threading.main_thread() for _, t in seen)


def test_stop_button_stops_promptly(qtbot):
    runner, start, stop = _runner()
    results = []

    def job(token, report):
        def gen():
            while not token.stopped:
                time.sleep(0.01)
                yield (0, 0)
            return "best"

        return gen()

    runner.start(job, on_result=results.append)
    qtbot.wait(100)
    t0 = time.perf_counter()
    stop.changed.emit(True)  # what a click does
    qtbot.waitUntil(lambda: not runner.running, timeout=2000)
    assert time.perf_counter() - t0 < 1.0
    assert results == ["best"]
    assert start.enabled


def test_value_errors_become_notifications(qtbot, notes):
    runner, start, _ = _runner()
    results = []

    def job(token, report):
        raise InputError("labels 'seg' are empty: paint at least one label")

    runner.start(job, on_result=results.append)
    qtbot.waitUntil(lambda: not runner.running, timeout=5000)
    errors = [n for n in notes if n.severity == NotificationSeverity.ERROR]
    assert len(errors) == 1
    assert "labels 'seg' are empty" in errors[0].message
    assert results == [] and start.enabled


@pytest.mark.parametrize("generator", [False, True])
def test_a_runtime_error_ends_the_job_with_an_error_line(qtbot, notes, generator):
    """Trial 50: superqt takes a worker's RuntimeError for a deleted Qt object and drops it: torch's
    "quantile() input tensor is too large" left Evaluate busy for ever, with no line."""
    runner, start, _ = _runner()
    runner.status = status = type("Status", (), {"value": ""})()
    done = []

    def job(token, report):
        if generator:
            yield "a report"
        raise RuntimeError("quantile() input tensor is too large")

    runner.start(job, on_result=done.append, on_done=lambda: done.append("done"))
    qtbot.waitUntil(lambda: not runner.running, timeout=5000)
    errors = [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert errors == ["Job failed: RuntimeError: quantile() input tensor is too large"]
    assert status.value == errors[0] and done == ["done"] and start.enabled


def test_cancelled_is_info_not_error(qtbot, notes):
    runner, _, _ = _runner()

    def job(token, report):
        raise Cancelled()

    runner.start(job)
    qtbot.waitUntil(lambda: not runner.running, timeout=5000)
    assert [n.severity for n in notes] == [NotificationSeverity.INFO]


def test_second_start_while_running_warns(qtbot, notes):
    runner, _, _ = _runner()
    release = threading.Event()
    runner.start(lambda token, report: release.wait(5))
    assert runner.start(lambda token, report: None) is None
    release.set()
    qtbot.waitUntil(lambda: not runner.running, timeout=5000)
    assert any(n.severity == NotificationSeverity.WARNING for n in notes)


def test_progress_text():
    assert format_eta(65) == "ETA 1:05"
    assert format_eta(None) == ""
    assert progress_of((2, 5)) == (2, 5, "2/5")
    assert progress_of("x") is None
    from napari_medml.engine.reports import TrainReport

    base = dict(epoch=5, train_loss=0.1, learning_rate=1e-3, elapsed_s=15.0, eta_s=15.0)
    steps = TrainReport(step=150, total_steps=600, progress=0.25, **base)
    assert progress_of(steps) == (250, 1000, "epoch 5, step 150/600, loss 0.100, ETA 0:15")
    # a time limit ends the run long before its planned steps: the bar follows the clock (a trial's
    # bar stood at 9 % when a 0.5-minute run ended), and the planned steps are not shown as a goal
    timed = TrainReport(step=291, total_steps=3050, progress=0.5, time_limit_s=30.0, **base)
    assert progress_of(timed) == (500, 1000, "epoch 5, step 291, loss 0.100, ETA 0:15")
    fold = TrainReport(step=340, total_steps=600, progress=0.55, fold=2, folds=2, **base)
    assert progress_of(fold) == (550, 1000, "fold 2/2, step 340/600, loss 0.100, ETA 0:15")
