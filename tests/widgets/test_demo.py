"""The demo's loop (preprocess, augmentation preview, train, predict) through the widgets."""

from __future__ import annotations

from qtpy.QtWidgets import QApplication

from napari_medml._demo import _write_report, run_loop


def test_demo_loop_runs_and_reports(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    report = run_loop(viewer, QApplication.instance(), epochs=1, steps=2)
    assert set(report["dice"]) == {"body", "organ", "lesion"}
    assert set(report["times_s"]) == {"preprocess_s", "augmentation_preview_s", "train_s",
                                      "predict_s"}
    prediction = viewer.layers["phantom [prediction]"]
    assert prediction.data.shape == viewer.layers["phantom"].data.shape
    _write_report(tmp_path, report)
    assert "| body |" in (tmp_path / "report.md").read_text()
