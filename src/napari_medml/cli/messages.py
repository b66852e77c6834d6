"""The core's messages in the words of the command line (options, not config fields), and
what ``train``/``pretrain``/``classify`` say when a run was stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_medml.cli.common import info
from napari_medml.config import DataConfig

__all__ = ["flag_names", "nothing_saved", "saved_note", "say_unused_share", "stopped_line", "with_flag_names"]


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

    folder = Path(checkpoints)
    validated = (folder / "best").is_dir() or any(folder.glob("fold-*/best")) or not has_checkpoint(folder)
    what = ("the best model so far" if validated else
            "the last weights (stopped before the first epoch ended: there is no best epoch yet)")
    if not has_checkpoint(checkpoints):
        return f"stopped: saved {what} to {path}"
    return (f"stopped: saved {what} to {path} and kept the run's checkpoints in {checkpoints}; "
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


def saved_note(model: Any, best: Any, folds: int, *, resumed: bool = False) -> str:
    """What ``saved model bundle to ...`` adds: each fold's validation Dice, or the best epoch and
    its score (for a resumed run whose best epoch came before the stop, from the model's history),
    and the steps one model trained (``segmentation.step_time.steps_trained``)."""
    from napari_medml.segmentation.step_time import model_steps_trained

    trained = model_steps_trained(model)
    if folds > 1:
        scores = model.provenance["ensemble"]["member_best_val_dice"]
        dice = ", ".join("-" if d is None else f"{d:.3f}" for d in scores)
        if None in scores:
            dice += " ('-': no foreground held out, none scored, or stopped before its first validation)"
        n = len(scores)  # trial 47: a run stopped in its first fold said "ensemble of 1 models"
        size = f"{n} model{'s' * (n != 1)}" + (f" of the {folds} asked for (stopped)" if n < folds else "")
        return f" (ensemble of {size}; validation mean Dice per fold: {dice}" + (
            f"; {trained})" if trained else ")")
    note = _score_note(model, best, resumed)
    return f"{note}; trained {trained}" if trained else note


def _score_note(model: Any, best: Any, resumed: bool) -> str:
    from napari_medml.segmentation.split import NO_FOREGROUND

    if best is not None and NO_FOREGROUND in str(getattr(model, "provenance", {}).get("split", "")):
        # nothing is scored there (a Dice of 0.000 read as a failed model): the split line said why
        return f" (best epoch {best.epoch}; the held-out part holds no foreground, so no validation Dice)"
    if best is not None and best.val_mean_dice is not None:
        return f" (best epoch {best.epoch}, validation mean Dice {best.val_mean_dice:.3f})"
    if best is not None and "ap_at_0.5" in (best.val_metrics or {}):  # instances
        return (f" (best epoch {best.epoch}, validation AP@0.5 {best.val_metrics['ap_at_0.5']:.3f}, "
                f"F1@0.5 {best.val_metrics['f1_at_0.5']:.3f})")
    history = getattr(model, "history", None)
    if best is None and resumed and history:  # the best epoch came before the stop
        epoch = int(model.provenance.get("best_epoch", 0)) or len(history)
        kept = history[min(epoch, len(history)) - 1]
        if kept.get("val_mean_dice") is not None:
            return f" (best epoch {kept['epoch']}, before the stop: validation mean Dice {kept['val_mean_dice']:.3f})"
    return ""


def say_unused_share(val_fraction: float | None, folds: int, resumed: bool) -> None:
    """Print that ``--val-fraction`` goes unused with folds when it was given at its default
    (note 48): the core says so for any other share, but cannot tell the default given.

    Parameters
    ----------
    val_fraction : float or None
        The option's value; None when it was left out.
    folds : int
        The run's number of models, planned or given.
    resumed : bool
        A ``--resume`` run keeps its own settings, and says nothing here.
    """
    if val_fraction is not None and val_fraction == DataConfig.val_fraction and folds > 1 and not resumed:
        info(f"--val-fraction {val_fraction:g} is not used with folds: each of the {folds} models is validated on "
             f"its own fold, 1/{folds} of the data")
