"""Model bundles: a folder with ``config.json`` and ``weights.safetensors``.

``config.json`` holds everything needed to rebuild the network, re-apply the
preprocessing and normalization and map output channels to class ids.  Nothing is
ever pickled.  Writes go to a temporary folder next to the target, which is then
renamed into place, so a crash never leaves half a bundle.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medml.atomic import check_folder_target, remove_stale_temps, temp_name
from napari_medml.config import TrainConfig, from_dict, to_dict
from napari_medml.errors import BundleError, ConfigError, InputError

__all__ = ["CHECKPOINTS_NAME", "CONFIG_NAME", "SCHEMA_VERSION", "WEIGHTS_NAME", "check_bundle_path", "export_onnx",
           "export_torchscript", "load_model", "read_weights", "save_model", "transfer_weights", "write_bundle",
           "write_bundle_files"]

SCHEMA_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.safetensors"
CHECKPOINTS_NAME = "checkpoints"  # a command-line run's best/last checkpoints, inside its bundle folder
_OWN_FILES = {CONFIG_NAME, WEIGHTS_NAME, "train_state.json", "train_state.safetensors", CHECKPOINTS_NAME}


def check_bundle_path(path: str | Path) -> Path:
    """Check that a bundle can be written at ``path`` before any work; returns it resolved.

    Allowed: a new folder below a writable folder, or a folder holding only bundle files
    (an earlier bundle, or an interrupted command-line run's checkpoints).

    Raises
    ------
    BundleError
        ``path`` is a file, lies below a file, holds other files, or cannot be written.
    """
    try:
        return check_folder_target(path, allowed=_OWN_FILES, what="a model bundle")
    except InputError as exc:
        raise BundleError(str(exc)) from None


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shaped a model."""
    import monai

    import napari_medml

    return {"napari_medml": napari_medml.__version__, "torch": torch.__version__,
            "monai": monai.__version__, "numpy": np.__version__}


def model_description(model: Any) -> dict:
    """The ``config.json`` content for a model."""
    cfg: TrainConfig = model.config
    names = dict(cfg.class_names or {})
    return {
        "schema_version": SCHEMA_VERSION,
        "task": cfg.task,
        "network": {
            "name": cfg.model.network,
            "arguments": to_dict(cfg.model),
            "spatial_dims": model.spatial_dims,
            "in_channels": model.in_channels,
            "out_channels": len(model.class_ids),
        },
        "spatial_dims": model.spatial_dims,
        "in_channels": model.in_channels,
        "out_channels": len(model.class_ids),
        "class_ids": list(model.class_ids),
        "class_names": {str(c): names.get(c, "background" if c == 0 else f"class {c}") for c in model.class_ids},
        "preprocessing": to_dict(cfg.data.preprocessing),
        "normalization": model.normalization,
        "patch_size": list(model.patch_size),
        "spacing": None if model.spacing is None else list(model.spacing),
        "history": model.history,
        "versions": library_versions(),
        "seed": cfg.seed,
        "provenance": model.provenance,
        "train_config": to_dict(cfg),
    }


def write_bundle(model: Any, path: str | Path, extra_json: Mapping[str, Any] | None = None,
                 extra_tensors: Mapping[str, Mapping[str, torch.Tensor]] | None = None) -> Path:
    """Write a segmentation ``Model`` atomically; ``extra_*`` add files (checkpoint state)."""
    return write_bundle_files(model_description(model), model.network, path, extra_json, extra_tensors)


def write_bundle_files(description: Mapping[str, Any], network: torch.nn.Module, path: str | Path,
                       extra_json: Mapping[str, Any] | None = None,
                       extra_tensors: Mapping[str, Mapping[str, torch.Tensor]] | None = None) -> Path:
    """Write ``config.json`` + ``weights.safetensors`` (+ extras) into a temporary folder
    next to ``path``, then rename it into place: a crash never leaves half a bundle.

    An existing folder is replaced only when it holds nothing but bundle files.
    """
    from safetensors.torch import save_file

    target = check_bundle_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    tmp = temp_name(target)
    tmp.mkdir()
    try:
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in network.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(description, indent=2))
        for name, content in (extra_json or {}).items():
            (tmp / name).write_text(json.dumps(content, indent=2))
        for name, tensors in (extra_tensors or {}).items():
            save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp / name))
        if target.exists():
            old = temp_name(target, "old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def save_model(model: Any, path: str | Path) -> Path:
    """Save a ``Model`` as a bundle folder; returns the folder path.

    Parameters
    ----------
    model : Model
    path : str or Path
        Bundle folder (created, or replaced if it holds a bundle).
    """
    return write_bundle(model, path)


def read_description(path: Path) -> dict:
    """Parsed ``config.json`` of the bundle at ``path``, with clear errors."""
    if not path.is_dir():
        raise BundleError(f"model bundle {path} does not exist or is not a folder")
    cfg_path = path / CONFIG_NAME
    if not cfg_path.is_file():
        raise BundleError(f"model bundle {path} has no {CONFIG_NAME}: it is not a bundle or it is damaged")
    try:
        desc = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{cfg_path} is not valid JSON ({exc}): the bundle is damaged") from exc
    if not isinstance(desc, dict):
        raise BundleError(f"{cfg_path} does not hold a JSON object: the bundle is damaged")
    version = desc.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise BundleError(f"{cfg_path} has schema_version {version!r}; this napari-medml reads up to "
                          f"{SCHEMA_VERSION}: update napari-medml")
    missing = [k for k in ("train_config", "class_ids", "in_channels", "spatial_dims", "patch_size",
                           "normalization") if k not in desc]
    if missing:
        raise BundleError(f"{cfg_path} lacks {', '.join(missing)}: the bundle is damaged")
    return desc


def load_model(path: str | Path) -> Any:
    """Load a bundle folder written by ``save_model`` (never unpickles).

    A classification bundle comes back as ``classify.Classifier``.

    Raises
    ------
    BundleError
        Missing folder or file, invalid JSON, missing keys, or weights that do not
        fit the network described in ``config.json``.
    """
    from napari_medml.infer import Model
    from napari_medml.models import build_network

    path = Path(path).expanduser()
    desc = read_description(path)
    if desc.get("task") == "classification":
        from napari_medml.classify import load_classifier

        return load_classifier(path)
    try:
        config = from_dict(TrainConfig, desc["train_config"])
    except (ConfigError, TypeError, KeyError, AttributeError) as exc:
        raise BundleError(f"{path / CONFIG_NAME} has an invalid train_config ({exc})") from exc
    try:
        class_ids = tuple(int(c) for c in desc["class_ids"])
        spatial_dims = int(desc["spatial_dims"])
        in_channels = int(desc["in_channels"])
        patch_size = tuple(int(p) for p in desc["patch_size"])
        spacing = None if desc.get("spacing") is None else tuple(float(s) for s in desc["spacing"])
        network = build_network(config.model, spatial_dims, in_channels, len(class_ids),
                                patch_size=patch_size, spacing=spacing)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path / CONFIG_NAME} does not describe a network this version can build ({exc})") from exc
    load_weights(network, read_weights(path), str(path / WEIGHTS_NAME))
    return Model(network, config, class_ids, in_channels, spatial_dims, patch_size, spacing,
                 desc["normalization"], history=desc.get("history") or [], provenance=desc.get("provenance") or {})


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of the bundle at ``path`` (safetensors: nothing is unpickled), with clear errors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path = path / WEIGHTS_NAME
    if not weights_path.is_file():
        raise BundleError(f"model bundle {path} has no {WEIGHTS_NAME}: the bundle is damaged")
    try:
        return load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{weights_path} cannot be read ({exc}): the bundle is damaged") from exc


