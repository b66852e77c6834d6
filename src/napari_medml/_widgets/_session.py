"""Per-viewer state the dock widgets share: trained models and the augmentation config.

npe2 creates each dock widget on its own and the viewer is the only object they all
see, so :func:`session_for` maps a viewer to its :class:`Session`. The mapping is weak
(a ``WeakKeyDictionary``): a closed viewer takes its session, and its models, with it.
This is the plugin's one piece of module-level state; everything else lives on the
Session instance.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from napari_medml.config import AugmentConfig

if TYPE_CHECKING:
    import napari

    from napari_medml.segmentation.model import Model

__all__ = ["Session", "session_for"]


class Session:
    """Models trained or loaded in one viewer, by name, and the shared AugmentConfig."""

    def __init__(self) -> None:
        self.models: dict[str, Model] = {}
        self.augment: AugmentConfig = AugmentConfig()
        self._listeners: list[Callable[[str], None]] = []

    def add_model(self, model: Model, name: str) -> str:
        """Keep ``model`` under ``name`` (replacing a model of that name); tell listeners."""
        self.models[name] = model
        for listener in list(self._listeners):
            listener(name)
        return name

    def new_model_name(self, base: str) -> str:
        """``base``, or ``base (2)``, ``base (3)``... whichever is free."""
        name, k = base, 1
        while name in self.models:
            k += 1
            name = f"{base} ({k})"
        return name

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

    napari may hand a dock widget a ``PublicOnlyProxy`` of the viewer (its
    ``add_plugin_dock_widget`` does; the Plugins menu of napari 0.9 passes the viewer
    itself): the proxy is a new object each time, so the key is the viewer it wraps.
    """
    viewer = getattr(viewer, "__wrapped__", viewer)  # a dunder: no private access
    session = _SESSIONS.get(viewer)
    if session is None:
        session = _SESSIONS[viewer] = Session()
    return session
