"""The training vocabulary as it runs: momentum and weight decay per optimizer, the
planned learning rate for the chosen optimizer, plateau without a warm-up, frozen stages
only with a start model, EfficientNet's dropout, fixed-size classifiers, and what early
stopping says when nothing is held out."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from napari_medml.classification.data import image_samples
from napari_medml.classification.model import classification_config
from napari_medml.classification.task import fit_classifier
from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
from napari_medml.engine.fit import run_to_end
from napari_medml.engine.optim import build_optimizer
from napari_medml.errors import ConfigError
from napari_medml.nn.classification import build_classifier_network
from napari_medml.samples import phantom_3d, shape_classes
from napari_medml.segmentation.fingerprint import ChannelStats, Fingerprint
from napari_medml.segmentation.plan import make_plan
from napari_medml.segmentation.task import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NET = torch.nn.Linear(3, 2)


def _optimizer(**optim: object) -> torch.optim.Optimizer:
    return build_optimizer(NET, TrainConfig(optim=OptimConfig(**optim)))


def test_momentum_defaults_follow_the_optimizer_and_can_be_set():
    sgd = _optimizer(optimizer="sgd")
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["momentum"] == 0.99 and sgd.defaults["nesterov"] is True  # nnU-Net's
    rms = _optimizer(optimizer="rmsprop")
    assert isinstance(rms, torch.optim.RMSprop) and rms.defaults["momentum"] == 0.0  # torch's, was 0.99
    rms = _optimizer(optimizer="rmsprop", momentum=0.5, weight_decay=1e-3)
    assert rms.defaults["momentum"] == 0.5 and rms.defaults["weight_decay"] == 1e-3
    plain = _optimizer(optimizer="sgd", momentum=0.0)
    assert plain.defaults["momentum"] == 0.0 and plain.defaults["nesterov"] is False
    assert OptimConfig(optimizer="sgd").describe_optimizer() == "SGD, momentum 0.99 (Nesterov), weight decay 1e-05"
    assert OptimConfig(optimizer="rmsprop").describe_optimizer() == "RMSprop, momentum 0, weight decay 1e-05"
    assert OptimConfig(optimizer="adamw").describe_optimizer() == "AdamW, weight decay 1e-05"
    with pytest.raises(ConfigError, match="momentum"):
        OptimConfig(optimizer="sgd", momentum=1.0)


def test_plateau_has_no_warm_up():
    with pytest.raises(ConfigError, match="plateau schedule has no warm-up"):
        OptimConfig(schedule="plateau", warmup=0.05)
    OptimConfig(schedule="plateau")  # without a warm-up it is fine


def test_plateau_with_a_patience_of_one_is_refused_for_a_new_run_and_a_saved_one_still_loads():
    """Review 44: with a patience of 1 the rate was halved on the very epoch the run stopped.
    Review 46: refused in the config itself, a bundle saved with it no longer loaded."""
    from napari_medml.config import from_dict, to_dict

    hasty = TrainConfig(optim=OptimConfig(schedule="plateau", early_stopping_patience=1))
    with pytest.raises(ConfigError, match=r"with a patience of 1 the run stops on the epoch the rate would be "
                                          r"halved: set the patience \(early stop after\) to 2 or more"):
        hasty.check_new_run()
    assert from_dict(TrainConfig, to_dict(hasty)) == hasty  # as a saved bundle's config.json reads it
    TrainConfig(optim=OptimConfig(schedule="plateau", early_stopping_patience=2)).check_new_run()
    TrainConfig(optim=OptimConfig(schedule="poly", early_stopping_patience=1)).check_new_run()


@pytest.mark.parametrize(("patience", "halved_at"), [(None, 5), (2, 1), (3, 2), (10, 5)])
def test_plateau_halves_the_rate_before_early_stopping_ends_the_run(patience, halved_at):
    """Trial 44: with --patience 2 the rate never fell, early stopping ended the run first."""
    import torch

    from napari_medml.engine.optim import build_scheduler

    config = TrainConfig(optim=OptimConfig(schedule="plateau", learning_rate=0.1,
                                           early_stopping_patience=patience))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    step, plateau = build_scheduler(optimizer, config, 100)
    assert step is None
    plateau.step(0.5)  # the best epoch
    rates = []
    for _ in range(6):  # then no improvement
        plateau.step(0.4)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates.index(0.05) + 1 == halved_at, rates
    assert halved_at <= (patience or halved_at)  # within the epochs early stopping waits


MRI = ChannelStats(low=0.0, high=900.0, at_min=0.05, fg_low=200.0, fg_median=500.0, fg_high=850.0, fg_mean=500.0,
                   fg_std=120.0)


def _plan(keep=(), **optim):
    fp = Fingerprint(3, 1, (64, 64, 64), (64, 64, 64), (1.0, 1.0, 1.0), (MRI,), (0, 1), (0.9, 0.1), 1.0,
                     (16.0, 16.0, 16.0))
    return make_plan(fp, TrainConfig(optim=OptimConfig(**optim)), device="cpu", keep=keep)


@pytest.mark.parametrize("optimizer, rate", [("adamw", 2e-3), ("adam", 2e-3), ("sgd", 1e-2), ("rmsprop", 1e-3)])
def test_the_planned_learning_rate_is_the_chosen_optimizers(optimizer, rate):
    plan = _plan(optimizer=optimizer)
    assert plan.learning_rate == rate and plan.warmup == 0.05
    line = next(r for r in plan.reasons if r.startswith("learning rate"))
    assert ("AdamW" in line) == (optimizer == "adamw")
    assert any(r.startswith("optimizer: ") for r in plan.reasons)  # which momentum runs is shown


def test_a_plateau_schedule_set_by_the_user_gets_no_warm_up_and_the_plain_rate():
    plan = _plan(keep=("optim.schedule",), schedule="plateau")
    assert plan.schedule == "plateau" and plan.warmup == 0.0 and plan.learning_rate == 1e-3
    plan.apply(TrainConfig(optim=OptimConfig(schedule="plateau")))  # a valid config


def _seg_config(**model: object) -> TrainConfig:
    return TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(32, 32), batch_size=2, val_fraction=0.0),
                       augment=AugmentConfig.none(), model=ModelConfig(channels=4, depth=3, **model),
                       optim=OptimConfig(epochs=1, steps_per_epoch=1), device="cpu")


def test_frozen_stages_need_a_start_model():
    ph = phantom_3d(1, shape=(16, 48, 48))
    with pytest.raises(ConfigError, match="no start model"):
        run_to_end(fit(ph.image[8], ph.labels[8], _seg_config(freeze_stages=1)))
    sc = shape_classes(seed=0, n=16, size=32)
    samples = image_samples(sc.images, labels=sc.labels)
    cfg = classification_config(2, epochs=1, steps_per_epoch=1)
    with pytest.raises(ConfigError, match="no start model"):
        run_to_end(fit_classifier(samples, replace(cfg, model=replace(cfg.model, freeze_stages=1))))


def test_efficientnet_dropout_is_the_users_rate_also_zero():
    for rate in (0.0, 0.3):
        net = build_classifier_network(ModelConfig(network="efficientnet-b0", norm="batch", dropout=rate), 2, 1, 2,
                                       input_size=(32, 32))
        assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)] == [rate]


def test_a_fixed_size_classifier_refuses_a_width_or_depth_it_would_ignore():
    sc = shape_classes(seed=0, n=16, size=32)
    samples = image_samples(sc.images, labels=sc.labels)
    cfg = classification_config(2, epochs=1, steps_per_epoch=1)
    cfg = replace(cfg, model=replace(cfg.model, network="resnet18", channels=4))
    with pytest.raises(ConfigError, match="resnet18 has a fixed width and depth, so channels would be ignored"):
        run_to_end(fit_classifier(samples, cfg, keep=("channels",)))


def test_early_stopping_without_validation_says_it_judged_the_training_loss():
    ph = phantom_3d(1, shape=(16, 48, 48))
    cfg = replace(_seg_config(), optim=OptimConfig(epochs=30, steps_per_epoch=1, learning_rate=1e-6,
                                                   early_stopping_patience=1))
    gen = fit(ph.image[8], ph.labels[8], cfg)
    messages = []
    try:
        while True:
            report = next(gen)
            messages.append(getattr(report, "message", "") or "")
    except StopIteration:
        pass
    stop = [m for m in messages if "early stopping" in m]
    assert stop and "training loss did not improve" in stop[-1] and "val_fraction" in stop[-1], messages[-3:]


@pytest.mark.parametrize(("optim", "said"), [
    ({"optimizer": "sgd"}, "SGD, momentum 0.99 (Nesterov), weight decay 1e-05"),  # config.json: momentum null
    ({"optimizer": "sgd", "momentum": 0.0}, "SGD, momentum 0, weight decay 1e-05"),  # config.json: nesterov true
    ({"optimizer": "adam"}, "Adam, weight decay 1e-05"),
])
def test_the_bundle_records_the_optimizer_and_precision_that_ran(optim, said):
    ph = phantom_3d(1, shape=(16, 48, 48))
    cfg = replace(_seg_config(), optim=OptimConfig(epochs=1, steps_per_epoch=1, **optim), device="cpu")
    model = run_to_end(fit(ph.image[8], ph.labels[8], cfg))
    assert model.provenance["optimizer"] == said
    assert model.provenance["mixed_precision"] is False and model.config.amp is True  # asked, CUDA only
