"""Every task's way into the loop: resume or fine-tune, build the task, run it
(:func:`fit_task`), and drive a run to its end (:func:`run_to_end`)."""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any

from napari_medml.config import TrainConfig
from napari_medml.engine.loop import Resume, run
from napari_medml.engine.reports import StopToken, TrainReport
from napari_medml.engine.task import TrainingTask

__all__ = ["fit_task", "resume_point", "run_to_end"]


def resume_point(path: str | Path, load: Any) -> tuple[Any, Resume]:
    """The model and loop state to continue a run from its checkpoint (every task's resume).

    Parameters
    ----------
    path : str or Path
        A checkpoint folder, or an earlier run's ``checkpoint_dir`` (its ``last``).
    load : callable
        The task's bundle loader (``path -> model``).

    Returns
    -------
    tuple
        ``(model, Resume)``: the task builds its network from the model and hands
        ``Resume`` to :func:`run`.

    Raises
    ------
    BundleError
        No resumable checkpoint there, or a damaged one.
    """
    from napari_medml.bundles.checkpoints import damaged_checkpoint, find_checkpoint, read_checkpoint
    from napari_medml.errors import BundleError

    checkpoint = find_checkpoint(path)
    try:
        model = load(checkpoint)
        state, tensors = read_checkpoint(checkpoint)
    except BundleError as exc:  # a bundle's advice (copy it again) does not fit a checkpoint (trial 46)
        said = damaged_checkpoint(checkpoint, str(exc))
        if said is None:  # e.g. written by a newer napari-medml: its own fix
            raise
        raise BundleError(said) from exc
    return model, Resume(state, tensors, list(getattr(model, "history", []) or []), best=checkpoint.parent / "best")


def fit_task(build: Callable[[Any, int], TrainingTask], config: TrainConfig, *, load: Callable[[Path], Any],
             stop: StopToken | None = None, resume_from: str | Path | None = None, init_model: Any = None,
             provenance: Mapping[str, Any] | None = None) -> Generator[TrainReport, None, Any]:
    """Every task's ``fit`` after its own checks: resume or fine-tune, build the task, run it.

    Checkpoints go to ``config.checkpoint_dir`` (the fronts set it: the command line
    to ``<bundle>/checkpoints``, where ``--resume`` finds ``last``); without one nothing
    is written (the best state is kept in memory), never a temporary folder left behind.

    Parameters
    ----------
    build : callable
        ``(base, start_step) -> TrainingTask``: ``base`` is the model to start from
        (the checkpoint's when resuming, else ``init_model``), ``start_step`` the step
        a resumed run continues from (0 otherwise; it shifts the task's seeds). The
        task's ``config`` attribute, when it has one, is the config the loop runs.
    config : TrainConfig
        The run's config (``checkpoint_dir``).
    load : callable
        The task's bundle loader (``path -> model``), for ``resume_from``.
    stop : StopToken, optional
    resume_from : str or Path, optional
        A checkpoint folder, or an earlier run's ``checkpoint_dir``.
    init_model : optional
        The model to fine-tune (ignored when resuming).
    provenance : Mapping, optional
        As for :func:`run`.

    Yields
    ------
    TrainReport

    Returns
    -------
    Any
        The task's best model.

    Raises
    ------
    BundleError
        No resumable checkpoint at ``resume_from``, or a damaged one.
    """
    resume, base = None, init_model
    if resume_from is not None:
        base, resume = resume_point(resume_from, load)
    task = build(base, int(resume.state["step"]) if resume is not None else 0)
    return (yield from run(task, getattr(task, "config", config), stop=stop, checkpoint_dir=config.checkpoint_dir,
                           resume=resume, provenance=provenance))


def run_to_end(gen: Generator[TrainReport, None, Any], reports: list | None = None) -> Any:
    """Drive a training generator to its end (a script's way) and return its model.

    Parameters
    ----------
    gen : generator
        What ``fit`` returns: it yields reports and returns the model.
    reports : list, optional
        Each report the run yields is appended to it.

    Returns
    -------
    Any
        The generator's return value: the trained model.

    Warns
    -----
    UserWarning
        Each line of a report's message that starts with ``warning:`` (a class the training
        part lacks, a time limit too short...), which the command line and the widgets show
        (trial 47: a script saw none of them).
    """
    import warnings

    while True:
        try:
            report = next(gen)
        except StopIteration as done:
            return done.value
        if reports is not None:
            reports.append(report)
        for line in (report.message or "").splitlines():
            if line.startswith("warning: "):
                warnings.warn(line.removeprefix("warning: "), UserWarning, stacklevel=2)
