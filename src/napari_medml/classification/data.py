"""Classification samples: the :class:`ClassSamples` container, the helpers every level
shares, and the image level.

* **image**: a stack whose leading axis is the sample, ``(N, Y, X)`` or
  ``(N, Z, Y, X)``; each sample's class is painted anywhere in a labels layer of the
  same shape, or read from a CSV file (:func:`read_class_csv`).

The object and tile levels, and the functions over all three modes (``make_samples``,
``class_labels``, ``prediction_table``), are in :mod:`napari_medml.classification.levels`.
0 always means "class unknown" (to predict), as in scribble labels.

numpy, SciPy and scikit-image only: no torch here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_medml.config import ClassLevel
from napari_medml.classification.class_files import read_class_csv
from napari_medml.errors import InputError

__all__ = [
    "ClassLevel",
    "ClassSamples",
    "image_level_labels",
    "image_samples",
    "majority_class",
    "map_ids",
    "mixed_keys",
    "mixed_note",
    "read_class_csv",
    "stack_dims",
]



@dataclass(frozen=True)
class ClassSamples:
    """Samples to train a classifier on or to classify.

    Attributes
    ----------
    x : np.ndarray
        float32 ``(N, C, *spatial)``: the network input, not yet normalised.
    y : np.ndarray
        int64 ``(N,)`` class id per sample; 0 = unknown.
    index : np.ndarray
        Where each sample comes from: image level, the sample number ``(N,)``; object
        level, the instance id ``(N,)``; tile level, the first voxel of each tile
        ``(N, D)``.
    level : {"image", "object", "tile"}
    source_shape : tuple of int
        Spatial shape of the source (image level: with the sample axis first).
    image_channels : int
        The first ``image_channels`` channels are image intensities (normalised in
        training); object level adds the object mask as the last channel.
    params : Mapping
        How the samples were made (``input_size``, ``tile_size``, ``margin``...),
        stored in a bundle so that new data are prepared the same way.
    sizes : np.ndarray or None
        Object level: voxels per object.
    note : str
        Something the user should know about these samples ("" when nothing), such as
        objects cut at the edges of a common box.
    """

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray
    level: ClassLevel
    source_shape: tuple[int, ...]
    image_channels: int = 1
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    sizes: np.ndarray | None = None
    note: str = ""

    @property
    def spatial_dims(self) -> int:
        return self.x.ndim - 2

    @property
    def labelled(self) -> np.ndarray:
        """Boolean mask of samples with a known class."""
        return self.y > 0

    def __len__(self) -> int:
        return int(self.x.shape[0])


# --- classes from painted labels ---------------------------------------------------


def map_ids(ids: np.ndarray, keys: Sequence[int], values: Sequence[Any], dtype: Any) -> np.ndarray:
    """``ids`` with each value in ``keys`` replaced by its ``values`` entry, others 0.

    Works for ids of any size (2**40 too): a look-up table only for small ids, a sorted
    search otherwise, never a table sized by the largest id.
    """
    arr = np.asarray(ids)
    k = np.asarray(keys, dtype=np.int64).ravel()
    v = np.asarray(values).astype(dtype, copy=False).ravel()
    if k.size != v.size:
        raise InputError(f"{k.size} ids but {v.size} values: one value per id")
    top = int(arr.max(initial=0)) if arr.size else 0
    if k.size == 0:
        return np.zeros(arr.shape, dtype)
    if top < 65536:
        lut = np.zeros(top + 1, dtype)
        small = (k >= 0) & (k <= top)
        lut[k[small]] = v[small]
        return lut[np.clip(arr, 0, None).astype(np.intp, copy=False)]
    order = np.argsort(k)
    k, v = k[order], v[order]
    flat = arr.reshape(-1).astype(np.int64, copy=False)
    idx = np.minimum(np.searchsorted(k, flat), k.size - 1)
    return np.where(k[idx] == flat, v[idx], np.zeros((), dtype)).astype(dtype, copy=False).reshape(arr.shape)


def majority_class(keys: np.ndarray, painted: np.ndarray, n_keys: int) -> np.ndarray:
    """For each key 1..n_keys-1: the most frequent nonzero painted value (0 if none).

    ``keys`` and ``painted`` are integer arrays of one shape; key 0 is ignored. Ties go
    to the smaller class id.
    """
    k = np.asarray(keys).ravel()
    v = np.asarray(painted).ravel()
    sel = (k > 0) & (v > 0)
    out = np.zeros(n_keys, np.int64)
    if not sel.any():
        return out
    k, v = k[sel].astype(np.int64), v[sel].astype(np.int64)
    pairs, counts = np.unique(np.stack([k, v]), axis=1, return_counts=True)
    # sort by key, then count descending, then class ascending: first per key wins
    order = np.lexsort((pairs[1], -counts, pairs[0]))
    pairs = pairs[:, order]
    first = np.r_[True, pairs[0, 1:] != pairs[0, :-1]]
    out[pairs[0, first]] = pairs[1, first]
    return out


def mixed_keys(keys: np.ndarray, painted: np.ndarray) -> np.ndarray:
    """The keys (> 0) inside which two or more different nonzero values are painted, ascending.

    Parameters
    ----------
    keys, painted : np.ndarray
        Integer arrays of one shape: the samples' keys (objects or tiles, 0 = none) and the
        painted classes (0 = unpainted).
    """
    sel = (keys > 0) & (painted > 0)
    pairs = np.unique(np.stack([keys[sel].astype(np.int64), painted[sel].astype(np.int64)]), axis=1)
    found, counts = np.unique(pairs[0], return_counts=True)
    return found[counts > 1]


def mixed_note(found: Sequence[int], what: str, key: str) -> str:
    """The line for samples painted with more than one class (``""`` for none), e.g. ``"2 objects
    are painted with more than one class (ids 3, 9): each takes the class painted on most of its
    voxels"``.

    Parameters
    ----------
    found : sequence of int
        The samples' ids or numbers, ascending (:func:`mixed_keys`).
    what, key : str
        The samples (``"object"``, ``"tile"``) and what their numbers are (``"id"``, ``"tile"``).
    """
    n = len(found)
    if not n:
        return ""
    shown = ", ".join(str(int(k)) for k in found[:5]) + (", ..." if n > 5 else "")
    return (f"{n} {what}{'s are' if n > 1 else ' is'} painted with more than one class ({key}{'s' * (n > 1)} "
            f"{shown}): each takes the class painted on most of its voxels")


def _check_labels(labels: np.ndarray, shape: tuple[int, ...], name: str, image_name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.shape != tuple(shape):
        raise InputError(
            f"{name} have shape {arr.shape} but {image_name} has {tuple(shape)} "
            f"(without channels): paint them on a labels layer of the image's shape"
        )
    if arr.dtype == bool:  # a mask: True is class 1
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{name} have dtype {arr.dtype}: class labels must be integer ids")
    if arr.size and arr.min() < 0:
        raise InputError(f"{name} contain negative ids: class ids must be >= 0")
    return arr


def _split_channels(image: np.ndarray, channel_axis: int | None, spatial_ndim: int,
                    name: str) -> np.ndarray:
    """``image`` -> float32 ``(C, *rest)`` with the channel axis first."""
    arr = np.asarray(image)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or arr.dtype.kind == "c":
        raise InputError(f"{name} has dtype {arr.dtype}: it must be real and numeric (np.abs of a complex one)")
    if channel_axis is None:
        arr = arr[None]
    else:
        if not -arr.ndim <= channel_axis < arr.ndim:
            raise InputError(f"channel_axis {channel_axis} is out of range for {name} with {arr.ndim} axes")
        arr = np.moveaxis(arr, channel_axis, 0)
    if arr.ndim - 1 != spatial_ndim:
        hint = (f": if its last axis ({arr.shape[-1]}) holds channels, pass channel_axis=-1 (another axis: its index)"
                if channel_axis is None and arr.ndim - 1 == spatial_ndim + 1 else "")  # trial 47: no fix was given
        raise InputError(
            f"{name} has shape {np.asarray(image).shape}: expected {spatial_ndim} axes "
            f"{'plus a channel axis ' if channel_axis is not None else ''}here{hint}"
        )
    return arr.astype(np.float32, copy=False)


def check_finite_samples(x: np.ndarray, name: str, level: str) -> None:
    """Refuse samples ``(N, C, *spatial)`` that hold NaN or infinite values (trial 47: NaN gave an
    object a class, and training failed in scikit-learn's validation). Only the samples count:
    NaN outside every object or tile is never read (review 47).

    Parameters
    ----------
    x : np.ndarray
        The samples.
    name : str
        How the message names the image they were cut from.
    level : str
        ``"image"``, ``"object"`` or ``"tile"``.

    Raises
    ------
    InputError
        Counting the samples, with the fill that works for a classifier.
    """
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1) if len(x) else np.zeros(0, bool)
    if bad.any():
        raise InputError(f"{name} holds NaN or infinite values in {int(bad.sum())} of its {len(x)} {level}s: fill "
                         "them first (napari: Preprocess > fill NaN/inf, then classify the filled layer; Python: "
                         "napari_medml.preprocessing.ops.fill_nonfinite)")


def _resize(arr: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """Resize ``(C, *spatial)`` to ``(C, *shape)`` (skimage, anti-aliased when shrinking)."""
    from skimage.transform import resize

    shape = tuple(int(s) for s in shape)
    if arr.shape[1:] == shape:
        return arr.astype(np.float32, copy=False)
    shrink = any(a > b for a, b in zip(arr.shape[1:], shape))
    out = np.empty((arr.shape[0], *shape), np.float32)
    for c in range(arr.shape[0]):
        out[c] = resize(arr[c], shape, order=order, mode="edge", preserve_range=True,
                        anti_aliasing=shrink and order > 0)
    return out


# --- image level -------------------------------------------------------------------


def stack_dims(shape: Sequence[int], channel_axis: int | None = None, spatial_dims: int | None = None,
               name: str = "image") -> int:
    """The spatial dimensions (2 or 3) of a stack of samples, ``(N, Y, X)`` or ``(N, Z, Y, X)``.

    Raises
    ------
    InputError
        ``shape`` (without the channel axis) is not a sample axis plus 2 or 3 spatial axes,
        e.g. a single 2D image, whose rows would otherwise be read as samples.
    """
    n_axes = len(shape) - (channel_axis is not None)
    if spatial_dims is None:
        spatial_dims = n_axes - 1
    if spatial_dims not in (2, 3) or n_axes != spatial_dims + 1:
        raise InputError(
            f"{name} has shape {tuple(shape)}: image-level classification needs a stack whose first "
            f"axis is the sample, (N, Y, X) or (N, Z, Y, X); a single {n_axes}D image has no sample "
            "axis - stack the images, or use tile or object classification"
        )
    return spatial_dims


def image_samples(image: np.ndarray, *, labels: np.ndarray | None = None, classes: Sequence[int] | None = None,
                  channel_axis: int | None = None, spatial_dims: int | None = None,
                  input_size: Sequence[int] | None = None, name: str = "image") -> ClassSamples:
    """One sample per entry of the leading (sample) axis.

    Parameters
    ----------
    image : np.ndarray
        ``(N, Y, X)`` or ``(N, Z, Y, X)``, plus a channel axis where ``channel_axis``
        says.
    labels : np.ndarray, optional
        Same shape as ``image`` without channels; the most frequent nonzero value in a
        sample is its class.
    classes : sequence of int, optional
        One class per sample (e.g. from :func:`read_class_csv`); 0 = unknown.
    channel_axis : int, optional
        The image's channel axis, if any.
    spatial_dims : int, optional
        2 or 3; by default the axes after the sample (and channel) axis.
    input_size : sequence of int, optional
        Resize every sample to this shape (default: keep).
    name : str
        The image's name, for messages.

    Returns
    -------
    ClassSamples
    """
    arr = np.asarray(image)
    spatial_dims = stack_dims(arr.shape, channel_axis, spatial_dims, name)
    data = _split_channels(arr, channel_axis, spatial_dims + 1, name)  # (C, N, *spatial)
    x = np.ascontiguousarray(np.moveaxis(data, 1, 0))  # (N, C, *spatial)
    n = x.shape[0]
    if labels is not None and classes is not None:
        raise InputError("give the classes either as a labels layer or as a list (CSV), not both")
    if labels is not None:
        lab = _check_labels(labels, data.shape[1:], "class labels", name)
        keys = np.broadcast_to(np.arange(1, n + 1).reshape((n,) + (1,) * spatial_dims), lab.shape)
        y = majority_class(keys, lab, n + 1)[1:]
    elif classes is not None:
        y = np.asarray(classes).astype(np.int64).ravel()
        if y.size != n:
            raise InputError(f"{y.size} classes given but {name} has {n} samples: give one class per sample")
        if (y < 0).any():
            raise InputError("class ids must be >= 0 (0 = unknown)")
    else:
        y = np.zeros(n, np.int64)
    params: dict[str, Any] = {"spatial_dims": spatial_dims}
    if input_size is not None:
        input_size = _check_size(input_size, spatial_dims, "input_size")
        x = np.stack([_resize(s, input_size, order=1) for s in x]) if n else x
        params["input_size"] = list(input_size)
    check_finite_samples(x, name, "image")
    return ClassSamples(x=x.astype(np.float32, copy=False), y=y, index=np.arange(n), level="image",
                        source_shape=tuple(data.shape[1:]), image_channels=x.shape[1], params=params)


def image_level_labels(classes: Sequence[int], image_shape: Sequence[int]) -> np.ndarray:
    """A labels array of ``image_shape`` (sample axis first), each sample filled with its class."""
    c = np.asarray(classes).astype(np.int64).ravel()
    shape = tuple(int(s) for s in image_shape)
    if not shape or shape[0] != c.size:
        raise InputError(f"{c.size} classes do not fit a stack of shape {shape}: one class per sample")
    out = np.empty(shape, _label_dtype(c))
    out[...] = c.reshape((-1,) + (1,) * (len(shape) - 1))
    return out


# --- helpers -----------------------------------------------------------------------


def _check_size(size: Sequence[int] | int, spatial_dims: int, what: str) -> tuple[int, ...]:
    if isinstance(size, (int, np.integer)):
        size = (int(size),) * spatial_dims
    out = tuple(int(s) for s in size)
    if len(out) != spatial_dims or any(s < 1 for s in out):
        raise InputError(f"{what} {tuple(size)} must have {spatial_dims} positive values (one per axis)")
    return out


def _need_level(samples: ClassSamples, level: str) -> None:
    if samples.level != level:
        raise InputError(f"these are {samples.level}-level samples, not {level}-level")


def _label_dtype(classes: np.ndarray) -> np.dtype:
    top = int(classes.max(initial=0))
    return np.dtype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32)
