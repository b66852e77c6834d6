"""Running a training generator in a terminal: a progress bar, one line per epoch, and
Ctrl-C that stops after the current step (and keeps the best model)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

from pathlib import Path

from napari_medml.cli.common import PROG, UsageError, info, progress_bar
from napari_medml.cli.messages import flag_names

__all__ = ["LOG_AFTER_S", "bar_progress", "checkpoint_folder", "drive_training", "epoch_line", "resume_folder", "step_line", "stop_on_interrupt"]


def checkpoint_folder(out: Path) -> Path:
    """Where a command-line run keeps its best/last checkpoints: inside its bundle folder,
    so an interrupted run can go on (``--resume``); saving the bundle removes them."""
    from napari_medml.bundles.checkpoints import checkpoint_folder as bundle_checkpoints

    return bundle_checkpoints(out)



def resume_folder(args: argparse.Namespace) -> Path | None:
    """The checkpoints ``--resume`` continues from (None without ``--resume``)."""
    from napari_medml.bundles.checkpoints import has_checkpoint
    from napari_medml.cli.launch import folder_held_elsewhere
    from napari_medml.cli.run_guard import restore_set_aside
    from napari_medml.engine.distributed import launched

    if not args.resume:
        return None
    if not (launched() and folder_held_elsewhere()):  # (the process that holds --out does it)
        restore_set_aside(args.out)  # set aside by a new run that was killed before its first checkpoint
    folder = checkpoint_folder(args.out)
    if not has_checkpoint(folder):
        raise UsageError(f"--resume: '{args.out}' holds no checkpoints of an interrupted run; "
                         "train without --resume")  # fmt: skip
    return folder



def drive_training(gen: Generator[Any, None, Any], epochs: int, folds: int = 1) -> tuple[Any, Any]:
    """Run a ``fit()`` generator to its end with a progress bar and epoch lines.

    Parameters
    ----------
    gen : generator
        Yields ``TrainReport``s, returns the model.
    epochs : int
        Epochs per model (per fold of an ensemble).
    folds : int
        Models trained one after the other (``--folds``), whose reports count epochs
        across all folds: the lines say ``fold k/K  epoch e/epochs``.

    Returns
    -------
    tuple
        The model the generator returns and the report of the best epoch (or None).
    """
    from napari_medml.engine.distributed import is_main

    best = None
    if not is_main():  # data parallel: rank 0 draws the bar and prints
        while True:
            try:
                report = next(gen)
            except StopIteration as done:
                return done.value, best
            best = report if report.best else best
    with progress_bar("step") as bar:
        said = time.monotonic()  # without a bar (a log, not a terminal) a long epoch still says where it is
        while True:
            try:
                report = next(gen)
            except StopIteration as done:
                return done.value, best
            best = report if report.best else best
            bar.total = report.total_steps
            bar.update(report.step - bar.n)
            bar.set_postfix(loss=f"{report.train_loss:.4f}", lr=f"{report.learning_rate:.2g}",
                            refresh=False)  # fmt: skip
            if report.epoch_end:
                bar.write(flag_names(epoch_line(report, epochs, folds)), file=sys.stderr)
            elif report.message:
                for line in flag_names(report.message).splitlines():
                    bar.write(f"{PROG}: {line}", file=sys.stderr)
            elif getattr(bar, "disable", True) and time.monotonic() - said >= LOG_EVERY_S:
                bar.write(f"{PROG}: {step_line(report, epochs, folds)}", file=sys.stderr)
            else:
                continue
            said = time.monotonic()



def step_line(report: Any, epochs: int, folds: int = 1) -> str:
    """Where a run is within an epoch, for a log that shows no progress bar:
    ``epoch 1/20, step 37/1000, loss 0.5312, about 4.2 min left``."""
    where = ", ".join(_where(report, epochs, folds))
    limited = getattr(report, "time_limit_s", None) is not None  # the clock ends it, not the planned steps
    text = f"{where}, step {report.step}{'' if limited else f'/{report.total_steps}'}, loss {report.train_loss:.4f}"
    if report.eta_s is not None and report.eta_s >= 0:
        minutes = report.eta_s / 60
        text += f", about {minutes:.0f} min left" if minutes >= 10 else f", about {minutes:.2g} min left"
    return text


def _where(report: Any, epochs: int, folds: int) -> list[str]:
    """``["fold 2/4", "epoch 3/40"]``: a report's epoch counts across the folds (``epochs``
    each, as ``segmentation.ensemble`` numbers them)."""
    if folds > 1:
        fold, epoch = divmod(report.epoch - 1, epochs)
        return [f"fold {fold + 1}/{folds}", f"epoch {epoch + 1}/{epochs}"]
    return [f"epoch {report.epoch}/{epochs}"]


def epoch_line(report: Any, epochs: int, folds: int = 1) -> str:
    """One line per epoch: losses, per-class validation Dice, learning rate, time, best marker.

    With ``folds`` > 1 the report's epoch counts across the folds (``epochs`` each, as
    ``segmentation.ensemble`` numbers them): the line names the fold and the epoch in it.
    """
    parts = [*_where(report, epochs, folds), f"loss {report.train_loss:.4f}"]
    if report.val_loss is not None:
        parts.append(f"val_loss {report.val_loss:.4f}")
    if report.val_dice:
        parts.append("val_dice " + " ".join(f"{k}:{v:.3f}" for k, v in sorted(report.val_dice.items())))
    if report.val_mean_dice is not None:
        parts.append(f"mean {report.val_mean_dice:.3f}")
    for name, value in (report.val_metrics or {}).items():  # counts (n_true) as whole numbers
        whole = name.startswith("n_") and float(value).is_integer()
        parts.append(f"{name} {int(value)}" if whole else f"{name} {value:.4f}")
    if report.learning_rate is not None:  # where the schedule is (a plateau halves it)
        parts.append(f"lr {report.learning_rate:.3g}")
    parts.append(f"{report.elapsed_s:.0f}s")
    if report.best:
        parts.append("* best")
    if report.message:
        parts.append(f"({'; '.join(report.message.splitlines())})")
    return "  ".join(parts)



LOG_EVERY_S = 60.0  # a progress line in a log without a bar, at most once a minute

KEEPS_BEST = "stopping after this step and keeping the best model"


@contextlib.contextmanager
def stop_on_interrupt(stop: Any, says: str = KEEPS_BEST) -> Iterator[None]:
    """First Ctrl-C (or SIGTERM): ask the run to stop, saying ``says`` (a training run finishes
    the step and returns the best model, which is then saved; a block-wise prediction stops at
    the next window, its finished blocks kept). Second: abort at once. A process started by
    ``train --nproc`` also stops when the launcher's stop file appears.

    The handler only trips ``stop``, which the run checks between its steps: unlike Python's
    default handler, whose ``KeyboardInterrupt`` surfaces wherever the interpreter happens to
    be, nothing between two checks can swallow it."""
    from napari_medml.cli.launch import watch_stop_file
    from napari_medml.engine.distributed import is_main, launched

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.stopped:
            raise KeyboardInterrupt
        stop.stop()
        if is_main():
            term = signum == signal.SIGTERM  # (trial 46: a SIGTERM was told to press Ctrl-C)
            again = "a second signal aborts" if term else "Ctrl-C again to abort"
            print(f"\n{PROG}: {'terminated: ' if term else ''}{says} ({again})", file=sys.stderr)

    # SIGTERM (kill, a batch scheduler's time limit, docker stop) as Ctrl-C: the best model is saved.
    # Not in a process torchrun started: its launcher stops them all at one step; torchrun's
    # SIGTERM is its abort (a process stopping alone would wait for the others' next step)
    terms = () if launched() else (signal.SIGTERM,)
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, *terms)}
    try:
        with watch_stop_file(stop):
            yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)


# a run that has lasted less than this prints no progress line into a log (a second's prediction
# stays one line, or none); a block-wise prediction says every tenth
LOG_AFTER_S = 10.0
LOG_EVERY_S = 60.0  # a log hears from a long run at least this often


def bar_progress(bar: Any, verb: str, unit: str, after_s: float | None = None) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback that moves ``bar`` and, in a log (no terminal, so no
    bar), prints a line at each tenth, and once a minute (:data:`LOG_EVERY_S`) with the minutes
    left, once the run has lasted ``after_s`` (trial 41: a 13-minute prediction printed nothing).

    Parameters
    ----------
    bar : tqdm or stand-in
        From :func:`progress_bar`.
    verb, unit : str
        What is done to what, for the log lines: ``"predicted"``, ``"windows"`` make
        ``predicted 40 of 400 windows (10%)``.
    after_s : float, optional
        Seconds before the first line; default :data:`LOG_AFTER_S`.

    Returns
    -------
    callable
        ``progress(done, total)``.
    """
    said, start = [0, 0, time.monotonic()], time.monotonic()  # tenth, done and time of the last line
    wait = LOG_AFTER_S if after_s is None else after_s

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)
        tenth, now = 10 * done // max(total, 1), time.monotonic()
        # trial 42: a tenth of a block-wise prediction took an hour: a line a minute too
        due = tenth > said[0] or (now - said[2] >= LOG_EVERY_S and done > said[1])
        if getattr(bar, "disable", True) and due and now - start >= wait:
            said[:] = [tenth, done, now]
            left = (now - start) / max(done, 1) * (total - done)
            eta = f", about {left / 60:.0f} min left" if 0 < done < total and left >= 60 else ""
            info(f"{verb} {done} of {total} {unit} ({100 * done // max(total, 1)}%){eta}")

    return progress
