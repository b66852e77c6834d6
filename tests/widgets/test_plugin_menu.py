"""Plugins › MedML and File › Open Sample › MedML: every entry, clicked through napari's menus."""

from __future__ import annotations


import numpy as np
import pytest
from magicgui.widgets import Container

from napari_medml._widgets._session import session_for
from napari_medml.config import AugmentConfig

from menu_helpers import COMMANDS, PLUGIN, click_menu, docked_widgets, widget_title


def _manifest_widgets() -> list[tuple[str, str]]:
    """(npe2 command id, python_name) of every widget napari.yaml contributes."""
    import npe2

    manifest = npe2.PluginManifest.from_distribution(PLUGIN)
    python_names = {c.id: c.python_name for c in manifest.contributions.commands}
    return [(w.command, python_names[w.command]) for w in manifest.contributions.widgets]


def test_the_short_names_cover_every_widget() -> None:
    assert sorted(c for c, _ in _manifest_widgets()) == sorted(COMMANDS.values())


@pytest.mark.parametrize(("command", "python_name"), _manifest_widgets())
def test_menu_entry_docks_its_widget(make_napari_viewer, open_widget, qtbot, command: str,
                                     python_name: str) -> None:
    from napari._app_model.constants import MenuId

    viewer = make_napari_viewer(show=True)
    layers = (viewer.add_image(np.zeros((4, 16, 16), np.float32), name="ct"),
              viewer.add_labels(np.zeros((4, 16, 16), np.uint8), name="seg"))
    widget = open_widget(viewer, command)
    module, cls = python_name.split(":")
    assert type(widget).__module__ == module and type(widget).__name__ == cls
    assert isinstance(widget, Container)
    qtbot.waitUntil(widget.native.isVisible, timeout=5000)
    # its layer choosers list the viewer's layers
    choosers = [w for w in widget if getattr(w, "choices", None) and hasattr(w.choices[0], "data")]
    assert choosers and all(set(w.choices) <= set(layers) for w in choosers)
    # a second click hides the dock (napari's toggle), a third shows it: never a second widget
    click_menu(MenuId.MENUBAR_PLUGINS, widget_title(command))
    qtbot.waitUntil(lambda: not widget.native.isVisible(), timeout=5000)
    click_menu(MenuId.MENUBAR_PLUGINS, widget_title(command))
    qtbot.waitUntil(widget.native.isVisible, timeout=5000)
    assert [w for w in docked_widgets(viewer).values() if type(w) is type(widget)] == [widget]


def test_the_docks_fit_a_1200_pixel_screen(make_napari_viewer, open_widget, qtbot) -> None:
    """Each form scrolls inside its dock: with Pretrain, Train segmentation (showing a long
    plan) and Predict docked, the window still fits 1920x1200, the canvas keeps its width
    (the forms used to force a window over 3700 pixels tall, the canvas squeezed to a strip)
    and the three docks share the height."""
    from qtpy.QtWidgets import QScrollArea

    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((32, 32), np.float32), name="img")
    docked = [open_widget(viewer, name) for name in ("pretrain", "train", "predict")]
    plot = docked[0].plot  # until matplotlib comes (a worker imports it), the panel says so
    assert plot.ready or (plot.placeholder.isVisibleTo(plot) and plot.placeholder.text() == "loading the plot…")
    # lines as long as a real plan's (about 200 characters) wrap inside the dock
    line = "validation margin: 0 (an ensemble: each of the 4 members is validated on its own fold)" * 2
    docked[1]["plan_text"].value = "\n".join([line] * 40)
    window = viewer.window._qt_window
    window.resize(1920, 1200)
    qtbot.waitUntil(lambda: window.height() <= 1200, timeout=5000)
    train_scroll = docked[1].native
    qtbot.waitUntil(lambda: train_scroll.widget().width() <= train_scroll.viewport().width(), timeout=5000)
    assert train_scroll.horizontalScrollBar().maximum() == 0  # nothing cut off at the right
    assert window.minimumSizeHint().height() <= 1200
    assert viewer.window._qt_viewer.canvas.native.width() > 800
    assert all(isinstance(w.native, QScrollArea) and w.native.widget() is w.form for w in docked)
    # each dock gets a share of the height (Qt alone left the third one a single row)
    qtbot.waitUntil(lambda: all(w.native.height() > 200 for w in docked), timeout=5000)
    qtbot.waitUntil(lambda: docked[0].plot.ready, timeout=120000)  # matplotlib comes in a worker
    assert len(docked[0].plot.figure.axes) == 1  # pretraining: the loss panel only, no Dice
    assert plot.layout().count() == 1 and plot.layout().itemAt(0).widget() is plot.canvas  # the text went


