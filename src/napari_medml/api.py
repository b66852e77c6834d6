"""The public entry points, and the only place that dispatches on the task.

``fit`` / ``train`` hand a :class:`~napari_medml.config.TrainConfig` to the task its
``task`` field names; ``load_model`` reads a bundle's ``config.json`` and hands the
folder to that task's loader. A new task is one more entry in :data:`TASKS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from napari_medml.config import TrainConfig
from napari_medml.errors import BundleError, ConfigError, InputError

if TYPE_CHECKING:
    from typing import TypeAlias

    from napari_medml.classification.model import Classifier
    from napari_medml.engine.reports import StopToken, TrainReport
    from napari_medml.instances.model import InstanceModel
    from napari_medml.pretraining.model import ReconstructionModel
    from napari_medml.segmentation.ensemble import EnsembleModel
    from napari_medml.segmentation.model import Model

    # what fit/train return and load_model gives back, one type per entry of TASKS
    AnyModel: TypeAlias = Model | Classifier | InstanceModel | ReconstructionModel | EnsembleModel

__all__ = ["TASKS", "TaskEntry", "evaluate", "fit", "load_model", "train"]


class TaskEntry(NamedTuple):
    """Where a task's training generator and bundle loader live (``module:function``)."""

    fit: str
    load: str


TASKS: dict[str, TaskEntry] = {
    "segmentation": TaskEntry("napari_medml.segmentation.task:fit",
                              "napari_medml.segmentation.model:load_segmentation_model"),
    "classification": TaskEntry("napari_medml.classification.task:fit_classifier",
                                "napari_medml.classification.model:load_classifier"),
    "instances": TaskEntry("napari_medml.instances.task:fit", "napari_medml.instances.model:load_instance_model"),
    "pretraining": TaskEntry("napari_medml.pretraining.task:fit_pretraining",
                             "napari_medml.pretraining.model:load_pretrained"),
    # K segmentation models on K folds (DataConfig.folds > 1); its bundles say "task": "ensemble"
    "ensemble": TaskEntry("napari_medml.segmentation.ensemble:fit_ensemble",
                          "napari_medml.segmentation.ensemble:load_ensemble"),
}


def _resolve(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)  # imported on use: torch loads here, not at start-up


def _entry(task: str) -> TaskEntry:
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    return TASKS[task]


def fit(images: Any, labels: Any, config: TrainConfig, *, spacing: Any = None, channel_axis: int | None = None,
        stop: StopToken | None = None, resume_from: str | Path | None = None,
        init_model: Any = None, plan: Any = None) -> Generator[TrainReport, None, AnyModel]:
    """Train the model ``config.task`` names; yields reports and returns the best model.

    Parameters
    ----------
    images : array, sequence of arrays, or ClassSamples
        Segmentation and instances: images in napari axis order, ``(Y, X)`` or
        ``(Z, Y, X)`` plus ``channel_axis``. Classification: the samples
        (:mod:`napari_medml.classification.data`), with ``labels=None``.
    labels : array, sequence of arrays or None
        Segmentation: integer labels of each image's spatial shape. Instances:
        instance labels (each object its own id; the targets are derived from them). Pretraining: None
        (unlabeled images, :mod:`napari_medml.pretraining`).
    config : TrainConfig
    spacing : tuple or list of tuples, optional
        Segmentation: voxel size per spatial axis (physical units, e.g. mm or µm).
    channel_axis : int, optional
        Segmentation: the images' channel axis.
    stop : StopToken, optional
        Stops after the current step, leaving a ``last`` checkpoint.
    resume_from : str or Path, optional
        Continue a run from its checkpoint folder (both tasks).
    init_model : model, optional
        Start from this model's weights (segmentation: fine-tuning; classification:
        transfer learning).
    plan : segmentation.plan.Plan, optional
        Segmentation and instances: the plan ``config`` came from
        (``segmentation.planning.plan_run``), stored in the bundle.

    Yields
    ------
    TrainReport

    Returns
    -------
    Model, Classifier, InstanceModel, ReconstructionModel or EnsembleModel (the task's)

    Raises
    ------
    ConfigError
        An unknown task, or an argument the task does not take.
    InputError
        A ``config`` that is not a ``TrainConfig`` (e.g. a dict), or a ``spacing`` that is
        not one positive voxel size per spatial axis.
    """
    if not isinstance(config, TrainConfig):
        got = "a dict" if isinstance(config, dict) else f"{type(config).__name__} {config!r}"
        raise InputError(f"config must be a TrainConfig, got {got}: build one with TrainConfig(task=..., "
                         "optim=OptimConfig(...)), TrainConfig.from_json(text) or "
                         "napari_medml.config.from_dict(TrainConfig, a_dict)")
    entry = _entry(config.task)
    if config.task == "segmentation" and config.data.folds > 1 and config.data.fold is None:
        entry = TASKS["ensemble"]
    if config.task == "classification":
        given = [name for name, value in (("labels", labels), ("spacing", spacing), ("channel_axis", channel_axis))
                 if value is not None]
        if given:
            raise ConfigError(f"classification takes its classes, spacing and channels inside ClassSamples: call "
                              f"fit(samples, labels=None, config) without {', '.join(given)} "
                              "(see napari_medml.classification.data)")
        return (yield from _resolve(entry.fit)(images, config, stop=stop, init_from=init_model,
                                               resume_from=resume_from))
    spacing = _checked_spacing(images, spacing, config.data.spatial_dims, channel_axis)
    extra = {"plan": plan} if plan is not None and entry is TASKS["segmentation"] else {}
    model = yield from _resolve(entry.fit)(images, labels, config, spacing=spacing, channel_axis=channel_axis,
                                           stop=stop, resume_from=resume_from, init_model=init_model, **extra)
    if plan is not None and model is not None and "plan" not in model.provenance:  # other tasks keep it too
        model.provenance["plan"] = plan.to_dict()
    return model


