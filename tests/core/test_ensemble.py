"""Ensembles (train with folds K): folds validate on different parts; the bundle is a
folder of members; prediction averages the members' probabilities and their
disagreement (mutual information) is the uncertainty."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medml.engine.fit import run_to_end
from napari_medml import api
from napari_medml.config import AugmentConfig, DataConfig, InferConfig, ModelConfig, OptimConfig, TrainConfig
from napari_medml.errors import ConfigError
from napari_medml.samples import phantom_3d
from napari_medml.segmentation.ensemble import EnsembleModel
from napari_medml.errors import InputError, NothingLearned
from napari_medml.segmentation.split import split_fold


def test_each_fold_validates_on_a_different_part():
    rows = np.repeat(np.arange(24, dtype=np.float32)[:, None], 8, axis=1)  # each voxel holds its row
    image, label = rows[None], np.ones((24, 8), np.uint8)
    seen = []
    for k in range(3):
        train, val, note = split_fold([image], [label], k, 3, context=(4, 4))
        assert f"fold {k + 1} of 3" in note and len(val) == 1
        scored = np.zeros(24, bool)
        scored[val[0].image[0][val[0].label > 0].astype(int)] = True  # context rows are unlabeled
        trained = np.concatenate([r.image[0][r.label > 0] for r in train]).astype(int)
        assert not scored[trained].any()  # never trained on what it validates
        seen.append(scored)
    assert not (seen[0] & seen[1]).any() and not (seen[1] & seen[2]).any()
    assert np.logical_or.reduce(seen).all()  # together the folds validate on every row
    images = [np.zeros((1, 4, 4), np.float32)] * 4
    train, val, note = split_fold(images, [np.ones((4, 4), np.uint8)] * 4, 1, 2)
    assert len(train) == 2 and len(val) == 2 and "images 3-4 of 4" in note


def test_a_fold_leaves_out_the_training_labels_next_to_its_block():
    """--val-margin with --folds: was accepted, stored and said in the plan, but never applied."""
    rows = np.repeat(np.arange(40, dtype=np.float32)[:, None], 8, axis=1)
    train, val, note = split_fold([rows[None]], [np.ones((40, 8), np.uint8)], 1, 4, margin=3)  # block: rows 10-19
    assert note.endswith("3 voxels of training labels on either side of it left out")
    trained = sorted({int(v) for r in train for v in r.image[0][r.label > 0]})
    assert trained == [*range(0, 7), *range(23, 40)]  # rows 7-9 and 20-22 unlabeled, their image kept
    assert sum(r.image.shape[1] for r in train) == 30


def test_the_slices_of_a_volume_stay_together_in_a_fold():
    """A 2D network on a volume trains on its slices: a fold held out every third slice,
    each scored between two trained neighbours."""
    slices = [np.full((1, 16, 16), z, np.float32) for z in range(31)]
    _, val, note = split_fold(slices, [np.ones((16, 16), np.uint8)] * 31, 0, 3)
    assert [int(r.image[0, 0, 0]) for r in val] == list(range(10)) and "images 1-10 of 31" in note


def test_a_fold_block_too_thin_for_a_patch_is_refused():
    """--folds 20 on a 61-voxel axis cut blocks of 3 voxels and planned a 2-voxel patch axis."""
    volume = np.zeros((1, 31, 61, 57), np.float32)
    with pytest.raises(InputError, match=r"blocks of 3 voxels along axis 1 \(Y\), fewer than 8: use at most 7 folds"):
        split_fold([volume], [np.ones((31, 61, 57), np.uint8)], 0, 20)
    assert split_fold([volume], [np.ones((31, 61, 57), np.uint8)], 0, 7)[1]  # 8-voxel blocks


def test_a_patch_larger_than_a_folds_training_part_is_refused_before_any_fold_trains():
    """--folds 3 --patch-size 64 64 on 128x128: fold 1 trained 12 s, then fold 2 was refused."""
    labels = np.zeros((128, 128), np.uint8)
    labels[10:30, 10:30] = labels[70:90, 70:90] = labels[100:120, 20:40] = 1
    image = labels.astype(np.float32) + np.random.default_rng(0).normal(0, 0.1, labels.shape).astype(np.float32)
    config = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(64, 64), batch_size=2, folds=3),
                         model=ModelConfig(channels=4, depth=2), augment=AugmentConfig.none(),
                         optim=OptimConfig(epochs=1, steps_per_epoch=2), device="cpu")
    gen = api.fit(image, labels, config)
    # fold 2 holds out rows 42-84: its training parts are 42 and 44 rows
    with pytest.raises(InputError) as caught:
        next(gen)  # before the first report: nothing trained
    assert str(caught.value) == (
        "fold 2 of 3: patch size (64, 64) is larger than the training part of the image (42, 128): use a patch of "
        "at most (42, 64), or leave it out to choose one automatically (fewer folds leave larger training parts)")


def test_a_validation_share_given_with_folds_is_said_unused():
    """Trial 48: --folds 3 --val-fraction 0.1 held out a third in each fold and said nothing of the 0.1."""
    from napari_medml.segmentation.prepare import _split

    image, label = np.zeros((1, 48, 16), np.float32), np.ones((48, 16), np.uint8)
    for share, said in ((0.1, True), (0.2, False)):
        config = TrainConfig(data=DataConfig(spatial_dims=2, folds=3, fold=1, val_fraction=share))
        note = _split([image], [label], config)[2]
        assert note.startswith("fold 2 of 3") and (
            "(val_fraction 0.1 is not used with folds: each fold holds out 1 of 3)" in note) is said, note


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    p = phantom_3d(seed=0, shape=(16, 32, 32))
    config = TrainConfig(data=DataConfig(spatial_dims=3, patch_size=(8, 16, 16), batch_size=2, folds=2),
                         model=ModelConfig(channels=4, depth=2), augment=AugmentConfig.none(),
                         optim=OptimConfig(epochs=2, steps_per_epoch=4, learning_rate=3e-3), device="cpu")
    reports = []
    gen = api.fit(p.image, p.labels, config, spacing=p.spacing)
    model = run_to_end(gen, reports)
    folder = model.save(tmp_path_factory.mktemp("ensemble") / "bundle")
    return p, model, folder, reports


def test_folds_train_an_ensemble_saved_as_a_folder_of_members(ensemble):
    p, model, folder, reports = ensemble
    assert isinstance(model, EnsembleModel) and len(model.members) == 2
    assert [m.config.data.fold for m in model.members] == [0, 1]
    notes = [m.provenance["split"] for m in model.members]
    assert notes[0] != notes[1] and "fold 1 of 2" in notes[0]
    assert reports[-1].step == reports[-1].total_steps == 16  # steps counted across the folds
    # each report names its fold, and the share of the whole run done rises to 1 across the folds
    assert [r.fold for r in reports if r.epoch_end] == [1, 1, 2, 2] and {r.folds for r in reports} == {2}
    shares = [r.progress for r in reports]
    assert shares == sorted(shares) and shares[-1] == 1.0
    # (a busy machine reports some steps of a fold together: the folds' report counts may differ)
    assert all(0 < r.progress <= 0.5 for r in reports if r.fold == 1)
    assert all(0.5 < r.progress <= 1.0 for r in reports if r.fold == 2)
    desc = json.loads((folder / "config.json").read_text())
    assert desc["task"] == "ensemble" and desc["ensemble"]["members"] == ["members/fold-1", "members/fold-2"]
    # every fold's epochs, by fold; no fold's own facts as the ensemble's (review 49: fold 1's history and split)
    assert [(e["fold"], e["epoch"]) for e in desc["history"]] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert [e["val_mean_dice"] for e in desc["history"]] == [e["val_mean_dice"] for m in model.members
                                                              for e in m.history]
    assert desc["provenance"]["split"].startswith("2 folds, each member validated on its own fold")
    assert not {"best_epoch", "checkpoint_dir"} & set(desc["provenance"]), desc["provenance"]
    member = json.loads((folder / "members" / "fold-2" / "config.json").read_text())
    assert "fold 2 of 2" in member["provenance"]["split"] and "fold" not in member["history"][0]
    assert not list(folder.rglob("*.pkl")) and not list(folder.parent.glob(".*"))  # no pickle, no temp left
    loaded = api.load_model(folder)
    assert isinstance(loaded, EnsembleModel) and loaded.class_ids == model.class_ids
    model.save(folder)  # an earlier ensemble bundle is replaced


def test_a_member_predicted_alone_has_the_runs_plan(ensemble, tmp_path):
    """Trial 37: a member bundle predicted alone ran without the test-time augmentation the
    ensemble's plan chose (its config.json had no plan)."""
    from napari_medml.segmentation.planned_inference import planned_inference

    _, model, _, _ = ensemble
    planned = EnsembleModel(model.members, provenance={"plan": {"tta": True, "folds": 2}})
    folder = planned.save(tmp_path / "planned")
    assert planned_inference(folder) == {"tta": True}
    for k in (1, 2):
        assert planned_inference(folder / "members" / f"fold-{k}") == {"tta": True}
        assert api.load_model(folder / "members" / f"fold-{k}").provenance["plan"]["folds"] == 2


