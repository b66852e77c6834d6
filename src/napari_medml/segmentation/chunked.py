"""Prediction of volumes larger than memory: the block plan and one block's exact scores
(:mod:`napari_medml.segmentation.to_zarr` runs the blocks into a Zarr store).

The volume is cut into blocks (interiors that tile it). For each block the network runs
on the block plus a halo, and only the block's interior is kept. The halo is chosen so
that the result is the whole-volume prediction: MONAI's sliding window places its
windows on a grid over the whole volume (:func:`window_starts`); a block's read region
is exactly the windows of that grid that touch the block, so MONAI, run on that region,
visits the same windows, weights them with the same gaussian and adds them in the same
order for every voxel of the interior. Windows across a block border are computed for
both blocks (:attr:`BlockPlan.windows` counts them), so blocks are made as large as the
memory budget allows, whole rows along the last axes first.

Finished blocks are listed in the output store's attributes after their data are
written: an interrupted run (Stop, Ctrl-C, a crash) resumes where it stopped and never
recomputes a finished block. Peak memory is set by the block size, not the volume.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_medml.config import InferConfig
from napari_medml.errors import ConfigError, InputError, check_numeric
from napari_medml.preprocessing.inputs import FILL_NAN
from napari_medml.segmentation.tta import TTAPass, tta_passes

__all__ = ["BlockPlan", "block_scores", "check_plan", "no_store_if_refused", "plan_blocks", "window_starts"]

_DEFAULT_MEMORY_MB = 1024.0


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start of every sliding window along one axis, as MONAI places them.

    Same rule as ``monai.inferers.utils._get_scan_interval`` and
    ``monai.data.utils.dense_patch_slices`` (a test checks them against MONAI): the
    axis is padded to at least ``roi``; windows start every ``int(roi * (1 - overlap))``
    voxels, the last one moved back to end at the edge.
    """
    size = max(size, roi)
    interval = roi if roi == size else max(int(roi * (1 - overlap)), 1)
    count = next(d for d in range(size) if d * interval + roi >= size) + 1
    return [d * interval - max(d * interval + roi - size, 0) for d in range(count)]


def _read_range(b0: int, b1: int, size: int, roi: int, overlap: float, flipped: bool) -> tuple[int, int]:
    """The part of an axis a block ``[b0, b1)`` reads: the windows of the whole-axis grid
    that touch it (on the mirrored grid for a flipped TTA pass)."""
    if roi >= size:
        return 0, size
    if flipped:
        lo, hi = _read_range(size - b1, size - b0, size, roi, overlap, False)
        return size - hi, size - lo
    starts = [s for s in window_starts(size, roi, overlap) if s < b1 and s + roi > b0]
    return starts[0], starts[-1] + roi


