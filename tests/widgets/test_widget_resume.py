"""Stop and Resume in the training widgets: every run keeps checkpoints (in the bundle
folder, or the session's temp folder), Resume continues the stopped run from its step,
a changed network is one error line, and the temp folder goes with the viewer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from napari.utils.notifications import NotificationSeverity

from menu_helpers import STOPPED_BEFORE_LEARNING
from napari_medml._widgets._session import session_for
from napari_medml.samples import phantom_3d

CROP = (slice(16, 32), slice(16, 80), slice(16, 80))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def stop_at_first_report(widget) -> list:
    """Collect the run's reports (the plot still gets them); press Stop at the first one."""
    reports: list = []
    feed = widget.runner._on_report_cb

    def observe(report) -> None:
        if hasattr(report, "step"):
            reports.append(report)
            if len(reports) == 1:
                widget["stop"].changed.emit(True)
        if feed is not None:
            feed(report)

    widget.runner._on_report_cb = observe
    return reports


def observe(widget) -> list:
    reports: list = []
    feed = widget.runner._on_report_cb

    def collect(report) -> None:
        if hasattr(report, "step"):
            reports.append(report)
        if feed is not None:
            feed(report)

    widget.runner._on_report_cb = collect
    return reports


def stopped_step(folder: Path) -> int:
    return int(json.loads((folder / "last" / "train_state.json").read_text())["step"])


def errors(notes) -> list[str]:
    return [str(n.message) for n in notes if n.severity == NotificationSeverity.ERROR]


@pytest.fixture
def classify(make_napari_viewer, open_widget):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-medml", "shape_classes")  # "shapes" + "shapes [ground truth]" (all painted)
    widget = open_widget(viewer, "classify")
    widget["image"].value = viewer.layers["shapes"]
    widget["classes"].value = viewer.layers["shapes [ground truth]"]
    widget["input"].value = "32"
    widget["channels"].value = 8
    widget["epochs"].value, widget["steps"].value = 8, 10
    widget["val_fraction"].value = 0.25
    return viewer, widget


def test_classify_stop_resume_continues_and_temp_folder_goes_with_viewer(classify, qtbot, notes) -> None:
    viewer, widget = classify
    session = session_for(viewer)
    assert not widget["resume"].enabled
    widget.start()
    first = stop_at_first_report(widget)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    assert not errors(notes)
    folder = widget._checkpoints.folder
    assert session.temp_folder is not None and session.temp_folder in folder.parents  # no bundle: the session's
    assert (folder / "last" / "train_state.json").is_file()
    step = stopped_step(folder)
    assert 1 <= step < 80 and first[-1].step == step
    assert widget.classifier is not None and widget["resume"].enabled and widget["start"].enabled

    widget["channels"].value = 4  # another network: one error line, nothing runs
    widget["resume"].changed.emit(True)
    assert not widget.runner.running and widget["resume"].enabled
    assert len(errors(notes)) == 1 and "channels" in errors(notes)[0] and "\n" not in errors(notes)[0]
    widget["channels"].value = 8
    widget["optimizer"].value = "sgd"  # review 51: Resume went on with AdamW without a word
    widget["resume"].changed.emit(True)
    assert not widget.runner.running and len(errors(notes)) == 2
    assert errors(notes)[1].startswith("Classification: Resume continues the stopped run with its own settings: "
                                       "optimizer is sgd, the run's adamw; learning rate is 0.01, the run's 0.001"), \
        errors(notes)[1]
    widget["optimizer"].value = "adamw"  # its rate follows: back to the run's
    notes.clear()

    widget["resume"].changed.emit(True)
    assert widget.runner.running and not widget["resume"].enabled
    resumed = observe(widget)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=240000)
    assert not errors(notes)
    assert resumed[0].step == step + 1 and resumed[-1].step == 80  # the step count went on to the end
    assert [h["epoch"] for h in widget.classifier.history] == list(range(1, 9))
    assert widget.plot.epochs == list(range(1, 9))  # the plot went on (not cleared)
    assert "shapes [classes]" in viewer.layers
    assert not widget["resume"].enabled  # a finished run: nothing to resume
    assert not folder.exists()  # its checkpoints are dropped

    temp = session.temp_folder
    assert temp is not None and temp.is_dir()
    viewer.close()
    qtbot.waitUntil(lambda: not temp.exists(), timeout=10000)  # the viewer's docks are destroyed


@pytest.fixture
def train(make_napari_viewer, open_widget, tmp_path):
    viewer = make_napari_viewer()
    p = phantom_3d(0)
    image = viewer.add_image(p.image[CROP], name="ct", scale=p.spacing)
    labels = viewer.add_labels(p.labels[CROP], name="seg", scale=p.spacing)
    widget = open_widget(viewer, "train")
    widget["images"].value = [image]
    widget["labels"].value = labels
    widget["channels"].value, widget["depth"].value = 8, 3
    widget["patch"].value = "16, 32, 32"
    widget["batch"].value = 2
    widget["epochs"].value, widget["steps"].value = 3, 6
    widget["lr"].value = 3e-3
    widget["plan"].value = False
    widget["bundle"].value = str(tmp_path / "bundle")
    return viewer, widget, tmp_path / "bundle"


