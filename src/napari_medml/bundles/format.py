"""The bundle format: a folder with ``config.json`` and ``weights.safetensors``.

This layer knows no task: each task's model describes itself (``description()``).

``config.json`` holds everything needed to rebuild the network, re-apply the
preprocessing and normalization and map output channels to class ids.  Nothing is
ever pickled.  Writes go to a temporary folder next to the target, which is then
renamed into place, so a crash never leaves half a bundle.
"""

from __future__ import annotations

import contextlib
import json
import re
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medml.io.atomic import check_folder_target, interrupted_copy, remove_stale_temps, temp_name
from napari_medml.errors import BundleError, ConfigError, InputError

__all__ = ["CHECKPOINTS_NAME", "CONFIG_NAME", "DAMAGED", "SCHEMA_VERSION", "WEIGHTS_NAME", "check_bundle_path", "has_batch_statistics", "library_versions", "load_weights", "read_description", "read_weights", "save_model", "write_bundle_files",
           "write_bundle_folder"]

SCHEMA_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.safetensors"
CHECKPOINTS_NAME = "checkpoints"  # a command-line run's best/last checkpoints, inside its bundle folder
MEMBERS_NAME = "members"  # an ensemble's member bundles (segmentation.ensemble)
# the end of every "damaged bundle" line: what to do about it
DAMAGED = ("the bundle is damaged: copy the folder again from where it came (or a backup), or train the model "
           "again")
_OWN_FILES = {CONFIG_NAME, WEIGHTS_NAME, "train_state.json", "train_state.safetensors", CHECKPOINTS_NAME,
              MEMBERS_NAME}


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
        target = check_folder_target(path, allowed=_OWN_FILES, what="a model bundle")
    except InputError as exc:
        raise BundleError(str(exc)) from None
    if target.is_dir():
        _check_own_contents(target)
    return target


# what a bundle's sub-folders hold: checkpoints (last, best, fold-<k>, a fold's member) and members
_OWN_FOLDERS = re.compile(r"last|best|member|fold-\d+|replaced")  # replaced: cli.run_guard's
_TEMPS = re.compile(r"\..+\.(tmp|old)-\d+-[0-9a-f]+.*")  # io.atomic.temp_name's, left by a writer
_RUN_FILES = {"run.lock", "inputs.json"}  # a command-line run's own, in its checkpoints folder