@dataclass(frozen=True)
class BlockPlan:
    """How a volume is cut into blocks.

    Attributes
    ----------
    shape : tuple of int
        Spatial shape of the volume.
    block : tuple of int
        Spatial shape of a block's interior (the last ones along an axis may be smaller).
    roi : tuple of int
        Sliding-window size (the model's patch size).
    overlap : float
    passes : tuple of TTAPass
        The TTA passes (``segmentation.tta``; the first is the image as given).
    channels, classes : int
        Input channels and output classes.
    windows : int
        Windows run over all blocks (a window across a block border counts per block).
    whole_windows : int
        Windows a whole-volume prediction runs.
    memory_bytes : int
        Expected working memory of one block (input, blending buffers, network).
    """

    shape: tuple[int, ...]
    block: tuple[int, ...]
    roi: tuple[int, ...]
    overlap: float
    passes: tuple[TTAPass, ...]
    channels: int
    classes: int
    windows: int
    whole_windows: int
    memory_bytes: int

    @property
    def grid(self) -> tuple[int, ...]:
        """Blocks per axis."""
        return tuple(-(-s // b) for s, b in zip(self.shape, self.block))

    @property
    def count(self) -> int:
        """Number of blocks."""
        return math.prod(self.grid)

    def interior(self, index: int) -> tuple[slice, ...]:
        """The spatial slices of block ``index`` (C order over :attr:`grid`)."""
        position = np.unravel_index(index, self.grid)
        return tuple(slice(p * b, min((p + 1) * b, s)) for p, b, s in zip(position, self.block, self.shape))

    def read_region(self, index: int, tta_pass: TTAPass | None = None) -> tuple[slice, ...]:
        """What block ``index`` reads for the pass ``tta_pass`` (default: the image as given):
        along each axis, the windows of that pass's grid (mirrored where it flips, with the
        window edges swapped where it transposes) that touch the block."""
        tta_pass = tta_pass or self.passes[0]
        roi = tta_pass.shape(self.roi)
        return tuple(slice(*_read_range(sl.start, sl.stop, s, r, self.overlap, a in tta_pass.flips))
                     for a, (sl, s, r) in enumerate(zip(self.interior(index), self.shape, roi)))

    def describe(self) -> str:
        """One line for the user: blocks, block size, window overhead, memory."""
        block = "x".join(str(b) for b in self.block)
        extra = self.windows / max(self.whole_windows, 1)
        return (f"{self.count} block(s) of {block} voxels ({'x'.join(str(g) for g in self.grid)}); "
                f"{self.windows} windows ({extra:.2f}x a whole-volume pass, for the halos); "
                f"about {self.memory_bytes / 2**20:.0f} MiB working memory per block")

    def signature(self) -> dict[str, Any]:
        """What must match for a store to be resumed (JSON)."""
        return {"shape": list(self.shape), "block": list(self.block), "roi": list(self.roi),
                "overlap": self.overlap, "flips": [p.record() for p in self.passes]}


def _count(plan_shape: Sequence[int], block: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    total = 1
    for size, b, r in zip(plan_shape, block, roi):
        starts = window_starts(size, r, overlap)
        if r >= size:
            total *= len(starts)
            continue
        total *= sum(sum(1 for s in starts if s < min(b0 + b, size) and s + r > b0) for b0 in range(0, size, b))
    return total


def _memory(block: Sequence[int], roi: Sequence[int], overlap: float, channels: int, classes: int, width: int,
            sw_batch_size: int, tta: bool) -> int:
    """Working bytes of one block: the read region (the block and the windows reaching into
    it from outside) as float32 input (and a flipped or transposed copy),
    MONAI's blending buffer and count map, the kept scores, and the network's activations."""
    region = math.prod(b + 2 * (r - max(int(r * (1 - overlap)), 1)) for b, r in zip(block, roi))
    per_voxel = 4 * (channels * (2 if tta else 1) + classes + 1) + 4 * classes * (2 if tta else 1)
    network = sw_batch_size * math.prod(roi) * 4 * max(width, 1) * 6
    return int(region * per_voxel + network)


def plan_blocks(shape: Sequence[int], roi: Sequence[int], *, channels: int, classes: int,
                config: InferConfig | None = None, spacing: Sequence[float] | None = None, width: int = 16,
                block: Sequence[int] | None = None, memory_mb: float | None = None,
                multiple: int = 64) -> BlockPlan:
    """Choose the blocks for a volume.

    Parameters
    ----------
    shape : sequence of int
        Spatial shape of the volume, ``(Y, X)`` or ``(Z, Y, X)``.
    roi : sequence of int
        The model's patch (sliding-window) size.
    channels, classes : int
    config : InferConfig, optional
        Overlap, TTA and window batch size.
    spacing : sequence of float, optional
        The model's training voxel size: with TTA, decides the 2D transposed passes
        (``segmentation.tta.tta_passes``), as the in-memory prediction does.
    width : int
        The network's width (channels at full resolution), for the memory estimate.
    block : sequence of int, optional
        A block shape to use as given (clipped to the volume).
    memory_mb : float, optional
        Working-memory budget per block (default 1024 MiB): the largest blocks under it
        are taken, halving the leading axes first so that blocks are whole rows.
    multiple : int
        Block edges are multiples of this (the output's chunk edge), so that each block
        writes whole chunks.

    Returns
    -------
    BlockPlan

    Raises
    ------
    ConfigError
        A block shape of the wrong length or with an edge < 1.
    """
    config = config or InferConfig()
    shape = tuple(int(s) for s in shape)
    roi = tuple(int(r) for r in roi)
    passes = tta_passes(len(shape), config.tta, spacing, roi)
    if block is not None:
        block = tuple(int(b) for b in block)
        if len(block) != len(shape) or min(block) < 1:
            raise ConfigError(f"block {block} must have {len(shape)} edges >= 1 (the volume is {shape})")
        chosen = tuple(min(b, s) for b, s in zip(block, shape))
    else:
        budget = (memory_mb if memory_mb is not None else _DEFAULT_MEMORY_MB) * 2**20
        chosen_list = list(shape)
        lower = [min(s, max(r, multiple)) for s, r in zip(shape, roi)]
        while _memory(chosen_list, roi, config.overlap, channels, classes, width, config.sw_batch_size, config.tta) > budget:
            # halve the edge longest in windows: near-cubic blocks recompute the fewest windows
            # (where even the smallest block is over budget, it is taken: the plan says its memory)
            axes = [a for a in range(len(shape)) if chosen_list[a] > lower[a]]
            if not axes:
                break
            axis = max(axes, key=lambda a: chosen_list[a] / roi[a])
            half = -(-chosen_list[axis] // 2)
            new = max(lower[axis], -(-half // multiple) * multiple)
            if new >= chosen_list[axis]:
                lower[axis] = chosen_list[axis]
                continue
            chosen_list[axis] = new
        chosen = tuple(chosen_list)
    along = [p.shape(roi) for p in passes]
    return BlockPlan(shape, chosen, roi, float(config.overlap), passes, int(channels), int(classes),
                     sum(_count(shape, chosen, r, config.overlap) for r in along),
                     sum(math.prod(len(window_starts(s, e, config.overlap)) for s, e in zip(shape, r)) for r in along),
                     _memory(chosen, roi, config.overlap, channels, classes, width, config.sw_batch_size, config.tta))  # fmt: skip


def check_plan(plan: BlockPlan, shape: Sequence[int], model: Any, config: InferConfig) -> None:
    """Refuse a block plan made for another image or with other test-time passes than the
    model's own prediction takes (``model.spacing`` and ``patch_size`` decide them).

    Parameters
    ----------
    plan : BlockPlan
    shape : sequence of int
        The image's spatial shape.
    model : segmentation.model.Model or an ensemble
        Its ``spacing`` and ``patch_size``.
    config : InferConfig
        Its ``tta``.

    Raises
    ------
    ConfigError
        Another spatial shape, or other TTA passes (e.g. ``plan_blocks`` called without
        ``spacing=model.spacing``): the blocks would not give the in-memory prediction.
    """
    if tuple(plan.shape) != tuple(shape):
        raise ConfigError(f"the block plan is for shape {plan.shape}, the image is {tuple(shape)}")
    passes = tta_passes(len(plan.shape), config.tta, model.spacing, model.patch_size)
    if plan.passes != passes:
        raise ConfigError(f"the block plan takes {len(plan.passes)} test-time pass(es), the model's prediction "
                          f"{len(passes)}: make the plan with plan_blocks(..., config=config, spacing=model.spacing) "
                          "and the model's patch size as its roi")


def block_scores(model: Any, image: Any, plan: BlockPlan, index: int, config: InferConfig, *,
                 device: Any, amp: bool, predictor: Callable) -> Any:
    """Blended scores of one block's interior, as the whole-volume pass computes them.

    Parameters
    ----------
    model : segmentation.model.Model
    image : array
        ``(C, *spatial)``, any array that slices (NumPy, dask, zarr); only the block's
        read region is read.
    plan : BlockPlan
    index : int
        The block.
    config : InferConfig
    device, amp, predictor
        From ``resolve_device``/``amp_enabled`` and ``Model._predictor``.

    Returns
    -------
    torch.Tensor
        ``(K, *interior)`` float32 on the CPU: with TTA the probabilities averaged over the passes,
        otherwise the blended logits (softmax them for probabilities); the argmax is the label.

    Raises
    ------
    InputError
        NaN or infinite values in the block's region.
    """
    import torch

    from napari_medml.segmentation.scores import normalize_ as _normalize_

    interior = plan.interior(index)
    regions = [plan.read_region(index, p) for p in plan.passes]
    union = tuple(slice(min(r[a].start for r in regions), max(r[a].stop for r in regions))
                  for a in range(len(plan.shape)))
    arr = np.asarray(image[(slice(None), *union)])
    check_numeric(arr.dtype, "image")
    # a copy (np.array copies): it is normalised in place below, and must never be the caller's array
    x = torch.from_numpy(np.array(arr, dtype=np.float32)).to(device)
    del arr
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        where = ", ".join(f"{s.start}:{s.stop}" for s in union)
        raise InputError(f"image contains {bad} NaN or infinite value(s) in the block [{where}]: " + FILL_NAN)
    _normalize_(x, model.normalization)
    total = None
    with torch.inference_mode():
        for tta_pass, region in zip(plan.passes, regions):
            local = tuple(slice(r.start - u.start, r.stop - u.start) for r, u in zip(region, union))
            out = model._blend(x[(slice(None), *local)], tta_pass, predictor, device, torch.device("cpu"), config)
            keep = tuple(slice(i.start - r.start, i.stop - r.start) for i, r in zip(interior, region))
            out = out[(slice(None), *keep)]
            total = out.clone() if total is None else total.add_(out)
        if len(plan.passes) > 1:
            total /= len(plan.passes)
    return total


# --- the stores' progress (block-wise prediction and labelling) ----------------------


@contextlib.contextmanager
def no_store_if_refused(fresh: bool, done: set[int], targets: dict[str, Path]) -> Iterator[None]:
    """Around a block's prediction: when a new run (``fresh``: no target existed) is refused
    (``InputError``, e.g. NaN) before any block is done, delete the stores it created, so that
    the run of the mended image is not refused as another run's store."""
    import shutil

    try:
        yield
    except InputError:
        if fresh and not done:
            for path in targets.values():
                shutil.rmtree(path, ignore_errors=True)
        raise


def _open_stores(targets: dict[str, Path], plan: BlockPlan, run: dict[str, Any], spatial_axes: str,
                 geometry: dict[str, Any], dtypes: dict[str, Any], holder: str = "labels",
                 refusal: Callable[[Any, dict[str, Any]], str | None] | None = None,
                 ) -> tuple[dict[str, Any], Any, set[int]]:
    """Create the output stores, or reopen those of an interrupted identical run.

    Returns the arrays by name, the group of ``targets[holder]`` (it holds the progress)
    and the finished blocks. ``"labels"`` is written as a labels image, ``"probabilities"``
    with a leading channel axis. A store of another run is refused; ``refusal(old_run,
    run)`` may word that refusal (None: the general one).
    """
    import zarr

    from napari_medml.io.zarr import ATTRS_KEY, create_ome_zarr

    existing = {name: path.exists() for name, path in targets.items()}
    if any(existing.values()):
        labels_path = targets[holder]
        try:
            group = zarr.open_group(str(labels_path), mode="r+")
            progress = dict(group.attrs.get(ATTRS_KEY) or {}).get("prediction") or {}
        except Exception:  # not a Zarr group, or not ours
            progress = {}
        if not all(existing.values()) or progress.get("run") != run:
            named = ", ".join(f"'{p}'" for n, p in targets.items() if existing[n])
            raise InputError((refusal and refusal(progress.get("run"), run))
                             or f"{named} already exist(s) and do(es) not hold an interrupted run of this "
                             "prediction (same model, image and block plan): remove it or choose another "
                             "output name")  # fmt: skip
        arrays = {name: zarr.open_group(str(path), mode="r+")["0"] for name, path in targets.items()}
        return arrays, group, {int(i) for i in progress.get("done", [])}
    edge = plan.block
    arrays = {}
    for name, path in targets.items():
        chunked = tuple(min(b, 64) for b in edge) if len(edge) == 3 else tuple(min(b, 512) for b in edge)
        channels = name == "probabilities"
        shape = ((plan.classes,) if channels else ()) + plan.shape
        arrays[name] = create_ome_zarr(
            path, shape, dtypes[name], axes=("C" if channels else "") + spatial_axes,
            spacing=((1.0,) if channels else ()) + tuple(geometry["spacing"]),
            origin=((0.0,) if channels else ()) + tuple(geometry["origin"]),
            chunks=((1,) if channels else ()) + chunked, unit=geometry.get("unit"), is_labels=name == "labels",
            extra={"prediction": {"run": run, "done": [], "complete": False}} if name == holder else None)
    group = zarr.open_group(str(targets[holder]), mode="r+")
    return arrays, group, set()


def _mark(group: Any, done: set[int], complete: bool, **extra: Any) -> None:
    """Record the finished blocks (and ``extra`` JSON entries) in the group's attributes."""
    from napari_medml.io.zarr import ATTRS_KEY

    ours = dict(group.attrs.get(ATTRS_KEY) or {})
    ours["prediction"] = {**dict(ours.get("prediction") or {}), "done": sorted(done), "complete": complete,
                          **extra}
    group.attrs[ATTRS_KEY] = ours
