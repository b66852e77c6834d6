"""A preprocessing recipe replayed on an image read block by block (dask or Zarr, possibly
larger than memory), with the numbers the in-memory recipe gives.

A recipe step that sets each voxel from the voxel and a few statistics of the whole image
(the z-score's mean and std, min-max's range, the smallest finite value that fills NaN, a
CT window's fixed range) can run on one block at a time once those statistics are known:
each statistic is one pass over the image, block by block, through dask's reductions.
A filter over a small neighbourhood (gaussian, median) runs on each block with as many of
its neighbours' voxels as the filter reaches (dask's ``map_overlap``; the image's own edges
extended as the in-memory ``mode="nearest"``), so each voxel sees what it sees in memory.
A percentile clip as the recipe's first step (or after a fill) on an integer image is
replayed from a histogram of the image's values (one pass; two for 32-bit), which gives the
exact order statistics the in-memory ``np.nanpercentile`` interpolates between. Steps that depend on a
sort of other values or change the grid (a percentile after other steps or of a float
image, CLAHE, resampling, crops) are refused here; :func:`blockwise_refusal` names them.

The per-voxel formulas are those of :mod:`napari_medml.preprocessing.ops` (``zscore_with``,
``rescale``, ``fill_with``) and the filters are the in-memory step itself, so a block holds
the values the whole-image recipe gives; the statistics are summed in float64 by dask in
another order than NumPy's, which can move a value by one float32 rounding step at most.

No torch; dask is imported when a recipe is replayed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_medml.errors import InputError, check_numeric, raise_if_stopped

__all__ = ["BLOCKWISE_STEPS", "blockwise_refusal", "replay_lazy", "statistics_passes"]

BLOCKWISE_STEPS = ("fill_nan", "zscore", "minmax", "ct_window", "gaussian", "median", "percentile")
"""Recipe operations a block can replay (the whole image's statistics computed first; a
percentile only first, after fills, on an integer image)."""

HISTOGRAM_BINS = 1 << 20
"""The most distinct values an integer image may span for an exact block-wise percentile
(each block's histogram, 8 MiB, is summed in dask's reduction tree)."""


def blockwise_refusal(steps: Sequence[Any], doing: str, fix: str) -> str | None:
    """The line refusing a recipe that cannot be replayed block by block, or None.

    Parameters
    ----------
    steps : sequence of PreprocessStep
        The recipe (``DataConfig.preprocessing``).
    doing : str
        What is done block by block, e.g. ``"block-wise prediction"``.
    fix : str
        What to do instead, appended after a colon.

    Returns
    -------
    str or None
    """
    from napari_medml.preprocessing.recipe import describe_step

    others = [s for k, s in enumerate(steps) if s.operation not in BLOCKWISE_STEPS
              or (s.operation == "percentile" and any(t.operation != "fill_nan" for t in steps[:k]))]
    if not others:
        return None
    names = ", ".join(describe_step(s) for s in others)
    return (f"the preprocessing recipe has step(s) that need the whole image in memory ({names}): "
            f"{doing} replays only fill NaN, z-score, min-max, CT window, gaussian and median steps, and a "
            f"percentile clip as the first step of an integer image; {fix}")


def statistics_passes(steps: Sequence[Any], dtype: Any = None) -> int:
    """How many passes over the image :func:`replay_lazy` makes for the statistics of ``steps``
    (of an image of ``dtype``: a percentile of 32- or 64-bit integers takes one more, for the range)."""
    wide = dtype is not None and np.dtype(dtype).itemsize > 2
    return sum(s.operation in ("zscore", "minmax") or (s.operation == "fill_nan" and s.params.get("value") is None)
               or (s.operation == "percentile") * (1 + wide) for s in steps)


def replay_lazy(image: Any, steps: Sequence[Any], stop: Any = None, spacing: Sequence[float] | None = None) -> Any:
    """The recipe on each channel of a lazy ``(C, *spatial)`` image, as a lazy float32 array.

    The statistics each step needs are computed here, for all channels in one pass over the
    image per step that needs them (``zscore``: mean and std; ``minmax``: min and max;
    ``fill_nan`` without a value: the smallest finite value); reading a region of the result
    then reads and transforms only the chunks it covers.

    Parameters
    ----------
    image : array
        ``(C, *spatial)``: dask or Zarr (its chunks kept), or NumPy (wrapped, not copied, in
        chunks of at most 64 voxels per axis in 3D and 512 in 2D, so that a block reads little
        more than itself).
    steps : sequence of PreprocessStep
        The recipe; every step one of :data:`BLOCKWISE_STEPS`.
    stop : StopToken, optional
        Checked after each task of the statistics passes.
    spacing : sequence of float, optional
        The voxel size along the spatial axes (a gaussian's physical sigma is divided by
        it); default 1 per axis, as in memory.

    Returns
    -------
    dask.array.Array
        float32 ``(C, *spatial)``.

    Raises
    ------
    ConfigError
        A step that is not one of :data:`BLOCKWISE_STEPS`.
    InputError
        A non-numeric image; NaN or infinite values that the recipe does not fill first
        (found by the first statistics pass, before any block is predicted, as the
        in-memory check refuses them); a channel with no finite value; unknown step
        parameters.
    Cancelled
        Stopped through ``stop``.
    """
    import dask.array as da

    from napari_medml.errors import ConfigError
    from napari_medml.preprocessing import ops
    from napari_medml.preprocessing.inputs import FILL_NAN, fills_nonfinite
    from napari_medml.preprocessing.recipe import apply_step, describe_step

    refusal = blockwise_refusal(steps, "replaying a recipe block by block", "apply it in memory")
    if refusal:
        raise ConfigError(refusal)
    for step in steps:  # unknown operations and parameters are refused as in memory, before any pass
        describe_step(step)
        if step.operation in ("ct_window", "percentile"):
            apply_step(np.zeros((2, 2), np.float32), None, step)
    if isinstance(image, np.ndarray):
        edge = 64 if image.ndim > 3 else 512
        arr = da.from_array(image, chunks=(1, *(min(n, edge) for n in image.shape[1:])))
    else:
        arr = da.asarray(image)
    check_numeric(arr.dtype, "image")
    channels = raw = [arr[c].astype(np.float32) for c in range(arr.shape[0])]
    checked = fills_nonfinite(steps)  # the first step fills them: no other step sees one
    sp = tuple(float(v) for v in spacing) if spacing is not None else (1.0,) * (arr.ndim - 1)
    filtered = False
    for index, step in enumerate(steps):
        op, params = step.operation, dict(step.params)
        if op == "percentile":
            channels = _percentile_clip(arr, channels, params, stop)
            continue
        if op in ("gaussian", "median"):
            apply_step(np.zeros((3,) * (arr.ndim - 1), np.float32), sp, step)  # bad parameters: refused here
            if not checked and not statistics_passes(steps[index:]):  # no pass will count them on the raw image:
                # each block is refused where they are, before the filter spreads them over its neighbours
                channels = [x.map_blocks(_finite_or_refused, dtype=np.float32) for x in channels]
            channels, filtered = [_filtered(x, step, sp) for x in channels], True
            continue
        if op == "ct_window":  # a fixed range, voxel by voxel
            channels = [x.map_blocks(lambda block, s=step: apply_step(block, None, s)[0], dtype=np.float32)
                        for x in channels]
            continue
        if op == "fill_nan" and params.get("value") is not None:
            channels = [x.map_blocks(ops.fill_with, float(params["value"]), dtype=np.float32) for x in channels]
            continue
        # counted on the raw values (as the in-memory check does), in the same pass
        if filtered:
            found = _slab_statistics(op, channels, None if checked else raw, stop)
        else:
            wanted = [_statistics(op, x) + (() if checked else ((~da.isfinite(r)).sum(),))
                      for x, r in zip(channels, raw)]
            values = _compute(*[v for w in wanted for v in w], stop=stop)
            values = values if isinstance(values, tuple) else (values,)
            size = len(wanted[0])
            found = [values[k * size:(k + 1) * size] for k in range(len(channels))]
        if not checked:
            bad = sum(int(f[-1]) for f in found)
            if bad:
                raise InputError(f"image contains {bad} NaN or infinite value(s): " + FILL_NAN)
            found = [f[:-1] for f in found]
            checked = True
        channels = [_apply(op, x, f) for x, f in zip(channels, found)]
    return da.stack(channels)


def _percentile_clip(arr: Any, channels: list, params: dict, stop: Any) -> list:
    """A percentile clip of each channel of the integer image ``arr`` ``(C, *spatial)``, its
    bounds exact: the order statistics from a histogram of one bin per value (dask's histogram,
    summed block by block), interpolated by NumPy as ``np.nanpercentile`` does."""
    import dask.array as da

    from napari_medml.preprocessing import ops

    low, high = float(params.get("low", 1.0)), float(params.get("high", 99.0))
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"a percentile clip is replayed block by block only on an integer image, and this one is "
                         f"{arr.dtype}: predict in memory (command line: a NIfTI/TIFF --out), or train on a "
                         "z-score or min-max layer instead")
    if arr.dtype.itemsize <= 2:  # 8- and 16-bit: the dtype's range, no pass for it
        info = np.iinfo(arr.dtype)
        spans = [(int(info.min), int(info.max))] * arr.shape[0]
    else:
        found = _compute(*[v for c in range(arr.shape[0]) for v in (arr[c].min(), arr[c].max())], stop=stop)
        spans = [(int(found[2 * c]), int(found[2 * c + 1])) for c in range(arr.shape[0])]
    if any(max(abs(lo), abs(hi)) > 2**53 for lo, hi in spans):  # float64 (the histogram's edges) holds no such integer
        raise InputError("a percentile clip of an image with integers beyond 2^53 is not replayed block by block: "
                         "predict in memory, or train on a z-score layer")
    if any(hi - lo + 1 > HISTOGRAM_BINS for lo, hi in spans):
        raise InputError(f"a percentile clip of an image whose values span more than {HISTOGRAM_BINS} integers "
                         "is not replayed block by block: predict in memory, or train on a z-score layer")
    counts = _compute(*[da.histogram(arr[c], bins=hi - lo + 1, range=(lo - 0.5, hi + 0.5))[0]
                        for c, (lo, hi) in enumerate(spans)], stop=stop)
    counts = counts if isinstance(counts, tuple) else (counts,)
    out = []
    for x, (lo, _), count in zip(channels, spans, counts):
        total = np.cumsum(count)
        bounds = []
        for q in (low, high):
            h = (total[-1] - 1) * q / 100.0
            ranks = [int(np.floor(h)), min(int(np.floor(h)) + 1, int(total[-1]) - 1)]
            a, b = (np.float32(lo + np.searchsorted(total, r, side="right")) for r in ranks)
            bounds.append(float(np.percentile(np.array([a, b], np.float32), 100.0 * (h - np.floor(h)))))
        out.append(x.map_blocks(ops.rescale, bounds[0], bounds[1], dtype=np.float32))
    return out


def _filtered(x: Any, step: Any, spacing: tuple[float, ...]) -> Any:
    """A gaussian or median step on one lazy channel: each block with the voxels the filter
    reaches around it (the in-memory step on the enlarged block, then trimmed)."""
    from napari_medml.preprocessing.recipe import apply_step

    params = dict(step.params)
    if step.operation == "gaussian":  # scipy's reach: truncate (4) sigmas, rounded
        sigma = np.broadcast_to(np.asarray(params["sigma"], float), (x.ndim,))
        if params.get("physical"):
            sigma = sigma / np.asarray(spacing, float)
        depth = tuple(int(4.0 * float(s) + 0.5) for s in sigma)
    else:
        depth = tuple(int(s) // 2 for s in np.broadcast_to(np.asarray(params.get("size", 3)), (x.ndim,)))
    # an axis the filter reaches across (a few slices): whole in each block, as in memory (dask
    # refuses an overlap deeper than the array)
    whole = {a: -1 for a, (d, n) in enumerate(zip(depth, x.shape)) if d >= n}
    x = x.rechunk(whole) if whole else x
    depth = tuple(0 if a in whole else d for a, d in enumerate(depth))
    return x.map_overlap(lambda block: np.asarray(apply_step(block, spacing, step)[0], np.float32),
                         depth=depth, boundary="nearest", dtype=np.float32)


def _finite_or_refused(block: np.ndarray, block_info: Any = None) -> np.ndarray:
    """``block`` itself, or the in-memory check's refusal of its NaN and infinite values."""
    from napari_medml.preprocessing.inputs import FILL_NAN

    bad = int(np.count_nonzero(~np.isfinite(block)))
    if bad:
        where = ", ".join(f"{a}:{b}" for a, b in (block_info or {}).get(0, {}).get("array-location", ()))
        raise InputError(f"image contains {bad} NaN or infinite value(s)" + (f" in the region [{where}]" if where
                                                                                else "") + ": " + FILL_NAN)
    return block


