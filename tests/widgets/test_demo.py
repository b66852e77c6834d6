"""The demo's loop (preprocess, augmentation preview, train, predict) through the widgets
it opens from the Plugins menu."""

from __future__ import annotations

from qtpy.QtWidgets import QApplication

from menu_helpers import docked_widgets

from napari_medml._demo import _write_report, run_loop


def test_demo_loop_runs_and_reports(make_napari_viewer, tmp_path, capsys):
    viewer = make_napari_viewer()
    report = run_loop(viewer, QApplication.instance(), epochs=1, steps=2)
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("demo: ")]
    steps = ["opening the 3D phantom (File > Open Sample) and the widgets (Plugins menu)", "Preprocess: z-score",
             "Augmentation preview: 8 samples", "Train segmentation: 1 epochs x 2 steps, at most 4 min",
             "trained in"]
    assert len(said) == len(steps) and all(line.startswith("demo: " + step) for line, step in zip(said, steps))
    assert set(report["dice"]) == {"body", "organ", "lesion"}
    assert set(report["times_s"]) == {"preprocess_s", "augmentation_preview_s", "train_s",
                                      "predict_s"}
    prediction = viewer.layers["phantom [prediction]"]
    assert prediction.data.shape == viewer.layers["phantom"].data.shape
    # docked by the Plugins-menu commands (napari names those docks "<title> (MedML)")
    assert {type(w).__name__ for w in docked_widgets(viewer).values()} == {
        "PreprocessWidget", "AugmentWidget", "TrainWidget", "PredictWidget"}
    assert all(name.endswith("(MedML)") for name in docked_widgets(viewer))
    _write_report(tmp_path, report)
    assert "| body |" in (tmp_path / "report.md").read_text()


def test_a_demo_step_that_never_ends_stops_with_one_line_and_a_screenshot(tmp_path, monkeypatch, capsys):
    """Review 33: on a loaded machine the headless demo ended in a TimeoutError traceback and wrote nothing."""
    from napari_medml import _demo

    def too_long(*_args, **_kwargs):
        raise _demo.DemoStepTooLong("a step did not end within 600 s")

    monkeypatch.setattr(_demo, "run_loop", too_long)
    assert _demo.main(["--out", str(tmp_path), "--headless"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"demo: stopped: a step did not end within 600 s; the window at that moment is in "
                   f"{tmp_path / 'screenshot.png'}"]
    assert (tmp_path / "screenshot.png").stat().st_size > 0
