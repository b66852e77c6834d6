"""Pick the compute device and say in words what it is.

``"auto"`` prefers CUDA, then Apple's MPS, then the CPU; every code path runs on
the CPU, and mixed precision (``torch.autocast`` + ``GradScaler``) is used on CUDA
only.
"""

from __future__ import annotations

import os

import torch

from napari_medml.errors import ConfigError

__all__ = ["amp_enabled", "describe_device", "resolve_device"]


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


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
