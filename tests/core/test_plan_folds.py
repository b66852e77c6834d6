"""The plan's choice between one model and an ensemble sharing the time limit: on synthetic
plans (the rule), and from real arrays through ``plan_run`` (both plans made, the fold
fingerprint used, every reason why not)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from napari_medml.config import DataConfig, OptimConfig, TrainConfig
from napari_medml.segmentation import plan_folds
from napari_medml.segmentation.fingerprint import ChannelStats, Fingerprint
from napari_medml.segmentation.plan import VALIDATIONS, make_plan
from napari_medml.segmentation.plan_folds import ENSEMBLE, MEMBER_STEPS, choose_ensemble, ensemble_bar
from napari_medml.segmentation.planning import plan_run

STATS = ChannelStats(low=0.0, high=900.0, at_min=0.05, fg_low=200.0, fg_median=500.0, fg_high=850.0,
                     fg_mean=500.0, fg_std=120.0)


def config(minutes=4.0, **data) -> TrainConfig:
    return TrainConfig(data=DataConfig(spatial_dims=2, **data), optim=OptimConfig(max_minutes=minutes), device="cpu")


def plans(member_step_s: float, minutes: float = 4.0):
    """One model and ENSEMBLE members of a 256x512 image, at a measured step time."""
    fp = Fingerprint(2, 1, (256, 512), (256, 409), (1.0, 1.0), (STATS,), (0, 1), (0.8, 0.2), 1.0, (26.0, 26.0))
    single = make_plan(fp, config(minutes), step_seconds=lambda c: 0.08)
    members_fp = replace(fp, train_shape=(256, 128))
    members = make_plan(members_fp, config(minutes, folds=ENSEMBLE), step_seconds=lambda c: member_step_s)
    return single, members


def test_the_time_limit_is_shared_by_an_ensemble_when_each_member_still_trains_enough():
    single, members = plans(member_step_s=0.02)  # 1 min each: about 3000 steps
    plan = choose_ensemble(single, members, config())
    assert plan.folds == ENSEMBLE and plan.apply(config()).data.folds == ENSEMBLE
    assert plan.patch_size == members.patch_size  # each member's own plan (its part and share of the time)
    assert plan.reasons[0].startswith(f"ensemble (folds): {ENSEMBLE} (each model still takes about "
                                      f"{members.steps_per_epoch * VALIDATIONS} steps in its 1 min;")
    assert "predicting takes 4x as long" in plan.reasons[0]
    assert plan.reasons[1:] == members.reasons


def test_one_model_when_the_members_would_take_too_few_steps():
    single, members = plans(member_step_s=0.12)  # a brain MRI's step: about 500 steps a member
    steps = members.steps_per_epoch * VALIDATIONS
    assert steps < MEMBER_STEPS
    plan = choose_ensemble(single, members, config())
    assert plan.folds == 1 and plan.apply(config()).data.folds == 1
    assert plan.patch_size == single.patch_size and plan.reasons[1:] == single.reasons
    assert plan.reasons[0] == (f"ensemble (folds): 1 (one model: {ENSEMBLE} models would take only about {steps} "
                               f"steps each in 1 min, {MEMBER_STEPS} needed)")
    # the bar sits exactly at MEMBER_STEPS (a step time that allows them)
    at_bar = replace(members, steps_per_epoch=MEMBER_STEPS // VALIDATIONS, step_seconds=0.01)
    assert choose_ensemble(single, at_bar, config()).folds == ENSEMBLE
    below = replace(members, steps_per_epoch=MEMBER_STEPS // VALIDATIONS - 1, step_seconds=0.01)
    assert choose_ensemble(single, below, config()).folds == 1


def test_the_steps_a_member_would_take_are_those_its_time_allows():
    """u32: a member at 1.71 s a step in 0.1 min was said to take about 20 steps (4 epochs of at least 5)."""
    single, members = plans(member_step_s=2.0, minutes=0.4)
    assert members.steps_per_epoch * VALIDATIONS >= 20
    plan = choose_ensemble(single, members, config(0.4))
    assert plan.folds == 1 and plan.reasons[0] == (f"ensemble (folds): 1 (one model: {ENSEMBLE} models would take "
                                                   f"only about 3 steps each in 0.1 min, {MEMBER_STEPS} needed)")


def test_one_model_when_the_folds_could_not_be_planned():
    single, _ = plans(0.02)
    plan = choose_ensemble(single, None, config(), "an image of shape (3, 40) is too small to cut into 4 folds")
    assert plan.folds == 1
    assert plan.reasons[0] == ("ensemble (folds): 1 (one model: an image of shape (3, 40) is too small to cut "
                               "into 4 folds)")


@pytest.mark.parametrize(("cfg", "keep", "n", "line"), [
    (config(folds=3), ["data.folds"], 1, "ensemble (folds): 3 (set by you)"),
    (config(), ["data.folds"], 1, "ensemble (folds): 1 (set by you)"),  # --folds 1: one model, as asked
    (config(minutes=None), [], 1, "ensemble (folds): 1 (one model: no time limit to share; set the folds for an "
                                  "ensemble)"),
    (config(label_mode="sparse"), [], 1, "ensemble (folds): 1 (one model: scribbles cut into folds would leave "
                                         "each model few strokes)"),
    (replace(config(), task="instances"), [], 1, "ensemble (folds): 1 (one model: the plan ensembles semantic "
                                                 "segmentations only)"),
    (config(), [], 3, "ensemble (folds): 1 (one model: 3 images are too few to hold out whole images for 4 "
                      "models)"),
    (config(), [], 1, None), (config(), [], 2 * ENSEMBLE, None),
])
def test_when_an_ensemble_is_not_even_tried(cfg, keep, n, line):
    assert ensemble_bar(cfg, keep, n) == line


def test_an_ensemble_says_it_leaves_the_users_validation_share_unused():
    """Trial 41: validation 0.3 with 2 folds: each model validated on half the data, nothing said."""
    share = replace(config(folds=2), data=replace(config(folds=2).data, val_fraction=0.3))
    assert ensemble_bar(share, ["data.folds"], 1) == ("ensemble (folds): 2 (set by you; each model is validated on "
                                                      "its own fold, 1/2 of the data, not on val_fraction=0.3)")
    assert ensemble_bar(replace(share, data=replace(share.data, folds=1)), ["data.folds"], 1) == (
        "ensemble (folds): 1 (set by you)")


def test_plan_run_plans_an_ensemble_of_the_folds_from_real_arrays(monkeypatch):
    """Both plans are made: the members' on their fold's training part and share of the time."""
    from napari_medml.samples import touching_objects_2d

    s = touching_objects_2d(0, shape=(96, 160))
    made = []
    real = plan_folds.choose_ensemble

    def spy(single, members, cfg, why_not=""):
        made.append((single, members))
        return real(single, members, cfg, why_not)

    monkeypatch.setattr("napari_medml.segmentation.planning.choose_ensemble", spy)
    monkeypatch.setattr(plan_folds, "MEMBER_STEPS", 1)  # any measured step time passes
    plan = plan_run(s.image, s.labels > 0, config(minutes=2.0), spacing=s.spacing)
    single, members = made[0]
    assert plan.folds == ENSEMBLE and plan.apply(config(minutes=2.0)).data.folds == ENSEMBLE
    assert single.fingerprint.train_shape[1] > 96 and members.fingerprint.train_shape[1] <= 160 // ENSEMBLE * 2
    assert plan.patch_size[1] <= members.fingerprint.train_shape[1]
    assert any("(each of the 4 folds' share of 2 min)" in r for r in plan.reasons)
    # a 32-voxel patch in the thinnest piece of a fold (40 of 160 voxels) leaves room for 8
    assert plan.patch_size[1] == 32 and plan.val_margin == 8
    assert ("validation margin: 8 (5% of the image between the training labels and the held-out block of each "
            "fold)") in plan.reasons
    # the user's one model, and no time limit, are planned once, as one model
    made.clear()
    kept = plan_run(s.image, s.labels > 0, config(minutes=2.0), spacing=s.spacing, keep=["data.folds"])
    unlimited = plan_run(s.image, s.labels > 0, config(minutes=None), spacing=s.spacing)
    assert not made and kept.folds == unlimited.folds == 1
    assert kept.reasons[0] == "ensemble (folds): 1 (set by you)"
    # review 43: an ensemble one of whose folds trains without a class (it lies in one block) is not chosen
    import numpy as np

    labels = (s.labels > 0).astype(np.uint8)
    labels[:, 150:] = np.where(labels[:, 150:] > 0, 2, 0)  # class 2 only in the last 10 of 160 columns
    plan = plan_run(s.image, labels, config(minutes=2.0), spacing=s.spacing)
    assert plan.folds == 1 and plan.reasons[0] == (
        "ensemble (folds): 1 (one model: fold 4 of 4's training part would hold no voxel of class 2)"), plan.reasons[0]
    # with the margin the members leave out beside their block (class 2 only just across the fold border)
    rng = np.random.default_rng(0)
    lab = np.zeros((64, 400), np.uint8)
    lab[20:40, 250:350] = 1
    lab[20:40, 96:100] = lab[20:40, 101:105] = 2
    img = rng.random((64, 400)).astype(np.float32) + lab
    plan = plan_run(img, lab, config(minutes=10.0))
    assert plan.folds == 1 and "fold 1 of 4's training part would hold no voxel of class 2" in plan.reasons[0]



def test_a_patch_set_larger_than_a_training_part_is_refused_before_a_step_is_timed(monkeypatch):
    """Trial 41: a patch set larger than a fold's training part was refused at fold 1, after the
    plan had timed a step and been drawn; an ensemble the plan only considers says why not."""
    from napari_medml.errors import InputError
    from napari_medml.samples import touching_objects_2d
    from napari_medml.segmentation import step_time

    s = touching_objects_2d(0, shape=(96, 160))
    timed = []
    real = step_time.measure_step

    def measure_step(*args, **kwargs):
        timed.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(step_time, "measure_step", measure_step)
    # 4 folds of the 160-voxel axis: fold 2 trains on pieces of 40 and 80 voxels
    cfg = config(minutes=2.0, folds=4, patch_size=(64, 64))
    with pytest.raises(InputError) as exc:
        plan_run(s.image, s.labels > 0, cfg, spacing=s.spacing, keep=["data.folds", "data.patch_size"])
    assert str(exc.value) == (
        "the patch size set does not fit fold 2 of 4's training part: patch size (64, 64) is larger than the "
        "training part of the image (96, 40): use a patch of at most (64, 40), or leave it out to choose one "
        "automatically (fewer folds leave larger training parts)"), exc.value
    assert not timed
    # the patch suggested passes every fold (and is planned, with a step timed)
    fit = plan_run(s.image, s.labels > 0, config(minutes=2.0, folds=4, patch_size=(64, 40)), spacing=s.spacing,
                   keep=["data.folds", "data.patch_size"])
    assert fit.patch_size == (64, 40) and fit.folds == 4 and timed
    timed.clear()
    # one model: 0.2 of the 160 voxels held out leaves 128
    with pytest.raises(InputError, match=r"patch size \(96, 160\) is larger than the training part of the image"):
        plan_run(s.image, s.labels > 0, config(minutes=2.0, patch_size=(96, 160)), spacing=s.spacing,
                 keep=["data.patch_size"])
    assert not timed
    # the ensemble the plan weighs under a time limit: one model, and why
    plan = plan_run(s.image, s.labels > 0, config(minutes=2.0, patch_size=(64, 64)), spacing=s.spacing,
                    keep=["data.patch_size"])
    assert plan.reasons[0] == ("ensemble (folds): 1 (one model: the patch size set does not fit fold 2 of 4's "
                               "training part)"), plan.reasons[0]
    assert plan.patch_size == (64, 64) and timed
