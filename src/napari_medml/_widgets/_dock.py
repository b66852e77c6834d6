"""The dock form every MedML widget is: a magicgui Container that napari docks inside a
vertical scroll area, so a long form never makes the window taller than the screen."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container

__all__ = ["DockForm"]


class DockForm(Container):
    """A vertical Container whose ``native`` is its scroll area.

    napari docks a magicgui widget's ``native`` (``napari._qt.utils.combine_widgets``,
    napari 0.5 to 0.9), and magicgui's ``scrollable=True`` makes ``native`` the inner form
    with the scroll area only around it, so napari would take the form out of its scroll
    area. Here ``native`` is the scroll area itself; :attr:`form` is the widget holding the
    layout, for Qt widgets (plots) added below the fields.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(scrollable=True, **kwargs)

    @property
    def native(self) -> Any:
        """The scroll area napari docks (magicgui's ``root_native_widget``)."""
        return self.root_native_widget

    @property
    def form(self) -> Any:
        """The QWidget that holds the layout (magicgui's ``native`` when scrollable)."""
        return super().native
