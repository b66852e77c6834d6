"""Per-viewer state the dock widgets share: trained models and the augmentation config.

npe2 creates each dock widget on its own and the viewer is the only object they all
see, so :func:`session_for` maps a viewer to its :class:`Session`. The mapping is weak
(a ``WeakKeyDictionary``): a closed viewer takes its session, and its models, with it.
This is the plugin's one piece of module-level state; everything else lives on the
Session instance.

Training widgets keep their checkpoints (so that a stopped run can resume) in a
temporary folder the session owns (:meth:`Session.run_folder`), unless the user saves
the bundle somewhere (then ``<bundle>/checkpoints``). The folder is made on first use and
removed when the last widget that used it is destroyed (closing the viewer destroys its
dock widgets), when the session is collected, or at the latest when Python exits.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from napari_medml._widgets._proxy import unproxied
from napari_medml.config import AugmentConfig

if TYPE_CHECKING:
    import napari

    from napari_medml.segmentation.model import Model

__all__ = ["Session", "ShownPrediction", "session_for"]


class ShownPrediction(NamedTuple):
    """A prediction layer as it was made: its labels, the earlier rounds' edits it keeps
    (bool mask or None) and the planes (layer axes) the user has painted it in since."""

    labels: Any
    edited: Any
    planes: set


class Session:
    """Models trained or loaded in one viewer, by name, and the shared AugmentConfig."""

    def __init__(self) -> None:
        self.models: dict[str, Model] = {}
        # a model's training data (``segmentation.corrections.LabelledSample``s), by model name:
        # fine-tuning learns it alongside the corrections, so the model keeps it
        self.training_data: dict[str, list[Any]] = {}
        # a prediction layer -> its labels as predicted (the user's edits are what differs)
        self._predicted: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self.augment: AugmentConfig = AugmentConfig()
        # (2D/3D, patch text) of the Train segmentation form: the Augmentation preview crops it
        self.train_patch: tuple[int, str] | None = None
        self._listeners: list[Callable[[str], None]] = []
        self._folders: dict[str, Path] = {}  # model name -> the bundle folder it was loaded from
        self._stamps: dict[str, tuple[int, int, int] | None] = {}  # model name -> its folder's config.json as it was
        self._temp: Path | None = None  # the session's checkpoint folder, made on first use
        self._cleanup: weakref.finalize | None = None
        self._owners: set[int] = set()  # ids of the Qt widgets that use the folder

    @property
    def temp_folder(self) -> Path | None:
        """The session's temporary folder (None until a run needed one, and after :meth:`close`)."""
        return self._temp

    def run_folder(self, owner: str, *, empty: bool = True) -> Path:
        """A folder for ``owner``'s next run, inside the session's temp folder.

        One folder per owner (a widget kind, such as ``"train"``): a new run replaces the
        previous run's checkpoints. ``empty=False`` keeps what is there (the Predict
        widget's block-wise stores: a run started again after Cancel resumes them, and
        the lazily read result layers keep reading them until the viewer closes).

        Parameters
        ----------
        owner : str
            The widget the run belongs to.
        empty : bool
            Remove what the folder holds first.

        Returns
        -------
        Path
            ``<session temp>/<owner>``.
        """
        if self._temp is None or not self._temp.is_dir():
            self._temp = Path(tempfile.mkdtemp(prefix="napari-medml-session-"))
            # collected or exiting without a close: the folder goes anyway
            self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._temp), True)
        folder = self._temp / owner
        if empty:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(exist_ok=True)
        return folder

    def owns(self, folder: str | Path | None) -> bool:
        """Whether ``folder`` lies inside the session's temp folder."""
        return folder is not None and self._temp is not None and self._temp in Path(folder).parents

    def attach(self, qt_widget: Any) -> None:
        """Remove the temp folder once ``qt_widget`` and every other attached widget is destroyed.

        Parameters
        ----------
        qt_widget : QWidget
            A dock widget's native widget; its ``destroyed`` signal fires when the viewer
            closes (napari deletes its window and the docks in it).
        """
        key = id(qt_widget)
        self._owners.add(key)

        def gone(*_: Any) -> None:
            self._owners.discard(key)
            if not self._owners:
                self.close()

        qt_widget.destroyed.connect(gone)

    def close(self) -> None:
        """Remove the session's temp folder (its runs' checkpoints); a later run makes a new one.

        A job still finishing its step (its viewer closed while it ran) may write its last
        checkpoint after this: the folder is removed again when Python exits.
        """
        if self._cleanup is not None:
            self._cleanup()  # rmtree once, then detached
            atexit.register(shutil.rmtree, str(self._temp), True)
        self._temp, self._cleanup = None, None

    def add_model(self, model: Model, name: str, folder: Path | None = None) -> str:
        """Keep ``model`` under ``name`` (replacing a model of that name); tell listeners.

        Parameters
        ----------
        model : Model
        name : str
        folder : Path, optional
            The bundle folder ``model`` was loaded from (:meth:`bundle_name` tells it from others).
        """
        self.models[name] = model
        if folder is None:
            self._folders.pop(name, None)
        else:
            self._folders[name] = Path(folder).resolve()
            self._stamps[name] = _stamp(self._folders[name])
        for listener in list(self._listeners):
            listener(name)
        return name

    def bundle_name(self, folder: str | Path) -> str:
        """The name a bundle loaded from ``folder`` is kept under: the folder's name, or, when a
        model of another origin has it, its parent's name too (``a/model`` and ``b/model``; trial 36:
        the second replaced the first in the list without a word), else the whole path (``x/a/model``
        beside ``y/a/model``); a session model saved to ``folder`` keeps its name.

        Parameters
        ----------
        folder : str or Path
            The bundle folder.
        """
        given, path = Path(folder).absolute(), Path(folder).resolve()  # named as chosen, told apart as stored
        for name, where in list(self._folders.items()):  # a session model saved there: it, not a second entry
            if where == path and self._stamps.get(name) != _stamp(path):
                del self._folders[name]  # another run wrote there since (review 37): the session's model stays its own
            elif where == path and name in self.models:
                return name
        holder = self._folders.get(given.name)  # x/a/model beside y/a/model: "a/model" would not tell them apart
        told = holder is None or holder.parent.name != given.parent.name
        for name in (given.name, f"{given.parent.name}/{given.name}")[: 2 if told else 1]:
            if name not in self.models or self._folders.get(name) == path:
                return name
        return str(given)

    def saved(self, name: str, model: Model, folder: str | Path) -> None:
        """Note that the session's ``model``, kept as ``name``, was saved to ``folder``: loading that
        folder is then that model, not a second entry of the same weights (trial 36).

        Parameters
        ----------
        name : str
        model : Model
            The model saved; a model kept under ``name`` since (a new run) is not noted.
        folder : str or Path
            The bundle folder written.
        """
        if self.models.get(name) is model:
            self._folders[name] = Path(folder).resolve()
            self._stamps[name] = _stamp(self._folders[name])

    def folder_of(self, name: str) -> Path | None:
        """The bundle folder the session's model ``name`` was loaded from or saved to, while that
        folder still holds that writing of it (no run wrote there since); None otherwise.

        Parameters
        ----------
        name : str
        """
        where = self._folders.get(name)
        if where is None or name not in self.models or self._stamps.get(name) != _stamp(where):
            return None
        return where

    def remember_prediction(self, layer: Any, shown: Any, edited: Any = None) -> ShownPrediction:
        """Keep ``shown``, a copy of what ``layer`` showed when it was made, and ``edited``, the
        voxels in it that hold the user's edits of earlier rounds (held while the layer lives)."""
        record = self._predicted[unproxied(layer)] = ShownPrediction(shown, edited, set())
        return record

    def forget_prediction(self, layer: Any) -> None:
        """Drop what ``layer`` showed before a re-run refilled it with a result fine-tuning cannot use."""
        self._predicted.pop(unproxied(layer), None)

    def shown_prediction(self, layer: Any) -> ShownPrediction | None:
        """What ``layer`` showed when Predict or a fine-tune made it, or None (a layer it did not make)."""
        record = self._predicted.get(unproxied(layer))
        return record if record is not None and record.labels.shape == layer.data.shape else None

    def claim_edited(self) -> None:
        """Take the plugin's mark off each prediction layer whose data differ from what it showed:
        edited without a paint event (``layer.data[...] = ...`` from the console or a script,
        then ``refresh()``), it is the user's as a painted one is, and no re-run replaces it
        (trial 39: it was replaced without a word)."""
        import numpy as np

        from napari_medml.layer_data import PLUGIN_MARK, is_generated

        for layer, record in list(self._predicted.items()):
            if (is_generated(layer.metadata) and record.labels.shape == layer.data.shape
                    and not np.array_equal(np.asarray(layer.data), record.labels)):
                layer.metadata.pop(PLUGIN_MARK, None)

    def new_model_name(self, base: str) -> str:
        """``base``, or ``base (2)``, ``base (3)``... whichever is free."""
        name, k = base, 1
        while name in self.models:
            k += 1
            name = f"{base} ({k})"
        return name

    def finetuned_name(self, name: str) -> str:
        """A free name for ``name`` fine-tuned: ``m fine-tuned``, then ``m fine-tuned (2)``...
        (rounds are numbered, not nested)."""
        import re

        return self.new_model_name(re.sub(r" fine-tuned( \(\d+\))?$", "", name) + " fine-tuned")

    def on_model_added(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(name)`` whenever a model is added."""
        self._listeners.append(listener)

    def disconnect(self, listener: Callable[[str], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)


# The viewer -> session lookup (see the module docstring for why it exists).
_SESSIONS: weakref.WeakKeyDictionary[Any, Session] = weakref.WeakKeyDictionary()


def session_for(viewer: napari.Viewer) -> Session:
    """The Session of ``viewer``, created on first use.

    A ``PublicOnlyProxy`` of the viewer (:func:`unproxied`) is a new object each time: the key
    is the viewer it wraps.
    """
    viewer = unproxied(viewer)
    session = _SESSIONS.get(viewer)
    if session is None:
        session = _SESSIONS[viewer] = Session()
    return session


def _stamp(folder: Path) -> tuple[int, int, int] | None:
    """Which writing of the bundle in ``folder`` this is: its ``config.json``'s inode and modification
    time and size (a bundle is written whole into a new folder, so a new writing has new ones), or None."""
    try:
        info = (folder / "config.json").stat()
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size
