"""The object behind napari's ``PublicOnlyProxy``, for what needs a viewer's or layer's identity."""

from __future__ import annotations

from typing import Any

__all__ = ["same", "unproxied"]


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


def same(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are the same layer (or viewer), either or both through a proxy.

    A layer a widget made through the viewer it was given is a proxy, and the same layer
    chosen in a list is not: ``is`` told them apart, and Live took one image's strokes for
    another's (trial 47).

    Parameters
    ----------
    a, b : napari.layers.Layer, a PublicOnlyProxy of one, or None

    Returns
    -------
    bool
        False where either is None.
    """
    return a is not None and b is not None and unproxied(a) is unproxied(b)
