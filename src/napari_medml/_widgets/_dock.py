"""The dock form every MedML widget is: a magicgui Container that napari docks inside a
vertical scroll area, so a long form never makes the window taller than the screen."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container
from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtWidgets import QDockWidget, QMainWindow, QScrollArea

__all__ = ["DockForm"]


SCREEN_SHARE = 3  # a form asks for at most a third of the screen's height: three docks share it


class _FormScroll(QScrollArea):
    """A vertical scroll area that asks for its whole form, up to a third of the screen
    (Qt's own hint is 24 text lines whatever the form), so docks stacked in napari's dock
    area each get a share of the height, and a form scrolls when its share is short."""

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        inner = self.widget()
        if inner is None:
            return super().sizeHint()
        hint = inner.sizeHint()
        bar = self.verticalScrollBar().sizeHint().width()
        frame = 2 * self.frameWidth()
        height = hint.height() + frame
        screen = self.screen() if hasattr(self, "screen") else None
        if screen is not None:
            height = min(height, screen.availableGeometry().height() // SCREEN_SHARE)
        return QSize(hint.width() + bar + frame, height)

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Show and not getattr(self, "_shared", False):
            self._shared = True
            share_height(self)
            self._magic_widget.update_layer_lists()  # the only image chosen, lists fit their rows
        elif event.type() == QEvent.Type.ParentChange:
            if isinstance(self.parent(), QDockWidget):
                self._docked = True
            elif self.parent() is None and getattr(self, "_docked", False):
                # napari's dock close (remove_dock_widget) takes the form out of its dock and keeps
                # it: its jobs would run on unseen, and a model trained there appear in Predict
                from napari_medml._widgets._runner import detach_runners_in

                detach_runners_in(self)
                self._magic_widget.form_closed()
        return super().event(event)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        # as wide as the form needs (it never scrolls sideways), as short as Qt allows
        inner = self.widget()
        small = super().minimumSizeHint()
        if inner is None:
            return small
        bar = self.verticalScrollBar().sizeHint().width()
        return QSize(inner.minimumSizeHint().width() + bar + 2 * self.frameWidth(), small.height())


def share_height(widget: Any) -> None:
    """Give the docks stacked with ``widget``'s dock heights in proportion to their forms.

    Qt adds a dock below the others with what height is left, often none: a form opened
    third shows one row. Run once, when the form is first shown; the user's own dragging
    later is left alone.
    """
    dock = widget.parent()
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parent()
    window = dock.parent() if dock is not None else None
    if not isinstance(window, QMainWindow) or dock.isFloating():
        return
    area = window.dockWidgetArea(dock)
    docks = [d for d in window.findChildren(QDockWidget)
             if d.isVisible() and not d.isFloating() and window.dockWidgetArea(d) == area
             and not window.tabifiedDockWidgets(d)]
    if len(docks) > 1:
        window.resizeDocks(docks, [max(d.sizeHint().height(), 1) for d in docks], Qt.Orientation.Vertical)


LIST_ROWS = (2, 8)  # a layer list shows at least 2 and at most 8 rows, then scrolls


def _fit_rows(view: Any, rows: int) -> None:
    """Make a list view (QListWidget) as tall as ``rows`` rows within LIST_ROWS, plus its
    sideways scroll bar, which long layer names bring (it took a row's place)."""
    rows = min(max(rows, LIST_ROWS[0]), LIST_ROWS[1])
    row = view.sizeHintForRow(0) if view.count() else -1
    if row <= 0:
        row = view.fontMetrics().height() + 4
    bar = view.horizontalScrollBar().sizeHint().height()
    # fixed, not only a maximum: a short dock then scrolls its form instead of squeezing the list
    view.setFixedHeight(rows * row + bar + 2 * view.frameWidth() + 4)


class DockForm(Container):
    """A vertical Container that napari docks in a scroll area (:attr:`native`).

    napari docks a magicgui widget's ``native`` (``napari._qt.utils.combine_widgets``,
    napari 0.5 to 0.9), and magicgui's own ``scrollable=True`` puts the scroll area
    around ``native``, so napari would take the form out of it; here ``native`` is the
    scroll area itself. :attr:`form` holds the fields; :meth:`add_native` adds a Qt widget
    (a plot) below them. The rows keep their height and a stretch takes the rest, as
    napari's dock does for a form without one.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._scroll: QScrollArea | None = None
        super().__init__(**kwargs)
        form = super().native
        form.layout().addStretch(1)  # magicgui inserts each field before it (at its index)
        scroll = _FormScroll()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(form)
        scroll._magic_widget = self  # napari's dock finds the magicgui widget by this (inner_widget)
        self._scroll = scroll

    @property
    def native(self) -> Any:
        """The scroll area napari docks (the form itself while it is being built)."""
        return self._scroll if getattr(self, "_scroll", None) is not None else super().native

    @property
    def form(self) -> Any:
        """The QWidget that holds the fields' layout."""
        return super().native

    def reset_choices(self, *args: Any) -> None:
        """Refresh the layer choices (napari calls this when layers change); a layer list
        (``Select``) with nothing chosen and one layer to choose gets that layer, as a
        single layer ComboBox does.

        A layer choice whose layer is removed and, at the next change, replaced by a layer
        of the same name (a re-run's result that could not be refilled in place) follows
        it; magicgui alone would leave the choice on another layer, and Evaluate scored
        that one without a word (trial 39). A chosen layer stays chosen through a rename (Qt's
        lists select by the shown name), and each field sends at most one change, at the end
        (trial 49: a rename sent Live's boxes a change of none chosen, which stopped it).
        """
        from magicgui.widgets import ComboBox, Select

        combos = [w for w in self if isinstance(w, ComboBox)]
        before = {id(w): w.value for w in combos}  # magicgui names a field made by create_widget ''
        lost, self._lost_layers = getattr(self, "_lost_layers", {}), {}
        for widget in self:  # as magicgui's Container.reset_choices, in order: later choices may read earlier ones
            if isinstance(widget, Select):
                _reset_keeping(widget)
            elif isinstance(widget, ComboBox):  # the layer kept through a rename; one change, at the end, if any
                old = before[id(widget)]
                with widget.changed.blocked():
                    widget.reset_choices()
                    if widget.value is not old and hasattr(old, "data") and any(old is c for c in widget.choices):
                        widget.value = old
                if not (widget.value is old or not hasattr(old, "data") and widget.value == old):  # a layer: itself
                    widget.changed.emit(widget.value)
            elif hasattr(widget, "reset_choices"):
                widget.reset_choices()
        for widget in combos:
            name = lost.get(id(widget))
            same = [c for c in widget.choices if name is not None and getattr(c, "name", None) == name]
            old = before[id(widget)]
            if same and widget.value is not same[0]:
                widget.value = same[0]
            elif hasattr(old, "data") and isinstance(getattr(old, "name", None), str) and old not in widget.choices:
                self._lost_layers[id(widget)] = old.name  # for the next change only
        self.update_layer_lists()

    def update_layer_lists(self) -> None:
        """Each layer list (``Select``) with nothing chosen and one layer gets that layer;
        each list is as tall as its rows (2 to 8), not Qt's fixed 190 pixels."""
        from magicgui.widgets import Select

        for widget in self:
            if isinstance(widget, Select):
                if not widget.value and len(widget.choices) == 1:
                    widget.value = list(widget.choices)
                _fit_rows(widget.native, len(widget.choices))

    def form_closed(self) -> None:
        """napari closed the dock (it keeps the form): a form that follows the viewer stops here."""

    def add_native(self, widget: Any) -> None:
        """Add a Qt widget (a plot) below the fields, above the closing stretch."""
        layout = self.form.layout()
        layout.insertWidget(layout.count() - 1, widget)


def _reset_keeping(widget: Any) -> None:
    """Refresh a layer list's choices, keeping the chosen layers still listed: Qt's list selects by
    the shown name, so a renamed layer fell out of the choice, and its change was sent with none chosen
    (trial 49: a rename stopped Live, "another image was chosen"). A change is sent once, when the
    chosen layers differ at the end."""
    chosen = list(widget.value or ())
    with widget.changed.blocked():
        widget.reset_choices()
        kept = [v for v in chosen if any(v is c for c in widget.choices)]
        if list(map(id, widget.value or ())) != list(map(id, kept)):
            widget.value = kept
    if list(map(id, widget.value or ())) != list(map(id, chosen)):
        widget.changed.emit(widget.value)
