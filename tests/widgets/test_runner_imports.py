"""Two widgets' first jobs start together in a fresh napari (torch and MONAI not yet
imported): each must get a whole MONAI, not a half-imported one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_TWO_FIRST_JOBS = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import napari
from napari.utils.notifications import NotificationSeverity, notification_manager
from qtpy.QtWidgets import QApplication
from menu_helpers import open_from_menu

assert "monai" not in sys.modules and "torch" not in sys.modules
errors = []
notification_manager.notification_ready.connect(  # warnings and errors (the preview's info line is neither)
    lambda n: errors.append(str(n.message)) if n.severity >= NotificationSeverity.WARNING else None)
lab = np.zeros((8, 40, 48), np.uint8)
lab[:, 5:15, 5:20], lab[:, 22:34, 25:40] = 1, 2
viewer = napari.Viewer(show=False)
image = viewer.add_image(np.where(lab > 0, 200.0, 20.0), name="vol")
labels = viewer.add_labels(lab, name="lvol")
train = open_from_menu(viewer, "train")  # starts its device check: a job that imports torch
augment = open_from_menu(viewer, "augment")
augment.image.value, augment.label_layer.value = image, labels
augment.preview_button.changed.emit(True)  # a job that imports MONAI's transforms, at once
end = time.time() + 120
while (augment.runner.running or train._device_runner.running) and time.time() < end:
    QApplication.processEvents(); time.sleep(0.02)
print("LAYERS", [layer.name for layer in viewer.layers])
print("ERRORS", errors)
"""



