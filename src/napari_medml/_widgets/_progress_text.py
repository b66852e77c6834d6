"""What a job's progress bar says: the step, the loss and the time left (no Qt here)."""

from __future__ import annotations

from typing import Any

__all__ = ["format_eta", "progress_of"]


def format_eta(seconds: float | None) -> str:
    """``"ETA 1:05"``, or ``""`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"ETA {hours}:{minutes:02d}:{secs:02d}" if hours else f"ETA {minutes}:{secs:02d}"


def progress_of(report: Any) -> tuple[int, int, str] | None:
    """(done, total, text) of a report: a ``TrainReport`` or a ``(done, total)`` pair."""
    if isinstance(report, tuple) and len(report) == 2:
        done, total = report
        return int(done), int(total), f"{done}/{total}"
    step = getattr(report, "step", None)
    total = getattr(report, "total_steps", None)
    if step is None or total is None:
        return None
    # a time limit ends the run before its planned steps: then the bar follows the clock
    limited = getattr(report, "time_limit_s", None) is not None
    folds = getattr(report, "folds", 1)
    where = f"fold {report.fold}/{folds}, step {step}" if folds > 1 else f"epoch {report.epoch}, step {step}"
    text = f"{where}{'' if limited else f'/{total}'}, loss {report.train_loss:.3f}"
    eta = format_eta(getattr(report, "eta_s", None))
    share = getattr(report, "progress", None)
    done, total = (int(step), int(total)) if share is None else (int(round(share * 1000)), 1000)
    return done, total, f"{text}, {eta}" if eta else text
