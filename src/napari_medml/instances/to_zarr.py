"""Learned instances of a volume larger than memory, block by block into OME-Zarr stores.

Two resumable stages, each recording its finished blocks in its store:

1. **Maps.** The network's foreground probability and normalised distance map are
   written block by block (``<out>.foreground.zarr``, ``<out>.distance.zarr``, float32),
   blended exactly as :func:`~napari_medml.instances.model.network_outputs` blends them
   over the whole volume (same windows, weights and order per voxel, see
   :mod:`napari_medml.segmentation.chunked`).
2. **Objects.** The post-processing (seeds = h-maxima of the distance map, seeded
   watershed in the foreground, minimum size) runs on each block plus a halo, and
   only the block's core is written (:func:`~napari_medml.segmentation.label_blocks.label_blocks`):
   an object's id is ``1 +`` the flat index of its first voxel, so ids are unique over
   the volume, and the partition equals the whole-volume ``InstanceModel.predict`` when
   the halo holds each group of touching objects (checked; grown per block when not).

The maps stay on disk: other post-processing parameters re-run stage 2 only (no network)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_medml.config import InferConfig
from napari_medml.errors import ConfigError, InputError
from napari_medml.instances._checks import relabelling_refusal
from napari_medml.instances.postprocess import InstanceParams, instances_from_outputs
from napari_medml.segmentation.chunked import BlockPlan, block_scores, check_plan, plan_blocks
from napari_medml.segmentation.planned_inference import planned_infer_config

__all__ = ["ChunkedInstances", "InstanceZarrResult", "default_halo", "instances_to_folder", "instances_to_zarr",
           "map_paths", "plan_instance_blocks"]

_SUFFIXES = (".ome.zarr", ".zarr")


@dataclass(frozen=True)
class InstanceZarrResult:
    """What :func:`instances_to_zarr` wrote.

    Attributes
    ----------
    stores : dict of str to Path
        ``"labels"`` (uint32/uint64 instance ids), ``"foreground"``, ``"distance"`` (float32 maps).
    plan : BlockPlan
    halo : tuple of int
        Context (voxels per side) the objects were labelled with.
    objects : int
        Objects in the volume.
    computed, resumed : int
        Network blocks computed by this call; found finished by an earlier one.
    labelled : int
        Blocks labelled by this call (stage 2); ``grown`` of them needed a larger halo.
    approximate : int
        Blocks where touching objects fill more than the largest halo (see
        :class:`~napari_medml.segmentation.label_blocks.LabelledBlocks`).
    """

    stores: dict[str, Path]
    plan: BlockPlan
    halo: tuple[int, ...]
    objects: int
    computed: int
    resumed: int
    labelled: int
    grown: int
    approximate: int = 0


def map_paths(out: str | Path) -> dict[str, Path]:
    """The maps' stores next to ``out``: ``pred.zarr`` -> ``pred.foreground.zarr``, ``pred.distance.zarr``."""
    out = Path(out)
    name = out.name
    stem = next((name[: -len(s)] for s in _SUFFIXES if name.lower().endswith(s)), name)
    return {k: out.with_name(f"{stem}.{k}.zarr") for k in ("foreground", "distance")}


def default_halo(model: Any, params: InstanceParams, spacing: Sequence[float]) -> tuple[int, ...]:
    """Context per side: the model's patch (objects it sees whole) plus ``min_distance`` in voxels."""
    return tuple(int(p) + int(math.ceil(params.min_distance / float(s))) for p, s in zip(model.patch_size, spacing))


def plan_instance_blocks(model: Any, shape: Sequence[int], channels: int, config: InferConfig | None = None,
                         memory_mb: float | None = None, block: Sequence[int] | None = None) -> BlockPlan:
    """The block plan for an instance model (four outputs: three classes and the distance)."""
    from napari_medml.instances.model import OUT_CHANNELS

    return plan_blocks(shape, model.patch_size, channels=channels, classes=OUT_CHANNELS, config=config,
                       spacing=model.spacing, width=model.config.model.channels, memory_mb=memory_mb, block=block)


def _map_predictor(model: Any, device: Any, amp: bool, progress: Callable[[int, int], None] | None,
                   stop: Any | None) -> Callable[[Any], Any]:
    """The network as ``network_outputs`` runs it: softmax of the three classes and the
    sigmoid of the distance logit, blended linearly; counts windows, obeys ``stop``."""
    import torch

    from napari_medml.errors import Cancelled

    net = model._network_on(device)
    done = 0

    def predictor(window: Any) -> Any:
        nonlocal done
        if stop is not None and stop.stopped:
            raise Cancelled("prediction stopped")
        ctx = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
        with ctx:
            logits = net(window).float()
        done += window.shape[0]
        if progress is not None:
            progress(done, 0)
        return torch.cat([torch.softmax(logits[:, :3], dim=1), torch.sigmoid(logits[:, 3:4])], dim=1)

    return predictor