def _slab_statistics(op: str, channels: list, raw: list | None, stop: Any) -> list[tuple[Any, ...]]:
    """:func:`_statistics` of filtered channels (and the raw channels' NaN and inf count), one
    slab of blocks along the first axis at a time: dask's own reduction of a ``map_overlap``
    array held many blocks' neighbourhoods at once (1.5 GiB of address space was not enough
    for a 3 GiB volume), a slab holds its blocks and their neighbours' only."""
    import dask

    grids = [x.to_delayed() for x in channels]
    # a filter may have rechunked (a reach beyond a chunk): the raw counts follow its blocks
    raws = [r.rechunk(x.chunks).to_delayed() for r, x in zip(raw, channels)] if raw is not None else [None] * len(
        channels)
    parts: list[list[tuple]] = [[] for _ in channels]
    for i in range(grids[0].shape[0]):
        tasks = [dask.delayed(_partial)(op, block, None if r is None else r[i].ravel()[k])
                 for c, (g, r) in enumerate(zip(grids, raws)) for k, block in enumerate(g[i].ravel())]
        done = iter(_compute(*tasks, stop=stop, many=True))
        for c, g in enumerate(grids):
            parts[c] += [next(done) for _ in range(g[i].size)]
    return [_combined(op, p) + (() if raw is None else (sum(q[-1] for q in p),)) for p in parts]


