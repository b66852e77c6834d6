"""Objects of a volume larger than memory, labelled block by block into a Zarr store.

A labelling step (a seeded watershed, connected components) sees the whole map when
it runs in memory. Here each block of a :class:`~napari_medml.segmentation.chunked.BlockPlan`
is labelled from the block plus a *halo* of context, and only the block's core is
written. An object's id is ``1 +`` the flat index (C order, whole volume) of its first
voxel: the same object found from two blocks gets the same id, ids are unique over the
volume and do not depend on the block plan.

The result equals the whole-volume labelling (up to the renumbering) when every group
of touching objects met in a block's core lies inside the block's read region without
touching its cut faces: a labelling such as a seeded watershed runs per group (seeds,
their dynamics and the flooding compete within it), and a group cut by the region could
be split differently. (Exact ties of the map at two seeds, as a Euclidean distance map
has, are broken by skimage's watershed in its heap's order over the whole map: a few
voxels between two touching objects may go the other way.) This is checked for every
block: where a group reaches a cut face the halo is doubled for that block (up to :data:`MAX_GROWTH` times). Touching objects
that fill the volume (a confluent tissue) form one group no halo holds; there a block
is accepted when each object met in its core and every object it touches are whole
(its flooding competitors), counted in :attr:`LabelledBlocks.approximate` and listed in
the store; an object still larger is refused with the fix, never written cut.

Finished blocks (and their object counts) are listed in the store's attributes, as
:mod:`napari_medml.segmentation.to_zarr` does: an interrupted run resumes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_medml.errors import ConfigError, InputError, raise_if_stopped
from napari_medml.segmentation.chunked import BlockPlan

__all__ = ["MAX_GROWTH", "LabelledBlocks", "Labeller", "id_dtype", "label_blocks", "labelling_memory"]

MAX_GROWTH = 3  # a block's halo is doubled at most this many times
# working bytes per voxel of a labelled region: the maps, a seeded watershed's float64
# height and reconstruction, markers, output, and the int64 sort that assigns the ids
_BYTES_PER_VOXEL = 120

Labeller = Callable[..., np.ndarray]


@dataclass(frozen=True)
class LabelledBlocks:
    """What :func:`label_blocks` wrote.

    Attributes
    ----------
    store : Path
        The labels store.
    objects : int
        Objects in the volume (each counted in the block holding its first voxel).
    computed, resumed : int
        Blocks labelled by this call; blocks found finished by an earlier one.
    grown : int
        Blocks of this call that needed a larger halo.
    approximate : int
        Blocks whose groups of touching objects reach past the largest halo (touching
        objects filling the volume): there each object and its neighbours were whole,
        which gives the whole-volume objects unless a seed depends on objects further away.
    """

    store: Path
    objects: int
    computed: int
    resumed: int
    grown: int
    approximate: int = 0


def id_dtype(shape: Sequence[int]) -> type:
    """The unsigned type that holds every id ``1 + flat index`` of a volume of ``shape``."""
    return np.uint32 if math.prod(shape) < 2**32 - 1 else np.uint64


def labelling_memory(plan: BlockPlan, halo: Sequence[int]) -> int:
    """Expected working bytes of labelling the largest block with ``halo`` (before any growth)."""
    region = math.prod(min(b + 2 * int(h), s) for b, h, s in zip(plan.block, halo, plan.shape))
    return region * _BYTES_PER_VOXEL


def _region(core: tuple[slice, ...], halo: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(c.start - h, 0), min(c.stop + h, s)) for c, h, s in zip(core, halo, shape))


def _cut_ids(labels: np.ndarray, region: tuple[slice, ...], shape: Sequence[int]) -> np.ndarray:
    """Ids on the faces of ``region`` that cut the volume (not its outer faces)."""
    found = []
    for axis, (r, s) in enumerate(zip(region, shape)):
        for edge, cut in ((0, r.start > 0), (-1, r.stop < s)):
            if cut:
                found.append(np.unique(np.take(labels, edge, axis=axis)))
    return np.unique(np.concatenate(found)) if found else np.zeros(0, labels.dtype)


def _with_neighbours(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``ids`` and every id sharing a face with one of them."""
    if not len(ids):
        return ids
    top = int(labels.max()) + 1
    pairs = []
    for axis in range(labels.ndim):
        a = np.take(labels, range(labels.shape[axis] - 1), axis=axis).ravel()
        b = np.take(labels, range(1, labels.shape[axis]), axis=axis).ravel()
        touch = (a != b) & (a > 0) & (b > 0)
        if touch.any():
            pairs.append(np.unique(a[touch].astype(np.int64) * top + b[touch]))
    if not pairs:
        return ids
    codes = np.unique(np.concatenate(pairs))
    a, b = codes // top, codes % top
    return np.unique(np.concatenate([ids, b[np.isin(a, ids)], a[np.isin(b, ids)]]))


