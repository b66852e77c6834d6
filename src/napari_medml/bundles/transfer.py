"""Transfer learning: copy the tensors of any bundle (or model) whose name and shape fit."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from napari_medml.bundles.format import read_description, read_weights
from napari_medml.errors import InputError

__all__ = ["transfer_weights"]


def transfer_weights(network: torch.nn.Module, source: str | Path | Any) -> dict[str, Any]:
    """Copy every tensor of a bundle (classification or segmentation) whose name and shape fit.

    Parameters
    ----------
    network : torch.nn.Module
        The new network (changed in place).
    source : str, Path or model
        A bundle folder, or a model in memory (anything with ``.network`` and ``.config``).

    Returns
    -------
    dict
        Provenance: ``source``, ``task``, ``network``, ``loaded``, ``skipped``, ``total``.

    Raises
    ------
    BundleError
        Damaged bundle. ``InputError`` when no tensor fits.
    """
    if hasattr(source, "network"):
        state = {k: v.detach().cpu() for k, v in source.network.state_dict().items()}
        info = {"source": f"{type(source).__name__} in memory", "task": source.config.task,
                "network": source.config.model.network}
    else:
        path = Path(source).expanduser()
        desc = read_description(path)
        net = desc.get("network")
        info = {"source": str(path.resolve()), "task": desc.get("task"),
                "network": net.get("name") if isinstance(net, Mapping) else net}
        state = read_weights(path)
    own = network.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    if not fitting:
        raise InputError(f"no weights of {info['source']} ({info['task']}, {info['network']}) fit the "
                         f"{type(network).__name__}: start from a bundle with the same network")
    network.load_state_dict(fitting, strict=False)
    return {**info, "loaded": len(fitting), "skipped": len(state) - len(fitting), "total": len(own)}
