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


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of 4 (3 classes, 6x6 pixels) with a few unlabelled pixels."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 6, 6, generator=g)
    target = torch.randint(0, 3, (4, 6, 6), generator=g)
    mask = torch.rand(4, 6, 6, generator=g) > 0.2
    return logits, target, mask


def _dice_in_two_processes(rank: int, world: int, store: str, out: str) -> None:
    import json

    import torch.distributed as dist

    from napari_medml.nn.losses import masked_dice

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    logits, target, mask = _batch()
    scale = torch.tensor(1.5, requires_grad=True)  # a shared parameter, as the network's
    part = slice(2 * rank, 2 * rank + 2)
    loss = masked_dice(logits[part] * scale, target[part], mask[part])
    loss.backward()
    grad = scale.grad.clone()
    dist.all_reduce(grad)  # what DDP does: the mean of the processes' gradients
    with open(f"{out}.{rank}", "w") as fh:
        json.dump({"loss": float(loss), "grad": float(grad) / world}, fh)
    dist.destroy_process_group()


def test_batch_dice_of_two_processes_is_the_whole_batch_dice(tmp_path) -> None:
    """nnU-Net's batch Dice under DDP: two processes of batch 2 give the value and (after DDP's
    averaging) the gradient of one process with the batch of 4."""
    import json

    import torch.multiprocessing as mp

    from napari_medml.nn.losses import masked_dice

    mp.spawn(_dice_in_two_processes, args=(2, str(tmp_path / "store"), str(tmp_path / "out")), nprocs=2)
    logits, target, mask = _batch()
    scale = torch.tensor(1.5, requires_grad=True)
    whole = masked_dice(logits * scale, target, mask)
    whole.backward()
    for rank in (0, 1):
        got = json.loads((tmp_path / f"out.{rank}").read_text())
        assert got["loss"] == pytest.approx(whole.item(), rel=1e-5)
        assert got["grad"] == pytest.approx(float(scale.grad), rel=1e-4)
    # the halves alone give other numbers: the test can tell
    half = masked_dice(logits[:2] * 1.5, target[:2], mask[:2])
    assert half.item() != pytest.approx(whole.item(), rel=1e-3)


def _decide_in_two_processes(rank: int, world: int, store: str, out: str) -> None:
    import json
    import os

    import torch.distributed as dist

    from napari_medml.errors import InputError

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world))  # what torchrun sets
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    got = {"value": distributed.decided_by_main(lambda: {"measured by": rank}, "cpu")}

    def fails() -> dict:
        if rank == 0:
            raise InputError(f"labels 'seg' are empty (process {rank})")
        return {"measured by": rank}

    try:
        distributed.decided_by_main(fails, "cpu")
    except InputError as exc:
        got["error"] = str(exc)
    with open(f"{out}.{rank}", "w") as fh:
        json.dump(got, fh)
    dist.destroy_process_group()


def test_a_decision_is_rank_0s_in_every_process_and_so_is_its_failure(tmp_path) -> None:
    """Review 32: a plan (timed on each process's own core) is made on rank 0 and given to
    all; when rank 0 fails to decide, every process raises its error instead of waiting."""
    import json

    import torch.multiprocessing as mp

    mp.spawn(_decide_in_two_processes, args=(2, str(tmp_path / "store"), str(tmp_path / "out")), nprocs=2)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"out.{rank}").read_text())
        assert got == {"value": {"measured by": 0}, "error": "labels 'seg' are empty (process 0)"}