def _write_maps(model: Any, image: Any, plan: BlockPlan, config: InferConfig, targets: dict[str, Path],
                spatial_axes: str, geometry: dict[str, Any], progress: Callable[[int], None],
                stop: Any | None, replay_spacing: list[float]) -> tuple[dict[str, Any], int, int]:
    """Stage 1: the maps block by block (the recipe replayed at ``replay_spacing``, the model's unit);
    returns the arrays, blocks computed and resumed."""
    import torch

    from napari_medml.engine.devices import amp_enabled, resolve_device
    from napari_medml.segmentation.chunked import _mark, _open_stores, no_store_if_refused
    from napari_medml.segmentation.run_identity import prediction_fingerprint
    from napari_medml.segmentation.to_zarr import _block_windows, replayed_image

    run = {**plan.signature(), "model": prediction_fingerprint(model, image), "tta": config.tta, "blend": config.blend,
           "outputs": ["distance", "foreground"]}
    fresh = not any(Path(path).exists() for path in targets.values())
    if fresh:  # a refusal of the image's statistics leaves no store behind
        image = replayed_image(model, image, stop, replay_spacing)
    arrays, group, done = _open_stores(targets, plan, run, spatial_axes, geometry,
                                       {"foreground": np.float32, "distance": np.float32}, holder="foreground")
    resumed, computed = len(done), 0
    device = resolve_device(config.device)
    amp = amp_enabled(device, config.amp)
    base = sum(_block_windows(plan, i) for i in done)
    progress(base)
    if not fresh and len(done) < plan.count:  # resumed: the recipe's statistics only when blocks are left
        image = replayed_image(model, image, stop, replay_spacing)
    from napari_medml.errors import Cancelled

    for index in range(plan.count):
        if index in done:
            continue
        if stop is not None and stop.stopped:
            raise Cancelled("prediction stopped")
        predictor = _map_predictor(model, device, amp, lambda k, _t, b=base: progress(b + k), stop)
        with no_store_if_refused(fresh, done, targets):  # NaN in the first block of a new run
            mean = block_scores(model, image, plan, index, config, device=device, amp=amp, predictor=predictor)
        interior = plan.interior(index)
        with torch.inference_mode():
            arrays["foreground"][interior] = (1.0 - mean[0]).clamp_(0.0, 1.0).numpy().astype(np.float32)
            arrays["distance"][interior] = mean[3].clamp_(0.0, 1.0).numpy().astype(np.float32)
        del mean
        done.add(index)
        base += _block_windows(plan, index)
        computed += 1
        _mark(group, done, complete=len(done) == plan.count)
    if computed == 0:
        _mark(group, done, complete=True)
    return arrays, computed, resumed