def _label_block(sources: Sequence[Any], labeller: Labeller, plan: BlockPlan, index: int, halo: Sequence[int],
                 min_volume: float, voxel_volume: float, dtype: type) -> tuple[np.ndarray, int, int, bool]:
    """Ids of block ``index``'s core, the objects whose first voxel lies in it, the halo
    doublings it needed, and whether only objects and their neighbours were whole."""
    core = plan.interior(index)
    halo = [int(h) for h in halo]
    approximate = False
    for growth in range(MAX_GROWTH + 1):
        region = _region(core, halo, plan.shape)
        labels = np.asarray(labeller(*(np.asarray(src[region]) for src in sources)))
        if labels.shape != tuple(r.stop - r.start for r in region):
            raise ConfigError(f"the labeller returned shape {labels.shape} for a region of "
                              f"{tuple(r.stop - r.start for r in region)}")  # fmt: skip
        local = tuple(slice(c.start - r.start, c.stop - r.start) for c, r in zip(core, region))
        whole = all(r.start == 0 and r.stop == s for r, s in zip(region, plan.shape))
        if whole or _complete(labels, local, region, plan.shape, groups=True):
            break  # every group of touching objects met in the core is whole: exact
        last = growth == MAX_GROWTH
        if last and _complete(labels, local, region, plan.shape, groups=False):
            approximate = True  # touching objects that fill the volume: each object and its neighbours are whole
            break
        if last:
            where = ", ".join(f"{c.start}:{c.stop}" for c in core)
            raise InputError(f"objects in the block [{where}] reach past a halo of "
                             f"{'x'.join(str(h) for h in halo)} voxels: give a larger halo (largest object "
                             "extent plus its neighbours') or larger blocks; a foreground that fills the volume "
                             "is one object, check the foreground threshold")  # fmt: skip
        halo = [max(2 * h, 1) for h in halo]
    ids, first, inverse, counts = np.unique(labels.ravel(), return_index=True, return_inverse=True,
                                            return_counts=True)  # fmt: skip
    anchors = np.stack(np.unravel_index(first, labels.shape)) + np.array([r.start for r in region])[:, None]
    kept = (ids > 0) & ~(counts * float(voxel_volume) < min_volume)
    lut = np.where(kept, np.ravel_multi_index(tuple(anchors), plan.shape) + 1, 0).astype(dtype)
    out = lut[inverse.reshape(labels.shape)][local]
    inside = np.all([(a >= c.start) & (a < c.stop) for a, c in zip(anchors, core)], axis=0)
    return out, int((kept & inside).sum()), growth, approximate


def _complete(labels: np.ndarray, local: tuple[slice, ...], region: tuple[slice, ...], shape: Sequence[int], *,
              groups: bool) -> bool:
    """Whether what the core's objects depend on lies inside the region, off its cut faces:
    with ``groups`` every connected group of touching objects (the labelling runs per
    group: seeds, their dynamics and the flooding compete within it), otherwise each
    object and the objects it touches."""
    if groups:
        from scipy import ndimage as ndi

        labels = ndi.label(labels > 0)[0]
    met = np.unique(labels[local])
    cut = _cut_ids(labels, region, shape)
    needed = met[met > 0] if groups else _with_neighbours(labels, met[met > 0])
    return not np.isin(needed, cut[cut > 0]).any()