def _checked_spacing(images: Any, spacing: Any, spatial_dims: int, channel_axis: int | None) -> Any:
    """``spacing`` checked against the run's spatial axes (``preprocessing.spacing.check_spacings``),
    unless the first image has another number of axes: the task then says how to fix the image."""
    from napari_medml.preprocessing.spacing import check_spacings

    first = images[0] if isinstance(images, (list, tuple)) and images else images
    shape = getattr(first, "shape", None)
    if shape is not None and len(shape) - (channel_axis is not None) != spatial_dims:
        return spacing
    return check_spacings(spacing, spatial_dims)


def train(images: Any, labels: Any, config: TrainConfig, *, spacing: Any = None, channel_axis: int | None = None,
          stop: StopToken | None = None, resume_from: str | Path | None = None,
          init_model: Any = None, plan: Any = None) -> AnyModel:
    """Train the model ``config.task`` names to the end and return the best model.

    :func:`fit` without its reports: the same run, for a script that does not watch it.

    Parameters
    ----------
    images, labels, config, spacing, channel_axis, stop, resume_from, init_model, plan
        As :func:`fit`.

    Returns
    -------
    Model, Classifier, InstanceModel, ReconstructionModel or EnsembleModel (the task's)

    Raises
    ------
    ConfigError, InputError
        As :func:`fit`.
    """
    from napari_medml.engine.fit import run_to_end

    return run_to_end(fit(images, labels, config, spacing=spacing, channel_axis=channel_axis, stop=stop,
                          resume_from=resume_from, init_model=init_model, plan=plan))


def load_model(path: str | Path) -> AnyModel:
    """Load a bundle folder of any task (never unpickles).

    Parameters
    ----------
    path : str or Path
        A folder written by ``save`` (``config.json`` + ``weights.safetensors``).

    Returns
    -------
    Model, Classifier, InstanceModel, ReconstructionModel or EnsembleModel
        The model of the ``task`` in ``config.json`` (segmentation, classification,
        instances, pretraining, ensemble; schema-1 bundles too), each built from its
        frozen spec (``bundles.spec``).

    Raises
    ------
    BundleError
        A missing or damaged bundle, or one of a task this version does not know.
    """
    from napari_medml.bundles.format import read_description

    path = Path(path).expanduser()
    task = read_description(path).get("task", "segmentation")
    if task not in TASKS:
        raise BundleError(f"{path} holds a {task!r} model, which this napari-medml cannot load: update it")
    return _resolve(TASKS[task].load)(path)


