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

    The statistics each step needs are computed here, one pass over the image per step
    that needs them (``zscore``: mean and std; ``minmax``: min and max; ``fill_nan``
    without a value: the smallest finite value); reading a region of the result then
    reads and transforms only the blocks it covers.

    Parameters
    ----------
    image : array
        ``(C, *spatial)``: dask, Zarr or NumPy (wrapped, not copied).
    steps : sequence of PreprocessStep
        The recipe; every step one of :data:`BLOCKWISE_STEPS`.
    stop : StopToken, optional
        Checked after each block of the statistics passes.

    Returns
    -------
    dask.array.Array
        float32 ``(C, *spatial)``, the input's chunks.

    Raises
    ------
    ConfigError
        A step that is not one of :data:`BLOCKWISE_STEPS`.
    InputError
        A channel with no finite value to take statistics from; unknown step parameters.
    Cancelled
        Stopped through ``stop``.
    """
    import dask.array as da

    from napari_medml.errors import ConfigError

    refusal = blockwise_refusal(steps, "this", "predict in memory")
    if refusal:
        raise ConfigError(refusal)
    arr = da.asarray(image)
    channels = [_replay_channel(arr[c].astype(np.float32), steps, stop) for c in range(arr.shape[0])]
    return da.stack(channels)


def _replay_channel(x: Any, steps: Sequence[Any], stop: Any) -> Any:
    import dask.array as da

    from napari_medml.preprocessing import ops
    from napari_medml.preprocessing.recipe import apply_step, describe_step

    for step in steps:
        describe_step(step)  # unknown operations and parameters are refused as in memory
        params = dict(step.params)
        if step.operation == "fill_nan":
            value = params.get("value")
            if value is None:
                smallest = _compute(da.where(da.isfinite(x), x, np.inf).min(), stop=stop)
                if not np.isfinite(smallest):
                    raise InputError("fill NaN: every voxel is NaN or infinite, so there is no smallest value to "
                                     "fill with: give a value")
                value = float(smallest)
            x = x.map_blocks(ops.fill_with, float(value), dtype=np.float32)
        elif step.operation == "zscore":
            count, mean, std = _compute((~da.isnan(x)).sum(), da.nanmean(x, dtype=np.float64),
                                        da.nanstd(x, dtype=np.float64), stop=stop)
            if count == 0:
                raise InputError("zscore: no (non-NaN) voxels to compute statistics from")
            x = x.map_blocks(ops.zscore_with, float(mean), float(std), dtype=np.float32)
        elif step.operation == "minmax":
            low, high = _compute(da.nanmin(x), da.nanmax(x), stop=stop)
            x = x.map_blocks(ops.rescale, float(low), float(high), dtype=np.float32)
        else:  # ct_window: a fixed range, voxel by voxel
            x = x.map_blocks(lambda block, s=step: apply_step(block, None, s)[0], dtype=np.float32)
    return x


def _compute(*values: Any, stop: Any = None) -> Any:
    """``dask.compute`` of ``values`` (one value: it alone), stopped between blocks by ``stop``."""
    import dask
    from dask.callbacks import Callback

    class _Stop(Callback):
        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if stop is not None and stop.stopped:
                raise Cancelled("stopped while the recipe's statistics were computed")

    with _Stop():
        out = dask.compute(*values, scheduler="threads")
    return out[0] if len(out) == 1 else out
