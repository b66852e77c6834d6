"""Shared fixtures of the GUI tests: widgets open the way a user opens them.

``open_widget(viewer, "train")`` runs the npe2 command of the Plugins › MedML menu
entry through napari's app-model (the very callback a click runs) and returns the
widget napari docked. No test builds a widget class itself.
"""

from __future__ import annotations

from typing import Any

import pytest
from napari.utils.notifications import notification_manager

PLUGIN = "napari-medml"
# short name -> npe2 command id of the Plugins-menu entry (napari.yaml)
COMMANDS = {
    "preprocess": f"{PLUGIN}.preprocess_widget",
    "augment": f"{PLUGIN}.augment_widget",
    "train": f"{PLUGIN}.train_widget",
    "predict": f"{PLUGIN}.predict_widget",
    "classify": f"{PLUGIN}.classify_widget",
}


def docked_widgets(viewer: Any) -> dict[str, Any]:
    """Dock name -> the inner widget (napari >= 0.6.2 has ``window.dock_widgets``)."""
    window = viewer.window
    if hasattr(type(window), "dock_widgets"):
        return dict(window.dock_widgets)
    out = {}
    for name, dock in window._dock_widgets.items():  # napari < 0.6.2: only the private map
        inner = dock.widget()
        out[name] = getattr(inner, "_magic_widget", inner)
    return out


def open_from_menu(viewer: Any, name: str) -> Any:
    """Open widget ``name`` (a key of COMMANDS) through its Plugins-menu command."""
    try:
        from napari._app_model import get_app_model
    except ImportError:  # older napari (0.5.0) names it get_app
        from napari._app_model import get_app as get_app_model

    before = set(docked_widgets(viewer))
    get_app_model().commands.execute_command(COMMANDS[name]).result()
    new = [w for n, w in docked_widgets(viewer).items() if n not in before]
    assert len(new) == 1, f"the menu command {COMMANDS[name]} docked {len(new)} widgets"
    return new[0]


@pytest.fixture
def open_widget():
    """``open_widget(viewer, "train")`` -> the docked TrainWidget (see open_from_menu)."""
    return open_from_menu


@pytest.fixture
def notes():
    """Every notification shown during the test."""
    records: list[Any] = []
    notification_manager.notification_ready.connect(records.append)
    yield records
    notification_manager.notification_ready.disconnect(records.append)
