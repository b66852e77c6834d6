"""One round of the correct-and-retrain loop on an image as napari holds it.

The Predict widget's *Fine-tune and predict again* runs :func:`correction_round`; a
script can run the same round on arrays.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from napari_medml.errors import Cancelled
from napari_medml.segmentation.corrections import (
    LabelledSample, correction_samples, keep_edits, retrain_on_corrections, reviewed_voxels,
)

__all__ = ["RoundResult", "correction_round"]


@dataclass(frozen=True)
class RoundResult:
    """What one round gives back.

    Attributes
    ----------
    model : Model or EnsembleModel
        The fine-tuned model (``provenance["finetuned"]`` says what it learned from; after a
        Stop, the model as tuned so far, with ``"stopped": True``).
    prediction : Prediction or None
        The image predicted again; its labels keep the user's edits
        (:func:`~napari_medml.segmentation.corrections.keep_edits`). None when the round was
        stopped: the tuned model is kept, nothing is predicted.
    as_predicted : np.ndarray or None
        A copy of the new labels as shown: what the next round's edits are measured against
        (None with ``prediction``).
    edited : np.ndarray of bool
        Every voxel the user has edited in this and earlier rounds: the next round keeps
        them all, whether or not a network agreed with them in between.
    learned : list of LabelledSample
        This round's reviewed voxels, for the next round to learn again.
    kept_edits : int
        Voxels where the new labels are the user's value and the network's answer differs.
    """

    model: Any
    prediction: Any
    as_predicted: np.ndarray | None
    edited: np.ndarray
    learned: list[LabelledSample]
    kept_edits: int


def correction_round(model: Any, image: Any, corrected: np.ndarray, predicted: np.ndarray, steps: int, *,
                     axes: str, spacing: Sequence[float], affine: Any = None, plane: Sequence[int] | None = None,
                     edited: np.ndarray | None = None,
                     replay: Sequence[LabelledSample] = (), augment: Any = None, infer: Any = None,
                     stop: Any = None, name: str = "the image", hint: str = "",
                     progress: Any = None) -> Generator[Any, None, RoundResult]:
    """Fine-tune ``model`` on the edits in ``corrected``, then predict ``image`` again.

    Parameters
    ----------
    model : Model or EnsembleModel
    image : np.ndarray
        In napari axis order, named by ``axes`` (``io.Volume.axes``: channels, time, Z, Y, X).
    corrected, predicted : np.ndarray
        The labels layer after the user's edits and as it was shown before them (the
        network's answer with earlier rounds' edits kept): the image's shape without channels.
    steps : int
        Fine-tuning steps.
    axes : str
    spacing : sequence of float
        Voxel size of the image's axes other than channels (mm or µm).
    affine : array-like, optional
        The image's voxel-to-world affine (NIfTI order): the round learns in the
        orientation the model was trained in.
    plane : sequence of int, optional
        The labels' axes the user painted in (the two on screen); default the last two.
    edited : np.ndarray of bool, optional
        The voxels edited in earlier rounds (``RoundResult.edited``).
    replay : sequence of LabelledSample
        The model's training data and earlier rounds' corrections.
    augment, infer, stop
        The augmentation (None: the model's), the InferConfig, a StopToken.
    name, hint : str
        How messages name the image, and the way to state its axes.
    progress : callable, optional
        ``progress(done, total)`` over the windows of the prediction after the steps (the steps
        are the yielded reports; trial 44: the bar sat at the last step while the volume was
        predicted again).

    Yields
    ------
    TrainReport

    Returns
    -------
    RoundResult
        A Stop keeps the model tuned so far and predicts nothing, or no more
        (``prediction`` None).

    Raises
    ------
    InputError
        No edit, or class ids the model does not have (see ``retrain_on_corrections``).
    """
    from napari_medml.io.axes_resolve import split_samples
    from napari_medml.segmentation.prediction import in_model_orientation, predict_oriented

    corrected, predicted = np.asarray(corrected), np.asarray(predicted)
    reviewed = reviewed_voxels(corrected, predicted, axes=plane)  # in the layer, where it was painted
    # learned in the orientation the model was trained in
    (oriented, target, before, mask), grid = in_model_orientation(
        model, [image, corrected, predicted, reviewed], spacing, affine)
    dims = model.spatial_dims

    def samples(labels: np.ndarray) -> tuple[list, list, list, int | None]:
        return split_samples(oriented, labels, axes, dims, grid, what=name, hint=hint)

    images, targets, spacings, channel_axis = samples(target)
    befores, masks = samples(before)[1], samples(mask)[1]
    tuned = yield from retrain_on_corrections(model, images, targets, steps, predicted=befores, reviewed=masks,
                                              replay=replay, spacing=spacings, channel_axis=channel_axis,
                                              augment=augment, stop=stop)
    edited = corrected != predicted if edited is None else (corrected != predicted) | edited
    learned = correction_samples(images, targets, befores, spacings, channel_axis, reviewed=masks)
    if stop is not None and stop.stopped:  # stopped during the steps: what was learned is kept, unpredicted
        return RoundResult(tuned, None, None, edited, learned, 0)
    try:
        prediction = predict_oriented(tuned, image, spacing=spacing, affine=affine, axes=axes, config=infer,
                                      stop=stop, name=name, progress=progress)
    except Cancelled:  # stopped while it predicted: the tuned model is kept all the same (review 32)
        return RoundResult(tuned, None, None, edited, learned, 0)
    network = np.asarray(prediction.labels)
    labels = keep_edits(network, corrected, edited)  # a new array: the layer's, painted in place
    kept = int(np.count_nonzero(labels != network))
    return RoundResult(tuned, replace(prediction, labels=labels), labels.copy(), edited, learned, kept)
