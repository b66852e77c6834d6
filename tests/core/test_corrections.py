"""Correct-and-retrain (segmentation.corrections): which voxels are the user's labels, how
they are encoded with the model's own answer and its training data, and that a fine-tune
learns the corrections without losing what nobody corrected."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig  # noqa: E402
from napari_medml.engine.fit import run_to_end  # noqa: E402
from napari_medml.errors import InputError  # noqa: E402
from napari_medml.samples import touching_objects_2d  # noqa: E402
from napari_medml.segmentation.correction_round import correction_round  # noqa: E402
from napari_medml.segmentation.corrections import (  # noqa: E402
    correction_samples, describe_finetune, keep_edits, labelled_samples, retrain_on_corrections, reviewed_voxels,
)
from napari_medml.segmentation.task import train  # noqa: E402


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_the_voxels_around_each_change_are_the_reviewed_ones():
    before = np.zeros((9, 9), np.uint8)
    after = before.copy()
    after[4, 4] = 1
    reviewed = reviewed_voxels(after, before)
    assert reviewed.sum() == 25 and reviewed[2:7, 2:7].all()  # a 5 x 5 box: 2 voxels around the change
    assert not reviewed_voxels(before, before).any()
    assert reviewed_voxels(after, before, margin=0).sum() == 1
    # in a volume, the margin lies in the plane the change was painted in: the slices beside
    # it were not looked at
    volume_before = np.zeros((5, 9, 9), np.uint8)
    volume_after = volume_before.copy()
    volume_after[2, 4, 4] = 1
    in_plane = reviewed_voxels(volume_after, volume_before)
    assert in_plane.sum() == 25 and in_plane[2].sum() == 25
    sagittal = reviewed_voxels(volume_after, volume_before, axes=(0, 1))  # painted with z and y on screen
    assert sagittal.sum() == 25 and sagittal[:, :, 4].sum() == 25


def test_the_users_edits_are_kept_in_the_new_prediction():
    corrected = np.array([[2, 1], [1, 0]], np.uint8)
    edited = np.array([[True, False], [False, True]])
    new = np.array([[0, 0], [1, 1]], np.uint8)  # the network learned neither and changed another voxel
    np.testing.assert_array_equal(keep_edits(new, corrected, edited), [[2, 0], [1, 0]])


def test_corrections_become_scribbles_with_a_background_id_no_class_uses():
    image = np.arange(81, dtype=np.float32).reshape(9, 9)
    before = np.zeros((9, 9), np.uint8)
    before[:, 5:] = 2
    after = before.copy()
    after[0, 0] = 2  # a class painted in the background's corner
    (sample,) = correction_samples(image, after, before, spacing=(0.5, 0.5))
    assert sample.background_id == 3 and sample.spacing == (0.5, 0.5) and sample.image is image
    expected = np.zeros((9, 9), np.uint8)
    expected[:3, :3] = 3  # the background the user saw around the change
    expected[0, 0] = 2
    np.testing.assert_array_equal(sample.labels, expected)
    assert correction_samples(image, before, before) == []  # nothing changed: nothing learned


def test_a_fine_tune_learns_the_corrections_and_keeps_the_rest():
    """An undertrained model; the truth painted where it erred in the top half of a second
    image (with the 2-voxel margin a brush gives). Fine-tuning with the prediction as it
    was and the training image raises the corrected half's Dice and keeps the other half's."""
    first, second = touching_objects_2d(0, (96, 96)), touching_objects_2d(1, (96, 96))
    truth_a, truth_b = (first.labels > 0).astype(np.uint8), (second.labels > 0).astype(np.uint8)
    config = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(64, 64), batch_size=2, val_fraction=0.0),
                         model=ModelConfig(channels=8, depth=3), augment=AugmentConfig.none(),
                         optim=OptimConfig(epochs=1, steps_per_epoch=3, learning_rate=0.01), device="cpu", seed=0)
    model = train(first.image, truth_a, config)
    before = model.predict(second.image).labels
    top = np.zeros(before.shape, bool)
    top[:48] = True
    corrected = before.copy()
    corrected[top] = truth_b[top]
    replay = labelled_samples(first.image, truth_a)
    tuned = run_to_end(retrain_on_corrections(model, second.image, corrected, 40, predicted=before, replay=replay))
    after = tuned.predict(second.image).labels
    assert _dice(before[:48], truth_b[:48]) < 0.8  # 0.774
    assert _dice(after[:48], truth_b[:48]) > _dice(before[:48], truth_b[:48]) + 0.1  # 0.955
    assert _dice(after[48:], truth_b[48:]) > _dice(before[48:], truth_b[48:]) - 0.02
    assert tuned.class_ids == model.class_ids
    reviewed = int(reviewed_voxels(corrected, before).sum())
    assert tuned.provenance["finetuned"] == {"steps": 40, "corrected_images": 1, "training_images": 1,
                                             "earlier_corrections": 0, "reviewed_voxels": reviewed}
    # the model keeps its own settings: a second round runs at a tenth of its rate again, not a hundredth
    assert tuned.config == model.config and tuned.config.optim.learning_rate == 0.01
    assert describe_finetune("m", tuned.provenance["finetuned"], "p") == (
        f"'m' fine-tuned 40 steps on the {reviewed:,} voxels you changed in 'p' or saw beside a change and its 1 "
        "training image(s)")
    with pytest.raises(InputError, match="the corrected labels equal the prediction: paint the corrections"):
        run_to_end(retrain_on_corrections(model, second.image, before, 3, predicted=before))
    # a class the model lacks is refused, not taken for the background of the run (the free id 2)
    unknown = before.copy()
    unknown[:10, :10] = 2
    with pytest.raises(InputError, match=r"^the corrections hold class id\(s\) 2 that the model does not know "
                                         r"\(its classes are 0, 1\): paint only the model's classes"):
        run_to_end(retrain_on_corrections(model, second.image, unknown, 3, predicted=before))


def test_training_data_with_channels_is_replayed_beside_corrections_without():
    """A 1-channel model trained on a (1, y, x) image is fine-tuned on a plain (y, x) one:
    both reach the network with their channel first."""
    first = touching_objects_2d(0, (48, 48))
    truth = (first.labels > 0).astype(np.uint8)
    config = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(32, 32), batch_size=2, val_fraction=0.0),
                         model=ModelConfig(channels=4, depth=2), augment=AugmentConfig.none(),
                         optim=OptimConfig(epochs=1, steps_per_epoch=2), device="cpu", seed=0)
    model = train(first.image[None], truth, config, channel_axis=0)
    before = model.predict(first.image).labels
    corrected = before.copy()
    corrected[:8, :8] = 1 - corrected[:8, :8]
    replay = labelled_samples(first.image[None], truth, channel_axis=0)
    tuned = run_to_end(retrain_on_corrections(model, first.image, corrected, 2, predicted=before, replay=replay))
    assert tuned.in_channels == 1 and tuned.history[-1]["step"] == 2


def _objects_and_model():
    """Touching 2D objects and a model trained 3 steps on them."""
    objects = touching_objects_2d(0, (64, 64))
    truth = (objects.labels > 0).astype(np.uint8)
    config = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(32, 32), batch_size=2, val_fraction=0.0),
                         model=ModelConfig(channels=4, depth=2), augment=AugmentConfig.none(),
                         optim=OptimConfig(epochs=1, steps_per_epoch=3), device="cpu", seed=0)
    return objects, train(objects.image, truth, config)


def test_a_round_keeps_the_edits_and_hands_them_to_the_next_round():
    """correction_round, as the Predict widget runs it, on a time series of two 2D frames."""
    from napari_medml.config import InferConfig

    objects, model = _objects_and_model()
    movie = np.stack([objects.image, objects.image[::-1]])  # (t, y, x)
    infer = InferConfig(device="cpu")
    predicted = model.predict(movie, axes="TYX", config=infer).labels
    corrected = predicted.copy()
    corrected[1, :8, :8] = 1 - corrected[1, :8, :8]  # edits on the second frame
    result = run_to_end(correction_round(model, movie, corrected, predicted, 2, axes="TYX", spacing=(1.0, 1.0, 1.0),
                                         infer=infer))
    assert result.prediction.labels.shape == movie.shape
    np.testing.assert_array_equal(result.prediction.labels[1, :8, :8], corrected[1, :8, :8])  # kept
    np.testing.assert_array_equal(result.as_predicted, result.prediction.labels)  # the next round's "before"
    assert result.as_predicted is not result.prediction.labels  # a copy: the layer is painted in place
    assert result.edited.sum() == np.count_nonzero(corrected != predicted)
    network = result.model.predict(movie, axes="TYX", config=infer).labels
    assert result.kept_edits == np.count_nonzero(result.prediction.labels != network)
    (learned,) = result.learned  # the frame with edits, for the next round
    # the corner edit and 2 pixels beyond it
    assert learned.origin == "corrections" and np.count_nonzero(learned.labels) == 10 * 10
    assert result.model.provenance["finetuned"]["corrected_images"] == 2
    # round 2 paints elsewhere in the layer it got back: the edits of both rounds stay in the new
    # layer, whatever the network in between said
    second = result.prediction.labels.copy()
    second[0, -8:, -8:] = 1 - second[0, -8:, -8:]
    again = run_to_end(correction_round(result.model, movie, second, result.as_predicted, 2, axes="TYX",
                                        spacing=(1.0, 1.0, 1.0), infer=infer, replay=result.learned,
                                        edited=result.edited))
    np.testing.assert_array_equal(again.prediction.labels[1, :8, :8], corrected[1, :8, :8])
    np.testing.assert_array_equal(again.prediction.labels[0, -8:, -8:], second[0, -8:, -8:])
    assert again.edited.sum() == result.edited.sum() + 64
    assert again.model.provenance["finetuned"]["earlier_corrections"] == 1
    # learned in round 2: its own edits only (with their margin), not round 1's again
    assert again.model.provenance["finetuned"]["reviewed_voxels"] == 10 * 10
    # a stroke undone: nothing new to learn
    with pytest.raises(InputError, match="the corrected labels equal the prediction"):
        run_to_end(correction_round(again.model, movie, again.as_predicted.copy(), again.as_predicted, 2,
                                    axes="TYX", spacing=(1.0, 1.0, 1.0), infer=infer, edited=again.edited))


def test_a_stop_during_the_steps_keeps_the_model_tuned_so_far_and_predicts_nothing(monkeypatch):
    """Review 31: Stop during fine-tuning cancelled the prediction that followed, and the tuned
    model went with it; a Stop keeps what was learned, as it does in Train."""
    import torch

    from napari_medml.config import InferConfig
    from napari_medml.engine import loop
    from napari_medml.engine.reports import StopToken
    from napari_medml.segmentation.corrections import describe_finetune

    # every step reported: on a quiet machine the 50 steps took under one report interval (0.25 s),
    # so the first report after step 1 was the last, and the Stop came after step 50 (CI 33b)
    monkeypatch.setattr(loop, "REPORT_EVERY_S", 0.0)

    objects, model = _objects_and_model()
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    predicted = model.predict(objects.image, config=InferConfig(device="cpu")).labels
    corrected = predicted.copy()
    corrected[:8, :8] = 1 - corrected[:8, :8]
    stop, reports = StopToken(), []
    rounds = correction_round(model, objects.image, corrected, predicted, 50, axes="YX", spacing=(1.0, 1.0),
                              infer=InferConfig(device="cpu"), stop=stop)
    try:
        while True:
            reports.append(next(rounds))
            if reports[-1].step >= 4 and not stop.stopped:
                stop.stop()  # the user presses Stop at about the 4th of 50 steps
    except StopIteration as end:
        result = end.value
    assert result.prediction is None and result.as_predicted is None and result.kept_edits == 0
    learned = result.model.provenance["finetuned"]
    assert learned["stopped"] is True and 4 <= learned["steps"] == max(r.step for r in reports) < 50
    assert any(not torch.equal(before[k], v) for k, v in result.model.network.state_dict().items())
    assert result.edited.sum() == np.count_nonzero(corrected != predicted) and len(result.learned) == 1
    assert describe_finetune("m", learned, "p").startswith(f"'m' fine-tuned {learned['steps']} steps (stopped) on")


def _drive(rounds, stop, at_report=None) -> tuple[object, list]:
    """Run a correction round's generator to its result, pressing Stop at report ``at_report``."""
    reports = []
    try:
        while True:
            reports.append(next(rounds))
            if at_report is not None and len(reports) == at_report:
                stop.stop()
    except StopIteration as end:
        return end.value, reports


