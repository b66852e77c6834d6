"""The plan's clock: one step timed as the training loop takes it, the batch's augmentation
included (small patches spend a large share of a step there), and nothing added when the
run has no augmentation."""

from __future__ import annotations

import time

import pytest
import torch

from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
from napari_medml.segmentation import step_time, task

PATCH = (32, 24)
BATCH = 2
PAUSE = 0.02  # seconds the stand-in transform takes per patch


def config(augment: AugmentConfig | None = None) -> TrainConfig:
    return TrainConfig(data=DataConfig(spatial_dims=2, patch_size=PATCH, batch_size=BATCH),
                       model=ModelConfig(channels=4, depth=2), optim=OptimConfig(max_minutes=1.0),
                       augment=augment or AugmentConfig(), device="cpu")


@pytest.fixture
def slow_transform(monkeypatch):
    """The run's transform, wrapped: records what it is given and takes PAUSE per patch."""
    seen = []
    real = task.training_transform

    def wrapped(cfg, keys, *, seed, patch_size, spacing):
        transform = real(cfg, keys, seed=seed, patch_size=patch_size, spacing=spacing)
        if transform is None:
            return None

        def timed(item):
            seen.append({k: tuple(v.shape) for k, v in item.items()})
            time.sleep(PAUSE)
            return transform(item)

        return timed

    monkeypatch.setattr(task, "training_transform", wrapped)
    return seen


def test_a_step_includes_augmenting_every_patch_of_the_batch(slow_transform):
    seconds = step_time.measure_step(config(), 1, 2, (1.0, 1.0), torch.device("cpu"))
    # DRAWS batches of BATCH patches, each image (C, *patch) with its label (1, *patch)
    assert slow_transform == [{"image": (1, *PATCH), "label": (1, *PATCH)}] * (step_time.DRAWS * BATCH)
    assert seconds >= BATCH * PAUSE  # the mean batch's augmentation is part of the step


def test_a_stop_ends_the_timing_between_steps_and_batches(slow_transform):
    """Trial 39: a Stop pressed while planning took 5.5 s, one timed trial on a busy CPU."""
    calls = []

    def check() -> None:
        calls.append(len(slow_transform))
        if len(calls) == 6:  # 4 timed steps and one augmented batch done: the next batch is not begun
            raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        step_time.measure_step(config(), 1, 2, (1.0, 1.0), torch.device("cpu"), check)
    assert calls == [0, 0, 0, 0, 0, BATCH] and len(slow_transform) == BATCH  # one batch of DRAWS


def test_no_augmentation_adds_nothing(slow_transform):
    assert step_time._augment_seconds(config(AugmentConfig.none()), torch.zeros(BATCH, 1, *PATCH),
                                      torch.ones(BATCH, 1, *PATCH), (1.0, 1.0), lambda: None) == 0.0
    step_time.measure_step(config(AugmentConfig.none()), 1, 2, (1.0, 1.0), torch.device("cpu"))
    assert slow_transform == []


def test_steps_trained_says_how_many_steps_and_when_the_plan_timed_a_faster_machine() -> None:
    from napari_medml.segmentation.step_time import steps_trained

    history = [{"epoch": 1, "step": 60, "elapsed_s": 6.0}, {"epoch": 2, "step": 120, "elapsed_s": 12.0}]
    assert steps_trained(history) == "120 steps in 0.2 min"
    assert steps_trained(history, {"step_seconds": 0.08}) == (
        "120 steps in 0.2 min (0.1 s a step with validation; the plan timed 0.08 s)")
    # a trial saw 4x fewer steps than planned with no word of it
    assert steps_trained(history, {"step_seconds": 0.025}) == (
        "120 steps in 0.2 min (0.1 s a step with validation; the plan timed 0.025 s: the machine was busier than "
        "when the plan timed a step, so fewer steps were trained than planned)")
    assert steps_trained([]) == "" and steps_trained([{"epoch": 1, "step": 0, "elapsed_s": 0.0}]) == ""


