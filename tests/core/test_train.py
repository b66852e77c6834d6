"""Training on the phantom (dense and scribbles), reports, checkpoints, stop/resume,
reproducibility, schedules and input errors."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage as ndi

pytest.importorskip("torch")

from napari_medml.api import load_model  # noqa: E402
from napari_medml.config import (  # noqa: E402
    AugmentConfig, DataConfig, ModelConfig, OptimConfig, PreprocessStep, TrainConfig,
)
from napari_medml.errors import BundleError, InputError  # noqa: E402
from napari_medml.samples import phantom_3d  # noqa: E402
from napari_medml.engine.reports import StopToken, TrainReport
from napari_medml.engine.fit import run_to_end  # noqa: E402
from napari_medml.segmentation.task import fit, train  # noqa: E402

SHAPE, SPACING = (32, 64, 64), (3.0, 1.5, 1.5)


def _dice(pred: np.ndarray, gt: np.ndarray, cls: int) -> float:
    p, g = pred == cls, gt == cls
    return float(2 * (p & g).sum() / max(p.sum() + g.sum(), 1))


def _config(tmp, **data) -> TrainConfig:
    return TrainConfig(
        data=DataConfig(**{"patch_size": (16, 48, 48), "batch_size": 2, **data}),
        augment=AugmentConfig.none(),
        model=ModelConfig(channels=8, depth=3, norm="batch"),
        optim=OptimConfig(epochs=8, steps_per_epoch=25, learning_rate=1e-2),
        device="cpu", seed=0, checkpoint_dir=str(tmp),
    )


def _run(images, labels, config, **kwargs):
    reports: list[TrainReport] = []
    gen = fit(images, labels, config, **kwargs)
    return run_to_end(gen, reports), reports


@pytest.fixture(scope="module")
def phantom():
    return phantom_3d(0, shape=SHAPE, spacing=SPACING)


@pytest.fixture(scope="module")
def trained(phantom, tmp_path_factory):
    """One dense training run on the phantom, shared by several tests."""
    ckpt = tmp_path_factory.mktemp("dense")
    start = time.perf_counter()
    model, reports = _run(phantom.image, phantom.labels, _config(ckpt), spacing=phantom.spacing)
    return model, reports, time.perf_counter() - start, ckpt


@pytest.fixture(scope="module")
def tiny():
    """A 2D phantom slice for quick mechanical tests."""
    ph = phantom_3d(1, shape=(16, 64, 64), spacing=(3.0, 1.5, 1.5))
    return ph.image[8], ph.labels[8]


def _tiny_config(tmp, **optim) -> TrainConfig:
    return TrainConfig(
        data=DataConfig(spatial_dims=2, patch_size=(32, 32), batch_size=2, val_fraction=0.25),
        augment=AugmentConfig.none(), model=ModelConfig(channels=4, depth=3),
        optim=OptimConfig(**{"epochs": 2, "steps_per_epoch": 3, **optim}), device="cpu", seed=0,
        checkpoint_dir=str(tmp),
    )


def test_dense_phantom_reaches_dice_on_held_out_block(trained, phantom):
    model, reports, seconds, _ = trained
    pred = model.predict(phantom.image, spacing=phantom.spacing)
    block = (slice(None), slice(SHAPE[1] - math.ceil(0.2 * SHAPE[1]), None))  # held out: last 20 % of Y
    dice = {c: _dice(pred.labels[block], phantom.labels[block], c) for c in (1, 2, 3)}
    whole = {c: _dice(pred.labels, phantom.labels, c) for c in (1, 2, 3)}
    mean = float(np.mean(list(dice.values())))
    print(f"dense phantom: held-out dice {dice} (mean {mean:.3f}), whole {whole}, "
          f"{reports[-1].step} steps in {seconds:.1f} s")
    assert model.class_ids == (0, 1, 2, 3)
    assert mean >= 0.90


def test_reports_and_history(trained):
    model, reports, _, _ = trained
    ends = [r for r in reports if r.epoch_end]
    assert [r.epoch for r in ends] == list(range(1, 9))
    assert all(set(r.val_dice) == {1, 2, 3} and set(r.val_iou) == {1, 2, 3} for r in ends)
    assert all(r.val_loss is not None and r.val_mean_dice is not None for r in ends)
    assert ends[0].best and any(r.best for r in ends)
    assert [r.step for r in reports] == sorted(r.step for r in reports)
    assert reports[-1].step == reports[-1].total_steps == 200
    assert all(r.learning_rate > 0 and math.isfinite(r.train_loss) for r in reports)
    assert len(model.history) == 8 and model.history[-1]["val_mean_dice"] is not None
    # the loss went down
    assert model.history[-1]["train_loss"] < model.history[0]["train_loss"]


def test_an_epochs_line_shows_the_loss_that_judged_its_best_epoch(tiny, tmp_path):
    """Without validation the epoch's mean training loss picks the best epoch; the epoch's
    report carries that mean (not the last quarter second's), so '* best' reads right."""
    image, labels = tiny
    config = _tiny_config(tmp_path, epochs=6, steps_per_epoch=8)
    model, reports = _run(image, labels, replace(config, data=replace(config.data, val_fraction=0.0)))
    ends = [r for r in reports if r.epoch_end]
    assert [r.train_loss for r in ends] == pytest.approx([h["train_loss"] for h in model.history], rel=1e-6)
    lowest = [min(r.train_loss for r in ends[:i + 1]) for i in range(len(ends))]
    assert [r.best for r in ends] == [r.train_loss == low and (i == 0 or low < lowest[i - 1])
                                      for i, (r, low) in enumerate(zip(ends, lowest))]


def test_a_validation_part_without_foreground_does_not_keep_the_first_epoch(tmp_path):
    """The held-out rows hold no foreground: every epoch that predicts some there scored Dice 0,
    and the first epoch (the barely trained network) was saved. Equal Dice now goes to the lower
    validation loss."""
    rng = np.random.default_rng(0)
    labels = np.zeros((96, 96), np.uint8)
    labels[20:50, 20:50] = 1
    image = rng.normal(0, 1, labels.shape).astype(np.float32) + 2 * labels
    config = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(32, 32), batch_size=2, val_fraction=0.2),
                         model=ModelConfig(channels=4, depth=2), augment=AugmentConfig.none(),
                         optim=OptimConfig(epochs=8, steps_per_epoch=5, learning_rate=1e-2), seed=0, device="cpu")
    model = train(image, labels, config)
    assert "it holds no foreground" in model.provenance["split"]
    history = model.history
    # the case: Dice 0 at every epoch that predicted some foreground there; since cases 39 a class the
    # held-out labels lack is not scored at all (its Dice would say nothing of the model)
    assert {h["val_mean_dice"] for h in history} == {None} and all(h["val_dice"] == {} for h in history)
    lowest = min(history, key=lambda h: h["val_loss"])
    assert model.provenance["best_epoch"] == lowest["epoch"] > 1


