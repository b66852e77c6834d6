"""Opening the plugin the way a user does: through napari's menus.

``open_from_menu(viewer, "train")`` runs the Plugins › MedML › Train segmentation menu
entry through napari's app-model (the very callback a click runs) and returns the
widget napari docked; ``click_menu`` does the same for any MedML menu entry (File ›
Open Sample too). No test builds a widget class itself.
"""

from __future__ import annotations

from typing import Any

PLUGIN = "napari-medml"
DISPLAY_NAME = "MedML"  # napari.yaml display_name: the submenu title
# short name -> npe2 command id of the Plugins-menu entry (napari.yaml)
COMMANDS = {
    "preprocess": f"{PLUGIN}.preprocess_widget",
    "augment": f"{PLUGIN}.augment_widget",
    "train": f"{PLUGIN}.train_widget",
    "predict": f"{PLUGIN}.predict_widget",
    "classify": f"{PLUGIN}.classify_widget",
    "live": f"{PLUGIN}.live_widget",
    "pretrain": f"{PLUGIN}.pretrain_widget",
    "evaluate": f"{PLUGIN}.evaluate_widget",
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


def get_app_model() -> Any:
    try:
        from napari._app_model import get_app_model
    except ImportError:  # older napari (0.5.0) names it get_app
        from napari._app_model import get_app as get_app_model
    return get_app_model()


def click_menu(menu_id: str, title: str) -> Any:
    """Run the item ``title`` of the MedML submenu of ``menu_id`` as a click does.

    The item is found by its title in napari's app-model menus (the menu bar is built
    from them), so the test does not depend on how a napari version names the action
    (0.9: the npe2 command id; 0.5.0: "napari-medml:<display name>").
    """
    from app_model.types import MenuItem, SubmenuItem

    app = get_app_model()
    submenus = [item.submenu for item in app.menus.get_menu(menu_id)
                if isinstance(item, SubmenuItem) and item.title == DISPLAY_NAME]
    assert len(submenus) == 1, f"no {DISPLAY_NAME} submenu in {menu_id}"
    ids = [item.command.id for item in app.menus.get_menu(submenus[0])
           if isinstance(item, MenuItem) and item.command.title == title]
    assert len(ids) == 1, f"no item {title!r} in {menu_id} › {DISPLAY_NAME}"
    return app.commands.execute_command(ids[0]).result()


def widget_title(command: str) -> str:
    """The display name (menu title) napari.yaml gives the widget of npe2 command ``command``."""
    import npe2

    manifest = npe2.PluginManager.instance().get_manifest(PLUGIN)
    return next(w.display_name for w in manifest.contributions.widgets if w.command == command)


def open_from_menu(viewer: Any, name: str) -> Any:
    """Open widget ``name`` (a key of COMMANDS, or an npe2 command id) from Plugins › MedML.

    Returns the widget napari docked.
    """
    from napari._app_model.constants import MenuId

    before = set(docked_widgets(viewer))
    click_menu(MenuId.MENUBAR_PLUGINS, widget_title(COMMANDS.get(name, name)))
    new = [w for n, w in docked_widgets(viewer).items() if n not in before]
    assert len(new) == 1, f"Plugins › {DISPLAY_NAME} › {name} docked {len(new)} widgets"
    return new[0]


# what the Train widget says when Stop lands before the first step: where it lands is a race
# (before the job starts, while it plans, or before the first step), and no model is made in each
STOPPED_BEFORE_LEARNING = ("Training cancelled.",
                           "Training: stopped while planning, before the first training step: no model was made",
                           "Training: stopped before the first training step: no model was made")
