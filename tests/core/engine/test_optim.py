"""The schedules are torch's own and follow nnU-Net's poly and cosine decay exactly."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from napari_medml.config import OptimConfig, TrainConfig
from napari_medml.engine.optim import build_optimizer, build_scheduler
from napari_medml.errors import ConfigError


def rates(schedule: str, total: int = 20) -> list[float]:
    net = torch.nn.Linear(2, 2)
    config = replace(TrainConfig(), optim=OptimConfig(schedule=schedule, learning_rate=1.0, optimizer="sgd"))
    opt = build_optimizer(net, config)
    sched, _ = build_scheduler(opt, config, total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize(("name", "formula"), [
    ("poly", lambda t, n: (1 - t / n) ** 0.9),
    ("cosine", lambda t, n: 0.5 * (1 + math.cos(math.pi * t / n))),
])
def test_schedule_matches_the_published_formula(name, formula):
    got = rates(name)
    assert got == pytest.approx([formula(t, 20) for t in range(20)], abs=1e-6)


def test_schedule_state_round_trips():
    net = torch.nn.Linear(2, 2)
    config = replace(TrainConfig(), optim=OptimConfig(schedule="poly", optimizer="sgd"))
    opt = build_optimizer(net, config)
    sched, _ = build_scheduler(opt, config, 10)
    for _ in range(4):
        opt.step()
        sched.step()
    opt2 = build_optimizer(net, config)
    sched2, _ = build_scheduler(opt2, config, 10)
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    assert sched2.last_epoch == 4


def test_unknown_names_are_refused():
    net = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="optimizer 'lbfgs' is not one of 'sgd', 'adam', 'adamw', 'rmsprop'$"):
        build_optimizer(net, replace(TrainConfig(), optim=replace(OptimConfig(), optimizer="lbfgs")))