def test_prediction_averages_the_members_and_uncertainty_is_their_disagreement(ensemble):
    p, model, folder, _ = ensemble
    loaded = api.load_model(folder)
    config = InferConfig(return_probabilities=True, return_uncertainty=True, device="cpu")
    pred = loaded.predict(p.image, spacing=p.spacing, config=config)
    members = [m.predict(p.image, spacing=p.spacing, config=config) for m in loaded.members]
    mean = np.mean([m.probabilities.astype(np.float32) for m in members], axis=0)
    np.testing.assert_allclose(pred.probabilities.astype(np.float32), mean, atol=2e-3)
    ids = np.asarray(loaded.class_ids)
    agree = np.isclose(mean.max(0), np.mean([m.probabilities.max(0) for m in members], axis=0), atol=1e-3)
    assert (pred.labels == ids[mean.argmax(0)]).mean() > 0.999
    # members that agree (the same model twice): no disagreement at all
    twin = EnsembleModel([loaded.members[0], loaded.members[0]]).predict(p.image, spacing=p.spacing,
                                                                         config=config)
    assert float(twin.uncertainty.max()) == 0.0
    # two different members: disagreement where their answers differ, ~0 where they agree
    differ = members[0].labels != members[1].labels
    assert differ.any()
    assert float(pred.uncertainty[differ].mean()) > 0.0 and pred.uncertainty.min() >= 0
    same = (members[0].labels == members[1].labels) & agree
    assert float(pred.uncertainty[same].mean()) < float(pred.uncertainty[differ].mean())


