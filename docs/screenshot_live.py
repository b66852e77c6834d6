"""Make docs/live.png: a live segmentation session in napari.

The 3D phantom sample, the Live segmentation widget opened from the Plugins menu, strokes
painted through the scribbles layer's own brush (``Labels.paint``, what the brush calls) on
three slices, a minute for the network to learn behind the features, then a grab of the
whole window (canvas, layer list and the widget with the stage on screen and both scores).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/screenshot_live.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(seconds: float = 60.0) -> None:
    import napari
    import numpy as np
    from PIL import Image
    from qtpy.QtWidgets import QApplication

    from napari_medml.samples import phantom_3d

    sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "widgets"))
    from menu_helpers import open_from_menu

    app = QApplication.instance() or QApplication([])

    def spin(until) -> None:
        end = time.monotonic() + 300
        while not until() and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.02)

    p = phantom_3d(0)
    truth = p.labels.astype(np.int32)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 900)
    image = viewer.add_image(p.image, name="phantom", scale=p.spacing)
    live = open_from_menu(viewer, "live")
    live["images"].value = [image]
    live["background"].value = 4
    live["start"].changed.emit(True)
    spin(lambda: live.session is not None)
    scribbles = viewer.layers["phantom [scribbles]"]
    scribbles.brush_size = 3
    rng = np.random.default_rng(0)
    z_shown = truth.shape[0] // 2
    for z in (z_shown - 12, z_shown, z_shown + 12):
        for c in np.unique(truth):
            inside = np.argwhere(truth[z] == c)
            for y, x in inside[rng.choice(len(inside), 4, replace=False)]:
                scribbles.paint((z, int(y), int(x)), 4 if c == 0 else int(c))
    viewer.dims.set_current_step(0, z_shown)
    start = time.monotonic()
    spin(lambda: time.monotonic() - start > seconds)
    viewer.layers["phantom [live]"].opacity = 0.45
    viewer.layers.selection.active = scribbles
    spin(lambda: time.monotonic() - start > seconds + 2)
    out = Path(__file__).with_name("live.png")
    shot = viewer.window._qt_window.grab().scaledToWidth(1100)
    shot.save(str(out), "PNG")
    Image.open(out).convert("RGB").quantize(colors=128).save(out, optimize=True)  # a small PNG
    print(out, live["status"].value)
    live.stop()
    spin(lambda: not live.runner.running)
    viewer.close()


if __name__ == "__main__":
    main()
