"""The shared engine gives classifiers what segmentation had: a ``last`` checkpoint on
Stop, and resume from it (step count, history and the optimizer state continue)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from napari_medml.classification.model import classification_config, load_classifier
from napari_medml.classification.task import fit_classifier
from napari_medml.classification.data import image_samples
from napari_medml.config import AugmentConfig
from napari_medml.engine.reports import StopToken
from napari_medml.samples import shape_classes


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def samples():
    sc = shape_classes(seed=0, n=32, size=48)
    return image_samples(sc.images, labels=sc.labels, input_size=(32, 32))


def config(tmp_path, epochs=4):
    cfg = classification_config(2, epochs=epochs, steps_per_epoch=3, learning_rate=3e-3)
    return replace(cfg, augment=AugmentConfig.none(), checkpoint_dir=str(tmp_path / "ckpt"),
                   data=replace(cfg.data, val_fraction=0.25),
                   model=replace(cfg.model, channels=8, depth=2))


def drive(gen, stop_at_step=None, stop=None):
    reports = []
    while True:
        try:
            report = next(gen)
        except StopIteration as done:
            return reports, done.value
        reports.append(report)
        if stop_at_step is not None and report.step >= stop_at_step:
            stop.stop()


def test_stop_leaves_last_and_resume_continues(samples, tmp_path):
    cfg = config(tmp_path)
    stop = StopToken()
    reports, clf = drive(fit_classifier(samples, cfg, stop=stop), stop_at_step=4, stop=stop)
    assert reports[-1].message == "stopped by user"
    stopped_at = reports[-1].step
    assert 4 <= stopped_at < 12
    last = tmp_path / "ckpt" / "last"
    state = json.loads((last / "train_state.json").read_text())
    assert state["step"] == stopped_at
    assert load_classifier(last).class_ids == clf.class_ids

    reports2, clf2 = drive(fit_classifier(samples, cfg, resume_from=tmp_path / "ckpt"))
    assert reports2[0].step == stopped_at + 1  # continues, does not restart
    assert reports2[-1].step == 12
    epochs = [h["epoch"] for h in clf2.history]
    assert epochs == sorted(set(epochs)) and epochs[-1] == 4 and 1 in epochs  # history carried over
    assert json.loads((last / "train_state.json").read_text())["step"] == 12


def test_resume_refuses_other_classes(samples, tmp_path):
    cfg = config(tmp_path, epochs=1)
    drive(fit_classifier(samples, cfg))
    y = np.where(samples.y == 1, 3, samples.y)
    other = replace(samples, y=y)
    with pytest.raises(ValueError, match="resume with the same classes"):
        drive(fit_classifier(other, cfg, resume_from=tmp_path / "ckpt"))


def test_a_resumed_run_draws_new_batches_instead_of_its_first_ones(samples, tmp_path, monkeypatch):
    """Classification seeded its draws with the run's seed on every start: a resumed run replayed
    the first batches of the run (segmentation shifts its seeds by the step it resumes from)."""
    from napari_medml.classification.task import ClassificationTask

    drawn = []
    real = ClassificationTask.next_batch

    def next_batch(self):
        x, y = real(self)
        drawn.append(tuple(round(float(v), 4) for v in x.flatten(1).sum(1)))  # which samples, in order
        return x, y

    monkeypatch.setattr(ClassificationTask, "next_batch", next_batch)
    cfg = config(tmp_path)
    stop = StopToken()
    drive(fit_classifier(samples, cfg, stop=stop), stop_at_step=4, stop=stop)
    first, drawn[:] = list(drawn), []
    drive(fit_classifier(samples, cfg, resume_from=tmp_path / "ckpt"))
    assert len(drawn) == 12 - len(first)
    assert drawn[:3] != first[:3]
