"""Object- and tile-level classification samples, and the functions over all levels.

* **object**: an image plus instance labels; a class painted on (part of) an object in a
  second labels layer gives that object its class. Each object is cropped in a square
  (cubic) box around it, image and object mask as channels, resized to the input size.
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
    image_level_labels,
    image_samples,
    majority_class,
    map_ids,
)
from napari_medml.errors import InputError

__all__ = [
    "DEFAULT_OBJECT_SIZE",
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

DEFAULT_OBJECT_SIZE = {2: (64, 64), 3: (32, 32, 32)}


# --- object level ------------------------------------------------------------------


def object_samples(image: np.ndarray, instances: np.ndarray, *, class_labels: np.ndarray | None = None,
                   channel_axis: int | None = None, input_size: Sequence[int] | None = None,
                   margin: float = 0.2, min_margin: int = 2, name: str = "image") -> ClassSamples:
    """One sample per object of an instance labels array.

    Each object is cut out in a square (cubic) box centred on its bounding box, the
    box's side being the object's longest extent plus a margin on each side; outside
    the image is zero. The box is resized to ``input_size`` with two kinds of
    channel: the image (linear) and the object's own mask (nearest, 0/1).

    Parameters
    ----------
    image : np.ndarray
        2D or 3D image (plus a channel axis where ``channel_axis`` says).
    instances : np.ndarray
        Integer instance ids, the image's spatial shape; 0 = background.
    class_labels : np.ndarray, optional
        Classes painted on (some of) the objects; an object's class is the most
        frequent nonzero value inside it, 0 = unknown.
    channel_axis : int, optional
        The image's channel axis.
    input_size : sequence of int, optional
        Network input shape; default 64 x 64 (2D) or 32 x 32 x 32 (3D).
    margin : float
        Margin on each side as a fraction of the object's longest extent.
    min_margin : int
        At least this many voxels of margin.
    name : str
        The image's name, for messages.

    Returns
    -------
    ClassSamples
        ``x`` is ``(N, C + 1, *input_size)``; ``index`` the instance ids; ``sizes``
        the voxels per object.
    """
    inst = np.asarray(instances)
    spatial_dims = inst.ndim
    if spatial_dims not in (2, 3):
        raise InputError(f"instance labels have shape {inst.shape}: they must be 2D or 3D")
    if not np.issubdtype(inst.dtype, np.integer):
        raise InputError(f"instance labels have dtype {inst.dtype}: they must be integer object ids")
    data = _split_channels(image, channel_axis, spatial_dims, name)
    if data.shape[1:] != inst.shape:
        raise InputError(
            f"instance labels have shape {inst.shape} but {name} has {data.shape[1:]} "
            "(without channels): use the instance labels of this image"
        )
    size = _check_size(input_size or DEFAULT_OBJECT_SIZE[spatial_dims], spatial_dims, "input_size")
    if margin < 0 or min_margin < 0:
        raise InputError("the object margin must be >= 0")
    if inst.size and inst.min() < 0:
        raise InputError("instance labels contain negative ids: object ids must be >= 0 (0 = background)")
    # objects numbered 1..n here (any id size, e.g. 2**40, without a table of the largest id)
    object_ids = np.unique(inst)
    object_ids = object_ids[object_ids > 0].astype(np.int64)
    if object_ids.size == 0:
        raise InputError("the instance labels contain no objects: segment the objects first")
    inst = np.searchsorted(np.r_[0, object_ids], inst).astype(np.int64)
    boxes = ndi.find_objects(inst)
    ids = np.arange(1, object_ids.size + 1, dtype=np.int64)
    n_max = int(ids.max()) + 1
    sizes = np.bincount(inst.ravel(), minlength=n_max)[ids]
    if class_labels is not None:
        lab = _check_labels(class_labels, inst.shape, "class labels", name)
        y = majority_class(inst, lab, n_max)[ids]
        if not (y > 0).any():
            raise InputError(
                f"the class labels paint none of the {ids.size} objects: paint a class "
                "inside some objects (any painted pixel of an object gives its class)"
            )
    else:
        y = np.zeros(ids.size, np.int64)
    x = np.zeros((ids.size, data.shape[0] + 1, *size), np.float32)
    for n, oid in enumerate(ids):
        box = boxes[oid - 1]
        extent = max(s.stop - s.start for s in box)
        side = int(np.ceil(extent + 2 * max(margin * extent, min_margin)))
        centre = [(s.start + s.stop) / 2.0 for s in box]
        lo = [int(np.floor(c - side / 2.0)) for c in centre]
        src, dst = _box(lo, side, inst.shape)
        crop = np.zeros((data.shape[0],) + (side,) * spatial_dims, np.float32)
        crop[(slice(None), *dst)] = data[(slice(None), *src)]
        mask = np.zeros((1,) + (side,) * spatial_dims, np.float32)
        mask[(0, *dst)] = inst[src] == oid
        x[n, :-1] = _resize(crop, size, order=1)
        x[n, -1] = _resize(mask, size, order=1)[0] >= 0.5
    return ClassSamples(x=x, y=y, index=object_ids, level="object", source_shape=tuple(inst.shape),
                        image_channels=data.shape[0],
                        params={"spatial_dims": spatial_dims, "input_size": list(size),
                                "margin": float(margin), "min_margin": int(min_margin)},
                        sizes=sizes.astype(np.int64))


def _box(lo: Sequence[int], side: int, shape: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Source slices in the image and destination slices in a ``side``-wide box from ``lo``."""
    src, dst = [], []
    for start, n in zip(lo, shape):
        a, b = max(start, 0), min(start + side, n)
        src.append(slice(a, b))
        dst.append(slice(a - start, b - start))
    return tuple(src), tuple(dst)