def test_the_best_epoch_key_is_the_printed_mean_and_counts_no_class_held_out_as_found() -> None:
    from napari_medml.segmentation.validation import selection_key

    # class 2 absent from the validation labels: not scored, so the key is the printed mean (review 38:
    # a stray voxel of it cut the key by a half while the line printed 0.9, and a worse epoch was kept)
    fp = {"val_loss": 0.5, "val_dice": {1: 0.9}, "val_mean_dice": 0.9, "val_false_classes": [2]}
    worse = {"val_loss": 0.6, "val_dice": {1: 0.5}, "val_mean_dice": 0.5, "val_false_classes": []}
    assert selection_key(fp, "val_dice") == pytest.approx((0.9, -0.5))
    assert selection_key(worse, "val_dice") == pytest.approx((0.5, -0.6))
    assert selection_key(fp, "val_dice") > selection_key(worse, "val_dice")
    # no class held out: predicting none of any is right, predicting some is not
    none_held = {"val_loss": 0.5, "val_dice": {}, "val_mean_dice": None}
    assert selection_key({**none_held, "val_false_classes": []}, "val_dice") == pytest.approx((1.0, -0.5))
    assert selection_key({**none_held, "val_false_classes": [1]}, "val_dice") == pytest.approx((0.0, -0.5))
    assert selection_key(fp, "val_loss") == (-0.5,)
    assert selection_key({**fp, "val_metrics": {"accuracy": 0.9}}, "val_accuracy") == pytest.approx((0.9, -0.5))
    assert selection_key({"val_loss": None, "val_dice": {}, "val_mean_dice": None}, "val_dice") is None


