"""Classification samples from layer arrays, in three modes, and the way back to layers.

* **image**: a stack whose leading axis is the sample, ``(N, Y, X)`` or
  ``(N, Z, Y, X)``; each sample's class is painted anywhere in a labels layer of the
  same shape, or read from a CSV file (:func:`read_class_csv`).
* **object**: an image plus instance labels; a class painted on (part of) an object in a
  second labels layer gives that object its class. Each object is cropped in a square
  (cubic) box around it, image and object mask as channels, resized to the input size.
* **tile**: a large image cut into a grid of tiles; a tile's class is the class most
  painted inside it.

Every mode gives a :class:`ClassSamples`; 0 always means "class unknown" (to predict),
as in scribble labels. The results come back as label arrays at the input's
resolution (:func:`class_labels`), a per-sample table for a Labels layer's
``features`` (:func:`prediction_table`) and, for tiles, a probability map
(:func:`tile_probability_map`).

numpy, SciPy and scikit-image only: no torch here.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage as ndi

from napari_medml.errors import InputError

__all__ = [
    "ClassMode",
    "ClassSamples",
    "class_labels",
    "image_level_labels",
    "image_samples",
    "majority_class",
    "make_samples",
    "object_level_labels",
    "object_samples",
    "prediction_table",
    "read_class_csv",
    "tile_level_labels",
    "tile_probability_map",
    "tile_samples",
]

ClassMode = Literal["image", "object", "tile"]
DEFAULT_OBJECT_SIZE = {2: (64, 64), 3: (32, 32, 32)}


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
        Where each sample comes from: image mode, the sample number ``(N,)``; object
        mode, the instance id ``(N,)``; tile mode, the first voxel of each tile
        ``(N, D)``.
    mode : {"image", "object", "tile"}
    source_shape : tuple of int
        Spatial shape of the source (image mode: with the sample axis first).
    image_channels : int
        The first ``image_channels`` channels are image intensities (normalised in
        training); object mode adds the object mask as the last channel.
    params : Mapping
        How the samples were made (``input_size``, ``tile_size``, ``margin``...),
        stored in a bundle so that new data are prepared the same way.
    sizes : np.ndarray or None
        Object mode: voxels per object.
    """

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray
    mode: ClassMode
    source_shape: tuple[int, ...]
    image_channels: int = 1
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    sizes: np.ndarray | None = None

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


