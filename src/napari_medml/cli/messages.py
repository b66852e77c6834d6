"""The core's messages in the words of the command line (options, not config fields), and
what ``train``/``pretrain``/``classify`` say when a run was stopped."""

from __future__ import annotations

from pathlib import Path

__all__ = ["flag_names", "nothing_saved", "stopped_line", "with_flag_names"]


def flag_names(text: str) -> str:
    """``text`` (a message of the core) with the settings it names as the options that set them.

    The core names a setting by its config field (``val_fraction``, ``patch_size``); on the
    command line it is an option (``--val-fraction``, ``--patch-size``). The mapping is
    the one the options are read with (``cli.options.PRETRAIN_FIELDS``); only field names
    with an underscore are replaced, never plain words.

    Parameters
    ----------
    text : str
        A message, e.g. ``"... set val_fraction=0"``.

    Returns
    -------
    str
        E.g. ``"... set --val-fraction 0"``.
    """
    import re

    from napari_medml.cli.options import PRETRAIN_FIELDS

    names = {field.rpartition(".")[2]: "--" + dest.replace("_", "-") for dest, field in PRETRAIN_FIELDS.items()}
    names["spatial_dims"] = "--spatial-dims"
    for name, flag in names.items():
        if "_" not in name or name not in text:
            continue
        pattern = rf"(?<![\w.-]){name}\b"
        text = re.sub(pattern + r"\s*=\s*(?=[\w.(-])", flag + " ", text)  # val_fraction=0 -> --val-fraction 0
        text = re.sub(pattern, flag, text)
    return text


def with_flag_names(exc: BaseException) -> BaseException:
    """``exc`` again, of its class, with :func:`flag_names` applied to its message (``exc``
    itself when nothing changes or it is not one of the core's ``MedMLError``)."""
    from napari_medml.errors import MedMLError

    if not isinstance(exc, MedMLError) or len(exc.args) != 1 or not isinstance(exc.args[0], str):
        return exc
    text = flag_names(exc.args[0])
    if text == exc.args[0]:
        return exc
    new = type(exc)(text)
    new.__cause__ = exc
    return new


def stopped_line(path: Path, checkpoints: Path) -> str:
    """What ``train``/``pretrain`` say after Ctrl-C stopped a run and its bundle was saved.

    Parameters
    ----------
    path : Path
        The bundle folder that was saved (the best model so far).
    checkpoints : Path
        The run's checkpoint folder, kept so that ``--resume`` continues the run.

    Returns
    -------
    str
    """
    from napari_medml.bundles.checkpoints import has_checkpoint

    if not has_checkpoint(checkpoints):
        return f"stopped: saved the best model so far to {path}"
    return (f"stopped: saved the best model so far to {path} and kept the run's checkpoints in {checkpoints}; "
            "the same command with --resume continues the run")


def nothing_saved(what: str, checkpoints: Path) -> str:
    """The error when a run stopped before its first model (``what``: "training", ...).

    Parameters
    ----------
    what : str
        The run, as the message's subject.
    checkpoints : Path
        The run's checkpoint folder: a stop leaves its last step there, which ``--resume``
        continues.

    Returns
    -------
    str
    """
    from napari_medml.bundles.checkpoints import has_checkpoint

    text = f"{what} stopped before a model was trained; nothing was saved"
    if has_checkpoint(checkpoints):
        text += f"; its checkpoints are kept in {checkpoints}: the same command with --resume continues the run"
    return text
