"""The checks every task's training inputs go through, written once: one array or a
list of them, an image as float32 ``(C, *spatial)``, one spacing per image, the
preprocessing recipe on each channel, and a patch shrunk to a voxel budget.

The task packages (segmentation, pretraining, ...) are siblings that may not import
one another (the import-linter layers contract), so what they share lives here,
below them. Plain NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_medml.errors import ConfigError, InputError, check_numeric

# what to do about NaN or infinite voxels, on every front
FILL_NAN = ("fill them first (napari: Preprocess > fill NaN/inf, a step that models trained on its layer replay; "
            "Python: napari_medml.preprocessing.ops.fill_nonfinite)")

__all__ = ["FILL_NAN", "as_list", "check_finite", "check_image", "check_not_constant", "check_patch_size",
           "check_volumes_not_constant", "one_value",
           "fills_nonfinite", "recipe_fills_nonfinite",
           "run_recipe_channels", "shrink_patch", "spacings_per_image"]


def as_list(items: Any, kind: str) -> list:
    """One array or a sequence of arrays as a list.

    Parameters
    ----------
    items : array or sequence of arrays
    kind : str
        What they are (``"images"``, ``"labels"``), for the error message.

    Returns
    -------
    list

    Raises
    ------
    InputError
        An empty sequence.
    """
    if not isinstance(items, (list, tuple)):
        return [items]
    items = list(items)
    if not items:
        raise InputError(f"no {kind} given: pass at least one array")
    return items


def check_image(image: Any, *, channel_axis: int | None, spatial_dims: int, name: str = "image",
                in_channels: int | None = None, finite: bool = True) -> np.ndarray:
    """Validate an image and return it as float32 ``(C, *spatial)`` (a new array).

    Parameters
    ----------
    image : array
        ``spatial_dims`` spatial axes, plus the axis ``channel_axis``.
    channel_axis : int, optional
        None: a single channel.
    spatial_dims : int
        2 or 3.
    name : str
        How error messages call the image.
    in_channels : int, optional
        The number of channels expected (a model's).
    finite : bool
        Refuse NaN and infinite values (False: a recipe that fills them comes next,
        :func:`fills_nonfinite`).

    Returns
    -------
    np.ndarray

    Raises
    ------
    InputError
        Not numeric, the wrong number of dimensions or channels, or NaN/inf values.
    """
    arr = np.asarray(image)
    check_numeric(arr.dtype, name)
    if channel_axis is not None:
        if not -arr.ndim <= channel_axis < arr.ndim:
            raise InputError(f"channel_axis={channel_axis} is out of range for {name} with shape {arr.shape}")
        arr = np.moveaxis(arr, channel_axis, 0)
    else:
        arr = arr[None]
    if arr.ndim - 1 != spatial_dims:
        got = arr.ndim - 1
        if got < spatial_dims:  # a 2D image for a 3D model
            hint = f": train a {got}D model (spatial_dims={got})" if got in (2, 3) else ""
        elif got == spatial_dims + 1:
            hint = (" (a channel axis? set channel_axis; a stack of 2D slices? give them as a list, "
                    "list(volume), or use a 3D model)") if spatial_dims == 2 else " (a channel axis? set channel_axis)"
        else:
            hint = " (pass 2D slices as a list of images, or use a 3D model)"
        raise InputError(f"{name} has {got} spatial dimensions (shape {np.shape(image)}) but the model is "
                         f"{spatial_dims}D{hint}")
    if in_channels is not None and arr.shape[0] != in_channels:
        raise InputError(f"{name} has {arr.shape[0]} channel(s) but {in_channels} are expected")
    out = np.array(arr, dtype=np.float32, copy=True)
    if finite:
        check_finite(out, name)
    return out


def fills_nonfinite(steps: Sequence[Any] | None) -> bool:
    """Whether a preprocessing recipe fills NaN and infinite values before anything else
    (its first step is ``fill_nan``): no other step sees them, so training and prediction let
    such images through, as block-wise prediction does (``preprocessing.lazy_recipe``)."""
    return bool(steps) and getattr(steps[0], "operation", None) == "fill_nan"


def recipe_fills_nonfinite(model: Any) -> bool:
    """:func:`fills_nonfinite` of a model's (or ensemble's) recipe; False for an object without one."""
    data = getattr(getattr(model, "config", None), "data", None)
    return fills_nonfinite(getattr(data, "preprocessing", None))


def check_finite(image: Any, name: str = "image") -> None:
    """Refuse an image with NaN or infinite values (a front checks each file under its name
    before the core, which only knows the images by position).

    Parameters
    ----------
    image : np.ndarray
        Any shape. Integer images pass at once; lazy (dask/zarr) arrays are not read.
    name : str
        How the message names it, e.g. ``"image 'b.nii.gz'"`` or ``"image 2 of 3"``.

    Raises
    ------
    InputError
        Counting the bad values and saying what to do.
    """
    if not isinstance(image, np.ndarray) or not np.issubdtype(image.dtype, np.inexact):
        return
    finite = np.isfinite(image)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise InputError(f"{name} contains {bad} NaN or infinite value(s): " + FILL_NAN)


def nonfinite_note(image: Any, name: str = "image") -> str:
    """A warning line when ``image`` holds NaN or infinite values, else ``""``: preprocessing
    keeps them (a filter spreads them), and training and prediction refuse them
    (:func:`check_finite`), so say so at the first step rather than at the last.

    Parameters
    ----------
    image : np.ndarray
        Any shape; integer images and lazy arrays give ``""``.
    name : str
        How the line names it, e.g. ``"image 'ct'"``.
    """
    try:
        check_finite(image, name)
    except InputError as exc:
        return (f"warning: {exc}; preprocessing keeps them (a filter spreads them) and training refuses "
                "them")
    return ""


def check_not_constant(image: Any, name: str = "image") -> None:
    """Refuse a training image whose every voxel has one value: a network learns nothing from
    it (typically the wrong file or an empty channel was exported).

    Parameters
    ----------
    image : np.ndarray
        Any shape (all channels together). Lazy (dask/zarr) arrays are not read: nothing
        is checked for them.
    name : str
        How the message names it.

    Raises
    ------
    InputError
        Naming the value and what to check; also for an image with no voxels.
    """
    if not isinstance(image, np.ndarray):
        return
    arr = image
    if arr.size == 0:
        raise InputError(f"{name} has no voxels (shape {arr.shape}): check that it is the right file")
    if arr.min() == arr.max():  # (not np.ptp: it refuses a boolean mask)
        raise InputError(f"{name} is constant (every voxel is {arr.flat[0].item():g}): a network learns nothing from "
                         "it; check that it is the right file or channel")


def one_value(image: Any, name: str = "image") -> float | None:
    """The value every voxel of ``image`` has, or None when they differ (or it is lazy: not read).

    Parameters
    ----------
    image : np.ndarray
        Any shape; lazy (dask/zarr) arrays are not read.
    name : str
        How the message names it.

    Raises
    ------
    InputError
        An image with no voxels.
    """
    if not isinstance(image, np.ndarray):
        return None
    if image.size == 0:
        raise InputError(f"{name} has no voxels (shape {image.shape}): check that it is the right file")
    low, high = image.min(), image.max()
    return float(low) if low == high else None


def check_volumes_not_constant(values: Sequence[float | None], groups: Sequence[int] | None,
                               noun: str = "image") -> None:
    """Refuse training samples that all have one and the same value: nothing to learn. One
    blank sample beside others is taken: the air above a head in a volume's slices, a dark frame
    of a series, each trains as background (review and trial 43: one blank slice refused a 2D
    network on an MRI). A whole file that is constant is refused where files are read (the
    command line reads each; :func:`check_not_constant`).

    Parameters
    ----------
    values : sequence of float or None
        Each training sample's one value (:func:`one_value`), None where its voxels differ.
    groups : sequence of int or None
        How many consecutive samples each image gave (``DataConfig.sample_groups``): the slices
        of one volume make one image in the message.
    noun : str
        What the message calls an image.

    Raises
    ------
    InputError
        Naming the value, as :func:`check_not_constant` does.
    """
    if not values or None in values or len(set(values)) != 1:
        return
    images = len(groups) if groups is not None and sum(int(g) for g in groups) == len(values) else len(values)
    name = noun if images == 1 else f"each of the {images} {noun}s"
    check_not_constant(np.full(1, values[0]), name)  # its message


def spacings_per_image(spacing: Any, n: int) -> list[tuple[float, ...] | None]:
    """One spacing per image from a run's ``spacing`` argument.

    Parameters
    ----------
    spacing : tuple, list of tuples, or None
        One voxel size for all images, one per image, or None (unknown).
    n : int
        The number of images.

    Returns
    -------
    list
        ``n`` tuples of floats (or Nones).

    Raises
    ------
    InputError
        A list whose length is not ``n``.
    """
    if spacing is None:
        return [None] * n
    if len(spacing) and all(isinstance(s, (int, float, np.number)) for s in spacing):
        return [tuple(float(s) for s in spacing)] * n
    spacing = list(spacing)
    if len(spacing) != n:
        raise InputError(f"{len(spacing)} spacings for {n} images: give one per image or one for all")
    return [None if s is None else tuple(float(v) for v in s) for s in spacing]


def run_recipe_channels(image: np.ndarray, spacing: Sequence[float] | None, steps: Any
                        ) -> tuple[np.ndarray, tuple[float, ...] | None, Any]:
    """The preprocessing recipe on each channel of ``(C, *spatial)``.

    Parameters
    ----------
    image : np.ndarray
        ``(C, *spatial)`` float32.
    spacing : sequence of float, optional
        Its voxel size (None: 1 per axis for the recipe).
    steps : sequence
        The recipe (``DataConfig.preprocessing``); empty: nothing is done.

    Returns
    -------
    tuple
        The image, its new spacing and the first channel's ``RecipeResult`` (None
        without a recipe), whose ``restore`` maps arrays back to the input grid.
    """
    if not steps:
        return image, None if spacing is None else tuple(spacing), None
    from napari_medml.preprocessing.recipe import NothingToCrop, run_recipe

    sp = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * (image.ndim - 1)
    try:
        results = [run_recipe(channel, sp, tuple(steps)) for channel in image]
    except NothingToCrop as exc:  # a model's recipe: its threshold is not the user's to lower (review 46)
        raise InputError(
            f"the preprocessing recipe's {exc}: this image has nothing its crop keeps (another intensity range than "
            "the image the crop was chosen on?): give images like that one, or train without the crop in the recipe"
        ) from None
    if any(r.image.shape != results[0].image.shape or r.geometry != results[0].geometry for r in results):
        raise InputError("the recipe's crop to a threshold finds another box in each channel, so they no longer "
                         "line up: crop every channel to one box first (Preprocess > crop to labels), or drop "
                         "the crop from the recipe")
    new = None if results[0].spacing is None else tuple(float(s) for s in results[0].spacing)
    return np.stack([np.asarray(r.image, np.float32) for r in results]), new, results[0]


def shrink_patch(patch: Sequence[int], spacing: Sequence[float] | None, divisor: int,
                 max_voxels: float) -> tuple[int, ...]:
    """Shrink ``patch`` to at most ``max_voxels`` voxels, the axis with the largest
    physical extent first (so a coarse Z axis gets fewer voxels), each axis a multiple
    of ``divisor`` and at least ``divisor``.

    Parameters
    ----------
    patch : sequence of int
        The starting patch (multiples of ``divisor``).
    spacing : sequence of float, optional
        Voxel size per axis (None: isotropic).
    divisor : int
    max_voxels : float

    Returns
    -------
    tuple of int
        The patch; larger than ``max_voxels`` only when every axis is at ``divisor``.
    """
    patch = [int(p) for p in patch]
    spacing = [float(s) for s in (spacing or (1.0,) * len(patch))]
    while math.prod(patch) > max_voxels:
        extents = [p * sp if p > divisor else -1.0 for p, sp in zip(patch, spacing)]
        axis = int(np.argmax(extents))
        if extents[axis] < 0:
            break
        patch[axis] = max(divisor, int(patch[axis] * 0.9) // divisor * divisor)
    return tuple(patch)


def check_patch_size(patch_size: Sequence[int], shapes: Sequence[Sequence[int]], divisor: int | Sequence[int],
                     depth: int, where: str) -> tuple[int, ...]:
    """A patch size given by the user, checked against the network and the images.

    Parameters
    ----------
    patch_size : sequence of int
        Voxels per spatial axis.
    shapes : sequence of shapes
        The spatial shapes the patches are drawn from (images thinner than the patch on
        an axis are padded to the next multiple of ``divisor`` there, no further).
    divisor : int or sequence of int
        The network's down-sampling factor, ``2 ** (depth - 1)``, or one per axis
        (``nn.strides.patch_divisors``: DynUNet pools a thin or coarse axis less).
    depth : int
        The network's resolution levels (named in the message).
    where : str
        What the smallest shape is, e.g. "smallest training image".

    Returns
    -------
    tuple of int

    Raises
    ------
    ConfigError
        A patch size not divisible by ``divisor``.
    InputError
        A patch size larger than the smallest shape padded to a multiple of ``divisor``.
    """
    smallest = tuple(min(int(s[a]) for s in shapes) for a in range(len(patch_size)))
    factors = tuple(int(d) for d in divisor) if isinstance(divisor, Sequence) else (int(divisor),) * len(smallest)
    # padding up to the largest factor: a shorter patch has other (DynUNet) factors, each a power of 2 no
    # larger, so the patch suggested below fits too (review 44: 3 slices suggested 4, then refused it for 3)
    most = max(factors)
    largest = tuple(max(most, -(-s // most) * most) for s in smallest)
    patch_size = tuple(int(p) for p in patch_size)
    if any(p % d for p, d in zip(patch_size, factors)):
        fit = tuple(max(d, p // d * d) for p, d in zip(patch_size, factors))
        by = (f"{factors[0]} (2 ** (depth - 1) for depth {depth})" if len(set(factors)) == 1 else
              f"{factors} along its axes (the network's down-sampling along each)")
        smaller = ", or a smaller depth" if len(set(factors)) == 1 and depth > 2 else ""
        raise ConfigError(f"patch_size {patch_size} must be divisible by {by}: use {fit}{smaller}")
    if any(p > m for p, m in zip(patch_size, largest)):
        fit = tuple(min(p, m) for p, m in zip(patch_size, largest))
        padded = (f" (its shape padded to a multiple of {most})"
                  if any(m != s for p, m, s in zip(patch_size, largest, smallest) if p > m) else "")
        order = " (z, y, x; a NIfTI's x, y, z reversed)" if len(patch_size) == 3 else ""
        raise InputError(f"patch size {patch_size} is larger than the {where} {smallest}{order}: use a patch "
                         f"of at most {fit}{padded}, or leave it out to choose one automatically")
    return patch_size
