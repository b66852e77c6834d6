"""Object- and tile-level classification samples, and the functions over all levels.

* **object** (:mod:`napari_medml.classification.objects`): an image plus instance labels;
  a class painted on (part of) an object in a second labels layer gives that object its
  class. Each object is cropped in a square (cubic) box around it, image and object mask
  as channels, resized to the input size.
* **tile**: a large image cut into a grid of tiles; a tile's class is the class most
  painted inside it.

:func:`make_samples` builds samples of any level from stored parameters (what a bundle
records); the results come back as label arrays at the input's resolution
(:func:`class_labels`), a per-sample table for a Labels layer's ``features``
(:func:`prediction_table`) and, for tiles, a probability map
(:func:`tile_probability_map`).

numpy and SciPy only: no torch here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_medml.classification.data import (
    ClassLevel,
    ClassSamples,
    _check_labels,
    _check_size,
    _label_dtype,
    _need_level,
    _resize,
    _split_channels,
    check_finite_samples,
    image_level_labels,
    image_samples,
    majority_class,
    map_ids,
    mixed_keys,
    mixed_note,
)
from napari_medml.classification.objects import (
    DEFAULT_OBJECT_SIZE,
    OBJECT_BOXES,
    ObjectBox,
    object_level_labels,
    object_samples,
)
from napari_medml.errors import InputError

__all__ = [
    "DEFAULT_OBJECT_SIZE",
    "OBJECT_BOXES",
    "ObjectBox",
    "class_labels",
    "class_probability_map",
    "make_samples",
    "object_level_labels",
    "object_samples",
    "prediction_table",
    "tile_level_labels",
    "tile_probability_map",
    "tile_samples",
]



# --- tile level --------------------------------------------------------------------


def tile_samples(image: np.ndarray, *, tile_size: Sequence[int], class_labels: np.ndarray | None = None,
                 channel_axis: int | None = None, input_size: Sequence[int] | None = None,
                 name: str = "image") -> ClassSamples:
    """Cut a 2D or 3D image into a grid of tiles, one sample each.

    Tiles start at the first voxel; the last tile along an axis may reach past the
    image and is padded by edge values. A tile's class is the most frequent nonzero
    value painted inside it (unpainted tiles: 0, unknown); tiles painted with more than
    one class are named in the samples' ``note``.

    Parameters
    ----------
    image : np.ndarray
        2D or 3D image (plus a channel axis where ``channel_axis`` says).
    tile_size : sequence of int
        Tile shape, one value per spatial axis.
    class_labels : np.ndarray, optional
        Painted classes, the image's spatial shape.
    channel_axis : int, optional
        The image's channel axis.
    input_size : sequence of int, optional
        Resize tiles to this shape for the network (default: the tile size).
    name : str
        The image's name, for messages.

    Returns
    -------
    ClassSamples
        ``index`` is ``(N, D)``: the first voxel of each tile.
    """
    arr = np.asarray(image)
    spatial_dims = arr.ndim - (channel_axis is not None)
    if spatial_dims not in (2, 3):
        raise InputError(f"{name} has shape {arr.shape}: tile classification needs a 2D or 3D image")
    data = _split_channels(arr, channel_axis, spatial_dims, name)
    spatial = data.shape[1:]
    tile = _check_size(tile_size, spatial_dims, "tile_size")
    grid = tuple(int(np.ceil(s / t)) for s, t in zip(spatial, tile))
    padded_shape = tuple(g * t for g, t in zip(grid, tile))
    pad = [(0, 0)] + [(0, p - s) for p, s in zip(padded_shape, spatial)]
    padded = np.pad(data, pad, mode="edge") if any(p for _, p in pad) else data
    # (C, g0, t0, g1, t1, ...) -> (g0, g1, ..., C, t0, t1, ...)
    blocks = padded.reshape((data.shape[0],) + tuple(v for g, t in zip(grid, tile) for v in (g, t)))
    order = [1 + 2 * i for i in range(spatial_dims)] + [0] + [2 + 2 * i for i in range(spatial_dims)]
    x = np.ascontiguousarray(blocks.transpose(order)).reshape((-1, data.shape[0], *tile))
    starts = np.stack(np.meshgrid(*[np.arange(g) * t for g, t in zip(grid, tile)], indexing="ij"), -1)
    starts = starts.reshape(-1, spatial_dims).astype(np.int64)
    if class_labels is not None:
        lab = _check_labels(class_labels, spatial, "class labels", name)
        keys = _tile_keys(spatial, tile, grid)
        y = majority_class(keys, lab, int(np.prod(grid)) + 1)[1:]
        note = mixed_note(mixed_keys(keys, lab) - 1, "tile", "tile")  # tile numbers, as the table's
    else:
        y, note = np.zeros(len(starts), np.int64), ""
    params: dict[str, Any] = {"spatial_dims": spatial_dims, "tile_size": list(tile)}
    if input_size is not None:
        size = _check_size(input_size, spatial_dims, "input_size")
        x = np.stack([_resize(t, size, order=1) for t in x])
        params["input_size"] = list(size)
    check_finite_samples(x, name, "tile")
    return ClassSamples(x=x.astype(np.float32, copy=False), y=y, index=starts, level="tile",
                        source_shape=tuple(spatial), image_channels=data.shape[0], params=params, note=note)


def _tile_keys(spatial: Sequence[int], tile: Sequence[int], grid: Sequence[int]) -> np.ndarray:
    """Per voxel: 1 + the flat index of its tile."""
    idx = [np.arange(s) // t for s, t in zip(spatial, tile)]
    mesh = np.ix_(*idx)
    flat = np.zeros(tuple(spatial), np.int64)
    stride = 1
    for axis in reversed(range(len(spatial))):
        flat = flat + mesh[axis] * stride
        stride *= grid[axis]
    return flat + 1


def tile_level_labels(samples: ClassSamples, classes: Sequence[int]) -> np.ndarray:
    """A labels array at the image's resolution, each tile filled with its class."""
    _need_level(samples, "tile")
    cls = np.asarray(classes).astype(np.int64).ravel()
    spatial, tile = samples.source_shape, tuple(samples.params["tile_size"])
    grid = tuple(int(np.ceil(s / t)) for s, t in zip(spatial, tile))
    if cls.size != int(np.prod(grid)):
        raise InputError(f"{cls.size} classes for {int(np.prod(grid))} tiles: one class per tile")
    keys = _tile_keys(spatial, tile, grid) - 1
    return cls.astype(_label_dtype(cls))[keys]


