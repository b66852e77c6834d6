"""What a segmentation model's prediction returns, and one such result made of those of
the slices or frames of a stack."""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["Prediction", "background_note", "check_orientation", "in_model_orientation", "model_intensity_note",
           "predict_oriented", "stack_predictions", "takes_samples"]


@dataclass(frozen=True)
class Prediction:
    """What ``Model.predict`` returns.

    Attributes
    ----------
    labels : np.ndarray
        Integer label map of the input's spatial shape with the original class ids.
    probabilities : np.ndarray or None
        float16 ``(K, *spatial)``, channel k = ``class_ids[k]`` (only when asked).
    uncertainty : np.ndarray or None
        float32 entropy of the mean probabilities (only when asked).
    class_ids : tuple of int
        ``class_ids[0] == 0`` (background).
    instances : np.ndarray or None
        uint32 instance ids when ``InferConfig.instances`` is not "none".
    """

    labels: np.ndarray
    probabilities: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    class_ids: tuple[int, ...] = ()
    instances: np.ndarray | None = None


def stack_predictions(parts: list[Prediction], lead: tuple[int, ...], class_ids: tuple[int, ...]) -> Prediction:
    """One Prediction from those of each slice/frame.

    Parameters
    ----------
    parts : list of Prediction
        One per index of the leading axes, in ``np.ndindex(*lead)`` order.
    lead : tuple of int
        Shape of the leading (slice/frame) axes.
    class_ids : tuple of int

    Returns
    -------
    Prediction
        Arrays of shape ``(*lead, *spatial)`` (probabilities ``(K, *lead, *spatial)``);
        instance ids shifted to stay unique across the parts.
    """
    def stack(arrays: list[Any], axis: int = 0) -> Any:
        if arrays[0] is None:
            return None
        out = np.stack(arrays, axis=axis)
        return out.reshape(out.shape[:axis] + lead + out.shape[axis + 1:])

    instances = None
    if parts[0].instances is not None:  # keep ids unique across slices/frames
        offset, shifted = 0, []
        for part in parts:
            ids = part.instances.astype(np.uint32)
            shifted.append(np.where(ids > 0, ids + offset, 0).astype(np.uint32))
            offset += int(ids.max(initial=0))
        instances = stack(shifted)
    return Prediction(labels=stack([p.labels for p in parts]),
                      probabilities=stack([p.probabilities for p in parts], axis=1),
                      uncertainty=stack([p.uncertainty for p in parts]), class_ids=class_ids,
                      instances=instances)  # fmt: skip


def predict_oriented(model: Any, image: Any, *, spacing: Any, affine: Any, axes: str | None = None,
                     config: Any = None, progress: Any = None, stop: Any = None, name: str = "the image",
                     notes: Callable[[str], None] | None = None) -> Prediction:
    """``model.predict`` with the image put in the orientation the model was trained in
    (``model.provenance["orientation"]``, e.g. ``"LAS"``), and every output put back on
    the image's own grid: a network sees anatomy the way it learned it, whichever way a
    NIfTI file (or a napari layer read from one) stores it.

    Parameters
    ----------
    model : Model or EnsembleModel
    image : np.ndarray
        ``(..., Z, Y, X)``, its axes named by ``axes`` as for ``Model.predict``.
    spacing : sequence of float
        Voxel size of the spatial axes (napari order); the last ``model.spatial_dims``
        are the model's.
    affine : array-like or None
        The image's voxel-to-world affine in NIfTI order (a napari layer's
        ``metadata["affine"]``); None (TIFF, NumPy): nothing is reoriented.
    axes, config, progress, stop
        As for ``Model.predict``.
    name : str
        How the notes name the image (``"image 'ct.nii.gz'"``).
    notes : callable, optional
        Called, before the prediction starts, with one line each when the image is
        reoriented, when its voxel size is far from the model's training spacing, and
        when its intensities are far from the training images'
        (``preprocessing.normalization.intensity_note``); after it, with one line when
        nothing but background was found (:func:`background_note`).

    Returns
    -------
    Prediction
        On the image's grid.
    """
    from dataclasses import replace

    from napari_medml.io.spacing import spacing_note
    from napari_medml.io.orientation import orient_array

    dims = model.spatial_dims
    spacing = tuple(float(s) for s in spacing)
    oriented = orient_array(image, spacing[-dims:], affine, model.provenance.get("orientation"))
    # the recipe's resample (if any) sets the voxel size the network sees: compare after it
    recipe = getattr(getattr(getattr(model, "config", None), "data", None), "preprocessing", ())
    # the note names the image as the other notes do (a widget user may have several open)
    note = oriented.note
    if note and note.startswith("image "):
        note = name + note[len("image"):]
    lines = [note, spacing_note(oriented.spacing, model.spacing, name, recipe=recipe)]
    if notes is not None:
        lines.append(model_intensity_note(model, oriented.data, axes, name))
    for line in lines:
        if line and notes is not None:
            notes(line)
    pred = model.predict(oriented.data, spacing=spacing[:-dims] + oriented.spacing, axes=axes, config=config,
                         progress=progress, stop=stop)
    back = {k: oriented.back(getattr(pred, k)) for k in ("labels", "probabilities", "uncertainty", "instances")
            if getattr(pred, k) is not None}
    min_size = int(getattr(config, "min_size", 0) or 0)  # review 49: the objects may be the post-processing's
    empty = background_note(pred.labels, pred.class_ids or model.class_ids, name, min_size)
    if empty and notes is not None:
        notes(empty)
    return replace(pred, **back)


