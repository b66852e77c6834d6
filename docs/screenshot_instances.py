"""Make docs/instances.png: napari with a predicted ``<image> [instances]`` layer and its
per-object ``features`` table (shown in a magicgui Table docked next to it).

The model is trained through the API on touching_objects_2d seeds 3-5 (a minute or
two on a CPU); prediction runs through the Predict widget opened from the Plugins menu.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/screenshot_instances.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    import napari
    from magicgui.widgets import Table
    from qtpy.QtWidgets import QApplication

    import napari_medml
    from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
    from napari_medml.samples import touching_objects_2d

    sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "widgets"))
    from menu_helpers import open_from_menu

    train = [touching_objects_2d(s) for s in (3, 4, 5)]
    config = TrainConfig(task="instances", data=DataConfig(spatial_dims=2, patch_size=(64, 64), batch_size=4,
                                                           val_fraction=0.0),
                         model=ModelConfig(channels=16, depth=3), augment=AugmentConfig(),
                         optim=OptimConfig(epochs=4, steps_per_epoch=40, learning_rate=3e-3))
    model = napari_medml.train([s.image for s in train], [s.labels for s in train], config)
    bundle = model.save(Path(tempfile.mkdtemp()) / "touching objects model")

    sample = touching_objects_2d(0)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 900)
    image = viewer.add_image(sample.image, name="cells", scale=(0.5, 0.5))
    predict = open_from_menu(viewer, "predict")
    predict["images"].value = [image]
    predict["model"].value = "bundle folder..."
    predict["bundle"].value = bundle
    predict["predict"].changed.emit(True)
    app = QApplication.instance()
    end = time.monotonic() + 300
    while (predict.runner.running or "cells [instances]" not in viewer.layers) and time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)
    layer = viewer.layers["cells [instances]"]
    table = Table(value=layer.features.round(2))
    viewer.window.add_dock_widget(table, name="cells [instances] features", area="bottom")
    layer.selected_label = int(layer.features["index"].iloc[len(layer.features) // 2])
    layer.show_selected_label = False
    for _ in range(50):
        app.processEvents()
        time.sleep(0.02)
    out = Path(__file__).with_name("instances.png")
    shot = viewer.window._qt_window.grab()  # the whole window: canvas, widgets and the table
    shot = shot.scaledToWidth(1200)
    shot.save(str(out), "PNG")
    print(out, len(layer.features), "objects")
    viewer.close()


if __name__ == "__main__":
    main()
