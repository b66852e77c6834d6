"""The object behind napari's ``PublicOnlyProxy``, for what needs a viewer's or layer's identity."""

from __future__ import annotations

from typing import Any

__all__ = ["unproxied"]


def unproxied(obj: Any) -> Any:
    """The viewer or layer itself, where napari hands a widget a ``PublicOnlyProxy`` of it.

    ``add_plugin_dock_widget`` (``napari -w``, scripts) hands a dock widget a proxy of the viewer,
    and through it every layer is a new proxy at each access. Widgets keep the proxy (napari's guard
    against private access); only what needs the object's identity takes it through this: a weak
    record keyed by a proxy dies with it, and a proxy's ``type()`` is the proxy's.

    Parameters
    ----------
    obj : napari.Viewer, napari.layers.Layer, or a PublicOnlyProxy of one
        What napari passed.

    Returns
    -------
    napari.Viewer or napari.layers.Layer
        The object the proxy wraps, or ``obj`` as given.
    """
    return getattr(obj, "__wrapped__", obj)  # a dunder: no private access
