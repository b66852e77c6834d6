"""A recipe on a whole image with channels and frames, the way training replays it.

Recipe operations take one single-channel spatial image, ``(Y, X)`` or ``(Z, Y, X)``
(:mod:`napari_medml.preprocessing.recipe`). Training and prediction cut an image into
samples (one per time frame, ``io.axes_resolve.split_samples``) and run the recipe on each
channel of each (``inputs.run_recipe_channels``). :func:`run_recipe_volume` does the
same on a :class:`~napari_medml.io.Volume`, so what the Preprocess widget shows is what
a model trained on it sees: each channel (an RGB colour too) and each frame on its own,
the result keeping the input's axes, with the spatial axes' spacing and origin updated.

Plain NumPy; no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from napari_medml.errors import InputError, raise_if_stopped
from napari_medml.io import Volume
from napari_medml.io.axes import AXES_HINT
from napari_medml.io.orientation import STORED_ORIENTATION
from napari_medml.io.regrid import AFFINE_ORIGIN, PLACEMENT_META, regridded_affine, view_anchor

__all__ = ["RecipeAxes", "check_steps", "crop_volume_to_labels", "plane_at", "recipe_axes", "run_recipe_volume"]

_PART_NAMES = {"T": "frames", "C": "channels", "Q": "planes"}


class RecipeAxes(NamedTuple):
    """Which axes of a volume a recipe runs over and which it runs along."""

    spatial: tuple[int, ...]  # the axes one recipe call sees (Z, Y, X), in order
    loop: tuple[int, ...]  # taken one index at a time: time, channels (an RGB colour axis too)
    spacing: tuple[float, ...]  # of the spatial axes

    def parts(self, axes: str) -> str:
        """How a message calls the pieces (``"channels"``, ``"frames and channels"``)."""
        names = dict.fromkeys(_PART_NAMES.get(axes[i], "planes") for i in self.loop)
        return " and ".join(names) or "image"


def recipe_axes(volume: Volume) -> RecipeAxes:
    """The spatial axes a recipe sees in ``volume`` and the axes it is repeated along.

    Z, Y and X are spatial; time and channel axes (an RGB colour axis included) are
    taken one index at a time, as training does. One unnamed axis (``Q``) next to Y
    and X is taken as Z, as a model does with a plain stack.

    Parameters
    ----------
    volume : Volume
        Its ``axes`` and ``spacing`` are read.

    Returns
    -------
    RecipeAxes

    Raises
    ------
    InputError
        Several unnamed axes (which is time, which channels, is not known).
    """
    body = volume.axes[: len(volume.spacing)]  # an RGB colour axis has no spacing
    unnamed = body.count("Q")
    if unnamed > 1 or (unnamed and "Z" in body):
        raise InputError(f"'{volume.name or 'image'}' has axes {volume.axes}: which are time, channels or Z is not "
                         f"known, so a recipe cannot be run per channel and frame; {AXES_HINT}")
    spatial = tuple(i for i, a in enumerate(body) if a in "ZYXQ")
    loop = tuple(i for i in range(len(volume.axes)) if i not in spatial)
    return RecipeAxes(spatial, loop, tuple(float(volume.spacing[i]) for i in spatial))


def check_steps(volume: Volume, steps: Sequence[Any]) -> None:
    """Refuse a resample target that does not fit the volume, with the fix, before any work
    (a front calls it on the GUI thread: the job's first import of MONAI takes seconds).

    Parameters
    ----------
    volume : Volume
        The image the recipe will run on (its axes and spacing).
    steps : sequence of PreprocessStep

    Raises
    ------
    InputError
        Unknown axes (:func:`recipe_axes`), or a target spacing of another length than the
        spatial axes, or one that is not above 0 on every axis.
    """
    _check_steps(volume, recipe_axes(volume), steps)


def _check_steps(volume: Volume, layout: RecipeAxes, steps: Sequence[Any]) -> None:
    """Refuse a resample target whose length is not the number of spatial axes, or whose
    sizes are not above 0, with the fix."""
    body = volume.axes[: len(volume.spacing)]
    n = len(layout.spatial)
    for step in steps:
        target = dict(getattr(step, "params", {}) or {}).get("target_spacing")
        if getattr(step, "operation", None) != "resample" or target is None:
            continue
        if not all(np.isfinite(float(t)) and float(t) > 0 for t in target):
            example = ", ".join(f"{s:g}" for s in layout.spacing)
            raise InputError(f"resample: target spacing {tuple(target)} must be above 0 on every axis, e.g. "
                             f"'{example}' (the spacing of '{volume.name or 'image'}' now)")
        if len(target) == n:
            continue
        letters = ", ".join(body[i].lower().replace("q", "z") for i in layout.spatial)
        others = (f"; its {layout.parts(volume.axes)} are processed one by one" if layout.loop else "")
        example = ", ".join(f"{s:g}" for s in layout.spacing)
        raise InputError(f"resample: target spacing {tuple(target)} has {len(target)} values but "
                         f"'{volume.name or 'image'}' has {n} spatial axes ({letters}){others}: give {n} values, "
                         f"e.g. '{example}' (its spacing now)")


def run_recipe_volume(volume: Volume, steps: Sequence[Any], *, stop: Any = None,
                      progress: Callable[[int, int], None] | None = None) -> Volume:
    """Run a recipe on each channel and frame of ``volume``, as training replays it.

    Parameters
    ----------
    volume : Volume
        Any axes (``"YX"``, ``"ZYX"``, ``"TYX"``, ``"CZYX"``, RGB ``"YXC"``, ...); lazy
        (dask/zarr) data are read here.
    steps : sequence of PreprocessStep
        The recipe; every step acts on the spatial axes (see :func:`recipe_axes`).
    stop : StopToken, optional
        Checked before each channel or frame, between the slabs of a large one's median or
        Gaussian (about 2 s each for a median of 7), and at the end; once tripped, the run ends with
        :class:`~napari_medml.errors.Cancelled` (another step under way finishes first).
    progress : callable, optional
        ``progress(done, total)`` after each channel or frame (or slab).

    Returns
    -------
    Volume
        A new array with the input's axes; the spatial axes' spacing and origin are those
        after the recipe (the time and channel axes keep theirs); the affine of the new grid
        (``io.regrid``) and the input's unit and NIfTI details, so it saves where it lies.

    Raises
    ------
    InputError
        Unknown axes, a resample target of the wrong length, or a threshold crop that
        finds another box in another channel or frame (naming the volume and the fix).
    Cancelled
        When ``stop`` was tripped.
    """

    layout = recipe_axes(volume)
    _check_steps(volume, layout, steps)
    image = np.asarray(volume.data)
    moved = np.moveaxis(image, layout.loop, range(len(layout.loop)))
    lead = moved.shape[: len(layout.loop)]
    indices = list(np.ndindex(*lead))
    def one(k: int) -> Any:
        raise_if_stopped(stop)
        try:
            result = _run_part(moved[indices[k]], layout.spacing, tuple(steps), stop, None if progress is None else (
                lambda done, total: progress(k * total + done, len(indices) * total)))
        except InputError as exc:  # which frame or channel (review 46: "its largest value" was one frame's)
            if len(indices) == 1:
                raise
            raise type(exc)(f"{k + 1} of the {len(indices)} {layout.parts(volume.axes)}: {exc}") from None
        return result

    first = one(0)  # its size checked by the steps
    if len(indices) > 1:  # all of the channels and frames together, before they are made
        from napari_medml.io.memory import memory_budget, size_text

        total, budget = first.image.nbytes * len(indices), memory_budget()
        if total > budget:
            raise InputError(f"the recipe makes {size_text(first.image.nbytes)} of each of the {len(indices)} "
                             f"{layout.parts(volume.axes)} of '{volume.name or 'image'}', {size_text(total)} in all, "
                             f"more than the {size_text(budget)} this machine can spare: resample to a coarser "
                             "spacing, or crop first")
    results = [first] + [one(k) for k in range(1, len(indices))]
    raise_if_stopped(stop)  # a one-volume step cannot be interrupted: its result is dropped
    for result in results[1:]:
        if result.image.shape != first.image.shape or result.geometry != first.geometry:
            raise InputError(
                f"the crop to a threshold finds another box in each of the {layout.parts(volume.axes)} of "
                f"'{volume.name or 'image'}' ({first.image.shape} and {result.image.shape}), so they no longer "
                "line up: crop to a labels layer instead (one box for all of them)")
    out = np.stack([r.image for r in results]).reshape(lead + first.image.shape)
    out = np.moveaxis(out, range(len(layout.loop)), layout.loop)
    spacing, origin = list(volume.spacing), list(volume.origin)
    for k, axis in enumerate(layout.spatial):
        if first.spacing is not None:
            spacing[axis] = float(first.spacing[k])
        origin[axis] = float(origin[axis]) + float(first.shift[k])
    return _like(volume, out, spacing, origin, layout.spatial)


def _run_part(image: np.ndarray, spacing: tuple[float, ...], steps: tuple[Any, ...], stop: Any,
              progress: Callable[[int, int], None] | None) -> Any:
    """The recipe on one channel of one frame; a lone local filter (median, Gaussian) of a
    large one runs slab by slab, so a stop ends it within a slab (``slabs``)."""
    from napari_medml.preprocessing.recipe import RecipeResult, run_recipe
    from napari_medml.preprocessing.slabs import filter_reach, run_in_slabs

    reach = filter_reach(steps[0], spacing, image.ndim) if len(steps) == 1 and image.ndim in (2, 3) else None
    if reach is None:
        result = run_recipe(image, spacing, steps)
        if progress is not None:
            progress(1, 1)
        return result
    out = run_in_slabs(image, lambda piece: run_recipe(piece, spacing, steps).image, reach, stop=stop,
                       progress=progress)
    return RecipeResult(out, tuple(float(s) for s in spacing), (0.0,) * image.ndim)


def crop_volume_to_labels(volume: Volume, labels: Any, margin: int | Sequence[int] = 0,
                          labels_name: str = "labels") -> tuple[Volume, Volume]:
    """Crop an image and its labels to the labels' bounding box (plus ``margin`` voxels)
    along the spatial axes; every channel and frame is kept and gets the same box.

    Parameters
    ----------
    volume : Volume
        The image, any axes (see :func:`recipe_axes`).
    labels : array
        Label ids of the image's shape without its channel axes (one box over all frames), or
        with them (:func:`~napari_medml.io.axes_resolve.labels_over_channels`).
    margin : int or sequence of int
        Voxels added around the box, one for all spatial axes or one each.
    labels_name : str
        How messages call the labels.

    Returns
    -------
    (Volume, Volume)
        The cropped image (the input's axes) and the cropped labels (its axes without
        channels), both with the origin (and the affine) moved to the box.

    Raises
    ------
    InputError
        Labels of another shape, empty labels, or a bad margin.
    """
    from napari_medml.io.axes_resolve import labels_over_channels
    from napari_medml.preprocessing.ops import crop_to_mask

    layout = recipe_axes(volume)
    name = volume.name or "image"
    body = volume.axes[: len(volume.spacing)]
    label_axes = [i for i, a in enumerate(body) if a != "C"]
    expected = tuple(volume.data.shape[i] for i in label_axes)
    labels = np.asarray(labels_over_channels(labels, volume.data.shape, volume.axes, what=f"image '{name}'",
                                             labels_what=f"labels '{labels_name}'")[0])  # napari's new labels: CZYX
    if labels.shape != expected:
        raise InputError(f"labels '{labels_name}' have shape {labels.shape} but image '{name}' (axes {volume.axes}) "
                         f"has {expected} without channels: choose labels drawn on that image")
    spatial_in_labels = tuple(label_axes.index(i) for i in layout.spatial)
    others = tuple(k for k in range(labels.ndim) if k not in spatial_in_labels)
    mask = np.any(labels != 0, axis=others) if others else labels != 0
    if not mask.any():
        raise InputError(f"labels '{labels_name}' are empty: paint the region to crop to, or use 'crop to "
                         "threshold'")
    boxed, offset = crop_to_mask(mask, mask, margin)  # validates the margin too
    box = tuple(slice(o, o + n) for o, n in zip(offset, boxed.shape))
    where: list[Any] = [slice(None)] * volume.data.ndim
    for axis, region in zip(layout.spatial, box):
        where[axis] = region
    image = np.array(np.asarray(volume.data)[tuple(where)], copy=True)
    cropped_labels = np.array(labels[tuple(where[i] for i in label_axes)], copy=True)
    origin = list(volume.origin)
    for axis, start in zip(layout.spatial, offset):
        origin[axis] = float(origin[axis]) + start * float(volume.spacing[axis])
    spacing = list(volume.spacing)
    image_out = _like(volume, image, spacing, origin, layout.spatial)
    labels_meta = {k: v for k, v in image_out.meta.items() if k != "rgb"}  # on the image's grid, as it saves
    labels_out = Volume(cropped_labels, tuple(spacing[i] for i in label_axes), tuple(origin[i] for i in label_axes),
                        image_out.affine, True, labels_name, labels_meta, "".join(body[i] for i in label_axes))
    return image_out, labels_out


def plane_at(volume: Volume, point: Sequence[float]) -> Volume:
    """The Y-X plane of ``volume`` through ``point`` (an RGB colour axis kept), for a preview.

    Parameters
    ----------
    volume : Volume
    point : sequence of float
        Data coordinates of the axes other than an RGB colour axis (or only the last ones).

    Returns
    -------
    Volume
        ``(Y, X)`` (``(Y, X, C)`` for RGB); lazy data stay lazy (only that plane is read later).
    """
    body = volume.axes[: len(volume.spacing)]
    point = list(point)[-len(body):]
    point = [0.0] * (len(body) - len(point)) + point
    where: list[Any] = [slice(None)] * volume.data.ndim
    for i, letter in enumerate(body):
        if letter not in "YX":
            where[i] = int(np.clip(round(float(point[i])), 0, volume.data.shape[i] - 1))
    kept = [i for i, a in enumerate(body) if a in "YX"]
    axes = "".join(body[i] for i in kept) + volume.axes[len(body):]
    return Volume(volume.data[tuple(where)], tuple(volume.spacing[i] for i in kept),
                  tuple(volume.origin[i] for i in kept), None, False, volume.name, _meta(volume), axes)


# what a result keeps of its input's file details: where its voxels lie and how it saves (unit, NIfTI
# codes, the voxel order the file stored), as Predict's results do
_KEPT_META = ("rgb", *PLACEMENT_META, STORED_ORIENTATION)


def _meta(volume: Volume) -> dict[str, Any]:
    return {k: v for k, v in volume.meta.items() if k in _KEPT_META}


def _like(volume: Volume, data: np.ndarray, spacing: Sequence[float], origin: Sequence[float],
          spatial: Sequence[int]) -> Volume:
    """``data`` on the grid ``spacing``/``origin`` (napari order) cut or resampled from ``volume``'s
    along its ``spatial`` axes, with the affine of that grid (an oblique one stays oblique)."""
    spacing, origin = tuple(float(s) for s in spacing), tuple(float(o) for o in origin)
    meta, affine = _meta(volume), None
    if volume.affine is not None and np.shape(volume.affine) == (4, 4):
        affine, view = regridded_affine(volume.affine, spatial, volume.spacing, volume.origin, spacing, origin)
        anchor = view_anchor(affine, view)
        if anchor is not None:
            meta[AFFINE_ORIGIN] = anchor
    return Volume(data, spacing, origin, affine, False, volume.name, meta, volume.axes)
