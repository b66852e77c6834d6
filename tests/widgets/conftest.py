"""Shared fixtures of the GUI tests: widgets open the way a user opens them.

``open_widget(viewer, "train")`` clicks Plugins › MedML › Train segmentation through
napari's app-model and returns the docked widget (see menu_helpers.py). No test builds
a widget class itself.
"""

from __future__ import annotations

from typing import Any

import pytest
from menu_helpers import open_from_menu
from napari.utils.notifications import notification_manager


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
