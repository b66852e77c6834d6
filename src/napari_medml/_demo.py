"""The whole in-viewer loop on the 3D phantom: ``python -m napari_medml._demo --out DIR``.

Opens napari and the phantom sample, docks the plugin's widgets through their Plugins
menu commands, then drives them as a user would (filling the forms, clicking the
buttons): z-score the image, preview augmentations, train briefly, predict. With ``--headless``
(``make demo`` under Xvfb) it writes ``DIR/screenshot.png`` (the napari window with the
docked widgets and the prediction), ``DIR/report.json`` and
``DIR/report.md`` (Dice per class against the phantom's ground truth, time of each
step) and exits 0; otherwise napari stays open.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["main", "open_from_menu", "run_loop"]


class DemoStepTooLong(RuntimeError):
    """A step of the demo did not end within its time (a machine much busier than planned for)."""


def _wait(app: Any, done: Callable[[], bool], timeout: float = 600.0) -> None:
    """Run the Qt event loop until ``done()`` (the widgets' workers report back through it)."""
    end = time.monotonic() + timeout
    while not done():
        app.processEvents()
        time.sleep(0.01)
        if time.monotonic() > end:
            raise DemoStepTooLong(f"a step did not end within {timeout:.0f} s")


def open_from_menu(viewer: Any, title: str) -> Any:
    """Click Plugins › MedML › ``title`` (run its app-model command); the docked widget.

    The item is looked up by its title in napari's menus, as a user finds it (napari 0.9
    names the action after the npe2 command, 0.5.0 "napari-medml:<title>").
    """
    from app_model.types import MenuItem, SubmenuItem
    from napari._app_model.constants import MenuId

    try:
        from napari._app_model import get_app_model
    except ImportError:  # older napari (0.5.0) names it get_app
        from napari._app_model import get_app as get_app_model

    def docked() -> dict[str, Any]:
        window = viewer.window
        if hasattr(type(window), "dock_widgets"):  # napari >= 0.6.2
            return dict(window.dock_widgets)
        return {name: getattr(dock.widget(), "_magic_widget", dock.widget())
                for name, dock in window._dock_widgets.items()}

    app = get_app_model()
    submenu = next(item.submenu for item in app.menus.get_menu(MenuId.MENUBAR_PLUGINS)
                   if isinstance(item, SubmenuItem) and item.title == "MedML")
    command = next(item.command.id for item in app.menus.get_menu(submenu)
                   if isinstance(item, MenuItem) and item.command.title == title)
    before = set(docked())
    app.commands.execute_command(command).result()
    new = [widget for name, widget in docked().items() if name not in before]
    if len(new) != 1:
        raise RuntimeError(f"Plugins › MedML › {title} docked {len(new)} widgets")
    return new[0]


def run_loop(viewer: Any, app: Any, epochs: int = 8, steps: int = 40, minutes: float = 4.0) -> dict[str, Any]:
    """Drive the four widgets, opened from the Plugins menu, through the loop; the report.

    Training runs ``epochs`` x ``steps``, or ``minutes`` (the widget's *max minutes*) where
    the machine is too busy for them: the demo ends on a loaded machine too.
    """
    from napari_medml.segmentation.metrics import dice

    times: dict[str, float] = {}
    _say("opening the 3D phantom (File > Open Sample) and the widgets (Plugins menu)")
    viewer.open_sample("napari-medml", "phantom_3d")  # File › Open Sample
    image, truth = viewer.layers["phantom"], viewer.layers["phantom [ground truth]"]
    pre, aug, train, pred = (open_from_menu(viewer, title) for title in
                             ("Preprocess", "Augmentation preview", "Train segmentation", "Predict"))
    _wait(app, lambda: not train._device_runner.running)

    t = time.perf_counter()
    _say("Preprocess: z-score")
    pre["image"].value, pre["operation"].value = image, "zscore"
    pre["apply"].native.click()
    _wait(app, lambda: not pre.runner.running)
    zscored = viewer.layers["phantom [z-score]"]
    times["preprocess_s"] = time.perf_counter() - t

    t = time.perf_counter()
    _say("Augmentation preview: 8 samples")
    aug.image.value, aug.label_layer.value, aug.n.value = zscored, truth, 8
    aug.preview_button.native.click()
    _wait(app, lambda: not aug.runner.running)
    times["augmentation_preview_s"] = time.perf_counter() - t

    t = time.perf_counter()
    bound = f"at most {minutes:g} min" if minutes else "no time limit"
    _say(f"Train segmentation: {epochs} epochs x {steps} steps, {bound} (the longest step)")
    train["images"].value, train["labels"].value = [zscored], truth
    train["channels"].value, train["depth"].value, train["patch"].value = 8, 3, "16, 64, 64"
    train["epochs"].value, train["steps"].value, train["lr"].value = epochs, steps, 3e-3
    train["minutes"].value = minutes
    train["start"].native.click()
    _wait(app, lambda: not train.runner.running, timeout=600.0 + 60.0 * minutes if minutes else 24 * 3600.0)
    if train.model is None:
        raise RuntimeError("training produced no model (see the notifications)")
    times["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    _say(f"trained in {times['train_s']:.0f} s; Predict")
    pred["images"].value = [zscored]
    pred["predict"].native.click()
    _wait(app, lambda: not pred.runner.running)
    times["predict_s"] = time.perf_counter() - t

    result = viewer.layers["phantom [prediction]"]
    names = dict(truth.metadata.get("class_names") or {})
    scores = dice(result.data, truth.data)
    for layer in viewer.layers:
        layer.visible = layer.name in ("phantom [z-score]", "phantom [prediction]")
    viewer.layers.selection.active = result
    viewer.dims.set_point(0, image.data.shape[0] // 2 * image.scale[0])
    return {
        "dice": {names.get(int(k), str(k)): None if v is None else round(float(v), 4)
                 for k, v in scores.items()},
        "times_s": {k: round(v, 2) for k, v in times.items()},
        "epochs": epochs, "steps_per_epoch": steps,
        "model": repr(train.model), "device": train["device_info"].value,
    }


def _say(line: str) -> None:
    """One progress line on stderr (stdout keeps the report's JSON)."""
    print(f"demo: {line}", file=sys.stderr, flush=True)


def _write_report(out: Path, report: dict[str, Any]) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2))
    lines = ["# napari-medml demo: the in-viewer loop on the 3D phantom", "",
             f"Model: `{report['model']}` on {report['device']}, "
             f"{report['epochs']} epochs x {report['steps_per_epoch']} steps.", "",
             "| class | Dice |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in report["dice"].items()]
    lines += ["", "| step | seconds |", "|---|---|"]
    lines += [f"| {name.removesuffix('_s')} | {value} |" for name, value in report["times_s"].items()]
    lines += ["", "![napari window](screenshot.png)", ""]
    (out / "report.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_medml._demo", description=__doc__)
    parser.add_argument("--out", default="demo-output", help="folder for screenshot and report")
    parser.add_argument("--headless", action="store_true",
                        help="write screenshot.png, report.json, report.md and exit")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--minutes", type=float, default=4.0, help="at most this long for training")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-medml demo")
    viewer.window._qt_window.resize(1800, 1100)
    app = QApplication.instance()
    try:
        report = run_loop(viewer, app, epochs=args.epochs, steps=args.steps, minutes=args.minutes)
    except RuntimeError as exc:  # DemoStepTooLong, or no model: one line, and the window as it was, to see why
        viewer.screenshot(str(out / "screenshot.png"), canvas_only=False)
        _say(f"stopped: {exc}; the window at that moment is in {out / 'screenshot.png'}")
        viewer.close()
        return 1
    _wait(app, lambda: True)
    for _ in range(50):  # let the canvas and the plot draw
        app.processEvents()
        time.sleep(0.02)
    if args.headless:
        viewer.screenshot(str(out / "screenshot.png"), canvas_only=False)
        _write_report(out, report)
        print(json.dumps(report, indent=2))
        _say(f"wrote {out / 'screenshot.png'}, {out / 'report.md'} and {out / 'report.json'}")
        viewer.close()
        return 0
    _write_report(out, report)
    napari.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
