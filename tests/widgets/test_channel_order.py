"""Several image layers as a model's channels: their order is the one the widgets' image lists
show (viewer.layers), whatever order a selection returns them in, and Predict names it beside
the order the model was trained with. A trial picked two layers in Predict in the order
'bot A', 'bot B', got them as 'bot B', 'bot A' and a Dice of 0.0011, with nothing shown."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medml._widgets._layers import model_input
from napari_medml._widgets._session import session_for
from napari_medml.samples import phantom_3d

CROP = (slice(16, 28), slice(16, 64), slice(16, 64))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_channels_follow_the_layer_order_and_predict_names_them(make_napari_viewer, open_widget, qtbot, notes):
    p = phantom_3d(0)
    image, labels = p.image[CROP], p.labels[CROP]
    viewer = make_napari_viewer()
    b = viewer.add_image(-image, name="B")
    a = viewer.add_image(image, name="A")
    seg = viewer.add_labels(labels, name="seg")
    inputs = model_input(viewer, [a, b])  # a selection's order
    assert inputs.names == ("B", "A") and np.array_equal(inputs.image[0], -image)
    viewer.layers.move(viewer.layers.index(a), 0)  # dragged in napari's layer list: A is listed first now
    assert model_input(viewer, [b, a]).names == ("A", "B") and np.array_equal(model_input(viewer, [b, a]).image[0],
                                                                               image)

    train = open_widget(viewer, "train")
    train["images"].value, train["labels"].value = [b, a], seg
    train["plan"].value = False
    train["channels"].value, train["depth"].value, train["patch"].value = 4, 2, "8, 32, 32"
    train["epochs"].value, train["steps"].value = 1, 3
    train["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not train.runner.running, timeout=120000)
    model = session_for(viewer).models["A model"]
    assert model.provenance["channel_layers"] == ["A", "B"] and model.in_channels == 2
    # a trial chose three crops meaning three training pairs and got a 3-channel model, named nowhere
    assert "(trained on images 'A', 'B' as channels with labels 'seg')" in train["status"].value
    from napari_medml._widgets._layers import channels_line

    assert channels_line(model_input(viewer, [a, b])).startswith("input: 2 channels, 'A', 'B' (the chosen images")
    assert channels_line(model_input(viewer, [a])) == ""

    predict = open_widget(viewer, "predict")
    predict["images"].value = [b, a]
    predict["model"].reset_choices()
    predict["model"].value = "A model"
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=120000)
    assert predict["status"].value.endswith("'A' segmented with 'A model' (channels: 'A', 'B'; trained on 'A', 'B')")
    # trial 30: one channel layer for the 2-channel model got the core's "set channel_axis=0 (or axes)",
    # which the widget has no control for; the line names the layers and the widget's fix
    from napari.utils.notifications import NotificationSeverity

    predict["images"].value = [a]
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=120000)
    errors = [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert errors[-1] == ("Prediction: the model was trained on 2 channel(s) but 'A' has 1: choose its 2 channel "
                          "layers together in image(s), in the order trained (a file opened as 'name [ch0]', "
                          "'name [ch1]'...) (it was trained on 'A', 'B')")
    from axes_helpers import named

    # one layer holding more channels than the model takes: napari's own Split Stack is the way
    three = viewer.add_image(np.stack([image, -image, image]), name="three", **named("c", "z", "y", "x"))
    predict["images"].value = [three]
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=120000)
    errors = [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert errors[-1] == ("Prediction: the model was trained on 2 channel(s) but 'three' has 3: split it into its "
                          "channels (right-click the layer > Split Stack) and choose the 2 trained on, in the order "
                          "trained (it was trained on 'A', 'B')")
    viewer.layers.remove(three)
    # review 46: Split Stack splits the first axis; a ZCYX layer's channels are split in napari's console
    zc = viewer.add_image(np.stack([image, -image, image], axis=1), name="zc", **named("z", "c", "y", "x"))
    predict["images"].value = [zc]
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=120000)
    errors = [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert errors[-1] == ("Prediction: the model was trained on 2 channel(s) but 'zc' has 3: split it into its "
                          "channels (napari's console: viewer.add_image(viewer.layers['zc'].data, channel_axis=1); "
                          "Split Stack splits the first axis) and choose the 2 trained on, in the order trained (it "
                          "was trained on 'A', 'B')")
    split = viewer.add_image(viewer.layers["zc"].data, channel_axis=1)  # followed as said
    predict["images"].value = list(split[:2])
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=120000)
    assert "segmented with 'A model'" in predict["status"].value, predict["status"].value
    for layer in [zc, *split]:
        viewer.layers.remove(layer)
    # a stack of frames for the 3D model is said to be segmented frame by frame

    frames = viewer.add_image(np.stack([image, image]), name="frames", **named("t", "z", "y", "x"))
    negative = viewer.add_image(np.stack([-image, -image]), name="frames -", **named("t", "z", "y", "x"))
    predict["images"].value = [frames, negative]
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=120000)
    assert predict["status"].value.endswith("(2 frames, one at a time by the 3D model)"), predict["status"].value
