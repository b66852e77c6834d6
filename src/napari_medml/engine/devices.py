"""Pick the compute device and say in words what it is.

``"auto"`` prefers CUDA, then Apple's MPS, then the CPU; every code path runs on
the CPU, and mixed precision (``torch.autocast`` + ``GradScaler``) is used on CUDA
only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from napari_medml.errors import ConfigError

__all__ = ["amp_enabled", "autocast", "describe_device", "gui_thread_count", "intra_op_threads", "patch_voxel_cap",
           "resolve_device"]

# Largest automatic training patch on a CPU, in voxels. The memory budget alone allows
# patches such as 48x72x96 (features 16), and a CPU step there takes ~5 s on 2 cores (its
# time grows faster than the voxel count once activations leave the caches); 32x64x64
# takes ~0.7 s, so a 30-step fine-tune stays well under a minute.
CPU_PATCH_VOXELS = {2: 256 * 256, 3: 32 * 64 * 64}


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` into a device.

    Parameters
    ----------
    name : str
        The device name from a config.

    Returns
    -------
    torch.device
        The device to use.

    Raises
    ------
    ConfigError
        If the name is unknown or the device is not available here.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise ConfigError("device 'mps' is not available on this machine: use 'auto' or 'cpu'")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but CUDA is not available: use 'auto' or 'cpu'")
        try:
            device = torch.device(name)
        except RuntimeError as exc:
            raise ConfigError(f"device {name!r} is not a valid CUDA device name (e.g. 'cuda:0')") from exc
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return device
    raise ConfigError(f"unknown device {name!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")


def describe_device(device: torch.device | str) -> str:
    """A short human description, e.g. ``"CUDA: NVIDIA H100 (80 GB)"`` or ``"CPU (2 threads)"``."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"CUDA: {props.name} ({props.total_memory / 2**30:.0f} GB)"
    if device.type == "mps":
        return "MPS (Apple GPU)"
    return f"CPU ({torch.get_num_threads()} threads of {os.cpu_count()} cores)"


def amp_enabled(device: torch.device, amp: bool) -> bool:
    """Mixed precision only where it is reliable and fast: CUDA."""
    return bool(amp) and device.type == "cuda"


def autocast(amp: bool) -> contextlib.AbstractContextManager:
    """float16 autocast on CUDA when ``amp`` (see :func:`amp_enabled`), else nothing."""
    return torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()


def patch_voxel_cap(device: torch.device | str, spatial_dims: int) -> int | None:
    """The most voxels an automatic training patch may have on ``device`` (None: no cap).

    GPUs are limited by memory only (``DataConfig.memory_budget_mb``); on a CPU, time
    is the limit, see ``CPU_PATCH_VOXELS``.
    """
    return CPU_PATCH_VOXELS[spatial_dims] if torch.device(device).type == "cpu" else None


def gui_thread_count(device: torch.device | str) -> int | None:
    """Intra-op threads for a job that runs next to a GUI: on a CPU with 4 or more
    cores, all but one; otherwise None (leave torch's default).

    With every core in torch's thread pool the GUI thread has to wait for a core; one
    core left free keeps the viewer smooth at a cost of 1/n of the speed. On 2 cores
    that cost is half the speed, and there the event loop's longest stall measured the
    same with 1 or 2 threads (60-85 ms; the GIL, not the cores, is what the GUI waits
    for), so 2-3 cores keep every thread; a GPU device leaves the host threads idle.
    """
    cores = os.cpu_count() or 1
    if torch.device(device).type != "cpu" or cores < 4:
        return None
    return cores - 1


@contextlib.contextmanager
def intra_op_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(count)`` (None: unchanged), then restore.

    With torch's OpenMP builds (the CPU and CUDA wheels) the count belongs to the calling thread,
    so jobs in other worker threads keep their own and each restores its own (measured: a count
    set in a worker thread is not seen by the GUI thread). With a native thread pool it is
    process-wide, and the last job to end restores the count it found.
    """
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
