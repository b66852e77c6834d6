"""engine.distributed outside torchrun: one process joins nothing and keeps its seeds; the
rank helpers read torchrun's environment. (Two real processes: tests/cli/test_cli_distributed.py.)"""

from __future__ import annotations

import pytest
import torch

from napari_medml.engine import distributed

TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def alone(monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)


def test_one_process_joins_nothing_and_keeps_its_seed(alone) -> None:
    assert distributed.join("cpu") is None
    assert not torch.distributed.is_available() or not torch.distributed.is_initialized()
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    assert distributed.is_main() and not distributed.launched()
    assert distributed.data_seed(7) == 7  # a one-process run draws exactly as before


def test_torchrun_environment_gives_rank_and_seed(alone, monkeypatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert (distributed.rank(), distributed.world_size()) == (1, 2)
    assert not distributed.is_main() and distributed.launched()
    assert distributed.data_seed(7) == 8


def test_a_torchrun_of_one_process_trains_alone(alone, monkeypatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.join("cpu") is None


def test_unwrap_returns_the_network_inside_a_wrapper() -> None:
    net = torch.nn.Linear(2, 2)
    wrapper = torch.nn.Module()
    wrapper.module = net  # what DistributedDataParallel holds
    assert distributed.unwrap(wrapper) is net and distributed.unwrap(net) is net
