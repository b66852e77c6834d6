"""The worker-thread side of a job (:class:`~napari_medml._widgets._runner.Runner` starts it):
torch and MONAI imported first under one lock, the Stop checked before and after, and a
``RuntimeError`` carried past superqt.

No Qt here: this runs in the worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from typing import Any

__all__ = ["Job", "JobFailed"]

Job = Callable[[Any, Callable[[Any], None]], Any]

# MONAI's package import is not thread-safe: its submodules import one another in a cycle
# that Python resolves only when one thread does the whole import, so two jobs importing it
# at once (the Train widget's device check and an augmentation preview) failed with
# "cannot import name ... from partially initialized module". Every job first imports torch
# and MONAI whole under this lock (once per process; then a dictionary look-up).
_IMPORT_LOCK = threading.Lock()


def _import_stack() -> None:
    with _IMPORT_LOCK:
        import monai  # noqa: F401  (imports torch and every MONAI submodule)


def _run(job: Job, stop: Any, report: Callable[[Any], None], discard: bool = False,
         stack: bool = True) -> Generator[Any, None, Any]:
    # Runs in the worker thread. Always a generator, so that generator jobs (fit)
    # stream their reports through the worker's ``yielded`` signal.
    try:
        if stack:
            _import_stack()
        if getattr(stop, "stopped", False):  # Stop pressed while the first job imported torch and MONAI
            from napari_medml.errors import Cancelled

            raise Cancelled()
        result = job(stop, report)
        if isinstance(result, Generator):
            result = yield from result
    except RuntimeError as exc:  # superqt drops a worker's RuntimeError (it takes it for a deleted Qt object)
        raise JobFailed(exc) from exc  # and the widget stayed busy for ever (trial 50: torch's)
    if discard and getattr(stop, "stopped", False):  # Cancel pressed during a last pass that does not look
        from napari_medml.errors import Cancelled

        raise Cancelled()
    return result


class JobFailed(Exception):
    """A job's ``RuntimeError`` (torch raises many), carried past superqt, which reads a worker's
    RuntimeError as its Qt object deleted: it warns "RuntimeError in aborted thread" and neither
    reports the error nor ends the worker. :meth:`Runner._on_errored` shows the original."""