def test_ensembles_start_from_scratch(ensemble):
    p, model, _, _ = ensemble
    config = TrainConfig(data=DataConfig(spatial_dims=3, folds=2), device="cpu")
    with pytest.raises(ConfigError, match="fine-tun"):
        api.train(p.image, p.labels, config, init_model=model.members[0])
    with pytest.raises(ConfigError, match="ensemble"):
        api.train(p.image, p.labels, TrainConfig(data=DataConfig(spatial_dims=3)), init_model=model)
    with pytest.raises(ConfigError, match="fold"):
        DataConfig(folds=2, fold=2)



def test_corrections_retrain_every_member_of_an_ensemble(ensemble):
    """The correct-and-retrain loop works on an ensemble (the plan chooses one under a time
    limit): each member learns the corrections, and the result is an ensemble again."""
    import torch

    from napari_medml.engine.reports import StopToken
    from napari_medml.segmentation.corrections import retrain_on_corrections

    p, model, _, _ = ensemble
    corrected = model.predict(p.image, spacing=p.spacing, config=InferConfig(device="cpu")).labels.copy()
    corrected[:, :8] = 0  # a corrected region
    gen = retrain_on_corrections(model, p.image, corrected, 3, spacing=p.spacing, augment=AugmentConfig.none())
    reports = []
    tuned = run_to_end(gen, reports)
    assert isinstance(tuned, EnsembleModel) and len(tuned.members) == len(model.members)
    assert len([r for r in reports if r.epoch_end]) == len(model.members)  # one epoch of 3 steps each
    for before, after in zip(model.members, tuned.members):
        assert before is not after
        assert any(not torch.equal(a, b) for a, b in zip(before.network.state_dict().values(),
                                                           after.network.state_dict().values()))
    assert tuned.provenance == {**model.provenance, "finetuned": {  # every voxel: no prediction given
        "steps": 3, "corrected_images": 1, "training_images": 0, "earlier_corrections": 0,
        "reviewed_voxels": corrected.size}}
    assert tuned.predict(p.image, spacing=p.spacing, config=InferConfig(device="cpu")).labels.shape == p.labels.shape
    # stopped before it starts: no member changes, and nothing learned is said, as for one model (it gave
    # back an ensemble of the same members marked fine-tuned)
    stop = StopToken()
    stop.stop()
    gen = retrain_on_corrections(model, p.image, corrected, 3, spacing=p.spacing, stop=stop)
    with pytest.raises(NothingLearned, match="stopped before the first fine-tuning step: the model is as it was"):
        next(gen)