def _partial(op: str, block: np.ndarray, raw: np.ndarray | None) -> tuple:
    """One block's share of :func:`_statistics` (zscore: count, mean and the sum of squared
    deviations, combined by Chan et al.'s pairwise formula), then its raw NaN/inf count."""
    finite = block[~np.isnan(block)] if op != "fill_nan" else block[np.isfinite(block)]
    bad = () if raw is None else (int((~np.isfinite(raw)).sum()),)
    if op == "zscore":
        mean = float(finite.mean(dtype=np.float64)) if finite.size else 0.0
        return (finite.size, mean, float(((finite - mean) ** 2).sum(dtype=np.float64))) + bad
    if op == "fill_nan":
        return (float(finite.min()) if finite.size else np.inf,) + bad
    return (float(finite.min()) if finite.size else np.nan, float(finite.max()) if finite.size else np.nan) + bad


def _combined(op: str, parts: list[tuple]) -> tuple[Any, ...]:
    """The whole channel's statistics from its blocks' :func:`_partial` ones, as :func:`_statistics`."""
    if op == "zscore":
        n, mean, m2 = 0, 0.0, 0.0
        for count, m, s, *_ in parts:
            if count:
                total = n + count
                delta = m - mean
                mean, m2, n = mean + delta * count / total, m2 + s + delta * delta * n * count / total, total
        return n, mean, float(np.sqrt(m2 / n)) if n else np.nan
    if op == "fill_nan":
        return (min(p[0] for p in parts),)
    lows, highs = [p[0] for p in parts if not np.isnan(p[0])], [p[1] for p in parts if not np.isnan(p[1])]
    return (min(lows) if lows else np.nan, max(highs) if highs else np.nan)