def test_best_and_last_checkpoints_load(trained, phantom):
    model, reports, _, ckpt = trained
    best = load_model(ckpt / "best")
    last = load_model(ckpt / "last")
    assert (ckpt / "last" / "train_state.json").is_file()
    assert best.class_ids == last.class_ids == model.class_ids
    best_epoch = max((r for r in reports if r.epoch_end), key=lambda r: r.val_mean_dice).epoch
    assert model.provenance["best_epoch"] == best_epoch
    np.testing.assert_array_equal(best.predict(phantom.image).labels, model.predict(phantom.image).labels)


def _scribbles(labels: np.ndarray, background_id: int, seed: int) -> np.ndarray:
    """A few small blobs per class deep inside each region, background painted as ``background_id``."""
    rng = np.random.default_rng(seed)
    out = np.zeros_like(labels)
    for cls, paint in ((0, background_id), (1, 1), (2, 2), (3, 3)):
        inner = ndi.binary_erosion(labels == cls, iterations=2)
        centres = np.argwhere(inner)
        for z, y, x in centres[rng.choice(len(centres), 14, replace=False)]:
            box = (slice(z, z + 1), slice(max(y - 2, 0), y + 3), slice(max(x - 2, 0), x + 3))
            out[box] = np.where(inner[box], paint, out[box])
    return out


def test_scribble_training_reaches_dice_against_ground_truth(phantom, tmp_path):
    scribbles = _scribbles(phantom.labels, background_id=9, seed=0)
    share = float((scribbles > 0).mean())
    cfg = _config(tmp_path, label_mode="sparse", background_id=9, val_fraction=0.0, foreground_fraction=0.9)
    start = time.perf_counter()
    model = train(phantom.image, scribbles, cfg, spacing=phantom.spacing)
    seconds = time.perf_counter() - start
    pred = model.predict(phantom.image)
    assert model.class_ids == (0, 1, 2, 3)
    assert set(np.unique(pred.labels)) <= {0, 1, 2, 3}  # background comes back as 0, not 9
    dice = {c: _dice(pred.labels, phantom.labels, c) for c in (1, 2, 3)}
    mean = float(np.mean(list(dice.values())))
    print(f"scribbles: {share:.2%} labelled, dice {dice} (mean {mean:.3f}), trained in {seconds:.1f} s")
    assert share < 0.02
    assert mean >= 0.80


def test_seeded_runs_are_reproducible(tiny, tmp_path):
    image, labels = tiny
    # reports are paced by the clock; the per-epoch history is not
    a = [(h["train_loss"], h["val_loss"]) for h in _run(image, labels, _tiny_config(tmp_path / "a"))[0].history]
    b = [(h["train_loss"], h["val_loss"]) for h in _run(image, labels, _tiny_config(tmp_path / "b"))[0].history]
    assert a == b and len(a) == 2


def test_stop_token_leaves_checkpoint_and_resume_continues(tiny, tmp_path):
    image, labels = tiny
    cfg = _tiny_config(tmp_path / "run", epochs=3)
    token = StopToken()
    gen = fit(image, labels, cfg, stop=token)
    steps, asked_at = [], None
    for report in gen:
        steps.append(report.step)
        if report.step >= 4 and asked_at is None:
            token.stop()
            asked_at = report.step
    stopped_at = steps[-1]
    assert stopped_at == asked_at + 1  # the step under way finishes, then training ends
    model = load_model(tmp_path / "run" / "last")
    assert model.class_ids == (0, 1, 2, 3)
    _, reports = _run(image, labels, cfg, resume_from=tmp_path / "run")
    assert reports[0].step == stopped_at + 1
    assert reports[-1].step == 9 and reports[-1].epoch == 3
    # trial 29: resumed with fewer epochs than it had trained, it ended at once without a word
    from dataclasses import replace

    from napari_medml.errors import ConfigError

    token = StopToken()
    gen = fit(image, labels, _tiny_config(tmp_path / "again", epochs=3), stop=token)
    for report in gen:
        if report.step >= 5:
            token.stop()
    fewer = _tiny_config(tmp_path / "again", epochs=1)
    with pytest.raises(ConfigError, match=r"^the stopped run already trained (\d) steps \(epoch \d\), and epochs 1 x "
                                          r"steps_per_epoch 3 ask for 3: nothing is left to train; give at least "
                                          r"(\d) epochs to continue it$") as caught:
        _run(image, labels, fewer, resume_from=tmp_path / "again")
    import re

    trained, least = map(int, re.search(r"trained (\d) steps.*at least (\d) epochs", str(caught.value)).groups())
    _, reports = _run(image, labels, replace(fewer, optim=replace(fewer.optim, epochs=least)),
                      resume_from=tmp_path / "again")  # the number it names continues the run
    assert reports[0].step == trained + 1 and reports[-1].step == 3 * least
    # review 29c: a run stopped on its last step still resumes (to its end, at once), as before
    token = StopToken()
    for report in fit(image, labels, _tiny_config(tmp_path / "last", epochs=2), stop=token):
        if report.step >= 5:
            token.stop()
    assert json.loads((tmp_path / "last" / "last" / "train_state.json").read_text())["step"] == 6
    model, reports = _run(image, labels, _tiny_config(tmp_path / "last", epochs=2), resume_from=tmp_path / "last")
    assert model is not None and reports == []