def test_a_stop_while_the_tuned_model_predicts_keeps_it(monkeypatch):
    """Review 32: a Stop after the steps, while the image was predicted again (most of a round on a large
    image), raised Cancelled and the fully tuned model was lost."""
    import napari_medml.segmentation.prediction as prediction
    from napari_medml.config import InferConfig
    from napari_medml.engine.reports import StopToken

    objects, model = _objects_and_model()
    predicted = model.predict(objects.image, config=InferConfig(device="cpu")).labels
    corrected = predicted.copy()
    corrected[:8, :8] = 1 - corrected[:8, :8]
    stop, real = StopToken(), prediction.predict_oriented

    def stopped_while_predicting(*args, **kwargs):
        stop.stop()
        return real(*args, **kwargs)

    monkeypatch.setattr(prediction, "predict_oriented", stopped_while_predicting)
    result, _ = _drive(correction_round(model, objects.image, corrected, predicted, 5, axes="YX",
                                        spacing=(1.0, 1.0), infer=InferConfig(device="cpu"), stop=stop), stop)
    assert result.prediction is None and result.model is not model
    assert result.model.provenance["finetuned"]["steps"] == 5 and "stopped" not in result.model.provenance["finetuned"]


def test_a_stop_before_an_ensemble_members_first_step_keeps_the_members_tuned_before(monkeypatch):
    """Review 32: a Stop as the second member began lost the first member's tuning (NothingLearned), and a
    stopped ensemble recorded the steps asked for, not those taken."""
    import napari_medml.segmentation.task as task
    from napari_medml.config import InferConfig
    from napari_medml.engine.reports import StopToken
    from napari_medml.segmentation.corrections import describe_finetune
    from napari_medml.segmentation.ensemble import EnsembleModel

    objects, first = _objects_and_model()
    ensemble = EnsembleModel([first, _objects_and_model()[1]])
    predicted = ensemble.predict(objects.image, config=InferConfig(device="cpu")).labels
    corrected = predicted.copy()
    corrected[:8, :8] = 1 - corrected[:8, :8]
    stop, real, fits = StopToken(), task.fit, []

    def fit(*args, **kwargs):  # the Stop lands as the second member's fit begins
        fits.append(1)
        if len(fits) == 2:
            stop.stop()
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(task, "fit", fit)
    result, _ = _drive(correction_round(ensemble, objects.image, corrected, predicted, 4, axes="YX",
                                        spacing=(1.0, 1.0), infer=InferConfig(device="cpu"), stop=stop), stop)
    tuned, kept = result.model.members
    assert kept is ensemble.members[1] and tuned is not ensemble.members[0]  # the first member's steps are kept
    learned = result.model.provenance["finetuned"]
    assert learned["stopped"] and learned["steps"] == tuned.provenance["finetuned"]["steps"] == 4
    assert learned["members_tuned"] == "1 of 2" and result.prediction is None
    assert "fine-tuned 4 steps (stopped; 1 of 2 members) on" in describe_finetune("m", learned, "p")


def test_a_model_trained_on_a_volumes_slices_fine_tunes_on_one_image():
    """Review 21: the model's slice groups (20 slices of one volume) were checked against the
    fine-tuning images (1 corrected image): 'sample_groups (20,) add up to 20 samples but 1 images'."""
    volume = np.stack([touching_objects_2d(k, (32, 32)).image for k in range(6)])
    truth = np.stack([(touching_objects_2d(k, (32, 32)).labels > 0).astype(np.uint8) for k in range(6)])
    config = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(32, 32), batch_size=2, sample_groups=(6,)),
                         model=ModelConfig(channels=4, depth=2), augment=AugmentConfig.none(),
                         optim=OptimConfig(epochs=1, steps_per_epoch=2), device="cpu", seed=0)
    model = train(list(volume), list(truth), config)
    assert model.config.data.sample_groups == (6,)
    before = model.predict(volume[0]).labels
    corrected = before.copy()
    corrected[:8, :8] = 1 - corrected[:8, :8]
    tuned = run_to_end(retrain_on_corrections(model, volume[0], corrected, 2, predicted=before))
    assert tuned.history[-1]["step"] == 2 and tuned.config.data.sample_groups == (6,)
