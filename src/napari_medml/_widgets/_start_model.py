"""The Train widget's start model, when it is a model of this session: saved where the core's
transfer reads bundles, and named in the run's lines as the user knows it, not by that folder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from napari_medml.errors import MedMLError

__all__ = ["StartModel"]


class StartModel:
    """What a run starts from (``model.init_from`` takes a bundle folder).

    Parameters
    ----------
    session : Session
        The viewer's session (its models, and the temp folder a model is saved to).
    start : None, str or model
        No start, a bundle folder, or one of ``session.models`` (the only case that
        changes anything here).
    """

    def __init__(self, session: Any, start: Any) -> None:
        self._session = session
        self._start = start
        self._in_session = start is not None and not isinstance(start, str)
        self.name = next((name for name, m in session.models.items() if m is start), "the start model")
        self._folders: list[str] = []

    def source(self) -> str:
        """The bundle folder: a session model's own folder when it was loaded from or saved to one
        that still holds it, else it is saved into the session's temp folder (it goes with the
        viewer) first; call it in the worker."""
        if not self._in_session:
            return str(self._start)
        saved = self._session.folder_of(self.name)
        if saved is not None and self._session.models.get(self.name) is self._start:
            return str(saved)  # trial 48: config.json named the session's temp folder, gone with the viewer
        path = self._start.save(self._session.run_folder("train-start") / "bundle")
        self._folders = [str(path), str(Path(path).resolve())]
        return str(path)

    def named(self, text: str) -> str:
        """``text`` with the temp folder replaced by ``model 'NAME'``."""
        for folder in sorted(self._folders, key=len, reverse=True):
            text = text.replace(folder, f"model '{self.name}'")
        return text

    @contextmanager
    def naming(self) -> Iterator[None]:
        """Errors raised inside name the start model as :meth:`named` does."""
        try:
            yield
        except MedMLError as exc:
            if not self._folders:
                raise
            raise type(exc)(self.named(str(exc))) from None

    def rename_in(self, model: Any) -> None:
        """The trained model's provenance (each member's too) names the start by its name."""
        for one in [model, *getattr(model, "members", [])]:
            start = (getattr(one, "provenance", None) or {}).get("initial_weights")
            if isinstance(start, dict) and isinstance(start.get("source"), str):
                start["source"] = self.named(start["source"])
