"""The Train widget's device line: the chosen device checked off the GUI thread."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from napari_medml._widgets._runner import Runner

__all__ = ["DeviceCheck"]


class DeviceCheck:
    """Resolve a device choice in a job (``resolve_device`` imports torch) and show it in ``label``.

    Parameters
    ----------
    choice : magicgui ComboBox
        The device choice; a change checks it again.
    label : magicgui widget
        Where the device (or the reason it is not there) is shown.
    warm_up : sequence of str
        Modules the job imports too, so that the first run does not stall on them.
    """

    def __init__(self, choice: Any, label: Any, warm_up: Sequence[str] = ()) -> None:
        self.runner = Runner("Device check", show_progress=False, status=label)  # errors too
        self._choice, self._label, self._warm_up = choice, label, tuple(warm_up)
        self._again = False  # the device changed while a check waited or ran
        choice.changed.connect(lambda *_: self.check())

    def check(self, soon: bool = False) -> None:
        """Check the current choice in a job; a check asked for while one runs follows it.

        Parameters
        ----------
        soon : bool
            Start once the dock is shown (``Runner.start_soon``), as the widget opens.
        """
        choice, warm_up = self._choice.value, self._warm_up

        def job(stop: Any, report: Any) -> str:
            import importlib

            from napari_medml.engine.devices import describe_device, resolve_device

            text = describe_device(resolve_device(choice))
            for module in warm_up:
                importlib.import_module(module)
            return text

        def show(text: str) -> None:
            self._label.value = text

        def again() -> None:  # the latest choice is checked, not the one a waiting check took
            if self._again:
                self._again = False
                self.check()

        if soon:
            self.runner.start_soon(job, on_result=show, on_done=again)
        elif not self.runner.running:
            self.runner.start(job, on_result=show, on_done=again)
        else:
            self._again = True