def instances_to_zarr(model: Any, volume: Any, out: str | Path, *, config: InferConfig | None = None,
                      params: InstanceParams | None = None, plan: BlockPlan | None = None,
                      memory_mb: float | None = None, halo: Sequence[int] | None = None,
                      spacing: Sequence[float] | None = None, maps: dict[str, str | Path] | None = None,
                      progress: Callable[[int, int], None] | None = None,
                      stop: Any | None = None) -> InstanceZarrResult:
    """Instances of a volume, block by block, into an OME-Zarr labels store; resumable.

    Parameters
    ----------
    model : instances.model.InstanceModel
    volume : io.Volume
        The image (``data`` NumPy, dask or zarr; one block's region in memory at a time),
        its axes, spacing, origin and unit (written as the stores' scale metadata).
    out : str or Path
        The instance labels store (``.zarr``) to create, or to resume.
    config : InferConfig, optional
        Overlap, blending, TTA, device (its semantic post-processing is not used).
    params : InstanceParams, optional
        Post-processing; default the bundle's (``model.params``).
    plan : BlockPlan, optional
        Default: :func:`plan_instance_blocks` for ``memory_mb``.
    memory_mb : float, optional
        Working-memory budget per block (default 1024 MiB).
    halo : sequence of int, optional
        Context per side for the objects (voxels per axis); default :func:`default_halo`.
        Grown per block where an object or its neighbour reaches past it.
    spacing : sequence of float, optional
        Voxel size the post-processing measures in; default the volume's.
    maps : dict, optional
        ``"foreground"``, ``"distance"`` store paths (default :func:`map_paths` of ``out``), kept after the run.
    progress : callable, optional
        ``(done, total)`` steps: the network's windows, then one per labelled block.
    stop : StopToken, optional
        Stopped: ``Cancelled`` is raised at the next window or block; finished blocks stay.

    Returns
    -------
    InstanceZarrResult

    Raises
    ------
    InputError
        Existing stores that are not an interrupted run of this prediction (``out`` labelled from
        these maps with other ``params``: the fix that re-labels); NaN/inf; a time series; objects
        larger than the grown halo.
    ConfigError
        A model whose recipe has a step that needs the whole image; a plan for another shape.
    Cancelled
        Stopped through ``stop``.
    """
    from napari_medml.segmentation.label_blocks import label_blocks
    from napari_medml.segmentation.run_identity import network_spacing, store_geometry
    from napari_medml.segmentation.to_zarr import _block_windows, volume_layout

    config = planned_infer_config(model, config)
    params = params or model.params
    image, spatial_axes = volume_layout(model, volume.data, volume.axes, None)
    shape = tuple(image.shape[1:])
    if plan is None:
        plan = plan_instance_blocks(model, shape, image.shape[0], config, memory_mb)
    check_plan(plan, shape, model, config)
    geometry, replay_spacing = store_geometry(volume, spatial_axes), network_spacing(volume, spatial_axes)
    spacing = tuple(float(s) for s in (spacing if spacing is not None else replay_spacing))[-len(shape):]
    if len(spacing) != len(shape):
        raise InputError(f"spacing {spacing} does not fit the image's {len(shape)} spatial axes")
    halo = tuple(int(h) for h in (halo if halo is not None else default_halo(model, params, spacing)))
    targets = {k: Path(v) for k, v in (maps or map_paths(out)).items()}
    if set(targets) != {"foreground", "distance"} or Path(out) in targets.values():
        raise ConfigError("maps must name two stores other than the output: 'foreground' and 'distance'")
    windows = sum(_block_windows(plan, i) for i in range(plan.count))
    total = windows + plan.count

    def report(done: int) -> None:
        if progress is not None:
            progress(min(done, total), total)

    arrays, computed, resumed = _write_maps(model, image, plan, config, targets, spatial_axes, geometry, report,
                                            stop, replay_spacing)  # fmt: skip
    cut = replace(params, min_size=0.0)  # sizes are measured on whole objects, after the halo check

    def labeller(foreground: np.ndarray, distance: np.ndarray) -> np.ndarray:
        return instances_from_outputs(foreground, distance, spacing, cut)

    run = {"maps": _maps_key(targets["foreground"]), "params": params.to_dict(), "spacing": list(spacing)}
    labelled = label_blocks([arrays["foreground"], arrays["distance"]], labeller, out, plan=plan, halo=halo,
                            run=run, geometry=geometry, spatial_axes=spatial_axes, min_volume=params.min_size,
                            voxel_volume=float(np.prod(spacing)), stop=stop, progress=lambda k, _n: report(windows + k),
                            refusal=relabelling_refusal(out, targets))  # fmt: skip
    return InstanceZarrResult({"labels": Path(out), **targets}, plan, halo, labelled.objects, computed, resumed,
                              labelled.computed, labelled.grown, labelled.approximate)


def _maps_key(foreground: Path) -> str:
    """What made the maps (the run recorded in the foreground store), as a short key."""
    import zarr

    from napari_medml.io.zarr import ATTRS_KEY

    attrs = dict(zarr.open_group(str(foreground), mode="r").attrs.get(ATTRS_KEY) or {})
    run = (attrs.get("prediction") or {}).get("run")
    return hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ChunkedInstances:
    """What :func:`instances_to_folder` returns: an ``InstancePrediction`` read from disk.

    Attributes
    ----------
    labels, foreground, distance : dask.array.Array
        Instance ids and the network's maps, read lazily from the stores.
    spacing : tuple of float
    params : InstanceParams
    spatial_dims : int
    folder : Path
        Where the stores are; :meth:`relabel` adds one there.
    halo : tuple of int
    """

    labels: Any
    foreground: Any
    distance: Any
    spacing: tuple[float, ...]
    params: InstanceParams
    spatial_dims: int
    folder: Path
    halo: tuple[int, ...]
    plan: BlockPlan
    geometry: dict[str, Any]

    def relabel(self, params: InstanceParams, stop: Any | None = None) -> "ChunkedInstances":
        """Instances with other post-processing from the maps on disk (no network run),
        block by block into their own store (found again when asked twice)."""
        return _label_folder(self.folder, self.plan, params, self.spacing, self.halo, self.geometry,
                             self.spatial_dims, None, stop)


