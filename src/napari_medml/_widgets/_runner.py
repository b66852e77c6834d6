"""The only threading code of the plugin: run a core job in napari's ``thread_worker``.

A *job* is a callable ``job(stop, report)`` run in a worker thread. ``stop`` is a
:class:`napari_medml.segmentation.task.StopToken` the Stop button trips; ``report`` sends one
progress report back to the GUI thread (for core functions that take a callback,
such as ``Model.predict(progress=...)``). A job may also *return a generator* (such as
``train.fit``): its yields are reports and its return value is the result.

The runner drives a progress bar in the dock widget (``Runner.progress``, which each
widget places under its buttons), the Start/Stop buttons' enabled state, and turns the
core's ``ValueError`` s into notifications that say what to change.

Why not ``napari.utils.progress``: for as long as one exists napari animates a GIF in its
status bar, and every bar change runs ``QApplication.processEvents``; each frame repaints
the window. On software OpenGL (VMs, remote desktops, Xvfb) that took half a core on a
2-core machine: training ran 1.4-5x slower and the event loop's median gap was 20-47 ms
instead of 10 (benchmarks/README.md). A plain bar in the dock repaints only when it moves.
"""

from __future__ import annotations

import atexit
import functools
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from magicgui.widgets import ProgressBar
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import notifications
from qtpy.QtCore import QObject, Signal

from napari_medml._widgets._job import Job, JobFailed, _run
from napari_medml._widgets._progress_text import format_eta, progress_of

__all__ = ["Runner", "detach_runners_in", "format_eta", "notify_errors", "progress_of"]

_log = logging.getLogger(__name__)

# The progress bar moves at most this often (and at every epoch end and the last step):
# each change repaints the window, 5-10 ms on an idle machine, 30-70 ms (up to 300) on a
# busy one with software OpenGL. Reports still reach on_report (the plot) every time.
BAR_EVERY_S = 0.5

# A widget's opening jobs start this long after it was docked: after its first drawing.
START_SOON_MS = 300

# napari waits for workers when its application quits (aboutToQuit), but a script that
# closes its viewer and ends never quits the application: the interpreter then tore
# down the worker's Qt signals while a job still ran (the Train widget's device check
# imports MONAI for seconds) and the process aborted. At exit, the running jobs are told
# to stop and awaited.
_RUNNERS: weakref.WeakSet[Runner] = weakref.WeakSet()
_AWAIT_AT_EXIT_S = 60


@atexit.register
def _await_jobs() -> None:
    running = [runner for runner in list(_RUNNERS) if runner.running]
    if not running:
        return
    for runner in running:
        runner.detach()
    from napari.qt.threading import WorkerBase

    try:
        WorkerBase.await_workers(msecs=_AWAIT_AT_EXIT_S * 1000)
    except RuntimeError:  # a job still running after the wait: leave it, as napari does
        _log.warning("a napari-medml job was still running at exit")


def detach_runners_in(widget: Any) -> None:
    """Stop the jobs of every runner whose bar lies in ``widget`` (a closed dock form) and
    drop their GUI callbacks (:meth:`Runner.detach`): nothing they report or return reaches
    the form any more."""
    for runner in list(_RUNNERS):
        try:
            inside = widget.isAncestorOf(runner.progress.native)
        except RuntimeError:  # its Qt object is gone already
            continue
        if inside:
            runner.detach()


class _Relay(QObject):
    """Carries reports from a worker-thread callback to the GUI thread (queued signal)."""

    report = Signal(object)


def notify_errors(desc: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a GUI-thread callback: a ``ValueError`` from it becomes an error notification.

    Widgets read and check their inputs before starting a job; the core's checks raise
    ``ValueError`` s (InputError, ConfigError, ...) whose message says what to change.
    The widget's status line (``_w["status"]``, or Evaluate's ``_w["summary"]``) shows the
    error too, in place of an earlier run's result that no longer answers the click.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except ValueError as exc:
                notifications.show_error(f"{desc}: {exc}")
                fields = getattr(args[0], "_w", None) if args else None
                line = (fields.get("status") or fields.get("summary")) if isinstance(fields, dict) else None
                if line is not None:
                    line.value = f"{desc}: {exc}"
                return None

        return wrapper

    return decorate