def _statistics(op: str, x: Any) -> tuple[Any, ...]:
    """The lazy statistics of one channel that step ``op`` needs."""
    import dask.array as da

    if op == "fill_nan":
        return (da.where(da.isfinite(x), x, np.inf).min(),)
    if op == "zscore":
        return (~da.isnan(x)).sum(), da.nanmean(x, dtype=np.float64), da.nanstd(x, dtype=np.float64)
    return da.nanmin(x), da.nanmax(x)  # minmax


def _apply(op: str, x: Any, found: Sequence[Any]) -> Any:
    """Step ``op`` on one lazy channel, given its statistics (the formulas of ``ops``)."""
    from napari_medml.preprocessing import ops

    if op == "fill_nan":
        if not np.isfinite(found[0]):
            raise InputError("fill NaN: every voxel is NaN or infinite, so there is no smallest value to fill "
                             "with: give a value")
        return x.map_blocks(ops.fill_with, float(found[0]), dtype=np.float32)
    if op == "zscore":
        if int(found[0]) == 0:
            raise InputError("zscore: no (non-NaN) voxels to compute statistics from")
        return x.map_blocks(ops.zscore_with, float(found[1]), float(found[2]), dtype=np.float32)
    return x.map_blocks(ops.rescale, float(found[0]), float(found[1]), dtype=np.float32)


def _compute(*values: Any, stop: Any = None, many: bool = False) -> Any:
    """``dask.compute`` of ``values`` (one value: it alone, unless ``many``), stopped between
    tasks by ``stop``.

    The stop hook is given to this computation only (not registered globally, where
    napari's own dask reads in other threads would run it).
    """
    import dask
    from dask.callbacks import Callback

    class _Stop(Callback):
        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            raise_if_stopped(stop, "stopped while the recipe's statistics were computed")

    with warnings.catch_warnings():  # an all-NaN channel's mean (in dask's threads): refused with its own line
        warnings.filterwarnings("ignore", message="(invalid value|Mean of empty slice|Degrees of freedom)",
                                category=RuntimeWarning)
        out = dask.compute(*values, scheduler="threads", callbacks=[_Stop()._callback])
    return out[0] if len(out) == 1 and not many else out
