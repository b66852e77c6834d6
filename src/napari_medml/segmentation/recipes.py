"""The training preprocessing recipe applied to images and carried to their labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# the pretraining task resamples mixed voxel sizes too: below the task packages, re-exported here
from napari_medml.preprocessing.target_spacing import SPACING_TOLERANCE, common_spacing

__all__ = ["SPACING_TOLERANCE", "apply_preprocessing", "common_spacing", "labels_to_recipe_grid",
           "record_preprocessing", "restored_argmax"]


def apply_preprocessing(image: np.ndarray, spacing: Sequence[float] | None, steps: Sequence[Any]
                        ) -> tuple[np.ndarray, tuple[float, ...] | None, Any]:
    """Run the recipe on each channel of ``(C, *spatial)``.

    Parameters
    ----------
    image : np.ndarray
        ``(C, *spatial)``.
    spacing : sequence of float or None
        Voxel size of the spatial axes (None: 1 each).
    steps : sequence of preprocessing steps
        ``DataConfig.preprocessing``.

    Returns
    -------
    image : np.ndarray
        float32 ``(C, *new spatial)``.
    spacing : tuple of float or None
        The new voxel size.
    result : RecipeResult or None
        The first channel's (``preprocessing.recipe``; None without a recipe), whose
        ``restore`` maps arrays back to the input grid.
    """
    from napari_medml.preprocessing.inputs import run_recipe_channels

    return run_recipe_channels(image, spacing, steps)


def labels_to_recipe_grid(labels: np.ndarray, result: Any) -> np.ndarray:
    """Carry a label map through a recipe's crops and resamplings (nearest neighbour).

    Parameters
    ----------
    labels : np.ndarray
        ``(*spatial)`` on the grid of the image the recipe ran on.
    result : RecipeResult or None
        What :func:`apply_preprocessing` returned third (None: no recipe).

    Returns
    -------
    np.ndarray
        The labels on the recipe's output grid (``result.image.shape``), contiguous.
    """
    if result is None:
        return labels
    from scipy import ndimage

    out = labels
    records = list(result.geometry)
    for i, record in enumerate(records):
        if record[0] == "crop":
            out = out[record[2]]
        else:
            after = records[i + 1][1] if i + 1 < len(records) else result.image.shape
            out = ndimage.zoom(out, [a / b for a, b in zip(after, out.shape)], order=0, mode="nearest",
                               grid_mode=True)
    if out.shape != result.image.shape:
        out = _resize(out, result.image.shape, order=0)
    return np.ascontiguousarray(out)


def _resize(arr: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    from skimage.transform import resize

    return resize(arr, tuple(shape), order=order, preserve_range=True, anti_aliasing=False,
                  mode="edge").astype(arr.dtype)



def record_preprocessing(model: Any, steps: Sequence[Any]) -> Any:
    """Record ``steps`` as the recipe that made the model's training images from raw ones.

    For a model trained on an image already preprocessed (a preprocessed layer as shown,
    with labels painted on its grid): it now re-applies the recipe to every raw image it
    predicts, exactly as a model trained on the raw image with the recipe does.

    Parameters
    ----------
    model : Model
        A segmentation model trained without a recipe of its own; changed in place.
    steps : sequence of PreprocessStep
        The recipe.

    Returns
    -------
    Model
        ``model``.
    """
    from dataclasses import replace

    model.config = replace(model.config, data=replace(model.config.data, preprocessing=tuple(steps)))
    return model


def restored_argmax(probs: Any, recipe: Any, keep: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels (channel indices, uint8) on the input grid: each class's probabilities
    ``(K, *recipe output spatial)`` are restored to the input grid linearly, then the argmax
    is taken there, as nnU-Net does, rather than nearest-neighbour labels from the coarse grid
    (blocky, and unlike the argmax of the probabilities returned). One class at a time, so
    that only two float32 volumes of the input grid are held besides the kept probabilities.

    Parameters
    ----------
    probs : torch.Tensor
        ``(K, *output spatial)`` class probabilities on the recipe's grid (any device).
    recipe : RecipeResult
        The recipe's result for the image (``preprocessing.recipe``), with its geometry.
    keep : bool
        Also return the restored probabilities.

    Returns
    -------
    labels : np.ndarray
        uint8 ``(*input spatial)`` channel indices (not yet class ids).
    probabilities : np.ndarray or None
        float16 ``(K, *input spatial)`` when ``keep`` (outside a crop the background is
        certain: its channel is 1 there).
    """
    best = labels = None
    kept = []
    for k in range(probs.shape[0]):
        channel = recipe.restore(probs[k].float().cpu().numpy(), order=1, fill=1.0 if k == 0 else 0.0)
        if best is None:
            best, labels = channel, np.zeros(channel.shape, np.uint8)
        else:
            higher = channel > best
            labels[higher] = k
            np.maximum(best, channel, out=best)
        if keep:
            kept.append(channel.astype(np.float16))
    return labels, (np.stack(kept) if keep else None)