class Runner:
    """Runs one long core job at a time for one widget.

    Parameters
    ----------
    desc : str
        What the job is, for the progress bar and messages ("Training").
    start : sequence of magicgui widgets
        Disabled while the job runs (the Start button, and whatever must not change).
    stop : magicgui PushButton, optional
        Enabled only while the job runs; pressing it trips the job's stop token.
    token_factory : callable, optional
        Makes the stop token; default :class:`napari_medml.segmentation.task.StopToken`.
    show_progress : bool
        Whether to show progress (off for quick background look-ups).
    imports_stack : bool
        Whether each job first imports torch and MONAI (under one lock: two workers importing
        them at once got a half-imported MONAI). Off for jobs that use neither (Preprocess's
        NumPy/SciPy steps): the import holds the GIL for seconds, and the GUI stalled for up to
        0.5 s at a z-score's first Apply (trial 40).

    Attributes
    ----------
    progress : magicgui ProgressBar
        Shown while a job runs, with the text of the last report inside the bar ("Training:
        epoch 2, step 30/150, ..."; inside, so that a new text does not re-layout the dock).
        The widget places it (under its buttons).
    """

    def __init__(
        self,
        desc: str,
        start: Iterable[Any] = (),
        stop: Any | None = None,
        *,
        token_factory: Callable[[], Any] | None = None,
        show_progress: bool = True,
        status: Any | None = None,
        imports_stack: bool = True,
    ) -> None:
        self.desc = self._default_desc = desc
        self.status = status  # a label that also shows a job's error or cancel (not a stale result)
        self._start_widgets: Sequence[Any] = tuple(start)
        self._stop_button = stop
        self._token_factory = token_factory
        self._show_progress = show_progress
        self._imports_stack = imports_stack
        self.worker: GeneratorWorker | None = None
        self.token: Any | None = None
        self.progress = ProgressBar(value=0, min=0, max=1, label="", visible=False)
        self._started_at = 0.0
        self._bar_shown_at = -BAR_EVERY_S
        self._relay = _Relay()
        self._relay.report.connect(self._on_report)
        self._on_report_cb: Callable[[Any], None] | None = None
        self._on_result_cb: Callable[[Any], None] | None = None
        self._on_done_cb: Callable[[], None] | None = None
        self._detached = False
        self._soon = False  # a start_soon job waits for its timer
        _RUNNERS.add(self)
        # The dock (with the bar in it) closes with its viewer, possibly while a job runs
        # and other viewers keep Qt alive: the job's last reports must not reach dead widgets.
        self.progress.native.destroyed.connect(self.detach)
        if stop is not None:
            stop.enabled = False
            stop.changed.connect(self.stop)

    @property
    def running(self) -> bool:
        return self.worker is not None or self._soon

    @property
    def stopping(self) -> bool:
        """Whether the job runs on after its Stop (it ends at its next check)."""
        return self.running and bool(getattr(self.token, "stopped", False))

    def refused_while_running(self) -> bool:
        """True (and a warning saying so) while a job runs or is stopping: a front calls it before it
        changes anything for a new job."""
        if self.running:
            notifications.show_warning(f"{self.desc} is still stopping: start it again once it has stopped." if
                                       self.stopping else f"{self.desc} is already running: wait, or press Stop.")
        return self.running

    def start(
        self,
        job: Job,
        *,
        on_report: Callable[[Any], None] | None = None,
        on_result: Callable[[Any], None] | None = None,
        on_done: Callable[[], None] | None = None,
        desc: str | None = None,
        discard_on_stop: bool = False,
        imports_stack: bool | None = None,
    ) -> GeneratorWorker | None:
        """Start ``job`` in a worker thread; None (and a warning) if one is running.

        ``on_report`` gets every report, ``on_result`` the job's result (not called
        after an error or a cancel), ``on_done`` runs last in every case; all in the
        GUI thread. ``desc`` names this job in the bar and in its error or cancel
        message (default: the runner's). ``discard_on_stop``: the Stop button cancels
        (a prediction), so a result that arrives after it is dropped as cancelled; without
        it, a run's Stop keeps what it has (a training run's model). ``imports_stack``: this
        job's, in place of the runner's (a Live session without a network needs no torch).
        """
        if self.refused_while_running():
            return None
        self.desc = desc or self._default_desc
        self.token = self._make_token()
        self._on_report_cb, self._on_result_cb, self._on_done_cb = on_report, on_result, on_done
        worker = create_worker(
            _run, job, self.token, self._relay.report.emit, discard_on_stop,
            self._imports_stack if imports_stack is None else imports_stack,
            _start_thread=False, _ignore_errors=True,  # errors become notifications below
        )
        worker.yielded.connect(self._on_report)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._set_busy(True)
        if self._show_progress:
            # a determinate bar at 0, not a busy one: Qt animates a busy bar (repaints)
            self.progress.max, self.progress.value = 1, 0
            self._set_text(f"{self.desc}...")
            self.progress.visible = True
        self._started_at = time.perf_counter()
        self._bar_shown_at = -BAR_EVERY_S
        worker.start()
        return worker

    def start_soon(self, job: Job, **kwargs: Any) -> None:
        """:meth:`start` ``job`` once the widget is docked and drawn (``running`` is True
        already): for a job that a widget starts as it opens (a device check, a plot's figure).

        napari docks a widget inside its menu command: Qt re-styles each of the form's rows,
        calling napari's Python event filter some 2000 times, then draws the dock. A job
        started meanwhile imports torch and MONAI in its thread, and each of those calls
        waited for the GIL: the GUI stood still 0.6-0.8 s when Train opened. Started
        ``START_SOON_MS`` later, the longest stall was 0.29-0.30 s, and it is the import
        itself (benchmarks/bench_open_widget.py).
        """
        from qtpy.QtCore import QTimer

        self._soon = True

        def go() -> None:
            self._soon = False
            if not self._detached:
                self.start(job, **kwargs)

        QTimer.singleShot(START_SOON_MS, go)

    def stop(self, *_: Any) -> None:
        """Ask the running job to stop (it finishes its current step)."""
        if self.token is not None and self.running:
            self.token.stop()
            if self._show_progress:
                self._set_text(f"{self.desc}: stopping...")

    def detach(self, *_: Any) -> None:
        """The widget is gone (its viewer closed): stop the job, drop its GUI callbacks.

        The job finishes its current step in its thread; nothing it reports or returns
        reaches the widget any more.
        """
        self._detached = True
        self._on_report_cb = self._on_result_cb = self._on_done_cb = None
        if self.token is not None:
            self.token.stop()

    # -- GUI-thread slots --------------------------------------------------------------

    def _make_token(self) -> Any:
        if self._token_factory is not None:
            return self._token_factory()
        from napari_medml.engine.reports import StopToken

        return StopToken()

    @property
    def progress_text(self) -> str:
        """The text in the progress bar."""
        return str(self.progress.native.format()).replace("%%", "%")

    def _set_text(self, text: str) -> None:
        self.progress.native.setFormat(text.replace("%", "%%"))  # Qt expands %p, %v, %m

    def _set_busy(self, busy: bool) -> None:
        for widget in self._start_widgets:
            widget.enabled = not busy
        if self._stop_button is not None:
            self._stop_button.enabled = busy

    def _on_report(self, report: Any) -> None:
        if self._detached:
            return
        info = progress_of(report)
        if info is not None and self._show_progress and self.running:
            done, total, text = info
            now = time.perf_counter()
            if (now - self._bar_shown_at >= BAR_EVERY_S or done >= total
                    or getattr(report, "epoch_end", False)):
                self._bar_shown_at = now
                self.progress.max = max(total, 1)
                self.progress.value = min(done, self.progress.max)
                self._set_text(f"{self.desc}: {text}")
        if self._on_report_cb is not None:
            self._on_report_cb(report)

    def _on_returned(self, result: Any) -> None:
        if self._on_result_cb is not None:
            self._on_result_cb(result)

    def _on_errored(self, exc: BaseException) -> None:
        from napari_medml.errors import Cancelled, NothingLearned

        if isinstance(exc, JobFailed) and isinstance(exc.__cause__, BaseException):
            exc = exc.__cause__
        if isinstance(exc, NothingLearned):
            line = f"{self.desc}: {exc}"
            notifications.show_info(line)
        elif isinstance(exc, Cancelled):
            line = f"{self.desc} cancelled."
            notifications.show_info(line)
        elif isinstance(exc, ValueError):
            # The core's MedMLError/ConfigError/InputError/BundleError say what to change.
            line = f"{self.desc}: {exc}"
            notifications.show_error(line)
        else:
            _log.error("%s failed", self.desc, exc_info=exc)
            line = f"{self.desc} failed: {type(exc).__name__}: {exc}"
            notifications.show_error(line)
        if self.status is not None and not self._detached:
            self.status.value = line

    def _on_finished(self) -> None:
        self.worker = None
        if self._detached:
            return
        self.progress.visible = False
        self._set_busy(False)
        done, self._on_done_cb = self._on_done_cb, None
        if done is not None:
            done()