def _check_labels(labels: np.ndarray, shape: tuple[int, ...], name: str, image_name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.shape != tuple(shape):
        raise InputError(
            f"{name} have shape {arr.shape} but {image_name} has {tuple(shape)} "
            f"(without channels): paint them on a labels layer of the image's shape"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{name} have dtype {arr.dtype}: class labels must be integer ids")
    if arr.size and arr.min() < 0:
        raise InputError(f"{name} contain negative ids: class ids must be >= 0")
    return arr


def _split_channels(image: np.ndarray, channel_axis: int | None, spatial_ndim: int,
                    name: str) -> np.ndarray:
    """``image`` -> float32 ``(C, *rest)`` with the channel axis first."""
    arr = np.asarray(image)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"{name} has dtype {arr.dtype}: it must be numeric")
    if channel_axis is None:
        arr = arr[None]
    else:
        if not -arr.ndim <= channel_axis < arr.ndim:
            raise InputError(f"channel_axis {channel_axis} is out of range for {name} with {arr.ndim} axes")
        arr = np.moveaxis(arr, channel_axis, 0)
    if arr.ndim - 1 != spatial_ndim:
        raise InputError(
            f"{name} has shape {np.asarray(image).shape}: expected {spatial_ndim} axes "
            f"{'plus a channel axis ' if channel_axis is not None else ''}here"
        )
    return arr.astype(np.float32, copy=False)


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


def read_class_csv(path: str | Path, n_samples: int, *,
                   class_names: Mapping[int, str] | None = None) -> np.ndarray:
    """Read one class per sample from a CSV file.

    One row per sample, in stack order; an optional header row; the class is the last
    column (so ``sample,class`` files work too). An empty cell or 0 means unknown.
    Class names are accepted when ``class_names`` maps them to ids.

    Parameters
    ----------
    path : str or Path
        The CSV file.
    n_samples : int
        Samples in the stack; the file must have exactly this many rows.
    class_names : mapping, optional
        Class id -> name, to read names as ids.

    Returns
    -------
    np.ndarray
        int64 ``(n_samples,)``, 0 = unknown.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise InputError(f"cannot read class file '{path}': {exc.strerror or exc}") from exc
    trimmed = list(rows)
    while trimmed and not any(cell.strip() for cell in trimmed[-1]):
        trimmed.pop()  # trailing blank lines, unless they are the missing rows
    if len(rows) != n_samples:
        rows = trimmed
    by_name = {str(v).strip().lower(): int(k) for k, v in (class_names or {}).items()}

    def parse(cell: str, line: int) -> int:
        cell = cell.strip()
        if cell == "":
            return 0
        try:
            value = float(cell)
        except ValueError:
            if cell.lower() in by_name:
                return by_name[cell.lower()]
            raise InputError(
                f"class file '{path.name}' line {line}: {cell!r} is not a class id"
                + (f" or one of the names {sorted(by_name)}" if by_name else "")
            ) from None
        if value != int(value) or value < 0:
            raise InputError(f"class file '{path.name}' line {line}: class {cell!r} must be an integer >= 0")
        return int(value)

    cells = [(row[-1] if row else "") for row in rows]
    start = 0
    if cells:
        try:
            parse(cells[0], 1)
        except InputError:
            start = 1  # a header row
    values = [parse(c, i + 1 + start) for i, c in enumerate(cells[start:])]
    if len(values) != n_samples:
        raise InputError(
            f"class file '{path.name}' has {len(values)} class rows but the stack has {n_samples} "
            f"samples: give one row per sample (empty or 0 = unknown)"
        )
    return np.asarray(values, dtype=np.int64)


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
    n_axes = arr.ndim - (channel_axis is not None)
    if spatial_dims is None:
        spatial_dims = n_axes - 1
    if spatial_dims not in (2, 3) or n_axes != spatial_dims + 1:
        raise InputError(
            f"{name} has shape {arr.shape}: image-level classification needs a stack whose first "
            f"axis is the sample, (N, Y, X) or (N, Z, Y, X); a single {n_axes}D image has no sample "
            "axis - stack the images, or use tile or object classification"
        )
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
    return ClassSamples(x=x.astype(np.float32, copy=False), y=y, index=np.arange(n), mode="image",
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
    boxes = ndi.find_objects(inst)
    ids = np.array([i + 1 for i, b in enumerate(boxes) if b is not None], dtype=np.int64)
    if ids.size == 0:
        raise InputError("the instance labels contain no objects: segment the objects first")
    n_max = int(ids.max()) + 1
    sizes = np.bincount(inst.ravel().astype(np.int64), minlength=n_max)[ids]
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
    return ClassSamples(x=x, y=y, index=ids, mode="object", source_shape=tuple(inst.shape),
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
    top = int(max(inst.max(initial=0), ids.max(initial=0))) + 1
    lut = np.zeros(top, _label_dtype(cls))
    lut[ids] = cls
    return lut[inst.astype(np.int64)]


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
    return ClassSamples(x=x.astype(np.float32, copy=False), y=y, index=starts, mode="tile",
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
    _need_mode(samples, "tile")
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
    _need_mode(samples, "tile")
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
    """Classes back to a labels array at the source's shape, for any mode.

    Object mode needs the ``instances`` the samples were made from.
    """
    if samples.mode == "image":
        return image_level_labels(classes, samples.source_shape)
    if samples.mode == "tile":
        return tile_level_labels(samples, classes)
    if instances is None:
        raise InputError("object classes need the instance labels to paint them back")
    return object_level_labels(instances, samples.index, classes)


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
    if samples.mode == "tile":
        table["tile"] = np.arange(n)
        names = ("start_z", "start_y", "start_x")[-samples.spatial_dims:]
        for axis, col in enumerate(names):
            table[col] = samples.index[:, axis].copy()
    else:
        table["sample" if samples.mode == "image" else "object"] = np.asarray(samples.index).copy()
    table["class"] = np.asarray(classes).astype(np.int64)
    for k, cid in enumerate(class_ids):
        table[f"prob_{int(cid)}"] = p[:, k]
    if samples.sizes is not None:
        table["size"] = samples.sizes.copy()
    return table


def make_samples(mode: ClassMode, image: np.ndarray, params: Mapping[str, Any], *,
                 class_labels: np.ndarray | None = None, instances: np.ndarray | None = None,
                 channel_axis: int | None = None, name: str = "image") -> ClassSamples:
    """Build samples of ``mode`` with stored ``params`` (what a bundle records)."""
    size = params.get("input_size")
    if mode == "image":
        return image_samples(image, labels=class_labels, channel_axis=channel_axis,
                             spatial_dims=params.get("spatial_dims"), input_size=size, name=name)
    if mode == "object":
        if instances is None:
            raise InputError("object classification needs instance labels (one id per object)")
        return object_samples(image, instances, class_labels=class_labels, channel_axis=channel_axis,
                              input_size=size, margin=params.get("margin", 0.2),
                              min_margin=params.get("min_margin", 2), name=name)
    if mode == "tile":
        if "tile_size" not in params:
            raise InputError("tile classification needs a tile size")
        return tile_samples(image, tile_size=params["tile_size"], class_labels=class_labels,
                            channel_axis=channel_axis, input_size=size, name=name)
    raise InputError(f"unknown classification mode {mode!r}: use image, object or tile")


# --- helpers -----------------------------------------------------------------------


def _check_size(size: Sequence[int] | int, spatial_dims: int, what: str) -> tuple[int, ...]:
    if isinstance(size, (int, np.integer)):
        size = (int(size),) * spatial_dims
    out = tuple(int(s) for s in size)
    if len(out) != spatial_dims or any(s < 1 for s in out):
        raise InputError(f"{what} {tuple(size)} must have {spatial_dims} positive values (one per axis)")
    return out


def _need_mode(samples: ClassSamples, mode: str) -> None:
    if samples.mode != mode:
        raise InputError(f"these are {samples.mode}-level samples, not {mode}-level")


def _label_dtype(classes: np.ndarray) -> np.dtype:
    top = int(classes.max(initial=0))
    return np.dtype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32)