def _run_fresh(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh Python process (torch, MONAI and Qt not yet imported)."""
    script = tmp_path / "script.py"
    script.write_text(code)
    return subprocess.run([sys.executable, str(script), str(Path(__file__).parent)], capture_output=True,
                          text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})

def test_two_widgets_first_jobs_import_monai_at_the_same_time(tmp_path) -> None:
    # a subprocess: the fault needs a process where neither torch nor MONAI is imported yet
    done = _run_fresh(tmp_path, _TWO_FIRST_JOBS)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ERRORS []" in done.stdout, done.stdout[-3000:]
    assert "vol [augmentation preview]" in done.stdout, done.stdout[-3000:]


_CLOSE_WHILE_CHECKING = r"""
import sys
sys.path.insert(0, sys.argv[1])
import napari
from qtpy.QtWidgets import QApplication
from menu_helpers import open_from_menu

viewer = napari.Viewer(show=False)
train = open_from_menu(viewer, "train")  # its device check imports torch and MONAI: seconds
QApplication.processEvents()
assert train._device_runner.running
viewer.close()  # a script closes its viewer and ends, without quitting the application
QApplication.processEvents()
print("CLOSED")
"""


def test_a_script_that_closes_its_viewer_while_a_job_runs_exits_cleanly(tmp_path) -> None:
    # was: "wrapped C/C++ object of type GeneratorWorkerSignals has been deleted", then abort (134)
    done = _run_fresh(tmp_path, _CLOSE_WHILE_CHECKING)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "CLOSED" in done.stdout and "RuntimeError" not in done.stderr, done.stderr[-3000:]


_OPEN_TRAIN = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import napari
from qtpy.QtWidgets import QApplication
from menu_helpers import open_from_menu
from napari_medml.engine.reports import TrainReport

viewer = napari.Viewer(show=False)
viewer.add_image(np.zeros((8, 32, 32), np.float32), name="vol")
train = open_from_menu(viewer, "train")
# napari imports the widget's module and builds it on the GUI thread: no matplotlib there
print("MATPLOTLIB_AT_OPEN", "matplotlib" in sys.modules, "RUNNING", train._device_runner.running)
plot = train.plot
report = dict(step=5, total_steps=10, train_loss=0.5, learning_rate=1e-3, elapsed_s=1.0, eta_s=1.0,
              epoch_end=True, val_loss=0.4, val_mean_dice=0.7)
plot.add(TrainReport(epoch=1, **report))  # before the canvas exists: kept, drawn when it comes
plot.add(TrainReport(epoch=1, fold=2, folds=2, **report))
end = time.time() + 120
while not plot.ready and time.time() < end:
    QApplication.processEvents(); time.sleep(0.02)
print("READY", plot.ready, "DICE", list(plot._dice_line.get_ydata()), "MARKS",
      [m.get_text() for m in plot._marks if hasattr(m, "get_text")])
while train._device_runner.running and time.time() < end:
    QApplication.processEvents(); time.sleep(0.02)
print("DEVICE", train["device_info"].value)
viewer.close()
"""


def test_opening_train_leaves_matplotlib_and_torch_to_workers(tmp_path) -> None:
    # importing matplotlib on the GUI thread stalled napari 0.55 s when Train opened
    done = _run_fresh(tmp_path, _OPEN_TRAIN)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "MATPLOTLIB_AT_OPEN False RUNNING True" in out, out
    assert "READY True DICE [0.7, nan, 0.7] MARKS [' fold 2']" in out, out
    assert "DEVICE CPU" in out or "DEVICE CUDA" in out, out


_PREPROCESS_FIRST = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import napari
from qtpy.QtWidgets import QApplication
from menu_helpers import open_from_menu

viewer = napari.Viewer(show=False)
image = viewer.add_image(np.random.default_rng(0).random((6, 20, 24)).astype(np.float32), name="vol")
widget = open_from_menu(viewer, "preprocess")
widget["image"].value, widget["operation"].value = image, "zscore"
widget["apply"].changed.emit(True)
end = time.time() + 60
while widget.runner.running and time.time() < end:
    QApplication.processEvents(); time.sleep(0.02)
print("LAYERS", [layer.name for layer in viewer.layers])
print("TORCH", "torch" in sys.modules, "monai" in sys.modules)
"""


def test_a_preprocessing_job_imports_neither_torch_nor_monai(tmp_path) -> None:
    """Trial 40: every job imported torch and MONAI first, a z-score too, and the import held the GIL:
    the first Apply stalled the GUI for up to 0.5 s at a time, over 5 s."""
    done = _run_fresh(tmp_path, _PREPROCESS_FIRST)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "vol [z-score]" in done.stdout and "TORCH False False" in done.stdout, done.stdout[-3000:]


_OPEN_PREDICT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import napari
from menu_helpers import open_from_menu

viewer = napari.Viewer(show=False)
before = {name for name in ("scipy.ndimage", "torch", "monai") if name in sys.modules}
widget = open_from_menu(viewer, "predict")
print("IMPORTED BY OPENING", sorted({name for name in ("scipy.ndimage", "torch", "monai")
                                     if name in sys.modules} - before))
"""


def test_opening_predict_imports_no_scipy_ndimage_torch_or_monai(tmp_path) -> None:
    """Trial 41: opening Predict stalled napari 0.6-0.8 s; 0.38 s of it imported scipy.ndimage on the GUI
    thread (reading an instance model's post-processing settings)."""
    done = _run_fresh(tmp_path, _OPEN_PREDICT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "IMPORTED BY OPENING []" in done.stdout, done.stdout[-3000:]


_REFUSED_LIVE_START = r"""
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import napari
from menu_helpers import open_from_menu

viewer = napari.Viewer(show=False)
image = viewer.add_image(np.zeros((8, 48, 48), np.float32), name="vol")
mask = np.zeros((8, 48, 48), np.int32)
for k in range(40):
    mask[k % 8, k, :4] = k + 1
widget = open_from_menu(viewer, "live")
widget["images"].value, widget["scribbles"].value = [image], viewer.add_labels(mask, name="masks")
widget["start"].changed.emit(True)  # refused on the GUI thread: 40 ids
print("LIVE PACKAGE", "napari_medml.live" in sys.modules, "RUNNING", widget.runner.running)
"""


def test_a_refused_live_start_imports_no_live_session_on_the_gui_thread(tmp_path) -> None:
    """Review 41: the instance-mask check at Start imported the live package (session, stages) on the GUI
    thread; the package loads in the session's job."""
    done = _run_fresh(tmp_path, _REFUSED_LIVE_START)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LIVE PACKAGE False RUNNING False" in done.stdout, done.stdout[-3000:]


_LIVE_WITHOUT_NETWORK = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import napari
from qtpy.QtWidgets import QApplication
from menu_helpers import open_from_menu

viewer = napari.Viewer(show=False)
data = np.zeros((8, 48, 48), np.float32)
data[:, 10:30, 10:30] = 100.0
image = viewer.add_image(data, name="vol")
widget = open_from_menu(viewer, "live")
widget["images"].value, widget["network"].value = [image], False
widget["start"].changed.emit(True)
end = time.time() + 120
while widget.session is None and time.time() < end:
    QApplication.processEvents(); time.sleep(0.02)
scribbles = viewer.layers["vol [scribbles]"]
scribbles.brush_size = 3
scribbles.paint((4, 20, 20), 2)
scribbles.paint((4, 40, 40), 1)
while "vol [live]" not in viewer.layers and time.time() < end:
    QApplication.processEvents(); time.sleep(0.02)
print("ANSWERED", "vol [live]" in viewer.layers, "TORCH", "torch" in sys.modules)
widget["stop"].changed.emit(True)
while widget.runner.running and time.time() < end:
    QApplication.processEvents(); time.sleep(0.02)
"""


def test_live_without_a_network_imports_no_torch(tmp_path) -> None:
    """Review 42: leaving napari a core (torch's threads) imported torch for the forest alone too,
    about a second before its first answer."""
    done = _run_fresh(tmp_path, _LIVE_WITHOUT_NETWORK)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ANSWERED True TORCH False" in done.stdout, done.stdout[-3000:]