def label_blocks(sources: Sequence[Any], labeller: Labeller, out: str | Path, *, plan: BlockPlan,
                 halo: Sequence[int], run: dict[str, Any], geometry: dict[str, Any], spatial_axes: str,
                 min_volume: float = 0.0, voxel_volume: float = 1.0,
                 progress: Callable[[int, int], None] | None = None, stop: Any | None = None,
                 refusal: Callable[[Any, dict[str, Any]], str | None] | None = None) -> LabelledBlocks:
    """Label objects block by block into an OME-Zarr labels store; resume an interrupted run.

    Parameters
    ----------
    sources : sequence of array
        Maps of the volume's spatial shape (zarr, dask or NumPy; only a block's region is
        read at a time), passed to ``labeller`` in this order.
    labeller : callable
        ``labeller(*regions) -> labels``: integer labels of the regions' shape, 0 the
        background, any positive id per object (the ids need not be the same across calls).
    out : str or Path
        The labels store (``.zarr``) to create, or to resume.
    plan : BlockPlan
        The blocks (their cores are written).
    halo : sequence of int
        Context read on each side of a core, per axis (grown where an object needs it).
    run : dict
        JSON of what must match for a store to be resumed (model, maps, parameters).
    geometry : dict
        ``spacing``, ``origin`` (per spatial axis) and ``unit`` for the store's metadata.
    spatial_axes : str
        Axis letters of the store.
    min_volume, voxel_volume : float
        Objects whose voxel count times ``voxel_volume`` is below ``min_volume`` are removed
        (measured on the whole object).
    progress : callable, optional
        ``(done, total)`` blocks.
    stop : StopToken, optional
        Stopped: ``Cancelled`` is raised before the next block.
    refusal : callable, optional
        ``refusal(old_run, run)``: the words refusing an existing store of another run
        (None: the general refusal), e.g. the fix that labels anew from kept maps.

    Returns
    -------
    LabelledBlocks

    Raises
    ------
    InputError
        An existing store that is not this run; an object larger than the grown halo.
    Cancelled
        Stopped through ``stop``.
    """
    from napari_medml.segmentation.chunked import _mark, _open_stores

    halo = tuple(int(h) for h in halo)
    if len(halo) != len(plan.shape) or min(halo) < 0:
        raise ConfigError(f"halo {halo} must have {len(plan.shape)} values >= 0")
    run = {**run, **plan.signature(), "halo": list(halo)}
    dtype = id_dtype(plan.shape)
    arrays, group, done = _open_stores({"labels": Path(out)}, plan, run, spatial_axes, geometry, {"labels": dtype},
                                       refusal=refusal)
    from napari_medml.io.zarr import ATTRS_KEY

    recorded = (dict(group.attrs.get(ATTRS_KEY) or {}).get("prediction") or {})
    counts = {str(k): int(v) for k, v in (recorded.get("objects") or {}).items()}
    approximate = {int(i) for i in recorded.get("approximate") or []}
    resumed, computed, grown = len(done), 0, 0
    for index in range(plan.count):
        if index in done:
            continue
        raise_if_stopped(stop, "labelling stopped")
        if progress is not None:
            progress(len(done), plan.count)
        ids, objects, growth, loose = _label_block(sources, labeller, plan, index, halo, min_volume, voxel_volume,
                                                   dtype)  # fmt: skip
        arrays["labels"][plan.interior(index)] = ids
        del ids
        done.add(index)
        counts[str(index)] = objects
        computed += 1
        grown += growth > 0
        if loose:
            approximate.add(index)
        _mark(group, done, complete=len(done) == plan.count, objects=counts, approximate=sorted(approximate))
    if progress is not None:
        progress(plan.count, plan.count)
    if computed == 0:
        _mark(group, done, complete=True, objects=counts, approximate=sorted(approximate))
    return LabelledBlocks(Path(out), sum(counts.values()), computed, resumed, grown, len(approximate))