def object_level_labels(instances: np.ndarray, object_ids: Sequence[int], classes: Sequence[int]) -> np.ndarray:
    """Instance labels recoloured: every object takes its class id (objects not listed: 0)."""
    inst = np.asarray(instances)
    ids = np.asarray(object_ids).astype(np.int64).ravel()
    cls = np.asarray(classes).astype(np.int64).ravel()
    if ids.size != cls.size:
        raise InputError(f"{ids.size} object ids but {cls.size} classes: one class per object")
    return map_ids(inst, ids, cls, _label_dtype(cls))


# --- tile level --------------------------------------------------------------------


def tile_samples(image: np.ndarray, *, tile_size: Sequence[int], class_labels: np.ndarray | None = None,
                 channel_axis: int | None = None, input_size: Sequence[int] | None = None,
                 name: str = "image") -> ClassSamples:
    """Cut a 2D or 3D image into a grid of tiles, one sample each.

    Tiles start at the first voxel; the last tile along an axis may reach past the
    image and is padded by edge values. A tile's class is the most frequent nonzero
    value painted inside it (unpainted tiles: 0, unknown).

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
    else:
        y = np.zeros(len(starts), np.int64)
    params: dict[str, Any] = {"spatial_dims": spatial_dims, "tile_size": list(tile)}
    if input_size is not None:
        size = _check_size(input_size, spatial_dims, "input_size")
        x = np.stack([_resize(t, size, order=1) for t in x])
        params["input_size"] = list(size)
    return ClassSamples(x=x.astype(np.float32, copy=False), y=y, index=starts, level="tile",
                        source_shape=tuple(spatial), image_channels=data.shape[0], params=params)


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
                     class_ids: Sequence[int]) -> dict[str, np.ndarray]:
    """Columns for a Labels layer's ``features``: index, class, ``prob_<id>``, size (objects).

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
    for k, cid in enumerate(class_ids):
        table[f"prob_{int(cid)}"] = p[:, k]
    if samples.sizes is not None:
        table["size"] = samples.sizes.copy()
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
        ``input_size``, ``tile_size``, ``margin``, ``min_margin``, ``spatial_dims``
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
                              min_margin=params.get("min_margin", 2), name=name)
    if level == "tile":
        if "tile_size" not in params:
            raise InputError("tile classification needs a tile size")
        return tile_samples(image, tile_size=params["tile_size"], class_labels=class_labels,
                            channel_axis=channel_axis, input_size=size, name=name)
    raise InputError(f"unknown classification level {level!r}: use image, object or tile")