def test_a_run_stopped_before_its_first_step_makes_no_model(tiny, tmp_path):
    from napari_medml.errors import Cancelled, NothingLearned

    image, labels = tiny
    token = StopToken()
    token.stop()  # pressed while the data were read and the run planned
    with pytest.raises(NothingLearned, match="^stopped before the first training step: no model was made$"):
        list(fit(image, labels, _tiny_config(tmp_path / "run"), stop=token))
    assert issubclass(NothingLearned, Cancelled) and not (tmp_path / "run" / "last").exists()


def test_closing_the_generator_leaves_checkpoint(tiny, tmp_path):
    image, labels = tiny
    gen = fit(image, labels, _tiny_config(tmp_path / "run", epochs=3))
    first = next(gen)
    gen.close()
    import json

    state = json.loads((tmp_path / "run" / "last" / "train_state.json").read_text())
    assert state["step"] == first.step
    assert load_model(tmp_path / "run" / "last").patch_size == (32, 32)


def test_time_limit_stops_and_returns_model(tiny, tmp_path):
    image, labels = tiny
    model, reports = _run(image, labels, _tiny_config(tmp_path, max_minutes=1e-6, epochs=50))
    assert reports[-1].step == 1 and "time limit" in reports[-1].message
    # the run ended at step 1 of its planned 150: its share done follows the clock, not the steps
    assert reports[-1].progress == 1.0 and reports[-1].time_limit_s == pytest.approx(6e-5)
    assert model.predict(image).labels.shape == image.shape


@pytest.mark.parametrize("optimizer,schedule,loss", [
    ("sgd", "poly", "ce"), ("adam", "cosine", "dice"), ("adamw", "constant", "dice_ce"),
    ("rmsprop", "plateau", "focal"),
])
def test_optimizers_schedules_and_losses_run(tiny, tmp_path, optimizer, schedule, loss):
    image, labels = tiny
    cfg = _tiny_config(tmp_path, optimizer=optimizer, schedule=schedule, loss=loss, learning_rate=1e-3,
                       early_stopping_patience=2, early_stopping_metric="val_loss")
    model, reports = _run(image, labels, cfg)
    assert all(math.isfinite(r.train_loss) for r in reports)
    if schedule in ("poly", "cosine"):
        assert reports[-1].learning_rate < 1e-3
    assert model.history


def test_fine_tuning_with_init_model(tiny, tmp_path):
    image, labels = tiny
    base, _ = _run(image, labels, _tiny_config(tmp_path / "a"))
    tuned, reports = _run(image, labels, _tiny_config(tmp_path / "b"), init_model=base)
    assert tuned.class_ids == base.class_ids and reports[-1].step == 6
    other = np.where(labels == 3, 9, labels)
    with pytest.raises(InputError, match=r"class id\(s\) \[9\]"):
        next(fit(image, other, _tiny_config(tmp_path / "c"), init_model=base))


def test_augmentation_and_preprocessing_recipe(tiny, tmp_path):
    image, labels = tiny
    recipe = (PreprocessStep("resample", {"target_spacing": (3.0, 3.0)}),)
    cfg = _tiny_config(tmp_path)
    cfg = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(16, 16), batch_size=2, preprocessing=recipe),
                      augment=AugmentConfig(), model=cfg.model, optim=cfg.optim, device="cpu",
                      checkpoint_dir=str(tmp_path))
    model = train(image, labels, cfg, spacing=(1.5, 1.5))
    pred = model.predict(image, spacing=(1.5, 1.5))
    assert pred.labels.shape == image.shape  # resampled back to the input grid


def test_resume_from_a_folder_without_checkpoint(tiny, tmp_path):
    image, labels = tiny
    with pytest.raises(BundleError, match="no resumable checkpoint"):
        next(fit(image, labels, _tiny_config(tmp_path), resume_from=tmp_path))