def test_a_form_opened_on_one_image_has_it_chosen(make_napari_viewer, open_widget, qtbot) -> None:
    """The image lists start with the only image chosen, as the labels ComboBox does (a new
    user pressed Train and was told to choose an image); with two images the user chooses."""
    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(np.zeros((4, 16, 16), np.float32), name="ct")
    viewer.add_labels(np.zeros((4, 16, 16), np.uint8), name="seg")
    forms = [open_widget(viewer, name) for name in ("train", "predict", "pretrain", "live")]
    qtbot.waitUntil(lambda: all(form["images"].value == [image] for form in forms), timeout=5000)
    assert forms[0]["labels"].value.name == "seg"
    forms[0]["images"].value = []  # the user's choice stays while the layers do not change
    viewer.add_image(np.zeros((4, 16, 16), np.float32), name="mr")
    assert forms[0]["images"].value == [] and forms[1]["images"].value == [image]
    viewer.layers.remove("mr")  # one image again: chosen
    assert forms[0]["images"].value == [image]
    # a list is as tall as its rows, 2 to 8 (Qt's fixed 190 pixels took a third of a dock)
    lists = [form["images"].native for form in forms]
    short = [view.maximumHeight() for view in lists]
    assert all(h < 80 for h in short), short
    for k in range(12):
        viewer.add_image(np.zeros((4, 16, 16), np.float32), name=f"im{k}")
    assert all(80 < view.maximumHeight() < 280 and view.maximumHeight() > h for view, h in zip(lists, short))
    # three layers with long names: all three rows show beside the sideways scroll bar
    for k in range(12):
        viewer.layers.remove(f"im{k}")
    viewer.add_image(np.zeros((4, 16, 16), np.float32), name="ct [z-score] [augmentation preview] [reconstruction]")
    viewer.add_image(np.zeros((4, 16, 16), np.float32), name="mr")
    train_list = forms[0]["images"].native
    train_list.resize(120, train_list.height())  # narrower than the long name: the bar shows
    qtbot.waitUntil(lambda: train_list.horizontalScrollBar().isVisible(), timeout=5000)
    rows = train_list.viewport().height() / train_list.sizeHintForRow(0)
    assert train_list.count() == 3 and rows >= 3, rows
    # Live's score and hint lines wrap in the dock instead of running past its edge
    live = forms[3]
    live["status"].value = "features 0.98, network 0.76; ensemble when the network leads by 0.25 " * 4
    live["hint"].value = "Paint next at slice 19, voxel (19, 84, 22) (mean uncertainty 0.41) " * 4
    scroll = live.native
    qtbot.wait(100)  # the layout takes the new text on the next events
    qtbot.waitUntil(lambda: scroll.widget().width() <= scroll.viewport().width(), timeout=5000)
    assert scroll.horizontalScrollBar().maximum() == 0
    assert scroll.widget().minimumSizeHint().width() < 600  # unwrapped, the lines asked for 2000 pixels