def _params_key(params: InstanceParams) -> str:
    return hashlib.sha256(json.dumps(params.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def _label_folder(folder: Path, plan: BlockPlan, params: InstanceParams, spacing: tuple[float, ...],
                  halo: tuple[int, ...], geometry: dict[str, Any], spatial_dims: int,
                  progress: Callable[[int, int], None] | None, stop: Any | None) -> ChunkedInstances:
    """Stage 2 from the maps in ``folder`` into ``folder/instances-<params>.zarr``, read back lazily."""
    import dask.array as da
    import zarr

    from napari_medml.segmentation.label_blocks import label_blocks

    maps = {k: folder / f"{k}.zarr" for k in ("foreground", "distance")}
    arrays = {k: zarr.open_group(str(p), mode="r")["0"] for k, p in maps.items()}
    cut = replace(params, min_size=0.0)

    def labeller(foreground: np.ndarray, distance: np.ndarray) -> np.ndarray:
        return instances_from_outputs(foreground, distance, spacing, cut)

    out = folder / f"instances-{_params_key(params)}.zarr"
    run = {"maps": _maps_key(maps["foreground"]), "params": params.to_dict(), "spacing": list(spacing)}
    label_blocks([arrays["foreground"], arrays["distance"]], labeller, out, plan=plan, halo=halo, run=run,
                 geometry=geometry, spatial_axes="ZYX"[-spatial_dims:], min_volume=params.min_size,
                 voxel_volume=float(np.prod(spacing)), progress=progress, stop=stop)  # fmt: skip

    def read(path: Path) -> Any:
        return da.from_zarr(zarr.open_group(str(path), mode="r")["0"])

    return ChunkedInstances(read(out), read(maps["foreground"]), read(maps["distance"]), spacing, params,
                            spatial_dims, folder, halo, plan, geometry)


def instances_to_folder(model: Any, image: Any, folder: str | Path, *, axes: str, spacing: Sequence[float],
                        origin: Sequence[float] | None = None, config: InferConfig | None = None,
                        params: InstanceParams | None = None, memory_mb: float | None = None,
                        progress: Callable[[int, int], None] | None = None,
                        stop: Any | None = None, meta: dict[str, Any] | None = None) -> ChunkedInstances:
    """Block-wise instances into stores under ``folder``, returned read lazily (the widgets' path).

    The maps go to ``folder/<run key>/`` (the key made from the model, the image's shape
    and the inference settings; the same run started again after Stop resumes there),
    the objects to ``instances-<parameters>.zarr`` beside them.

    Parameters
    ----------
    model : InstanceModel
    image : array
        NumPy, dask or zarr; ``axes`` names its axes (one ``ZYX``/``YX`` image, plus ``C``).
    folder : str or Path
        Created when missing.
    spacing : sequence of float
        Of the spatial axes; the post-processing measures in it.
    origin : sequence of float, optional
    config, params, memory_mb, progress, stop
        As for :func:`instances_to_zarr`.
    meta : dict, optional
        The image's unit (``"unit"``; ``io.units.UNIT_AS_READ``: converted to the model's), the stores' unit.

    Returns
    -------
    ChunkedInstances
    """
    from napari_medml.io import Volume
    from napari_medml.segmentation.run_identity import network_spacing, prediction_fingerprint, store_geometry
    from napari_medml.segmentation.to_zarr import volume_layout

    config = planned_infer_config(model, config)
    params = params or model.params
    spatial = [a for a in axes if a in "ZYXQ"]
    sizes = iter(tuple(spacing))
    offsets = iter(tuple(origin) if origin is not None else (0.0,) * len(spatial))
    volume = Volume(image, tuple(1.0 if a in "CT" else float(next(sizes)) for a in axes),
                    tuple(0.0 if a in "CT" else float(next(offsets)) for a in axes), axes=axes, meta=dict(meta or {}))
    lazy, spatial_axes = volume_layout(model, image, axes, None)
    key = hashlib.sha256(json.dumps([prediction_fingerprint(model, lazy), "instances", config.tta, config.blend,
                                     config.overlap, memory_mb]).encode()).hexdigest()[:16]
    where = Path(folder) / key
    where.mkdir(parents=True, exist_ok=True)
    geometry = store_geometry(volume, spatial_axes)  # in the image's unit
    spacing = tuple(network_spacing(volume, spatial_axes))  # the model's, for measuring
    plan = plan_instance_blocks(model, lazy.shape[1:], lazy.shape[0], config, memory_mb)
    halo = default_halo(model, params, spacing)
    maps = {k: where / f"{k}.zarr" for k in ("foreground", "distance")}
    instances_to_zarr(model, volume, where / f"instances-{_params_key(params)}.zarr", config=config, params=params,
                      plan=plan, halo=halo, spacing=spacing, maps=maps, progress=progress, stop=stop)  # fmt: skip
    return _label_folder(where, plan, params, spacing, halo, geometry, model.spatial_dims, None, stop)
