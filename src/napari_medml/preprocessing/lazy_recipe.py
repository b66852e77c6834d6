"""A preprocessing recipe replayed on an image read block by block (dask or Zarr, possibly
larger than memory), with the numbers the in-memory recipe gives.

A recipe step that sets each voxel from the voxel and a few statistics of the whole image
(the z-score's mean and std, min-max's range, the smallest finite value that fills NaN, a
CT window's fixed range) can run on one block at a time once those statistics are known:
each statistic is one pass over the image, block by block, through dask's reductions.
Steps whose output depends on a neighbourhood or a sort of the whole image (percentiles,
filters, CLAHE, resampling, crops) are refused here; :func:`blockwise_refusal` names them.

The per-voxel formulas are those of :mod:`napari_medml.preprocessing.ops` (``zscore_with``,
``rescale``, ``fill_with``), so a block holds the values the whole-image recipe gives; the
statistics are summed in float64 by dask in another order than NumPy's, which can move a
value by one float32 rounding step at most.

No torch; dask is imported when a recipe is replayed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_medml.errors import Cancelled, InputError

__all__ = ["BLOCKWISE_STEPS", "blockwise_refusal", "replay_lazy", "statistics_passes"]

BLOCKWISE_STEPS = ("fill_nan", "zscore", "minmax", "ct_window")
"""Recipe operations a block can replay (the whole image's statistics computed first)."""


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

    others = [s for s in steps if s.operation not in BLOCKWISE_STEPS]
    if not others:
        return None
    names = ", ".join(describe_step(s) for s in others)
    return (f"the preprocessing recipe has step(s) that need the whole image in memory ({names}): "
            f"{doing} replays only fill NaN, z-score, min-max and CT window steps; {fix}")


def statistics_passes(steps: Sequence[Any]) -> int:
    """How many passes over the image :func:`replay_lazy` makes for the statistics of ``steps``."""
    return sum(s.operation in ("zscore", "minmax") or (s.operation == "fill_nan" and s.params.get("value") is None)
               for s in steps)


def replay_lazy(image: Any, steps: Sequence[Any], stop: Any = None) -> Any:
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
        if step.operation == "ct_window":
            apply_step(np.zeros((2, 2), np.float32), None, step)
    if isinstance(image, np.ndarray):
        edge = 64 if image.ndim > 3 else 512
        arr = da.from_array(image, chunks=(1, *(min(n, edge) for n in image.shape[1:])))
    else:
        arr = da.asarray(image)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"image has dtype {arr.dtype}: give a numeric image")
    channels = raw = [arr[c].astype(np.float32) for c in range(arr.shape[0])]
    checked = fills_nonfinite(steps)  # the first step fills them: no other step sees one
    for step in steps:
        op, params = step.operation, dict(step.params)
        if op == "ct_window":  # a fixed range, voxel by voxel
            channels = [x.map_blocks(lambda block, s=step: apply_step(block, None, s)[0], dtype=np.float32)
                        for x in channels]
            continue
        if op == "fill_nan" and params.get("value") is not None:
            channels = [x.map_blocks(ops.fill_with, float(params["value"]), dtype=np.float32) for x in channels]
            continue
        # counted on the raw values (as the in-memory check does), in the same pass
        wanted = [_statistics(op, x) + (() if checked else ((~da.isfinite(r)).sum(),)) for x, r in zip(channels, raw)]
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


def _compute(*values: Any, stop: Any = None) -> Any:
    """``dask.compute`` of ``values`` (one value: it alone), stopped between tasks by ``stop``.

    The stop hook is given to this computation only (not registered globally, where
    napari's own dask reads in other threads would run it).
    """
    import dask
    from dask.callbacks import Callback

    class _Stop(Callback):
        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if stop is not None and stop.stopped:
                raise Cancelled("stopped while the recipe's statistics were computed")

    with warnings.catch_warnings():  # an all-NaN channel's mean (in dask's threads): refused with its own line
        warnings.filterwarnings("ignore", message="(invalid value|Mean of empty slice|Degrees of freedom)",
                                category=RuntimeWarning)
        out = dask.compute(*values, scheduler="threads", callbacks=[_Stop()._callback])
    return out[0] if len(out) == 1 else out
