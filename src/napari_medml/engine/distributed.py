"""Data-parallel training over several processes (PyTorch ``DistributedDataParallel``).

``torchrun --nproc-per-node N -m napari_medml train ...`` (or ``napari-medml train
--nproc N``) starts N copies of the same command; torchrun tells each its place in the
environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``).
A choice measured before training (the segmentation plan, which times steps on each
process's own, busy core) is made on rank 0 and given to all (:func:`decided_by_main`).
The loop (:mod:`napari_medml.engine.loop`) calls :func:`join`; with more than one
process it gets a :class:`Replicas` and then

- trains the network wrapped in DDP: every process draws its own batches (tasks seed
  their draws with :func:`data_seed`, ``seed + rank``) and DDP averages the gradients,
  so one step learns from ``batch_size x world_size`` samples (the batch size is per
  process; for the samples of a one-process run with batch ``B``, give ``B / N``);
- validates on rank 0 only and hands its :class:`~napari_medml.engine.task.Evaluation`
  to the others, so every process keeps the same best epoch, schedule and
  early-stopping count;
- merges Stop / Ctrl-C and the clock of all processes after every step, so all stop
  at the same step (a Stop in any process, or the time limit on the slowest clock)
  and follow the same time-based schedule;
- writes checkpoints on rank 0 only (the fronts write the bundle and print on rank 0
  only: :func:`is_main`).

Backends: NCCL with one GPU per ``LOCAL_RANK`` when the device is CUDA, gloo on CPUs
(two CPU processes run in CI). One process (no ``WORLD_SIZE``, or 1) never imports
``torch.distributed``: :func:`join` returns None and the loop runs as before.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

__all__ = ["Replicas", "data_seed", "decided_by_main", "is_main", "join", "launched",
           "rank", "unwrap", "world_size"]

# The other processes wait this long for rank 0's validation (the process group's
# timeout; torch's default, 10-30 min, is short for a large validation volume).
WAIT = timedelta(hours=2)


def world_size() -> int:
    """How many processes train together (torchrun's ``WORLD_SIZE``; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's place among them, 0 for the one that writes (torchrun's ``RANK``)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True in the process that validates, writes files and prints (rank 0, or the only one)."""
    return rank() == 0


def launched() -> bool:
    """True when torchrun started this process as one of several."""
    return world_size() > 1


def data_seed(seed: int) -> int:
    """The seed of this process's batch draws (patches, samples, augmentation): ``seed + rank``.

    Splits and network initialisation keep ``seed`` itself, so every process holds out
    the same validation data and starts from the same weights.
    """
    return seed + rank()


def unwrap(network: Any) -> Any:
    """The network inside a DDP wrapper (its state dict has no ``module.`` prefixes)."""
    return getattr(network, "module", network)


def join(device: str) -> Replicas | None:
    """Join the other processes torchrun started; None when this process trains alone.

    Parameters
    ----------
    device : str
        The config's device choice: a CUDA device means NCCL on GPU ``LOCAL_RANK``;
        the CPU means gloo.

    Returns
    -------
    Replicas or None

    Raises
    ------
    ConfigError
        If there are fewer GPUs than processes on this machine, or the device is MPS
        (PyTorch has no multi-process backend for it).
    """
    if not launched():
        return None
    import torch
    import torch.distributed as dist

    from napari_medml.engine.devices import resolve_device
    from napari_medml.errors import ConfigError

    where = resolve_device(device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if where.type == "cuda":
        count = torch.cuda.device_count()
        if local >= count:
            raise ConfigError(f"process {local} on this machine has no GPU of its own: this machine has {count} "
                              f"GPUs; start at most {count} processes per machine (--nproc {count}, torchrun "
                              "--nproc-per-node), or train on the CPU (--device cpu)")
        where = torch.device("cuda", local)
        torch.cuda.set_device(where)
    elif where.type != "cpu":
        raise ConfigError(f"PyTorch cannot train on several processes with device {where.type!r}: train in one "
                          "process, or on the CPU (--device cpu)")
    backend = "nccl" if where.type == "cuda" else "gloo"
    if not dist.is_initialized():
        # once per process, left at exit: a second run in the same process (the folds of an
        # ensemble) keeps the group, as joining again after destroy_process_group hangs
        dist.init_process_group(backend, timeout=WAIT)
        atexit.register(_leave)
    # small decisions travel on CPU tensors: a gloo group beside NCCL's
    control = dist.new_group(backend="gloo", timeout=WAIT) if dist.get_backend() == "nccl" else None
    return Replicas(dist.get_rank(), dist.get_world_size(), where, backend, control)


def decided_by_main(decide: Callable[[], Any], device: str) -> Any:
    """``decide()`` run on rank 0 only, its result given to every process.

    For a choice that must be the same in every process but is measured, not read (a plan
    that times training steps: each process would time its own, busy core and choose its
    own network). One process (no torchrun): ``decide()`` itself.

    Parameters
    ----------
    decide : callable
        Returns a JSON-able value (plain dicts, lists, numbers, strings).
    device : str
        The config's device, as for :func:`join` (the process group is joined here and kept
        for the run).

    Returns
    -------
    object
        Rank 0's ``decide()``.

    Raises
    ------
    Exception
        What ``decide()`` raised on rank 0, raised in every process (the same class and
        message), so none waits for a choice that never comes.
    """
    replicas = join(device)
    if replicas is None:
        return decide()
    try:
        if not replicas.main:
            outcome, value = replicas.share(None)
            if outcome == "failed":
                kind, message = value
                try:
                    error = kind(message)
                except Exception:  # noqa: BLE001 - a class that takes other arguments
                    error = RuntimeError(message)
                raise error
            return value
        from napari_medml.nn.losses import alone_in_group

        try:
            with alone_in_group():  # its timed steps must not wait for the processes that wait for it
                value = decide()
        except BaseException as exc:
            replicas.share(("failed", (type(exc), str(exc))))
            raise
        return replicas.share(("decided", value))[1]
    finally:
        replicas.close()


def _leave() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        if dist.get_backend() == "gloo":
            # leave together: a process that tears its group down while rank 0 still writes
            # the bundle can make rank 0's exit abort in gloo ("terminate called without an
            # active exception"); a peer that is gone is waited for one minute at most
            try:
                dist.monitored_barrier(timeout=timedelta(seconds=60))
            except Exception:  # noqa: BLE001 - exiting anyway
                pass
        dist.destroy_process_group()


class Replicas:
    """This process's view of a data-parallel run (made by :func:`join`).

    Attributes
    ----------
    rank, world_size : int
    device : torch.device
        ``cuda:LOCAL_RANK`` with NCCL, the CPU with gloo.
    backend : str
    main : bool
        Rank 0: validates and writes.
    """

    def __init__(self, rank: int, world_size: int, device: Any, backend: str, control: Any) -> None:
        self.rank, self.world_size, self.device, self.backend = rank, world_size, device, backend
        self.main = rank == 0
        self._control = control

    def describe(self, batch_size: int) -> str:
        """One line for the first report."""
        return (f"data parallel: {self.world_size} processes ({self.backend}), batch {batch_size} per process: "
                f"{batch_size * self.world_size} samples per step")

    def wrap(self, network: Any, seed: int) -> Any:
        """``network`` (already on ``device``) in DDP; dropout and other torch draws get ``seed + rank``."""
        import torch
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        wrapped = DistributedDataParallel(network, device_ids=ids)  # copies rank 0's weights to all
        torch.manual_seed(seed + self.rank)
        return wrapped

    def agree(self, stopped: bool, elapsed: float) -> tuple[bool, float]:
        """Whether any process was asked to stop, and the longest elapsed time of all.

        Called by every process after every step (a few microseconds on CPU tensors), so
        all take the same stop and time-limit decisions at the same step.
        """
        import torch
        import torch.distributed as dist

        both = torch.tensor([float(stopped), elapsed], dtype=torch.float64)
        dist.all_reduce(both, op=dist.ReduceOp.MAX, group=self._control)
        return bool(both[0].item()), float(both[1].item())

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the processes (NaN when any is NaN)."""
        import torch
        import torch.distributed as dist

        total = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(total, group=self._control)
        return float(total.item()) / self.world_size

    def share(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process (the others pass anything, e.g. None)."""
        import torch.distributed as dist

        # pickled between our own processes only; nothing is read from a file
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self._control)
        return box[0]

    def same_everywhere(self, tensor: Any) -> bool:
        """Whether every process holds the same values (compared by two weighted sums)."""
        import torch
        import torch.distributed as dist

        t = tensor.detach().double().cpu().flatten()
        sums = torch.stack([t.sum(), (t * torch.linspace(1.0, 2.0, t.numel(), dtype=torch.float64)).sum()])
        both = torch.cat([sums, -sums])
        dist.all_reduce(both, op=dist.ReduceOp.MAX, group=self._control)
        return bool(torch.equal(both[:2], -both[2:]))

    def close(self) -> None:
        """End this run's part: its control group (the process group stays for the process's
        next run and is left at exit)."""
        import torch.distributed as dist

        if self._control is not None and dist.is_initialized():
            dist.destroy_process_group(self._control)
            self._control = None