@pytest.mark.parametrize("tta", [False, True])
def test_an_ensemble_predicts_block_by_block_as_in_memory(ensemble, tmp_path, tta):
    """Through predict_to_zarr (several blocks): the labels, mean probabilities and mutual
    information of EnsembleModel.predict; a resume finds every block done."""
    pytest.importorskip("zarr")
    from napari_medml.io import Volume, read_volume
    from napari_medml.segmentation.chunked import plan_blocks
    from napari_medml.segmentation.to_zarr import predict_to_zarr

    p, model, folder, _ = ensemble
    loaded = api.load_model(folder)
    config = InferConfig(return_probabilities=True, return_uncertainty=True, device="cpu", tta=tta)
    whole = loaded.predict(p.image, config=config)
    volume = Volume(p.image, tuple(p.spacing), (0.0,) * 3, axes="ZYX")
    plan = plan_blocks(p.image.shape, loaded.patch_size, channels=1, classes=len(loaded.class_ids), config=config,
                       block=(8, 16, 32))
    assert plan.count > 1
    stores = {"probabilities": tmp_path / "p.zarr", "uncertainty": tmp_path / "u.zarr"}
    result = predict_to_zarr(loaded, volume, tmp_path / "l.zarr", config=config, plan=plan, **stores)
    assert result.computed == plan.count and result.resumed == 0
    np.testing.assert_array_equal(np.asarray(read_volume(tmp_path / "l.zarr").data), whole.labels)
    probs = np.asarray(read_volume(stores["probabilities"]).data)
    assert probs.dtype == np.float16
    np.testing.assert_array_equal(probs, whole.probabilities)
    np.testing.assert_allclose(np.asarray(read_volume(stores["uncertainty"]).data), whole.uncertainty, atol=1e-5)
    again = predict_to_zarr(loaded, volume, tmp_path / "l.zarr", config=config, plan=plan, **stores)
    assert again.computed == 0 and again.resumed == plan.count


def test_an_ensembles_steps_and_share_agree_after_a_fold_stopped_early():
    """Review 43: fold 1 stopped early at step 200 of 1404; at fold 2's step 100 the bar said 54 %
    (fold shares) while the text said step 300 of 2808 (11 %)."""
    from napari_medml._widgets._progress_text import progress_of
    from napari_medml.engine.reports import TrainReport
    from napari_medml.segmentation.ensemble import _renumbered

    def fold(step, limit=None):
        yield TrainReport(step=step, epoch=1, total_steps=1404, train_loss=0.5, learning_rate=1e-3, elapsed_s=10,
                          eta_s=100, progress=step / 1404, time_limit_s=limit)

    report = next(_renumbered(fold(100), 1, 2, 10, before=200))
    assert (report.step, report.total_steps) == (300, 1604) and report.progress == pytest.approx(300 / 1604)
    done, total, text = progress_of(report)
    assert done / total == pytest.approx(300 / 1604, abs=1e-3) and "step 300/1604" in text
    clocked = next(_renumbered(fold(100, limit=60.0), 1, 2, 10, before=200))  # under a time limit: the clock's share
    assert clocked.progress == pytest.approx((1 + 100 / 1404) / 2)