def background_note(labels: Any, class_ids: Any, name: str = "the image", min_size: int = 0) -> str | None:
    """One line when a prediction holds background only, else None: an empty result is
    otherwise written and shown like any other, without a word.

    Parameters
    ----------
    labels : np.ndarray or dask.array.Array
        A prediction's label map (any shape), background ``class_ids[0]``; a dask array
        (block-wise results) is read chunk by chunk.
    class_ids : sequence of int
        The model's classes, background first.
    name : str
        How the line names the image.
    min_size : int
        The post-processing's least object size (voxels), which may have removed what was found.

    Returns
    -------
    str or None
    """
    ids = tuple(int(c) for c in class_ids)
    if len(ids) < 2 or math.prod(labels.shape) == 0:
        return None
    if hasattr(labels, "compute"):
        import dask

        low, high = dask.compute(labels.min(), labels.max())
    else:  # reductions, not a comparison: no second volume in memory
        low, high = np.min(labels), np.max(labels)
    if not int(low) == int(high) == ids[0]:
        return None
    others = f"class {ids[1]}" if len(ids) == 2 else f"any of classes {', '.join(map(str, ids[1:]))}"
    if min_size:
        return (f"{name}: background only (class {ids[0]}) is left, not {others}, after objects under {min_size} "
                "voxels were removed (min size): lower it to see what the model found")
    return (f"{name}: the model found background only (class {ids[0]}), not {others}: check that the image "
            "looks like the training images (its channel, intensity range and voxel size), or label some of it "
            "and train again")


def in_model_orientation(model: Any, arrays: list, spacing: Any, affine: Any) -> tuple[list, tuple[float, ...]]:
    """Arrays of one grid (an image and its labels) put in the orientation ``model`` was trained
    in (``model.provenance["orientation"]``), e.g. to fine-tune it on corrections.

    Parameters
    ----------
    model : Model or EnsembleModel
    arrays : list of np.ndarray
        Each ``(..., Z, Y, X)``: the last ``model.spatial_dims`` axes are the grid's.
    spacing : sequence of float
        Voxel size of the spatial axes (napari order); the last ``model.spatial_dims`` are the grid's.
    affine : array-like or None
        The grid's voxel-to-world affine, NIfTI order; None: nothing moves.

    Returns
    -------
    (list of np.ndarray, tuple of float)
        The arrays and the spacing in the model's orientation.
    """
    from napari_medml.io.orientation import orient_array

    dims, codes = model.spatial_dims, model.provenance.get("orientation")
    spacing = tuple(float(s) for s in spacing)
    oriented = [orient_array(a, spacing[-dims:], affine, codes) for a in arrays]
    return [o.data for o in oriented], spacing[:-dims] + oriented[0].spacing


def check_orientation(model: Any, affine: Any, name: str, fix: str) -> None:
    """Refuse an image stored in another orientation than the one ``model`` was trained in,
    for the paths that predict on the stored grid (block-wise prediction into a Zarr store;
    instance models, whose maps are kept for re-running the post-processing).

    Parameters
    ----------
    model : object with ``provenance`` and ``spatial_dims``
    affine : array-like or None
        The image's voxel-to-world affine, NIfTI order; None: nothing to check.
    name : str
        The image or layer, for the message (``"image 'ct.nii.gz'"``).
    fix : str
        What to do instead, the end of the message.

    Raises
    ------
    InputError
        ``"<name> is stored in orientation LPS but the model was trained in RAS: <fix>"``.
    """
    from napari_medml.errors import InputError
    from napari_medml.io.geometry import axis_codes
    from napari_medml.io.orientation import cut_affine

    codes = model.provenance.get("orientation")
    if not codes or affine is None or len(codes) != model.spatial_dims:
        return
    here = axis_codes(cut_affine(affine, model.spatial_dims))
    if here != codes:
        raise InputError(f"{name} is stored in orientation {here} but the model was trained in {codes}: {fix}")


def model_intensity_note(model: Any, image: Any, axes: str | None, name: str) -> str | None:
    """:func:`~napari_medml.preprocessing.normalization.intensity_note` for ``model`` (a model or
    an ensemble: its first member's statistics) and ``image`` with axes ``axes``.

    Returns
    -------
    str or None
        One line when the image's intensities are far from the training images'.
    """
    from napari_medml.preprocessing.normalization import intensity_note

    first = (getattr(model, "members", None) or [model])[0]
    stats = getattr(first, "normalization", None)
    if not stats or not hasattr(first, "_layout"):
        return None
    channel_axis, _ = first._layout(image, None, axes)
    recipe = getattr(getattr(getattr(first, "config", None), "data", None), "preprocessing", ())
    return intensity_note(image, channel_axis, stats, name, recipe)


def takes_samples(model: Any, data: Any, axes: str | None) -> bool:
    """Whether ``model`` takes ``data`` (axes named by ``axes``) as several samples, one at a time
    (a 2D model on a volume, a time series): block-wise prediction takes one image.

    Parameters
    ----------
    model : Model or InstanceModel
    data : array-like
        The image, a NumPy, dask or zarr array.
    axes : str or None
        One letter per axis of ``data`` (``io.Volume.axes``).
    """
    return bool(model._layout(data, None, axes)[1])