def load_weights(network: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load a state dict, naming missing, unexpected and mis-shaped tensors."""
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s) (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s) (e.g. {unexpected[0]})")
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) of the wrong shape (e.g. {wrong[0]})")
    if problems:
        raise BundleError(f"weights in {source} do not fit the network: {'; '.join(problems)}")
    network.load_state_dict(state)


def _example_input(model: Any) -> torch.Tensor:
    return torch.zeros((1, model.in_channels, *model.patch_size), dtype=torch.float32)


def export_torchscript(model: Any, path: str | Path) -> Path:
    """Trace the network (logits for a ``(1, C, *patch)`` input) to a TorchScript file."""
    path = Path(path)
    net = model.network.to("cpu").eval()
    with torch.no_grad():
        traced = torch.jit.trace(net, _example_input(model))
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    return path


def export_onnx(model: Any, path: str | Path) -> Path:
    """Export the network to ONNX (needs the optional ``onnx`` package)."""
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise BundleError("ONNX export needs the 'onnx' package: pip install 'napari-medml[export]'") from exc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = model.network.to("cpu").eval()
    with torch.no_grad():
        torch.onnx.export(net, (_example_input(model),), str(path), input_names=["image"],
                          output_names=["logits"])
    return path


# --- training checkpoints (a bundle plus the optimizer/schedule state) ----------------

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
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.item() if obj.numel() == 1 else obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return None  # callables (schedule lambdas) are rebuilt from the config


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