def test_a_time_limit_is_the_whole_ensembles_each_fold_its_share(tmp_path):
    """train --folds 3 --max-minutes M: M minutes for the run (was M for each fold, 3 M in all)."""
    from dataclasses import replace

    from napari_medml.segmentation.plan import member_minutes

    p = phantom_3d(seed=0, shape=(16, 32, 32))
    config = TrainConfig(data=DataConfig(spatial_dims=3, patch_size=(8, 8, 16), batch_size=2, folds=3),
                         model=ModelConfig(channels=4, depth=2), augment=AugmentConfig.none(),
                         optim=OptimConfig(epochs=50, steps_per_epoch=1000, max_minutes=0.15), device="cpu")
    assert member_minutes(config) == pytest.approx(0.05)
    assert member_minutes(replace(config, data=replace(config.data, folds=1))) == 0.15
    gen, reports = api.fit(p.image, p.labels, config, spacing=p.spacing), []
    model = run_to_end(gen, reports)
    shares = [m.config.optim.max_minutes for m in model.members]
    assert len(shares) == 3 and sum(shares) <= 0.15 + 1e-9  # each its share of what was left
    # the first fold's share of what was left after checking every fold (a second on a busy machine)
    assert 0.045 < shares[0] <= 0.05
    for member in model.members:  # the clock ended each fold, not its 50 epochs of 1000 steps
        assert 1 <= len(member.history) < 50
    # epochs count across the folds as planned: fold k's from (k - 1) x 50 + 1, however few the clock let it
    # train (the command line names fold and epoch from it; the Train widget's plot shifts each fold's own)
    ends = [(r.fold, r.epoch) for r in reports if r.epoch_end]
    for k, member in enumerate(model.members):
        assert [e for f, e in ends if f == k + 1] == [k * 50 + e for e in range(1, len(member.history) + 1)], ends
    # trial 37: the ensemble's config.json said the first fold's share (0.333 of 1 minute)
    assert model.config.optim.max_minutes == 0.15
    assert api.load_model(model.save(tmp_path / "ens")).config.optim.max_minutes == 0.15
    # steps count the steps the earlier folds trained, not the 50 x 1000 they were planned (trial 43: fold 2 of a
    # 1-minute run said step 1404 after 200); the share done still rises across the folds
    steps = model.provenance["ensemble"]["member_steps"]
    for k in range(3):
        mine = [r.step for r in reports if r.fold == k + 1]
        assert min(mine) > sum(steps[:k]) and max(mine) == sum(steps[: k + 1]), (k, mine, steps)
    shares = [r.progress for r in reports]
    assert shares == sorted(shares) and all(k / 3 < r.progress <= (k + 1) / 3 for r in reports
                                            for k in [r.fold - 1])


def test_later_folds_get_their_share_less_the_time_a_fold_spends_outside_its_limit():
    """--folds 4 --max-minutes 0.4: fold 1 took 0.37 of its 0.1 minutes (setup, validation), and
    folds 2-4 were left 0.0105, 0.0005 and 0.001 minutes: members of a few steps, averaged in."""
    from napari_medml.segmentation.ensemble import _fold_minutes

    assert _fold_minutes(0.4, 0.0, 4, 0, 0.0) == pytest.approx(0.1)
    assert _fold_minutes(4.0, 1.1, 4, 1, 0.1) == pytest.approx(2.9 / 3 - 0.1)  # the time outside is kept for it
    assert _fold_minutes(0.4, 0.37, 4, 1, 0.27) == pytest.approx(0.05)  # never under half the first share


def test_the_saved_line_names_each_folds_steps_and_a_fold_that_trained_too_few():
    from types import SimpleNamespace

    from napari_medml.cli.messages import saved_note

    def ensemble(steps):
        return SimpleNamespace(provenance={"ensemble": {"member_best_val_dice": [0.9] * len(steps),
                                                        "member_steps": steps}})

    assert saved_note(ensemble([410, 398]), None, 2) == (
        " (ensemble of 2 models; validation mean Dice per fold: 0.900, 0.900; steps per fold: 410, 398)")
    assert saved_note(ensemble([410]), None, 2).startswith(  # trial 47: "ensemble of 1 models"
        " (ensemble of 1 model of the 2 asked for (stopped); validation mean Dice per fold: 0.900")
    assert saved_note(ensemble([120, 118, 3, 5]), None, 4).endswith(
        "; steps per fold: 120, 118, 3, 5. Folds 3, 4 trained under half the steps of the others but count as "
        "much in the average: give more minutes or fewer folds)")