def _check_own_contents(target: Path) -> None:
    """Refuse a folder whose bundle-named entries are not a bundle's: a user's own
    ``config.json``, or other files inside ``checkpoints/`` or ``members/`` (replacing the
    folder would delete them)."""
    config = target / CONFIG_NAME
    if config.is_file():
        try:
            description = json.loads(config.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            description = None
        ours = isinstance(description, dict) and "train_config" in description
        if not ours:
            raise BundleError(f"'{target}' holds a {CONFIG_NAME} that is not a napari-medml model's: choose a new or "
                              "empty folder for a model bundle (its files would be replaced)")
    for sub in (CHECKPOINTS_NAME, MEMBERS_NAME):
        for entry in sorted(_entries(target / sub)):
            if not os.path.lexists(entry):
                continue  # renamed or removed since it was listed: a running run's atomic swap (it is told apart later)
            if (entry.is_dir() and _OWN_FOLDERS.fullmatch(entry.name) or entry.name in _OWN_FILES | _RUN_FILES
                    or _TEMPS.fullmatch(entry.name) or any(_TEMPS.fullmatch(p) for p in entry.parts)):
                continue
            raise BundleError(f"'{target}' holds other files in its {sub} folder ('{entry.relative_to(target)}'): "
                              "choose a new or empty folder for a model bundle (its files would be replaced)")


def _entries(folder: Path) -> Iterator[Path]:
    """Every file and folder below ``folder`` (none when it does not exist). ``os.walk`` skips a folder
    that goes while it walks; ``Path.rglob`` raised FileNotFoundError when a running training run
    swapped its ``best`` checkpoint (``.best.old-...``) meanwhile, and a second run on the same
    ``--out`` failed with that instead of being told the folder is in use."""
    for root, folders, files in os.walk(folder):
        yield from (Path(root) / name for name in (*folders, *files))


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shaped a model."""
    import monai

    import napari_medml

    return {"napari_medml": napari_medml.__version__, "torch": torch.__version__,
            "monai": monai.__version__, "numpy": np.__version__}


def write_bundle_files(description: Mapping[str, Any], network: torch.nn.Module, path: str | Path,
                       extra_json: Mapping[str, Any] | None = None,
                       extra_tensors: Mapping[str, Mapping[str, torch.Tensor]] | None = None) -> Path:
    """Write ``config.json`` + ``weights.safetensors`` (+ extras) into a temporary folder
    next to ``path``, then rename it into place: a crash never leaves half a bundle.

    An existing folder is replaced only when it holds nothing but bundle files.
    """
    from safetensors.torch import save_file

    def fill(tmp: Path) -> None:
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in network.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(description, indent=2))
        for name, content in (extra_json or {}).items():
            (tmp / name).write_text(json.dumps(content, indent=2))
        for name, tensors in (extra_tensors or {}).items():
            save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp / name))

    return write_bundle_folder(path, fill)


def write_bundle_folder(path: str | Path, fill: Callable[[Path], None]) -> Path:
    """Write a bundle folder atomically: ``fill`` writes its files into a temporary folder
    next to ``path``, which is then renamed into place (an earlier bundle there is
    swapped out, then removed); on any error the temporary folder is removed and
    ``path`` is left as it was.

    Parameters
    ----------
    path : str or Path
        The bundle folder (new, or one holding only bundle files: ``check_bundle_path``).
    fill : callable
        ``fill(folder)`` writes the bundle's files (``config.json``, weights, member
        bundles, ...) into ``folder``.

    Returns
    -------
    Path
        The bundle folder, resolved.

    Raises
    ------
    BundleError
        ``path`` cannot hold a bundle (see :func:`check_bundle_path`).
    """
    target = check_bundle_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    tmp = temp_name(target)
    tmp.mkdir()
    old = None
    try:
        fill(tmp)
        _usual_permissions(tmp)
        if target.exists():
            old = temp_name(target, "old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        if old is not None and old.exists() and not target.exists():  # the earlier bundle goes back
            os.replace(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _usual_permissions(folder: Path) -> None:
    """Give every file in ``folder`` the permissions a new file gets here (the umask's):
    safetensors writes its files readable by their owner alone (0600), so a bundle copied to
    a shared folder had a config others could read and weights they could not."""
    probe = folder / ".permissions"
    probe.write_bytes(b"")  # Python's open honours the umask
    mode = probe.stat().st_mode & 0o777
    probe.unlink()
    for file in folder.rglob("*"):
        if file.is_file() and file.stat().st_mode & 0o777 != mode:
            file.chmod(mode)


def save_model(model: Any, path: str | Path) -> Path:
    """Save any task's model as a bundle folder; returns the folder path.

    Parameters
    ----------
    model : Model, Classifier, ...
        Anything with ``network`` and ``description()`` (the ``config.json`` content).
    path : str or Path
        Bundle folder (created, or replaced if it holds a bundle).
    """
    return write_bundle_files(model.description(), model.network, path)


def read_description(path: Path) -> dict:
    """Parsed ``config.json`` of the bundle at ``path``, with clear errors."""
    if not path.is_dir():
        left = interrupted_copy(Path(path)) if not Path(path).exists() else None
        if left is not None:
            raise BundleError(f"model bundle {path} does not exist: a save that was interrupted while replacing "
                              f"it left the earlier bundle at '{left}'; rename that folder to '{path}'")
        raise BundleError(f"model bundle {path} does not exist or is not a folder")
    cfg_path = path / CONFIG_NAME
    best = path / CHECKPOINTS_NAME / "best" / CONFIG_NAME
    if not cfg_path.is_file() and best.is_file():
        command = "train"
        with contextlib.suppress(OSError, ValueError, AttributeError):  # the message only
            command = "pretrain" if json.loads(best.read_text()).get("task") == "pretraining" else "train"
        raise BundleError(f"{path} holds only the checkpoints of a training run that was killed before it saved the "
                          f"model: continue it with the same 'napari-medml {command} ... --out {path}' and --resume, "
                          f"or use its best epoch so far, the bundle '{path / CHECKPOINTS_NAME / 'best'}'")
    if not cfg_path.is_file():
        inner = sorted(p.name for p in path.iterdir() if (p / CONFIG_NAME).is_file())
        fix = (f"it holds the bundle(s) {', '.join(inner[:3])}{', ...' if len(inner) > 3 else ''}: choose one of "
               "them" if inner else f"choose the folder that 'train --out' or Save model wrote (it holds "
               f"{CONFIG_NAME} and {WEIGHTS_NAME})")
        raise BundleError(f"model bundle {path} has no {CONFIG_NAME}: it is not a bundle or it is damaged; {fix}")
    try:
        desc = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{cfg_path} is not valid JSON ({exc}): " + DAMAGED) from exc
    if not isinstance(desc, dict):
        raise BundleError(f"{cfg_path} does not hold a JSON object: " + DAMAGED)
    version = desc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        said = "has no schema_version" if version is None else f"has schema_version {version!r}, not a whole number"
        raise BundleError(f"{cfg_path} {said}: the bundle is damaged (napari-medml writes a number, e.g. "
                          f"\"schema_version\": {SCHEMA_VERSION}); save or copy the bundle again")
    if version > SCHEMA_VERSION:
        raise BundleError(f"{cfg_path} has schema_version {version!r}; this napari-medml reads up to "
                          f"{SCHEMA_VERSION}: update napari-medml")
    missing = [k for k in ("train_config", "class_ids", "in_channels", "spatial_dims", "patch_size",
                           "normalization") if k not in desc]
    if missing:
        raise BundleError(f"{cfg_path} lacks {', '.join(missing)}: " + DAMAGED)
    norm = desc["normalization"]
    channels = norm.get("channels") if isinstance(norm, dict) else None
    for stats in channels if isinstance(channels, list) else ():  # else the user's image would be blamed
        std = stats.get("std") if isinstance(stats, dict) else None  # 0 is a constant channel's
        if std is not None and not (isinstance(std, (int, float)) and np.isfinite(std) and std >= 0):
            raise BundleError(f"{cfg_path} has a normalization std of {std!r}, not a number >= 0: " + DAMAGED)
    return desc


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of the bundle at ``path`` (safetensors: nothing is unpickled), with clear errors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path = path / WEIGHTS_NAME
    if not weights_path.is_file():
        raise BundleError(f"model bundle {path} has no {WEIGHTS_NAME}: " + DAMAGED)
    try:
        return load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{weights_path} cannot be read ({exc}): " + DAMAGED) from exc


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
        raise BundleError(f"weights in {source} do not fit the network its config.json describes "
                          f"({'; '.join(problems)}): the two files are not of one model; " + DAMAGED.split(": ", 1)[1])
    network.load_state_dict(state)


# --- training checkpoints (a bundle plus the optimizer/schedule state) ----------------


def has_batch_statistics(path: str | Path) -> bool:
    """Whether a bundle's weights hold batch norm statistics (``running_mean``).

    Reads only the safetensors header. False when the file cannot be read: loading it says
    what is wrong.

    Parameters
    ----------
    path : str or Path
        The bundle folder.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(Path(path) / WEIGHTS_NAME), "pt") as weights:
            return any(key.endswith("running_mean") for key in weights.keys())  # noqa: SIM118 (a header, not a dict)
    except (OSError, ValueError, RuntimeError):
        return False