def test_train_stop_keeps_checkpoints_in_bundle_and_resume_finishes(train, qtbot, notes) -> None:
    viewer, widget, bundle = train
    widget.start()
    stop_at_first_report(widget)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    assert not errors(notes)
    folder = bundle / "checkpoints"
    assert widget._checkpoints.folder == folder
    assert (bundle / "config.json").is_file()  # Stop saved the best model so far...
    assert (folder / "last" / "train_state.json").is_file()  # ...and kept the checkpoints
    step = stopped_step(folder)
    assert 1 <= step < 18
    stopped_model = widget.model
    assert widget["resume"].enabled and "ct model" in session_for(viewer).models

    widget["depth"].value = 4  # another network: one error line, nothing runs
    widget["resume"].changed.emit(True)
    assert not widget.runner.running and widget["resume"].enabled
    assert len(errors(notes)) == 1 and "depth" in errors(notes)[0] and "\n" not in errors(notes)[0]
    widget["depth"].value = 3

    widget["resume"].changed.emit(True)
    resumed = observe(widget)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=240000)
    assert len(errors(notes)) == 1
    assert resumed[0].step == step + 1 and resumed[-1].step == 18
    assert widget.model is not stopped_model and session_for(viewer).models["ct model"] is widget.model
    assert [h["epoch"] for h in widget.model.history] == [1, 2, 3]
    assert not widget["resume"].enabled
    assert (bundle / "config.json").is_file() and not folder.exists()  # the finished bundle replaced them
    # review 37: its bundle folder, loaded again in Predict, is this model, not a second entry
    assert session_for(viewer).bundle_name(bundle) == "ct model"


def test_pretrain_stop_and_resume(make_napari_viewer, open_widget, qtbot, notes) -> None:
    viewer = make_napari_viewer()
    p = phantom_3d(0)
    ct = viewer.add_image(p.image[16:32, 16:64, 16:64], name="ct", scale=p.spacing)
    widget = open_widget(viewer, "pretrain")
    widget["images"].value = [ct]
    widget["channels"].value, widget["depth"].value = 4, 2
    widget["epochs"].value, widget["steps"].value = 2, 6
    widget["start"].changed.emit(True)
    stop_at_first_report(widget)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=180000)
    assert not errors(notes)
    folder = widget._checkpoints.folder
    step = stopped_step(folder)
    assert 1 <= step < 12 and widget["resume"].enabled and "ct pretrained" in session_for(viewer).models

    widget["resume"].changed.emit(True)
    resumed = observe(widget)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=180000)
    assert not errors(notes)
    assert resumed[0].step == step + 1 and max(r.step for r in resumed) == 12
    assert [h["epoch"] for h in widget.model.history] == [1, 2]
    assert session_for(viewer).models["ct pretrained"] is widget.model and not widget["resume"].enabled


def test_a_late_checkpoint_after_the_viewer_closed_goes_at_exit(tmp_path) -> None:
    # a job still finishing its step when its viewer closed writes its checkpoint after the
    # session folder was removed: the folder goes again when Python exits
    import subprocess
    import sys
    from pathlib import Path

    code = ("from napari_medml._widgets._session import Session\n"
            "s = Session(); run = s.run_folder('train'); s.close()\n"
            "assert not run.exists()\n"
            "(run / 'last').mkdir(parents=True); (run / 'last' / 'train_state.json').write_text('{}')\n"
            "print(run.parent)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    temp = Path(done.stdout.strip())
    assert temp.name.startswith("napari-medml-session-") and not temp.exists()


def test_train_stopped_while_it_plans_makes_no_model(train, qtbot, notes) -> None:
    # Stop pressed at once, while the data are read and the run planned: nothing was learned,
    # so no model is offered to Predict (a trial found one such untrained model 'ready': Dice 0.018)
    viewer, widget, bundle = train
    widget["plan"].value = True
    widget.start()
    widget["stop"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    # where the Stop lands is a race: before the job starts, while it plans, or before the first step
    line = widget["status"].value
    assert line in STOPPED_BEFORE_LEARNING and line in [str(n.message) for n in notes]
    assert not errors(notes) and widget.model is None
    assert "ct model" not in session_for(viewer).models and not (bundle / "config.json").exists()


def test_resume_compares_a_planned_depth_with_the_depth_that_ran(train, qtbot, notes) -> None:
    """Review 29: with depth left 'planned' (the plan chose 3 here) a depth of 4 set before Resume
    was taken and ignored, and the run's own 3 was refused: both compared the form's default."""
    viewer, widget, bundle = train
    widget["plan"].value = True
    widget["depth"].value = widget["depth"].min  # 'planned'
    widget.start()
    stop_at_first_report(widget)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    assert not errors(notes) and widget["resume"].enabled, [str(n.message) for n in notes]
    ran = widget._last_run["config"].model.depth
    assert ran != 4  # the form's default without the plan: the two did not tell them apart
    widget["depth"].value = ran + 1  # another network than the one that ran: refused
    widget["resume"].changed.emit(True)
    assert not widget.runner.running and len(errors(notes)) == 1 and "depth" in errors(notes)[0]
    widget["depth"].value = ran  # the network that ran, set by hand: resumed
    widget["resume"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=240000)
    assert len(errors(notes)) == 1 and widget.model.config.model.depth == ran


def test_an_ensemble_stopped_in_its_first_fold_says_which_folds_are_missing(train, qtbot, notes) -> None:
    """Trial 41: Stop in fold 1 of 2 saved a 1-model ensemble; the status said only "(stopped: Resume
    continues the run)", not that a fold was missing (the command line says it)."""
    viewer, widget, bundle = train
    widget["folds"].value = 2
    widget.start()
    stop_at_first_report(widget)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    assert not errors(notes)
    assert len(widget.model.members) == 1
    assert widget["status"].value.endswith("(stopped: an ensemble of the 1 of 2 folds trained so far; Resume "
                                           "continues the run)"), widget["status"].value
    widget["resume"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=240000)
    assert len(widget.model.members) == 2 and "stopped" not in widget["status"].value