@pytest.mark.filterwarnings("error::FutureWarning")  # napari's warning on private access
def test_widgets_docked_both_ways_share_one_session(make_napari_viewer, open_widget, qtbot) -> None:
    """add_plugin_dock_widget hands widgets a PublicOnlyProxy of the viewer: no widget
    touches private viewer attributes through it, and all share the viewer's session."""
    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).random((4, 32, 32)).astype(np.float32), name="ct")
    train = open_widget(viewer, "train")
    proxied = {}
    for name in ("preprocess", "augment", "predict", "classify"):
        _, proxied[name] = viewer.window.add_plugin_dock_widget(PLUGIN, widget_title(COMMANDS[name]))
    assert type(proxied["augment"]._viewer).__name__ == "PublicOnlyProxy"  # the path under test
    assert {id(session_for(w._viewer)) for w in (train, *proxied.values())} == {id(session_for(viewer))}
    # the augmentation set in one widget is what the other trains with
    proxied["augment"].none_button.changed.emit(True)
    assert train.config().augment == AugmentConfig.none()
    # choosing layers and a live preview through the proxy
    pre = proxied["preprocess"]
    pre["image"].value, pre["operation"].value, pre["live"].value = image, "minmax", True
    assert "ct [preview]" in viewer.layers
    # a re-run through the proxy refills the plugin's layer in place, the user's opacity kept
    preview = viewer.layers["ct [preview]"]
    preview.opacity = 0.3
    pre["operation"].value = "zscore"
    assert viewer.layers["ct [preview]"] is preview and preview.opacity == 0.3
    np.testing.assert_allclose(preview.data.mean(), 0.0, atol=1e-3)  # now the z-score
    pre["live"].value = False
    assert [layer.name for layer in viewer.layers] == ["ct"]
    qtbot.waitUntil(lambda: not train._device_runner.running, timeout=60000)


# key -> (image name, labels name, image ndim, scale)
SAMPLES = {
    "phantom_3d": ("phantom", "phantom [ground truth]", 3, (2.0, 1.0, 1.0)),
    "touching_objects_2d": ("objects", "objects [ground truth]", 2, (1.0, 1.0)),
    "shape_classes": ("shapes", "shapes [ground truth]", 3, (1.0, 1.0, 1.0)),
}


@pytest.mark.parametrize("key", list(SAMPLES))
def test_open_sample_menu(make_napari_viewer, key: str) -> None:
    """File › Open Sample › MedML › <sample>, clicked."""
    import npe2
    from napari._app_model.constants import MenuId
    from napari.layers import Image, Labels

    viewer = make_napari_viewer()
    manifest = npe2.PluginManifest.from_distribution(PLUGIN)
    title = next(s.display_name for s in manifest.contributions.sample_data if s.key == key)
    click_menu(MenuId.FILE_SAMPLES, title)
    image_name, labels_name, ndim, scale = SAMPLES[key]
    assert [layer.name for layer in viewer.layers] == [image_name, labels_name]
    image, labels = viewer.layers[image_name], viewer.layers[labels_name]
    assert isinstance(image, Image) and isinstance(labels, Labels)
    assert image.ndim == labels.ndim == ndim
    assert image.data.shape == labels.data.shape
    np.testing.assert_allclose(image.scale, scale)
    np.testing.assert_allclose(labels.scale, scale)
    assert int(labels.data.max()) > 0
    if key == "phantom_3d":  # the slider says z, not napari's -3
        from axes_helpers import axis_names

        assert axis_names(image) == axis_names(labels) == ("z", "y", "x")
        from napari_medml.layer_data import _add_image_takes_axis_labels

        if _add_image_takes_axis_labels():
            assert viewer.dims.axis_labels == ("z", "y", "x")
            assert [str(u) for u in image.units] == ["millimeter"] * 3  # the scale bar's (trial 40)
        from napari_medml.layer_data import layer_to_volume

        assert layer_to_volume(labels.data, labels.as_layer_data_tuple()[1], True).meta["unit"] == "mm"  # as saved