@pytest.mark.parametrize("case,match", [
    ("shape", r"labels have shape \(64, 60\) but image has spatial shape \(64, 64\)"),
    ("empty", "labels are empty"),
    ("one_class", "only class 2"),
    ("nan", "NaN"),
    # 56 > 51 is allowed (the part is padded to the network's multiple of 8): the message says why
    ("patch", r"patch size \(128, 128\) is larger than the training part of the image \(51, 64\): use a patch "
              r"of at most \(56, 64\) \(its shape padded to a multiple of 8\)"),
    ("dims", "3 spatial dimensions"),
    ("sparse_no_background", "needs painted background.*Train segmentation's 'background id', --background-id"),
    ("sparse_only_background", "only the background id"),
])
def test_bad_inputs_raise_clear_errors(tiny, tmp_path, case, match):
    image, labels = tiny
    cfg = _tiny_config(tmp_path)
    if case == "shape":
        labels = labels[:, :60]
    elif case == "empty":
        labels = np.zeros_like(labels)
    elif case == "one_class":
        labels = np.full_like(labels, 2)
    elif case == "nan":
        image = image.copy()
        image[3, 3] = np.nan
    elif case == "patch":
        cfg = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(128, 128)), checkpoint_dir=str(tmp_path))
    elif case == "dims":
        image, labels = image[None].repeat(2, 0), labels[None].repeat(2, 0)
    elif case.startswith("sparse"):
        cfg = TrainConfig(data=DataConfig(spatial_dims=2, label_mode="sparse", background_id=9),
                          checkpoint_dir=str(tmp_path))
        labels = np.where(labels == 0, 0, 9) if case == "sparse_only_background" else labels
    with pytest.raises(InputError, match=match):
        next(fit(image, labels, cfg))


@pytest.mark.gpu
def test_cuda_mixed_precision_training(tiny, tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    image, labels = tiny
    cfg = _tiny_config(tmp_path)
    cfg = TrainConfig(data=cfg.data, augment=cfg.augment, model=cfg.model, optim=cfg.optim, device="cuda",
                      amp=True, checkpoint_dir=str(tmp_path))
    model, reports = _run(image, labels, cfg)
    assert all(math.isfinite(r.train_loss) for r in reports)
    assert next(model.network.parameters()).device.type == "cuda"
    pred = model.predict(image)
    assert pred.labels.shape == image.shape
    resumed = load_model(tmp_path / "last")
    assert resumed.class_ids == (0, 1, 2, 3)


def test_rotate90_on_a_non_square_patch_keeps_the_batch_shape(tiny, tmp_path):
    # fit must hand the patch shape to the augmentation: a quarter turn of a 16 x 32 patch
    # would otherwise give 32 x 16 patches that cannot be batched with the others.
    from napari_medml.config import AugmentSpec

    image, labels = tiny
    base = _tiny_config(tmp_path)
    cfg = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(16, 32), batch_size=4, val_fraction=0.0),
                      augment=replace(AugmentConfig.none(), rotate90=AugmentSpec(1.0)), model=base.model,
                      optim=replace(base.optim, epochs=1, steps_per_epoch=3), device="cpu",
                      checkpoint_dir=str(tmp_path))
    model, reports = _run(image, labels, cfg)
    assert reports[-1].step == 3 and model.patch_size == (16, 32)


def test_validation_on_scribbles_says_it_runs_high(tiny, tmp_path):
    # a trial's held-out strokes scored 0.99 while the dense truth of unseen rows scored 0.56-0.63
    from napari_medml.segmentation.task import SCRIBBLE_VALIDATION

    image, labels = tiny
    strokes = np.zeros_like(labels)
    strokes[::4] = np.where(labels[::4] > 0, labels[::4], 9)  # every fourth row painted, 9 = background
    cfg = _tiny_config(tmp_path, epochs=1)
    sparse = replace(cfg, data=replace(cfg.data, label_mode="sparse", background_id=9))
    _, reports = _run(image, strokes, sparse)
    assert SCRIBBLE_VALIDATION in reports[0].message.splitlines()
    _, reports = _run(image, labels, replace(cfg, checkpoint_dir=str(tmp_path / "dense")))
    assert SCRIBBLE_VALIDATION not in reports[0].message