def tile_probability_map(samples: ClassSamples, proba: np.ndarray, *, smooth: bool = True) -> np.ndarray:
    """Per-class probabilities ``(K, *image_shape)`` float32 from per-tile probabilities.

    ``smooth`` interpolates linearly between tile centres; otherwise each tile is one
    constant block.
    """
    _need_level(samples, "tile")
    p = np.asarray(proba, dtype=np.float32)
    spatial, tile = samples.source_shape, tuple(samples.params["tile_size"])
    grid = tuple(int(np.ceil(s / t)) for s, t in zip(spatial, tile))
    if p.ndim != 2 or p.shape[0] != int(np.prod(grid)):
        raise InputError(f"probabilities of shape {p.shape} do not fit {int(np.prod(grid))} tiles")
    per_tile = np.moveaxis(p.reshape(*grid, p.shape[1]), -1, 0)
    out = np.empty((p.shape[1], *spatial), np.float32)
    for k in range(p.shape[1]):
        if smooth:
            full = ndi.zoom(per_tile[k], tile, order=1, mode="nearest", grid_mode=True)
        else:
            full = per_tile[k]
            for axis, t in enumerate(tile):
                full = np.repeat(full, t, axis=axis)
        out[k] = full[tuple(slice(0, s) for s in spatial)]
    return out


# --- back to layers ----------------------------------------------------------------


def class_labels(samples: ClassSamples, classes: Sequence[int], *, instances: np.ndarray | None = None) -> np.ndarray:
    """Classes back to a labels array at the source's shape, for any level.

    Object level needs the ``instances`` the samples were made from.
    """
    if samples.level == "image":
        return image_level_labels(classes, samples.source_shape)
    if samples.level == "tile":
        return tile_level_labels(samples, classes)
    if instances is None:
        raise InputError("object classes need the instance labels to paint them back")
    return object_level_labels(instances, samples.index, classes)


def class_probability_map(samples: ClassSamples, proba: np.ndarray, *,
                          instances: np.ndarray | None = None) -> np.ndarray:
    """Per-class probabilities ``(K, *source_shape)`` float32 for any level.

    Each sample (image level) or object (object level, needs ``instances``; background
    0) is filled with its probabilities; tiles are interpolated
    (:func:`tile_probability_map`).
    """
    p = np.asarray(proba, dtype=np.float32)
    if p.ndim != 2 or p.shape[0] != len(samples):
        raise InputError(f"probabilities of shape {p.shape} do not fit {len(samples)} samples")
    if samples.level == "tile":
        return tile_probability_map(samples, p)
    if samples.level == "image":
        shape = (p.shape[1], *samples.source_shape)
        return np.ascontiguousarray(np.broadcast_to(p.T.reshape(shape[:2] + (1,) * (len(shape) - 2)), shape))
    if instances is None:
        raise InputError("object probabilities need the instance labels to paint them back")
    return np.stack([map_ids(instances, samples.index, p[:, k], np.float32) for k in range(p.shape[1])])


