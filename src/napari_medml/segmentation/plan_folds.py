"""Whether a run under a time limit is one model or an ensemble: the decision
:func:`~napari_medml.segmentation.planning.plan_run` takes after planning the run both
ways (:func:`~napari_medml.segmentation.plan.make_plan` with one fold and with ``ENSEMBLE``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from napari_medml.config import TrainConfig
from napari_medml.segmentation.plan import VALIDATIONS, Plan

__all__ = ["ENSEMBLE", "MEMBER_STEPS", "choose_ensemble", "ensemble_bar", "fold_validation", "with_folds_line"]

# A time limit is shared by ENSEMBLE models when each still takes MEMBER_STEPS steps: on the
# real 2D and 3D nuclei of bench_plan_quality.py, 4 models of 1 min (1500-2000 and 3100-3600
# steps each, as trained and as the plan now times them) scored 0.008 and 0.016 Dice higher
# than one model of 4 min, whose own validation peaked in its first quarter; 4 brain MRI
# models of about 300 steps each scored 0.02 lower. nnU-Net, too, averages the models of its
# folds (Isensee et al. 2021)
ENSEMBLE = 4
MEMBER_STEPS = 800


def ensemble_bar(config: TrainConfig, keep: Sequence[str], n_images: int) -> str | None:
    """The ``ensemble (folds)`` line of a run that is not planned as an ensemble, or None
    when it may be (then both plans are made and :func:`choose_ensemble` decides).

    An ensemble is planned only to share a time limit (without one, K models take K times
    as long), for dense labels of a segmentation (scribbles cut into folds leave each model
    few strokes), with one image (cut into folds) or at least ``ENSEMBLE`` images (whole
    images held out), and when the user left the number of folds to the plan.

    Parameters
    ----------
    config : TrainConfig
    keep : sequence of str
        ``PLANNED_FIELDS`` the user set (``"data.folds"``: the user's number of models).
    n_images : int
        Training images.

    Returns
    -------
    str or None
    """
    if "data.folds" in keep:
        return f"ensemble (folds): {config.data.folds} (set by you{fold_validation(config, config.data.folds)})"
    why = None
    if config.optim.max_minutes is None:
        why = "no time limit to share; set the folds for an ensemble"
    elif config.task != "segmentation":
        why = "the plan ensembles semantic segmentations only"
    elif config.data.label_mode != "dense":
        why = "scribbles cut into folds would leave each model few strokes"
    elif 1 < n_images < ENSEMBLE:
        why = f"{n_images} images are too few to hold out whole images for {ENSEMBLE} models"
    return None if why is None else f"ensemble (folds): 1 (one model: {why})"


def choose_ensemble(single: Plan, members: Plan | None, config: TrainConfig, why_not: str = "") -> Plan:
    """One model, or ``ENSEMBLE`` models sharing the time limit, from the two plans.

    Parameters
    ----------
    single : Plan
        The run planned as one model.
    members : Plan or None
        The same run planned with ``data.folds = ENSEMBLE`` (each member's fingerprint and
        share of the time); None when it could not be planned (``why_not`` says why).
    config : TrainConfig
        The user's config (``optim.max_minutes`` is the whole run's).
    why_not : str
        Why ``members`` is None.

    Returns
    -------
    Plan
        ``members`` with ``folds = ENSEMBLE`` when each member still takes ``MEMBER_STEPS``
        steps in its share of the time, else ``single``; with an ``ensemble (folds)`` line first.
    """
    if members is not None:
        minutes = config.optim.max_minutes / ENSEMBLE
        steps = members.steps_per_epoch * VALIDATIONS  # the steps left beside validation, but never more than
        if members.step_seconds:  # the time allows (u32: epochs' floor of 5 steps said 20 where 3 fit)
            steps = min(steps, int(minutes * 60 / members.step_seconds))
        share = f"{minutes:g} min"
        if steps >= MEMBER_STEPS:
            line = (f"ensemble (folds): {ENSEMBLE} (each model still takes about {steps} steps in its {share}; "
                    "models trained on different folds and averaged beat one model trained for all of the "
                    f"time, as nnU-Net's folds do; predicting takes {ENSEMBLE}x as long"
                    f"{fold_validation(config, ENSEMBLE)})")
            return with_folds_line(replace(members, folds=ENSEMBLE), line)
        why_not = f"{ENSEMBLE} models would take only about {steps} steps each in {share}, {MEMBER_STEPS} needed"
    return with_folds_line(replace(single, folds=1), f"ensemble (folds): 1 (one model: {why_not or 'planned'})")


def fold_validation(config: TrainConfig, folds: int) -> str:
    """What an ensemble's line adds when it leaves the user's validation share unused (trial 41: set
    to 0.3 with 2 folds, each model was validated on half the data, and nothing said).

    Parameters
    ----------
    config : TrainConfig
        The user's config (``data.val_fraction``).
    folds : int
        The run's number of models.

    Returns
    -------
    str
        ``"; each model is validated on its own fold, 1/2 of the data, not on val_fraction=0.3"``,
        or ``""`` for one model or the default share.
    """
    from napari_medml.config import DataConfig

    if folds < 2 or config.data.val_fraction == DataConfig.val_fraction:
        return ""
    return (f"; each model is validated on its own fold, 1/{folds} of the data, not on "
            f"val_fraction={config.data.val_fraction:g}")


def with_folds_line(plan: Plan, line: str) -> Plan:
    """``plan`` with ``line`` as its first reason."""
    return replace(plan, reasons=(line, *plan.reasons))