def test_a_run_stopped_within_an_epoch_says_the_steps_it_took(tmp_path, monkeypatch) -> None:
    """Trial 46: Ctrl-C at step 77 of a run of 20-step epochs said "trained 60 steps" (the last
    epoch end's), and a fold stopped so counted too few steps for the ensemble's warning."""
    import numpy as np

    from napari_medml import api
    from napari_medml.engine.reports import StopToken
    from napari_medml.samples import phantom_3d
    from napari_medml.segmentation.step_time import model_steps_trained

    monkeypatch.setattr("napari_medml.engine.loop.REPORT_EVERY_S", 0.0)  # every step reported
    p = phantom_3d(0, shape=(16, 48, 48))
    cfg = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(32, 32), batch_size=1),
                      augment=AugmentConfig.none(), model=ModelConfig(channels=4, depth=2),
                      optim=OptimConfig(epochs=3, steps_per_epoch=4), device="cpu", checkpoint_dir=str(tmp_path))
    stop = StopToken()
    run = api.fit(p.image[8], p.labels[8], cfg, stop=stop)
    while True:
        try:
            report = next(run)
        except StopIteration as done:
            model = done.value
            break
        if report.step == 6:
            stop.stop()
    assert [h["step"] for h in model.history] == [4] and model.provenance["steps"] == 7
    assert 0 < model.provenance["elapsed_s"] and "stopped_in_first_epoch" not in model.provenance
    assert model_steps_trained(model).startswith("7 steps in ")
    # the resumed run ends at an epoch's end: the stop is no longer said
    resumed = api.fit(p.image[8], p.labels[8], cfg, resume_from=str(tmp_path))
    while True:
        try:
            next(resumed)
        except StopIteration as done:
            model = done.value
            break
    assert [h["step"] for h in model.history] == [4, 8, 12] and "steps" not in model.provenance
    assert model_steps_trained(model).startswith("12 steps in ") and np.isfinite(model.history[-1]["train_loss"])


def test_slow_steps_and_batches_are_timed_fewer_times(slow_transform, monkeypatch):
    """Trial 48: labels of 242 ids (an intensity image given as labels) planned for minutes past a
    6-second budget, each of its slow steps timed four times in each of several plans. A slow warm-up
    now takes one timed step after it, slow batches two draws; the planner times each trial once."""
    from napari_medml.nn import losses

    built = []
    real = losses.build_loss

    def counting(*args, **kwargs):
        fn = real(*args, **kwargs)
        built.append(0)

        def loss(*a, **k):
            built[-1] += 1
            return fn(*a, **k)

        return loss

    monkeypatch.setattr(losses, "build_loss", counting)
    step_time.measure_step(config(), 1, 2, (1.0, 1.0), torch.device("cpu"))
    assert built == [4] and len(slow_transform) == step_time.DRAWS * BATCH  # quick: 1 + 3 steps, 8 batches
    monkeypatch.setattr(step_time, "SLOW_S", 0.0)
    slow_transform.clear()
    step_time.measure_step(config(), 1, 2, (1.0, 1.0), torch.device("cpu"))
    assert built == [4, 1] and len(slow_transform) == 2 * BATCH  # very slow: the warm-up alone, 2 batches
    ticks = iter(range(10**6))
    monkeypatch.setattr(time, "perf_counter", lambda: 0.3 * next(ticks))  # every step and batch takes 0.3 s
    monkeypatch.setattr(step_time, "SLOW_S", 0.1)  # slow (> 0.1 s), not very slow (< 0.5 s)
    step_time.measure_step(config(), 1, 2, (1.0, 1.0), torch.device("cpu"))
    assert built == [4, 1, 2]  # the warm-up and one timed step


def test_the_planner_times_each_trial_step_once(monkeypatch):
    from napari_medml.samples import touching_objects_2d
    from napari_medml.segmentation.planning import plan_run

    timed = []
    real = step_time.measure_step
    monkeypatch.setattr(step_time, "measure_step", lambda *a, **k: timed.append(repr(
        (a[0].data.patch_size, a[0].data.batch_size, a[0].model))) or real(*a, **k))
    s = touching_objects_2d(0, shape=(96, 160))
    plan_run(s.image, s.labels > 0, config(), spacing=s.spacing)
    assert timed and len(timed) == len(set(timed)), timed