def prediction_table(samples: ClassSamples, classes: Sequence[int], proba: np.ndarray,
                     class_ids: Sequence[int], class_names: Mapping[int, str] | None = None) -> dict[str, np.ndarray]:
    """Columns for a Labels layer's ``features``: index, class, ``class_name`` (only with
    ``class_names``, the names the model was trained with), ``prob_<id>``, ``voxels`` (objects:
    each object's size in voxels; the instance table's ``area``/``volume`` is in physical units).

    The index column is ``sample``, ``object`` or ``tile`` (tile number; the tile's
    first voxel is in ``start_z``/``start_y``/``start_x``).
    """
    p = np.asarray(proba, dtype=np.float32)
    n = len(samples)
    if p.shape != (n, len(class_ids)):
        raise InputError(f"probabilities of shape {p.shape} do not fit {n} samples and {len(class_ids)} classes")
    table: dict[str, np.ndarray] = {}
    if samples.level == "tile":
        table["tile"] = np.arange(n)
        names = ("start_z", "start_y", "start_x")[-samples.spatial_dims:]
        for axis, col in enumerate(names):
            table[col] = samples.index[:, axis].copy()
    else:
        table["sample" if samples.level == "image" else "object"] = np.asarray(samples.index).copy()
    table["class"] = np.asarray(classes).astype(np.int64)
    if class_names:  # evaluate prints these names in its confusion matrix
        table["class_name"] = np.asarray([str(class_names.get(int(c), f"class {int(c)}")) for c in table["class"]],
                                         dtype=object)
    for k, cid in enumerate(class_ids):
        table[f"prob_{int(cid)}"] = p[:, k]
    if samples.sizes is not None:
        table["voxels"] = samples.sizes.copy()
    return table


def make_samples(level: ClassLevel, image: np.ndarray, params: Mapping[str, Any], *,
                 class_labels: np.ndarray | None = None, classes: Sequence[int] | None = None,
                 instances: np.ndarray | None = None, channel_axis: int | None = None,
                 name: str = "image") -> ClassSamples:
    """Build samples of ``level`` from an image: the one sample builder of every front.

    Parameters
    ----------
    level : {"image", "object", "tile"}
    image : np.ndarray
        Image level: a stack, samples on the first axis; otherwise one image, ``(Y, X)``
        or ``(Z, Y, X)``, plus ``channel_axis``.
    params : Mapping
        ``input_size``, ``tile_size``, ``margin``, ``min_margin``, ``box``, ``box_side``, ``spatial_dims``
        (what a bundle records as its sample parameters).
    class_labels : np.ndarray, optional
        Painted classes (0 = unknown) of the image's shape.
    classes : sequence of int, optional
        Image level: one class per sample (e.g. from a CSV), instead of ``class_labels``.
    instances : np.ndarray, optional
        Object level: instance labels, one id per object.

    Raises
    ------
    InputError
        A level's missing input (instances, tile size) or an unknown level.
    """
    size = params.get("input_size")
    if level == "image":
        return image_samples(image, labels=class_labels, classes=classes, channel_axis=channel_axis,
                             spatial_dims=params.get("spatial_dims"), input_size=size, name=name)
    if classes is not None:
        raise InputError(f"{level}-level classes come from a labels array painted on the image, not a list")
    if level == "object":
        if instances is None:
            raise InputError("object classification needs instance labels (one id per object)")
        return object_samples(image, instances, class_labels=class_labels, channel_axis=channel_axis,
                              input_size=size, margin=params.get("margin", 0.2),
                              min_margin=params.get("min_margin", 2), box=params.get("box", "own"),
                              box_side=params.get("box_side"), name=name)
    if level == "tile":
        if "tile_size" not in params:
            raise InputError("tile classification needs a tile size")
        return tile_samples(image, tile_size=params["tile_size"], class_labels=class_labels,
                            channel_axis=channel_axis, input_size=size, name=name)
    raise InputError(f"unknown classification level {level!r}: use image, object or tile")
