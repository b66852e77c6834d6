"""A widget's Resume continues a run with its own network and optimizer settings: a changed one is
refused in one line, in the forms' words (review 51: Classify's Resume went on with AdamW after SGD
was chosen)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from napari_medml.bundles.checkpoints import check_same_training
from napari_medml.config import OptimConfig, TrainConfig
from napari_medml.errors import ConfigError


def test_a_changed_optimizer_setting_is_refused_and_the_run_length_may_change():
    run = TrainConfig(optim=OptimConfig(optimizer="adamw", learning_rate=1e-3))
    check_same_training(run, replace(run, optim=replace(run.optim, epochs=80, max_minutes=3.0,
                                                          early_stopping_patience=5)))
    changed = replace(run, optim=replace(run.optim, optimizer="sgd", learning_rate=1e-2,
                                         early_stopping_metric="val_loss", warmup=0.1))
    with pytest.raises(ConfigError) as err:
        check_same_training(run, changed)
    assert str(err.value) == (
        "Resume continues the stopped run with its own settings: optimizer is sgd, the run's adamw; learning rate "
        "is 0.01, the run's 0.001; warm-up is 0.1, the run's 0.0; best epoch by is val_loss, the run's val_dice: "
        "set them back, or press Start for a new run with the new ones")
    with pytest.raises(ConfigError, match="^cannot resume: channels changed"):  # the network first
        check_same_training(run, replace(changed, model=replace(run.model, channels=run.model.channels * 2)))
