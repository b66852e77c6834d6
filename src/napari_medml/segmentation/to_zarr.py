"""Block-wise prediction into OME-Zarr stores on disk: progress, Stop, and resume.

Each block's labels (and probabilities, uncertainty) are written, then the block is
listed as finished in the labels store's attributes (``napari_medml.prediction.done``):
an interrupted run (Stop, Ctrl-C, a crash) that is started again with the same model,
image and plan skips the finished blocks. A block written but not yet listed is simply
computed again. The exact per-block scores come from :func:`chunked.block_scores`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_medml.config import InferConfig
from napari_medml.errors import ConfigError, InputError, raise_if_stopped
from napari_medml.segmentation.chunked import (
    BlockPlan,
    _mark,
    _open_stores,
    block_scores,
    check_plan,
    no_store_if_refused,
    plan_blocks,
    window_starts,
)
from napari_medml.segmentation.planned_inference import planned_infer_config
from napari_medml.segmentation.run_identity import (
    image_identity,
    network_spacing,
    prediction_fingerprint,
    prediction_members,
    store_geometry,
)

__all__ = ["ChunkedResult", "predict_to_folder", "predict_to_zarr", "replayed_image", "volume_layout"]


@dataclass(frozen=True)
class ChunkedResult:
    """What :func:`predict_to_zarr` wrote.

    Attributes
    ----------
    stores : dict of str to Path
        ``"labels"`` (always), ``"probabilities"``, ``"uncertainty"``, ``"instances"`` (when
        asked): OME-Zarr folders.
    plan : BlockPlan
    computed, resumed : int
        Blocks computed by this call; blocks found finished by an earlier one.
    """

    stores: dict[str, Path]
    plan: BlockPlan
    computed: int
    resumed: int


def volume_layout(model: Any, data: Any, axes: str | None, channel_axis: int | None) -> tuple[Any, str]:
    """``data`` as a lazy ``(C, *spatial)`` array for ``model`` and the spatial axes letters.

    Raises
    ------
    InputError, BundleError
        Time series or stacks (one volume at a time here), channels that do not fit.
    ConfigError
        A model whose preprocessing recipe has steps that need the whole image in memory
        (:func:`~napari_medml.preprocessing.lazy_recipe.blockwise_refusal`); the others are
        replayed block by block (:func:`replayed_image`).
    """
    channel_axis, samples = model._layout(data, channel_axis, axes)
    if samples:
        raise InputError(f"block-wise prediction takes one {model.spatial_dims}D image (got shape "
                         f"{np.shape(data)}, axes {axes or '?'}): predict frames or slices one at a time, "
                         "or predict in memory")  # fmt: skip
    from napari_medml.preprocessing.lazy_recipe import blockwise_refusal

    refusal = blockwise_refusal(model.config.data.preprocessing, "block-wise prediction",
                                "train without those steps, or predict in memory (command line: a NIfTI/TIFF "
                                "--out)")
    if refusal:
        raise ConfigError(refusal)
    if isinstance(data, np.ndarray):
        lazy = np.moveaxis(data, channel_axis, 0) if channel_axis is not None else data[None]
    else:
        import dask.array as da

        lazy = da.asarray(data)
        lazy = da.moveaxis(lazy, channel_axis, 0) if channel_axis is not None else lazy[None]
    spatial = "ZYX"[-model.spatial_dims:]
    if axes:
        spatial = "".join(a for a in axes if a in "ZYXQ")[-model.spatial_dims:].replace("Q", "Z")
    return lazy, spatial


def replayed_image(model: Any, image: Any, stop: Any = None, spacing: Any = None) -> Any:
    """``image`` (``(C, *spatial)`` from :func:`volume_layout`, voxel size ``spacing``) after the
    model's preprocessing recipe, lazily: the recipe's statistics are computed over the whole
    image first (one pass each; ``preprocessing.lazy_recipe.replay_lazy``), then each block is
    transformed when read. Without a recipe, ``image`` itself.

    Raises
    ------
    ConfigError
        Ensemble members with different recipes; a step that needs the whole image.
    Cancelled
        Stopped through ``stop`` during a statistics pass.
    """
    from napari_medml.segmentation.run_identity import prediction_members

    steps = tuple(model.config.data.preprocessing)
    if any(tuple(m.config.data.preprocessing) != steps for m in prediction_members(model)):
        raise ConfigError("the ensemble's members have different preprocessing recipes: predict with each model")
    if not steps:
        return image
    from napari_medml.preprocessing.lazy_recipe import replay_lazy

    return replay_lazy(image, steps, stop=stop, spacing=spacing)


def _block_windows(plan: BlockPlan, index: int) -> int:
    """Windows the network runs for block ``index`` (all TTA passes)."""
    return sum(math.prod(len(window_starts(r.stop - r.start, roi, plan.overlap))
                         for r, roi in zip(plan.read_region(index, p), p.shape(plan.roi)))
               for p in plan.passes)


def predict_to_zarr(model: Any, volume: Any, out: str | Path, *, config: InferConfig | None = None,
                    plan: BlockPlan | None = None, memory_mb: float | None = None,
                    probabilities: str | Path | None = None, uncertainty: str | Path | None = None,
                    instances: str | Path | None = None, halo: Any = None, source: str | Path | None = None,
                    progress: Callable[[int, int], None] | None = None, stop: Any | None = None) -> ChunkedResult:
    """Segment a volume block by block into an OME-Zarr labels store; resume an interrupted run.

    Parameters
    ----------
    model : segmentation.model.Model or segmentation.ensemble.EnsembleModel
        An ensemble predicts each block with every member and combines them as in memory
        (mean probabilities; uncertainty: the members' mutual information).
    volume : io.Volume
        The image (``data`` NumPy, dask or zarr; only one block's region is in memory at a
        time), its axes, spacing, origin and unit (written as the stores' scale metadata).
    out : str or Path
        The labels store (``.zarr`` folder) to create, or to resume when it holds an
        interrupted run of the same model, image and plan (the image's values, geometry
        and, with ``source``, its file: :func:`image_identity`).
    config : InferConfig, optional
        Overlap, blending, TTA, device (default: the model's planned settings,
        ``planned_inference.planned_infer_config``). ``instances`` (``"connected"``, ``"watershed"``) is
        done block by block once the labels are written (:mod:`.label_blocks`: each block
        with a halo, equal to the whole-map split up to the ids); the connected-component
        clean-up (minimum size, holes, largest component) needs the whole map and is refused.
    plan : BlockPlan, optional
        From :func:`plan_blocks` (default: one made for ``memory_mb``).
    memory_mb : float, optional
        Working-memory budget per block (default 1024 MiB).
    probabilities, uncertainty : str or Path, optional
        Further stores: float16 ``(K, *spatial)`` class probabilities (as the in-memory
        ``Prediction`` holds them; half the disk of float32), float32 uncertainty (entropy of the probabilities; for an ensemble the
        members' mutual information).
    instances : str or Path, optional
        The instance store when ``config.instances`` asks (default ``<out>.instances.zarr``
        beside ``out``); ids are ``1 +`` the flat index of each object's first voxel.
    halo : sequence of int, optional
        Context per side for the instance split (default the model's patch; grown per
        block where an object and its neighbours reach past it).
    source : str or Path, optional
        The file or store ``volume`` was read from, recorded to tell its runs from another
        image's (:func:`image_identity`).
    progress : callable, optional
        ``(done, total)`` windows; finished blocks count as done.
    stop : StopToken, optional
        Stopped: ``Cancelled`` is raised at the next window; finished blocks stay recorded.

    Returns
    -------
    ChunkedResult

    Raises
    ------
    InputError
        Existing outputs that are not an interrupted run of this prediction, NaN/inf values,
        a time series.
    ConfigError
        Whole-map post-processing asked for; a model whose recipe has a step that needs the whole image
        (the recipe's other steps are replayed block by block: :func:`replayed_image`).
    Cancelled
        Stopped through ``stop``.
    """
    from napari_medml.engine.devices import amp_enabled, resolve_device
    from napari_medml.segmentation.scores import label_dtype as _label_dtype

    config = planned_infer_config(model, config)
    if config.min_size or config.fill_holes or config.keep_largest:
        raise ConfigError("block-wise prediction writes the labels as they come: minimum size, hole filling and "
                          "largest component need the whole map; leave them off (or predict in memory)")  # fmt: skip
    image, spatial_axes = volume_layout(model, volume.data, volume.axes, None)
    if plan is None:
        plan = plan_blocks(image.shape[1:], model.patch_size, channels=image.shape[0],
                           classes=len(model.class_ids), config=config, spacing=model.spacing,
                           width=model.config.model.channels, memory_mb=memory_mb)  # fmt: skip
    check_plan(plan, image.shape[1:], model, config)
    geometry = store_geometry(volume, spatial_axes)
    targets = {"labels": Path(out)}
    if probabilities is not None:
        targets["probabilities"] = Path(probabilities)
    if uncertainty is not None:
        targets["uncertainty"] = Path(uncertainty)
    run = {**plan.signature(), "model": prediction_fingerprint(model, image), "image": image_identity(volume, source),
           "tta": config.tta, "blend": config.blend, "outputs": sorted(targets)}
    # float16 probabilities: half the disk of float32 for big volumes, and the precision the in-memory
    # Prediction holds (NIfTI/TIFF outputs are float32 only because their readers lack float16)
    dtypes = {"labels": _label_dtype(max(model.class_ids)), "probabilities": np.float16, "uncertainty": np.float32}
    fresh = not any(path.exists() for path in targets.values())
    if fresh:  # a refusal of the image's statistics leaves no store behind
        image = replayed_image(model, image, stop, network_spacing(volume, spatial_axes))
    arrays, group, done = _open_stores(targets, plan, run, spatial_axes, geometry, dtypes)
    resumed = len(done)
    device = resolve_device(config.device)
    amp = amp_enabled(device, config.amp)
    members = prediction_members(model)
    totals = [_block_windows(plan, i) * len(members) for i in range(plan.count)]
    total = sum(totals)
    windows_done = sum(totals[i] for i in done)
    lut = np.asarray(model.class_ids, dtype=dtypes["labels"])
    computed = 0
    if not fresh and len(done) < plan.count:  # resumed: the recipe's statistics only when blocks are left
        image = replayed_image(model, image, stop, network_spacing(volume, spatial_axes))
    for index in range(plan.count):
        if index in done:
            continue
        raise_if_stopped(stop, "prediction stopped")
        interior = plan.interior(index)
        with no_store_if_refused(fresh, done, targets):  # NaN in the first block of a new run
            labels, probs, entropy = _predict_block(members, image, plan, index, config, device, amp,
                                                    want=set(arrays), progress=progress, stop=stop,
                                                    base=windows_done, total=total)  # fmt: skip
        arrays["labels"][interior] = lut[labels]
        if "probabilities" in arrays:
            arrays["probabilities"][(slice(None), *interior)] = probs
        if "uncertainty" in arrays:
            arrays["uncertainty"][interior] = entropy
        del labels, probs, entropy
        done.add(index)
        windows_done += totals[index]
        computed += 1
        _mark(group, done, complete=len(done) == plan.count)
    if progress is not None:
        progress(total, total)
    if computed == 0:
        _mark(group, done, complete=True)
    stores = dict(targets)
    if config.instances != "none":
        stores["instances"] = _split_instances(arrays["labels"], run, Path(out), instances, halo, plan, model,
                                               config, spatial_axes, geometry, stop)  # fmt: skip
    return ChunkedResult(stores, plan, computed, resumed)


def _predict_block(members: list[Any], image: Any, plan: BlockPlan, index: int, config: InferConfig,
                   device: Any, amp: bool, *, want: set[str], progress: Callable[[int, int], None] | None,
                   stop: Any | None, base: int, total: int) -> tuple[np.ndarray, Any, Any]:
    """Block ``index``'s channel indices (argmax), probabilities and uncertainty (None when not
    in ``want``), from one model or an ensemble's members, as the in-memory prediction makes them."""
    import torch

    from napari_medml.segmentation.ensemble import combine
    from napari_medml.segmentation.scores import argmax_uint8
    from napari_medml.segmentation.scores import softmax_ as _softmax_

    per_member = _block_windows(plan, index)

    def scores_of(k: int, member: Any) -> Any:
        def block_progress(done: int, _total: int) -> None:
            if progress is not None:
                progress(min(base + k * per_member + done, total), total)

        predictor = member._predictor(device, amp, config, block_progress, stop, per_member)
        return block_scores(member, image, plan, index, config, device=device, amp=amp, predictor=predictor)

    with torch.inference_mode():
        if len(members) == 1:
            scores = scores_of(0, members[0])
            labels = argmax_uint8(scores)
            probs = entropy = None
            if "probabilities" in want or "uncertainty" in want:
                if not config.tta:
                    _softmax_(scores)
                if "probabilities" in want:
                    probs = scores.to(torch.float16).numpy()
                if "uncertainty" in want:
                    p = scores.clamp_min(1e-8)
                    entropy = (-(p * p.log()).sum(0)).numpy()
            return labels, probs, entropy

        def member_probabilities() -> Any:
            for k, member in enumerate(members):
                scores = scores_of(k, member)
                if not config.tta:
                    _softmax_(scores)
                # float16, as Model.predict hands them to EnsembleModel.predict: the same labels
                yield scores.to(torch.float16).numpy()

        mean, mutual = combine(member_probabilities(), len(members), uncertainty="uncertainty" in want)
        return np.argmax(mean, axis=0), mean.astype(np.float16) if "probabilities" in want else None, mutual


def _split_instances(labels: Any, run: dict[str, Any], out: Path, target: str | Path | None, halo: Any,
                     plan: BlockPlan, model: Any, config: InferConfig, spatial_axes: str,
                     geometry: dict[str, Any], stop: Any | None) -> Path:
    """``config.instances`` of the written labels, block by block into their own store."""
    from napari_medml.segmentation.label_blocks import label_blocks
    from napari_medml.segmentation.postprocess import split_instances

    if target is None:
        name = out.name
        stem = next((name[: -len(s)] for s in (".ome.zarr", ".zarr") if name.lower().endswith(s)), name)
        target = out.with_name(f"{stem}.instances.zarr")
    method = config.instances

    def labeller(region: np.ndarray) -> np.ndarray:
        return split_instances(region, method)

    key = hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()[:32]
    label_blocks([labels], labeller, target, plan=plan, halo=tuple(halo) if halo is not None else model.patch_size,
                 run={"labels": key, "method": method}, geometry=geometry, spatial_axes=spatial_axes,
                 stop=stop)  # fmt: skip
    return Path(target)


def predict_to_folder(model: Any, image: Any, folder: str | Path, *, axes: str, spacing: Any = None,
                      origin: Any = None, config: InferConfig | None = None, memory_mb: float | None = None,
                      progress: Callable[[int, int], None] | None = None, stop: Any | None = None,
                      meta: dict[str, Any] | None = None) -> Any:
    """Block-wise prediction into stores under ``folder``, returned as a lazily read Prediction.

    The stores go to ``folder/<run key>/`` (``labels.zarr``, and ``probabilities.zarr``,
    ``uncertainty.zarr``, ``instances-<method>.zarr`` when ``config`` asks), the key made from the model, the image's
    shape and the outputs: the same prediction started again (after Stop) resumes there.

    Parameters
    ----------
    model : segmentation.model.Model
    image : array
        NumPy, dask or zarr; ``axes`` names its axes (one image: ``ZYX``/``YX``, plus ``C``).
    folder : str or Path
        Where the stores go (created when missing).
    spacing, origin : sequence of float, optional
        Of the spatial axes (written as the stores' scale metadata).
    config, memory_mb, progress, stop
        As for :func:`predict_to_zarr`.
    meta : dict, optional
        The image's length unit (``"unit"``), and ``io.units.UNIT_AS_READ`` when ``spacing`` and
        ``origin`` were converted to the model's unit: the stores record the image's own.

    Returns
    -------
    segmentation.model.Prediction
        ``labels`` (and ``probabilities``, ``uncertainty``) are dask arrays read from the
        stores; nothing is held in memory.
    """
    import dask.array as da

    from napari_medml.io import Volume
    from napari_medml.io.zarr import read_zarr
    from napari_medml.segmentation.model import Prediction

    config = planned_infer_config(model, config)
    spatial = [a for a in axes if a in "ZYXQ"]
    sizes = iter(tuple(spacing) if spacing is not None else (1.0,) * len(spatial))
    offsets = iter(tuple(origin) if origin is not None else (0.0,) * len(spatial))
    full_spacing = tuple(1.0 if a in "CT" else float(next(sizes)) for a in axes)
    full_origin = tuple(0.0 if a in "CT" else float(next(offsets)) for a in axes)
    volume = Volume(image, full_spacing, full_origin, axes=axes, meta=dict(meta or {}))
    lazy, _ = volume_layout(model, image, axes, None)
    key = hashlib.sha256(json.dumps([prediction_fingerprint(model, lazy), config.tta, config.blend, config.overlap,
                                     config.return_probabilities, config.return_uncertainty, memory_mb]).encode())
    where = Path(folder) / key.hexdigest()[:16]
    where.mkdir(parents=True, exist_ok=True)
    stores = {"probabilities": where / "probabilities.zarr" if config.return_probabilities else None,
              "uncertainty": where / "uncertainty.zarr" if config.return_uncertainty else None}
    split = where / f"instances-{config.instances}.zarr" if config.instances != "none" else None
    predict_to_zarr(model, volume, where / "labels.zarr", config=config, memory_mb=memory_mb, progress=progress,
                    stop=stop, instances=split, **stores)  # fmt: skip

    def read(path: Path | None) -> Any:
        return None if path is None else da.asarray(read_zarr(path).data)

    return Prediction(labels=read(where / "labels.zarr"), probabilities=read(stores["probabilities"]),
                      uncertainty=read(stores["uncertainty"]), class_ids=model.class_ids, instances=read(split))
