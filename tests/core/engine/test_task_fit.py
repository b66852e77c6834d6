"""Every task's ``fit`` goes through ``engine.fit.fit_task``: checkpoints only where
``checkpoint_dir`` says (never a temporary folder left behind), a ``last`` checkpoint on
Stop that the run resumes from, and patches drawn from the per-process data seed."""

from __future__ import annotations

import tempfile
from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
from napari_medml.engine.reports import StopToken
from napari_medml.samples import touching_objects_2d


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(task: str) -> TrainConfig:
    return TrainConfig(task=task, data=DataConfig(spatial_dims=2, patch_size=(32, 32), batch_size=2,
                                                  val_fraction=0.0),
                       model=ModelConfig(channels=4, depth=2), augment=AugmentConfig.none(),
                       optim=OptimConfig(epochs=2, steps_per_epoch=2), device="cpu", seed=0)


def fit_of(task: str):
    if task == "segmentation":
        from napari_medml.segmentation.task import fit
    elif task == "instances":
        from napari_medml.instances.task import fit
    else:
        from napari_medml.pretraining.task import fit_pretraining as fit
    return fit


def data_of(task: str) -> tuple[np.ndarray, np.ndarray | None]:
    sample = touching_objects_2d(3)
    image = sample.image[:64, :64]
    if task == "pretraining":
        return image, None
    labels = sample.labels[:64, :64]
    return image, (labels > 0).astype(np.uint8) if task == "segmentation" else labels


def drive(gen, stop: StopToken | None = None) -> tuple[list, object]:
    reports = []
    while True:
        try:
            reports.append(next(gen))
        except StopIteration as done:
            return reports, done.value
        if stop is not None and reports[-1].step >= 1:
            stop.stop()


TASKS = ["segmentation", "instances", "pretraining"]


@pytest.mark.parametrize("task", TASKS)
def test_without_a_checkpoint_dir_nothing_is_left_on_disk(task, tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    image, labels = data_of(task)
    _, model = drive(fit_of(task)(image, labels, tiny(task)))
    assert model is not None
    assert [p.name for p in scratch.iterdir() if p.name.startswith("napari-medml")] == []


@pytest.mark.parametrize("task", TASKS)
def test_stop_leaves_last_where_the_run_resumes(task, tmp_path):
    image, labels = data_of(task)
    config = replace(tiny(task), checkpoint_dir=str(tmp_path / "ckpt"))
    stop = StopToken()
    reports, _ = drive(fit_of(task)(image, labels, config, stop=stop), stop)
    stopped_at = reports[-1].step
    assert stopped_at < 4 and (tmp_path / "ckpt" / "last").is_dir()
    resumed, model = drive(fit_of(task)(image, labels, config, resume_from=tmp_path / "ckpt"))
    assert resumed[0].step > stopped_at - 1 and resumed[-1].step == 4
    assert model.history  # the earlier epochs' history continues


@pytest.mark.parametrize("task", ["instances", "pretraining"])
def test_each_process_draws_its_own_patches(task, monkeypatch):
    image, labels = data_of(task)
    config = tiny(task)

    def first_batch(rank: str) -> torch.Tensor:
        monkeypatch.setenv("RANK", rank)  # WORLD_SIZE stays 1: no process group, only the seed
        if task == "instances":
            from napari_medml.instances.task import InstanceTask

            made = InstanceTask(config, image, labels)
        else:
            from napari_medml.pretraining.task import PretrainingTask

            made = PretrainingTask(config, image)
        return made.next_batch()[0]

    assert torch.equal(first_batch("0"), first_batch("0"))
    assert not torch.equal(first_batch("0"), first_batch("1"))


def test_pad_to_keeps_a_region_subclass():
    from napari_medml.instances.data import InstanceRegion
    from napari_medml.segmentation.data import pad_to

    region = InstanceRegion(np.ones((1, 4, 5), np.float32), np.ones((4, 5), np.uint8),
                            np.ones((4, 5), np.float32), np.ones((4, 5), np.int32))
    padded = pad_to(region, (8, 5))
    assert type(padded) is InstanceRegion
    assert padded.image.shape == (1, 8, 5) and padded.distance.shape == padded.instances.shape == (8, 5)
    assert padded.label[4:].max() == 0 and padded.distance[4:].max() == 0


@pytest.mark.parametrize("task", TASKS)
def test_a_run_resumed_with_more_epochs_follows_its_new_length(task, tmp_path):
    # the schedule kept the stopped run's length: every added epoch trained at rate 0
    image, labels = data_of(task)
    config = replace(tiny(task), checkpoint_dir=str(tmp_path / "ckpt"))
    config = replace(config, optim=replace(config.optim, schedule="poly"))
    stop = StopToken()
    drive(fit_of(task)(image, labels, config, stop=stop), stop)
    longer = replace(config, optim=replace(config.optim, epochs=6))
    resumed, _ = drive(fit_of(task)(image, labels, longer, resume_from=tmp_path / "ckpt"))
    rates = [r.learning_rate for r in resumed]
    assert resumed[-1].step == 12 and all(rate > 0 for rate in rates), rates
    assert rates == sorted(rates, reverse=True)  # poly decays over the new length, to 0 at its end


def test_a_script_run_to_the_end_warns_with_the_runs_warning_lines():
    """Trial 47: mm.train() showed none of the warnings the command line and the widgets show."""
    from types import SimpleNamespace

    from napari_medml.engine.fit import run_to_end

    def run():
        yield SimpleNamespace(message="200 training voxels\nwarning: class 6 is not in the training part")
        yield SimpleNamespace(message="")
        return "model"

    with pytest.warns(UserWarning, match="^class 6 is not in the training part$") as caught:
        assert run_to_end(run()) == "model"
    assert len(caught) == 1