def evaluate(prediction: Any, truth: Any, *, spacing: Any = None, level: str = "classes",
             names: tuple[str, str] = ("prediction", "labels"), frames_axis: int | None = None,
             progress: Any = None) -> dict[str, Any]:
    """Score a segmentation against ground truth: the report ``napari-medml evaluate`` prints.

    Parameters
    ----------
    prediction, truth : np.ndarray
        Integer labels of one shape, (Y, X) or (Z, Y, X); with ``frames_axis``, (T, Y, X) or
        (T, Z, Y, X).
    spacing : sequence of float, optional
        Voxel size per axis (mm or µm), for HD95; default 1 per axis.
    level : {"classes", "binary", "instances"}
        classes: per-class Dice, IoU and HD95 and their means (``segmentation.metrics.evaluate``);
        binary: every nonzero id against background; instances: one-to-one IoU matching
        with precision, recall, F1 and the DSB 2018 AP at IoU 0.5 to 0.9
        (``instances.metrics.instance_scores``). A classifier's predictions are scored with
        :func:`napari_medml.classification_report` (confusion matrix, ROC curves, AUC).
    names : tuple of str
        What to call the prediction and the ground truth in the report and its notes.
    frames_axis : int, optional
        The time axis of a time series (T, Y, X) or (T, Z, Y, X): HD95 frame by frame, the
        worst frame's (classes and binary; instances of a time series are refused).
    progress : callable, optional
        Classes and binary: ``progress(done, total)`` before each class's HD95 (per frame of a
        time series), the slow part; what it raises (e.g. ``Cancelled``) ends the scoring.

    Returns
    -------
    dict
        JSON-ready, with ``"notes"``: lines that say what the numbers hide (a class missing
        from one side, ids that look like instances; for instances, ids that each cover many
        separate objects, ``instances.notes``).

    Raises
    ------
    InputError
        Shapes that differ, arrays of other than 2 or 3 axes, ids that are not whole
        numbers >= 0, a bad spacing, a list of images (one pair per call).
    ValueError
        An unknown ``level``.
    """
    import numpy as np

    from napari_medml.errors import InputError
    from napari_medml.segmentation.metrics import check_pair

    if level not in ("classes", "binary", "instances"):
        raise ValueError(f"level must be classes, binary or instances, got {level!r}" + (
            ": a classifier's predictions are scored with napari_medml.classification_report(true_classes, "
            "probabilities, class_ids) (confusion matrix, ROC curves, AUC)" if "class" in str(level) else ""))
    head = {"prediction": names[0], "labels": names[1]}
    for name, given in zip(names, (prediction, truth)):
        if isinstance(given, (list, tuple)):  # np.asarray made one volume of the pairs, or raised its own error
            raise InputError(f"{name} is a {type(given).__name__} of {len(given)}: evaluate scores one prediction "
                             "against its labels; call it once for each pair, [evaluate(p, t) for p, t in "
                             "zip(predictions, truths)]")
    prediction, truth = check_pair(np.asarray(prediction), np.asarray(truth))
    if prediction.ndim - (frames_axis is not None) not in (2, 3):  # a (T, Z, Y, X) series scores as the CLI's
        raise InputError(f"{names[0]} has {prediction.ndim} axes: give a 2D image (Y, X) or a 3D volume (Z, Y, X), "
                         "or a time series of them with frames_axis; score one channel at a time")
    for name, array in zip(names, (prediction, truth)):
        if array.dtype != bool and array.size and array.min() < 0:
            raise InputError(f"{name} has negative ids ({int(array.min())}): ids are 0 (background) and up")
    if spacing is not None and np.ndim(spacing) != 1:
        raise InputError(f"spacing {spacing!r}: give one voxel size per axis, e.g. {(1.0,) * prediction.ndim}")
    if level == "instances":
        from napari_medml.instances.metrics import instance_scores

        if frames_axis is not None:
            raise InputError(f"{names[1]} is a time series: objects are matched within one image, so score "
                             "its frames one at a time")

        from napari_medml.instances.notes import merged_objects_notes

        notes = merged_objects_notes(truth, prediction, f"labels '{names[1]}'", f"prediction '{names[0]}'",
                                     "score classes: level='classes' (Evaluate: score as 'classes')")
        return {**head, **instance_scores(truth, prediction).summary(), "notes": notes}
    from napari_medml.segmentation.metrics import evaluate as evaluate_classes, evaluation_notes

    result = evaluate_classes(prediction, truth, spacing=spacing, binary=level == "binary", frames_axis=frames_axis,
                               progress=progress)
    notes = evaluation_notes(result, f"prediction '{names[0]}'", f"labels '{names[1]}'",
                             "level='binary' (Evaluate: score as 'foreground vs background')",
                             "level='instances' (Evaluate: score as 'instances')")
    return {**head, **result, "notes": notes}