def test_finetune_config_is_one_short_epoch_without_validation():
    from napari_medml.segmentation.corrections import finetune_config

    cfg = TrainConfig(data=DataConfig(label_mode="sparse", background_id=2, val_fraction=0.3),
                      optim=OptimConfig(epochs=50, schedule="poly", early_stopping_patience=3))
    tune = finetune_config(cfg, 12)
    assert (tune.optim.epochs, tune.optim.steps_per_epoch, tune.optim.schedule) == (1, 12, "constant")
    assert tune.data.val_fraction == 0.0 and tune.data.label_mode == "dense"
    assert tune.optim.learning_rate == pytest.approx(cfg.optim.learning_rate / 10)  # a tenth: see corrections
    scribbles = finetune_config(cfg, 12, background_id=7)
    assert (scribbles.data.label_mode, scribbles.data.background_id) == ("sparse", 7)
    # an ensemble member learns all of the corrections: its fold would hold half of them out
    member = finetune_config(replace(cfg, data=replace(cfg.data, folds=2, fold=1)), 12)
    assert (member.data.folds, member.data.fold) == (1, None)
    assert tune.optim.early_stopping_patience is None and tune.augment == cfg.augment
    assert finetune_config(cfg, 5, AugmentConfig.none()).augment == AugmentConfig.none()
    # a Train bundle's checkpoint folder gets no orphaned checkpoints from a fine-tune
    assert finetune_config(replace(cfg, checkpoint_dir="/data/model/checkpoints"), 5).checkpoint_dir is None


def test_automatic_patch_size_is_capped_on_cpu():
    from napari_medml.segmentation.data import auto_patch_size
    from napari_medml.engine.devices import patch_voxel_cap

    cap = patch_voxel_cap("cpu", 3)
    assert cap == 32 * 64 * 64 and patch_voxel_cap("cpu", 2) == 256 * 256
    # the phantom's training block with the Train widget's defaults (features 16, batch 2)
    free = auto_patch_size((48, 76, 96), (2.0, 1.0, 1.0), 3, 1024, 8, bytes_per_voxel=96.0 * 16 * 2)
    capped = auto_patch_size((48, 76, 96), (2.0, 1.0, 1.0), 3, 1024, 8, bytes_per_voxel=96.0 * 16 * 2,
                             max_voxels=cap)
    assert free == (48, 72, 96)  # what memory alone allows: ~4 s a step on a 2-core CPU
    assert math.prod(capped) <= cap and all(p % 8 == 0 for p in capped)
    assert capped == (32, 64, 64)


def test_retrain_on_corrections_learns_the_correction_and_refuses_empty_labels():
    from napari_medml.errors import InputError
    from napari_medml.segmentation.corrections import retrain_on_corrections

    p = phantom_3d(seed=0)
    image, labels = p.image[:16, :48, :48], p.labels[:16, :48, :48]
    cfg = TrainConfig(data=DataConfig(patch_size=(16, 32, 32), val_fraction=0.0), augment=AugmentConfig.none(),
                      model=ModelConfig(channels=4, depth=2), optim=OptimConfig(epochs=1, steps_per_epoch=2),
                      device="cpu")
    model = train(image, labels, cfg, spacing=p.spacing)
    model.provenance["plan"] = {"tta": True, "fingerprint": {"spatial_dims": 3}}  # as a planned run's
    tuned = run_to_end(retrain_on_corrections(model, image, labels, 3, spacing=p.spacing))
    assert tuned.class_ids == model.class_ids and tuned.patch_size == model.patch_size
    assert tuned.history[-1]["step"] == 3
    # the plan stays: Predict's test-time augmentation and the intensity check follow it (it was lost)
    assert tuned.provenance["plan"] == model.provenance["plan"] and tuned.record()["plan"]["tta"] is True
    with pytest.raises(InputError, match="corrected labels are empty"):
        run_to_end(retrain_on_corrections(model, image, np.zeros_like(labels), 3, spacing=p.spacing))


def test_a_run_without_checkpoint_dir_leaves_nothing_in_the_temp_folder(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    p = phantom_3d(seed=0)
    cfg = TrainConfig(data=DataConfig(patch_size=(16, 32, 32)), augment=AugmentConfig.none(),
                      model=ModelConfig(channels=4, depth=2), optim=OptimConfig(epochs=2, steps_per_epoch=2),
                      device="cpu")
    model = train(p.image[:16, :48, :48], p.labels[:16, :48, :48], cfg, spacing=p.spacing)
    assert model.history and "checkpoint_dir" not in model.provenance
    assert list(tmp_path.iterdir()) == []
