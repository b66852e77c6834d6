"""A training widget's Start, Stop and Resume buttons, and where its runs keep their checkpoints
(in a bundle's folder, or the viewer session's temporary folder), so that a stopped run resumes."""

from __future__ import annotations

import shutil
from pathlib import Path
from collections.abc import Callable
from typing import Any

from napari_medml._widgets._session import Session

__all__ = ["RunCheckpoints", "run_controls", "started_line"]


class RunCheckpoints:
    """Where one training widget's runs keep their checkpoints, and whether Resume can go on.

    Every run writes ``best``/``last`` into :meth:`new_run`'s folder: ``<bundle>/checkpoints``
    when the run saves a bundle (as the command line does), else the session's temp folder.
    The Resume button is enabled when the widget's last run was stopped (or failed) and
    left a ``last`` checkpoint.

    Parameters
    ----------
    session : Session
        The viewer's session (owner of the temp folder).
    owner : str
        The widget kind ("train", "classify", "pretrain"): its folder in the session.
    button : magicgui PushButton
        The Resume button.
    """

    def __init__(self, session: Session, owner: str, button: Any) -> None:
        self.session, self.owner, self.button = session, owner, button
        self.folder: Path | None = None
        self._stopped: bool | None = None  # None: no result (failed or cancelled)
        button.enabled = False

    def new_run(self, bundle: str | None) -> Path:
        """The (emptied, for the session's folder) checkpoint folder of a new run."""
        from napari_medml.bundles.checkpoints import checkpoint_folder
        from napari_medml.bundles.format import check_bundle_path

        if bundle:  # trial 37: a folder of the user's files was refused after the run, its checkpoints left there
            self.folder = None  # refused: no earlier run's checkpoints for Resume to take up with this run's form
            check_bundle_path(bundle)
        self.folder = checkpoint_folder(bundle) if bundle else self.session.run_folder(self.owner)
        return self.folder

    def running(self) -> None:
        """A run (new or resumed) starts: Resume waits for its end."""
        self._stopped = None
        self.button.enabled = False

    def result(self, stopped: bool) -> None:
        """The run returned its model (``stopped``: by the Stop button)."""
        self._stopped = stopped

    def done(self) -> None:
        """After every run: enable Resume when it was stopped or failed and left ``last``."""
        from napari_medml.bundles.checkpoints import has_checkpoint

        self.button.enabled = self._stopped is not False and self.folder is not None and has_checkpoint(self.folder)

    @property
    def resumable(self) -> bool:
        """Whether Resume can continue the last run."""
        return bool(self.button.enabled) and self.folder is not None

    def check_resume(self, run: dict[str, Any] | None, running: bool, form_now: Callable[[], Any]) -> str:
        """The checkpoint folder Resume continues ``run`` from, after the checks every widget makes.

        Parameters
        ----------
        run : dict or None
            The widget's last run (its ``"form"`` is the config the form gave then).
        running : bool
            A run is going on.
        form_now : callable
            The config the form gives now (called only when there is a run).

        Raises
        ------
        InputError
            Nothing to resume.
        ConfigError
            A form field that shapes the network, or how it trains, changed since (``check_same_training``).
        """
        from napari_medml.bundles.checkpoints import check_same_training
        from napari_medml.errors import InputError

        if run is None or running or not self.resumable:
            raise InputError("nothing to resume: Resume continues a stopped run that left a checkpoint")
        check_same_training(run["form"], form_now())
        return str(self.folder)

    def finish(self, model: Any, bundle: str | None, stopped: bool) -> None:
        """In the worker: save the bundle (a stopped run keeps its checkpoints there), and
        drop a finished run's checkpoints in the session folder.

        Parameters
        ----------
        model : any task's model
        bundle : str or None
            The bundle folder, if the user chose one.
        stopped : bool
            The run was stopped (it may resume).
        """
        from napari_medml.bundles.checkpoints import save_keeping_checkpoints

        if bundle:
            if stopped:
                save_keeping_checkpoints(model, bundle)
            else:
                model.save(bundle)  # a finished run's bundle replaces its checkpoints
        elif not stopped and self.folder is not None and self.session.owns(self.folder):
            shutil.rmtree(self.folder, ignore_errors=True)


def started_line(resumed: bool, what: str, on: str = "") -> str:
    """The status line of a training run that started: it replaces the last run's result,
    which named another model. ``on`` names the data (a removed layer's box moves to
    another layer, so the line says which is trained on)."""
    return (f"resuming the stopped run with its settings and {what}{f' ({on})' if on else ''}..." if resumed else
            f"running{f' on {on}' if on else ''}: the bar below shows the step and the loss; Stop keeps the model "
            "trained so far")


def run_controls(w: dict[str, Any], session: Session, owner: str, title: str,
                 data: str, *, also: tuple[Any, ...] = ()) -> tuple[Any, RunCheckpoints]:
    """Add a training widget's Start, Stop and Resume buttons to its form ``w``.

    Returns the :class:`~napari_medml._widgets._runner.Runner` that Start and Stop drive
    (``title`` names its jobs; ``also`` are other buttons disabled while one runs) and the
    :class:`RunCheckpoints` that enables Resume (which continues the stopped run "with its
    settings and ``data``").
    """
    from magicgui.widgets import PushButton

    from napari_medml._widgets._runner import Runner

    w["start"] = PushButton(text="Start")
    w["stop"] = PushButton(text="Stop")
    w["resume"] = PushButton(text="Resume", tooltip="continue the stopped run from its last checkpoint, "
                             f"with its settings and {data}")
    return (Runner(title, [w["start"], *also], w["stop"], status=w.get("status")),
            RunCheckpoints(session, owner, w["resume"]))
