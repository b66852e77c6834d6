"""The per-object table of an instance volume larger than memory, block by block.

Each block of the labels (and of the image) is read once; per object the voxel count,
coordinate sums, bounding box and intensity sums/maxima of its part in the block are
kept, then the parts of an object found in several blocks are added up. The columns
are those of :func:`napari_medml.instances.measure.measure_image_instances` (same
values: regionprops' centroid is the mean voxel coordinate), one row per object id.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_medml.errors import Cancelled, InputError

__all__ = ["measure_blocks"]


def _block_parts(lab: np.ndarray, start: Sequence[int], channels: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-object partial sums of one block (background left out)."""
    from scipy import ndimage as ndi

    ids, inverse, counts = np.unique(lab.ravel(), return_inverse=True, return_counts=True)
    inverse = inverse.reshape(lab.shape)
    keep = ids > 0
    parts: dict[str, np.ndarray] = {"id": ids[keep].astype(np.int64), "count": counts[keep].astype(np.float64)}
    n = len(ids)
    for axis in range(lab.ndim):
        coord = np.broadcast_to(np.arange(lab.shape[axis], dtype=np.float64).reshape(
            [-1 if a == axis else 1 for a in range(lab.ndim)]), lab.shape)  # fmt: skip
        parts[f"sum{axis}"] = (np.bincount(inverse.ravel(), weights=coord.ravel(), minlength=n)[keep]
                               + counts[keep] * float(start[axis]))  # fmt: skip
    boxes = ndi.find_objects(inverse + 1)
    for axis in range(lab.ndim):
        parts[f"lo{axis}"] = np.array([b[axis].start + start[axis] for b, k in zip(boxes, keep) if k], np.int64)
        parts[f"hi{axis}"] = np.array([b[axis].stop + start[axis] for b, k in zip(boxes, keep) if k], np.int64)
    for c, channel in enumerate(channels):
        values = np.asarray(channel, dtype=np.float64)
        parts[f"isum{c}"] = np.bincount(inverse.ravel(), weights=values.ravel(), minlength=n)[keep]
        parts[f"imax{c}"] = np.asarray(ndi.maximum(values, inverse, np.flatnonzero(keep)), np.float64).reshape(-1)
    return parts


def measure_blocks(labels: Any, image: Any = None, *, block: Sequence[int], spacing: Sequence[float],
                   origin: Sequence[float] | None = None, stop: Any | None = None) -> dict[str, np.ndarray]:
    """The per-object table of ``labels``, read block by block.

    Parameters
    ----------
    labels : array
        Instance ids ``(Y, X)`` or ``(Z, Y, X)`` (zarr, dask or NumPy).
    image : array, optional
        ``(C, *labels.shape)``: ``mean_intensity``/``max_intensity`` for one channel,
        ``mean_channel_<c>``/``max_channel_<c>`` for several.
    block : sequence of int
        Block shape read at a time.
    spacing, origin : sequence of float
        Voxel size and world position of voxel 0 (sizes and centroids are physical).
    stop : StopToken, optional
        Stopped: ``Cancelled`` is raised before the next block.

    Returns
    -------
    dict of str to np.ndarray
        ``index``, ``area`` (2D) or ``volume`` (3D), ``centroid_<axis>``,
        ``bbox_start_<axis>``/``bbox_stop_<axis>`` (voxels, half-open), intensities.
    """
    shape = tuple(int(s) for s in labels.shape)
    ndim = len(shape)
    if ndim not in (2, 3):
        raise InputError(f"instance labels have shape {shape}: expected (Y, X) or (Z, Y, X)")
    spacing = tuple(float(s) for s in spacing)
    origin = tuple(float(o) for o in origin) if origin is not None else (0.0,) * ndim
    n_channels = 0 if image is None else int(image.shape[0])
    collected: list[dict[str, np.ndarray]] = []
    grid = [range(0, s, int(b)) for s, b in zip(shape, block)]
    for start in itertools.product(*grid):
        if stop is not None and stop.stopped:
            raise Cancelled("measuring stopped")
        region = tuple(slice(s, min(s + int(b), n)) for s, b, n in zip(start, block, shape))
        lab = np.asarray(labels[region])
        if not lab.any():
            continue
        channels = [] if image is None else list(np.asarray(image[(slice(None), *region)]))
        collected.append(_block_parts(lab, start, channels))
    names = ("z", "y", "x")[-ndim:]
    labels_of = [f"channel_{c}" for c in range(n_channels)] if n_channels > 1 else ["intensity"] * n_channels
    if not collected:
        empty = {"index": np.zeros(0, np.int64), "area" if ndim == 2 else "volume": np.zeros(0)}
        empty.update({f"centroid_{a}": np.zeros(0) for a in names})
        empty.update({f"bbox_{w}_{a}": np.zeros(0, np.int64) for a in names for w in ("start", "stop")})
        empty.update({f"{k}_{name}": np.zeros(0) for name in labels_of for k in ("mean", "max")})
        return empty
    joined = {k: np.concatenate([p[k] for p in collected]) for k in collected[0]}
    ids, inverse = np.unique(joined["id"], return_inverse=True)

    def total(key: str) -> np.ndarray:
        return np.bincount(inverse, weights=joined[key], minlength=len(ids))

    def extreme(key: str, ufunc: Any, fill: Any) -> np.ndarray:
        out = np.full(len(ids), fill, dtype=joined[key].dtype)
        ufunc.at(out, inverse, joined[key])
        return out

    count = total("count")
    table: dict[str, np.ndarray] = {"index": ids.astype(np.int64),
                                    "area" if ndim == 2 else "volume": count * math.prod(spacing)}
    for a, name in enumerate(names):
        table[f"centroid_{name}"] = origin[a] + total(f"sum{a}") / count * spacing[a]
    for a, name in enumerate(names):
        table[f"bbox_start_{name}"] = extreme(f"lo{a}", np.minimum, np.iinfo(np.int64).max)
        table[f"bbox_stop_{name}"] = extreme(f"hi{a}", np.maximum, 0)
    for c, name in enumerate(labels_of):
        table[f"mean_{name}"] = total(f"isum{c}") / count
        table[f"max_{name}"] = extreme(f"imax{c}", np.maximum, -np.inf)
    return table
