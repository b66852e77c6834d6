"""Training checkpoints: a bundle plus the optimizer, schedule and loop state, so a run can
resume. Tensors go to safetensors, the rest to JSON; nothing is pickled."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from napari_medml.bundles.format import write_bundle_files
from napari_medml.config import to_dict
from napari_medml.errors import BundleError

__all__ = ["STATE_JSON", "STATE_TENSORS", "find_checkpoint", "optimizer_state", "read_checkpoint", "write_checkpoint"]


STATE_JSON = "train_state.json"


STATE_TENSORS = "train_state.safetensors"



def write_checkpoint(model: Any, path: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any,
                     scaler: Any, scalars: Mapping[str, Any]) -> Path:
    """A bundle that training can resume from: tensors in safetensors, the rest in JSON."""
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    other_state: dict[str, dict[str, Any]] = {}
    for idx, entry in opt["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{name}"] = value
            else:
                other_state.setdefault(str(idx), {})[name] = value
    state = {
        **scalars,
        "optimizer": {"param_groups": _jsonable(opt["param_groups"]), "state": _jsonable(other_state)},
        "scheduler": _jsonable(scheduler.state_dict()) if scheduler is not None else None,
        "scaler": _jsonable(scaler.state_dict()) if scaler is not None else None,
    }
    return write_bundle_files(model.description(), model.network, path, extra_json={STATE_JSON: state},
                              extra_tensors={STATE_TENSORS: tensors or {"empty": torch.zeros(1)}})



def find_checkpoint(path: str | Path) -> Path:
    """The resumable checkpoint at ``path`` (a checkpoint folder or a ``checkpoint_dir``)."""
    path = Path(path).expanduser()
    for candidate in (path / "last", path):
        if (candidate / STATE_JSON).is_file():
            return candidate
    raise BundleError(f"{path} holds no resumable checkpoint ({STATE_JSON} missing): "
                      "give the checkpoint folder of an earlier run")



def read_checkpoint(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """``train_state.json`` and the optimizer tensors of a checkpoint."""
    from safetensors.torch import load_file

    try:
        state = json.loads((path / STATE_JSON).read_text())
        tensors = load_file(str(path / STATE_TENSORS))
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise BundleError(f"training state in {path} cannot be read ({exc}): the checkpoint is damaged") from exc
    return state, tensors



def optimizer_state(state: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> dict:
    """Rebuild an optimizer ``state_dict`` from ``read_checkpoint`` output."""
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, idx, name = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = value
    for idx, entry in state["optimizer"]["state"].items():
        opt_state.setdefault(int(idx), {}).update(entry)
    groups = state["optimizer"]["param_groups"]
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    return {"state": opt_state, "param_groups": groups}



def _jsonable(obj: Any) -> Any:
    return to_dict(obj, default=lambda value: None)  # callables (schedule lambdas) are rebuilt from the config
