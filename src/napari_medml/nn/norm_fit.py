"""Whether a network's normalisation layers get more than one value per channel to normalise.

PyTorch refuses such a layer only at the first training step, with a message about tensor
sizes ("Expected more than 1 spatial element when training"): an instance norm after the
input has been pooled to 1x1, or a batch norm over a batch of one 1x1 map. A probe forward
in eval mode (no statistics change) records the input of each norm layer first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from napari_medml.errors import InputError

__all__ = ["check_norm_inputs"]

_PROBE_VOXELS = 64**3  # the largest input probed for a suggested size


def check_norm_inputs(network: Any, input_shape: Sequence[int], batch_size: int, what: str, *, size_option: str,
                      depth: bool, size_name: str = "input size") -> None:
    """Refuse a network whose norm layers would see one value per channel in training.

    Parameters
    ----------
    network : torch.nn.Module
        The network (left in the mode it was in; its parameters and statistics unchanged).
    input_shape : sequence of int
        One sample's ``(C, *spatial)``, in voxels.
    batch_size : int
        Samples per training step.
    what : str
        How the message names the input, e.g. ``"the 8x8 samples"``.
    size_option : str
        Where the input size is set, e.g. ``"--input-size, or the Classify widget's input size"``.
    depth : bool
        Whether the network has a depth to lower (the message offers it).
    size_name : str
        What the input size is called (``"patch size"`` for a segmentation network).

    Raises
    ------
    InputError
        Naming the layer, its input size and norm, and the fixes: an input size that the same
        probe passes (2, 4 or 8 times larger), a smaller depth, another batch or norm.
    """
    failed = _too_small(network, input_shape, batch_size)
    if failed is None:
        return
    name, kind, shape = failed
    suggestion = ""
    for factor in (2, 4, 8):  # the smallest larger input whose maps all hold more than one value
        larger = [input_shape[0], *(factor * s for s in input_shape[1:])]
        if math.prod(larger[1:]) > _PROBE_VOXELS:  # a 3D network's probe would take seconds: no example
            break
        if _too_small(network, larger, batch_size) is None:
            suggestion = f"; e.g. {'x'.join(str(s) for s in larger[1:])}"
            break
    fixes = [f"give a larger {size_name} ({size_option}{suggestion})"]
    if depth:
        fixes.append("a smaller depth")
    fixes.append("batch norm with a batch size of 2 or more" if kind == "instance norm" else
                 "a batch size of 2 or more")
    size = "x".join(str(s) for s in shape[2:]) or "1"
    raise InputError(f"{what} shrink to {size} at the network's layer '{name}', where {kind} has one value per "
                     f"channel to normalise: {', '.join(fixes[:-1])}, or {fixes[-1]}")


def _too_small(network: Any, input_shape: Sequence[int], batch_size: int
               ) -> tuple[str, str, tuple[int, ...]] | None:
    """The first norm layer (name, kind, input shape) with one value per channel, or None."""
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.instancenorm import _InstanceNorm

    seen: list[tuple[str, Any, tuple[int, ...]]] = []

    def record(name: str) -> Any:
        return lambda module, args: seen.append((name, module, tuple(args[0].shape)))

    hooks = [module.register_forward_pre_hook(record(name)) for name, module in network.named_modules()
             if isinstance(module, _BatchNorm | _InstanceNorm)]
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            network(torch.zeros((1, *input_shape)))
    except (ValueError, RuntimeError):  # instance norm refuses a 1x1 map in eval mode too: its input is recorded
        pass
    finally:
        for hook in hooks:
            hook.remove()
        network.train(was_training)
    for name, module, shape in seen:
        spatial = math.prod(shape[2:])
        if isinstance(module, _InstanceNorm) and spatial <= 1:
            return name, "instance norm", shape
        if isinstance(module, _BatchNorm) and spatial * batch_size <= 1:
            return name, "batch norm over a batch of 1", shape
    return None