def test_a_resumed_ensemble_counts_the_time_its_earlier_part_took(tmp_path, monkeypatch):
    """--folds 4 --max-minutes 4 stopped in fold 3 (folds 1-2 took 1 min each, fold 3 0.5 min): on
    --resume fold 3 was given 2 min and fold 4 ~2 min (the whole budget again for the folds left)."""
    import napari_medml.bundles.checkpoints as checkpoints
    import napari_medml.segmentation.ensemble as ensemble
    import napari_medml.segmentation.model as model
    import napari_medml.segmentation.task as task

    class Member:
        config = None
        history = [{"step": 10, "elapsed_s": 60.0}]
        provenance = {"best_epoch": 1, "split": ""}

        def save(self, path):
            path.mkdir(parents=True)
            (path / "config.json").write_text("{}")

    given = {}

    def fit(images, labels, cfg, **kw):  # training faked: the minutes each fold is given are recorded
        given[cfg.data.fold + 1] = cfg.optim.max_minutes
        return Member()
        yield

    monkeypatch.setattr(task, "fit", fit)
    monkeypatch.setattr(ensemble, "_check_every_fold", lambda *a, **k: None)
    monkeypatch.setattr(ensemble, "EnsembleModel", lambda members, provenance, **kw: members)
    monkeypatch.setattr(model, "load_segmentation_model", lambda path: Member())
    monkeypatch.setattr(checkpoints, "check_same_network", lambda *a: None)
    for k in (1, 2):
        Member().save(tmp_path / f"fold-{k}" / "member")
    (tmp_path / "fold-3" / "last").mkdir(parents=True)
    (tmp_path / "fold-3" / "last" / "train_state.json").write_text(json.dumps({"step": 10, "elapsed_s": 30.0}))
    config = TrainConfig(data=DataConfig(folds=4), optim=OptimConfig(max_minutes=4.0), device="cpu")
    for _ in ensemble.fit_ensemble(None, None, config, resume_from=tmp_path):
        pass
    assert given[3] == pytest.approx(1.0, abs=0.01)  # 4 - 2 left for 2 folds; its 0.5 min count in its loop
    assert given[4] == pytest.approx(1.5, abs=0.01)  # 4 - 2 - 0.5 (fold 3's instant fake training took ~0)


def test_a_fold_stopped_in_its_first_epoch_counts_the_steps_it_took():
    """Review 33: a fold stopped before its first epoch ended counted 0 steps in the ensemble's note."""
    from napari_medml.engine.reports import StopToken
    from napari_medml.segmentation.step_time import model_steps_trained

    s = phantom_3d(seed=0, shape=(16, 48, 48))
    config = TrainConfig(data=DataConfig(spatial_dims=3, patch_size=(8, 32, 32), folds=2, batch_size=1),
                         augment=AugmentConfig.none(), model=ModelConfig(channels=4, depth=2),
                         optim=OptimConfig(epochs=1, steps_per_epoch=6), device="cpu")
    stop = StopToken()
    run = api.fit([s.image[:8], s.image[8:]], [s.labels[:8], s.labels[8:]], config, stop=stop)
    while True:
        try:
            report = next(run)
        except StopIteration as done:
            model = done.value
            break
        if getattr(report, "fold", 1) == 2:
            stop.stop()  # Stop pressed at fold 2's first step
    member = model.members[1]
    assert member.history == [] and member.provenance["steps"] >= 1 and member.provenance["stopped_in_first_epoch"]
    assert model.provenance["ensemble"]["member_steps"] == [6, member.provenance["steps"]]
    assert model_steps_trained(member).endswith("stopped before its first epoch ended: never validated, so these "
                                                "are its last weights")


def test_resuming_a_timed_ensemble_with_the_limit_it_started_with_says_no_change(tmp_path):
    """Trial 47: the same --max-minutes, which a timed ensemble's --resume must give, read as a change."""
    import json

    from dataclasses import replace

    from napari_medml.cli.resume import resumed_note
    from napari_medml.config import to_dict

    started = TrainConfig(data=DataConfig(folds=2), optim=OptimConfig(max_minutes=0.245, epochs=50))
    (tmp_path / "fold-1" / "last").mkdir(parents=True)
    (tmp_path / "fold-1" / "last" / "config.json").write_text(json.dumps({"train_config": to_dict(started)}))
    again = replace(started, optim=replace(started.optim, max_minutes=0.5))
    assert resumed_note(again, tmp_path) == ("--resume: the stopped run goes on with the settings it started with "
                                             "(not planned again)")
    longer = replace(started, optim=replace(started.optim, max_minutes=2.0))
    assert ", but the time limit given now, 2 min for the 2 folds" in resumed_note(longer, tmp_path)
