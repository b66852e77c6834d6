"""Pretraining as a task of the shared engine: ``fit_pretraining`` is a generator of
``TrainReport``s that returns the best :class:`ReconstructionModel`.

The network is the segmentation registry's (``config.model``: UNet, DynUNet, SegResNet)
with as many outputs as inputs; it learns to reconstruct clean patches from masked
and/or noised ones (``config.pretrain``). Its bundle starts later runs through
``ModelConfig.init_from`` (every tensor whose name and shape fit: all but the last layer
when the widths and depth agree).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medml.config import TrainConfig
from napari_medml.engine.distributed import data_seed
from napari_medml.engine.fit import fit_task, run_to_end
from napari_medml.engine.reports import StopToken, TrainReport
from napari_medml.engine.task import Evaluation
from napari_medml.errors import ConfigError, InputError
from napari_medml.pretraining.model import ReconstructionModel, load_pretrained
from napari_medml.preprocessing.inputs import (as_list, check_patch_size, check_volumes_not_constant, one_value,
                                              spacings_per_image)

__all__ = ["PretrainingTask", "fit_pretraining", "pretrain", "reconstruction_loss"]

VAL_BATCHES = 4  # fixed corrupted batches scored at each epoch end


def pretrain(images: Any, config: TrainConfig, **kwargs: Any) -> ReconstructionModel:
    """Run :func:`fit_pretraining` to the end and return the best model (same arguments)."""
    return run_to_end(fit_pretraining(images, None, config, **kwargs))


def fit_pretraining(images: Any, labels: Any, config: TrainConfig, *, spacing: Any = None,
                    channel_axis: int | None = None, stop: StopToken | None = None,
                    resume_from: str | Path | None = None,
                    init_model: ReconstructionModel | None = None) -> Generator[TrainReport, None, ReconstructionModel]:
    """Pretrain a segmentation network to reconstruct corrupted unlabeled images.

    Parameters
    ----------
    images : array or sequence of arrays
        ``(Y, X)`` or ``(Z, Y, X)`` each (``config.data.spatial_dims``), plus the axis
        ``channel_axis``; any number, of any size.
    labels : None
        Pretraining uses no labels (the argument keeps ``napari_medml.fit``'s signature).
    config : TrainConfig
        ``task="pretraining"``; ``pretrain`` (loss, corruption), ``model`` (the network
        later runs start from), ``data`` (patch and batch size, normalisation, recipe),
        ``optim`` (steps, time limit).
    spacing : tuple or list of tuples, optional
        Voxel size per spatial axis (one for all images, or one per image): mask blocks
        are isotropic in physical units, the patch shrinks along coarse axes first.
    channel_axis : int, optional
    stop : StopToken, optional
    resume_from : str or Path, optional
        A checkpoint folder of an interrupted pretraining run.
    init_model : ReconstructionModel, optional
        Continue pretraining this model (its network, patch and normalisation).

    Yields
    ------
    TrainReport
        ``val_loss`` is the reconstruction loss on fixed corrupted patches.

    Returns
    -------
    ReconstructionModel

    Raises
    ------
    ConfigError
        Labels given, another task in ``config``, or noise of 0 as the only corruption.
    InputError
        Unusable images (dimensions, channels, NaN), or a ``patch_size`` larger than the smallest
        image.
    """
    if config.task != "pretraining":
        raise ConfigError(f"fit_pretraining needs config.task 'pretraining', got {config.task!r}")
    if labels is not None:
        raise ConfigError("pretraining learns from unlabeled images: call fit(images, None, config)")
    if config.pretrain.corruption == "noise" and config.pretrain.noise_std == 0:  # a run, not a stored config
        raise ConfigError("corruption 'noise' with noise_std 0 corrupts nothing, and the network would only "
                          "learn to copy its input: give noise_std > 0 (e.g. 0.2), or corruption 'mask'")
    note = None
    if init_model is None and resume_from is None:  # a model or a checkpoint keeps its own recipe
        from napari_medml.preprocessing.target_spacing import common_spacing

        config, note = common_spacing(config, spacing, len(as_list(images, "unlabeled images")))

    def build(base: ReconstructionModel | None, start_step: int) -> PretrainingTask:
        task = PretrainingTask(config, images, spacing=spacing, channel_axis=channel_axis, base=base,
                               start_step=start_step)
        if note:
            task.notes.append(note)
        return task

    return (yield from fit_task(build, config, load=load_pretrained, stop=stop, resume_from=resume_from,
                                init_model=init_model))


class PretrainingTask:
    """Corrupted patches in, clean patches as targets, MSE or MAE (a
    :class:`~napari_medml.engine.task.TrainingTask`)."""

    def __init__(self, config: TrainConfig, images: Any, *, spacing: Any = None, channel_axis: int | None = None,
                 base: ReconstructionModel | None = None, start_step: int = 0) -> None:
        from napari_medml.engine.devices import patch_voxel_cap, resolve_device
        from napari_medml.nn.segmentation import build_network
        from napari_medml.nn.strides import fit_thin_axes, patch_divisor, patch_divisors
        from napari_medml.pretraining import data
        from napari_medml.preprocessing.normalization import apply_normalization, fit_normalization

        if base is not None:  # its network, and the recipe its normalisation was fitted after
            config = replace(config, model=base.config.model,
                             data=replace(config.data, spatial_dims=base.spatial_dims,
                                          preprocessing=base.config.data.preprocessing))
        self.notes: list[str] = []  # shown under the start line
        self.config = config
        dc = config.data
        image_list = as_list(images, "unlabeled images")
        spacings = spacings_per_image(spacing, len(image_list))
        arrays, values = [], []
        for i, img in enumerate(image_list):
            name = "image" if len(image_list) == 1 else f"image {i + 1}"
            arr = data.check_image(img, channel_axis=channel_axis, spatial_dims=dc.spatial_dims, name=name,
                                   in_channels=base.in_channels if base is not None else None)
            values.append(one_value(arr, name))  # nothing to reconstruct but one value (checked per image below)
            arr, spacings[i], _ = data.run_recipe_channels(arr, spacings[i], dc.preprocessing)
            arrays.append(arr)
        check_volumes_not_constant(values, dc.sample_groups)  # a volume's blank slices are fine (trial 43)
        channels = {a.shape[0] for a in arrays}
        if len(channels) > 1:
            raise InputError(f"images have different channel counts {sorted(channels)}: give every image "
                             "the same channels")
        self.in_channels = arrays[0].shape[0]
        # one spacing for the mask blocks and the patch: the images' median, after the recipe
        # (which resamples voxel sizes that differ by more than SPACING_TOLERANCE to the median)
        known = [sp for sp in spacings if sp is not None]
        same_dims = len({len(sp) for sp in known}) == 1
        self.spacing = tuple(float(v) for v in np.median(known, axis=0)) if known and same_dims else spacings[0]
        self.normalization = base.normalization if base is not None else fit_normalization(arrays, dc.normalization)
        arrays = [apply_normalization(a, self.normalization) for a in arrays]
        divisor = patch_divisor(config.model)
        device = resolve_device(config.device)
        if base is not None:
            self.patch_size = base.patch_size
        elif dc.patch_size is not None:
            self.patch_size = check_patch_size(dc.patch_size, [a.shape[1:] for a in arrays],
                                               patch_divisors(config.model, dc.patch_size, self.spacing),
                                               config.model.depth, "smallest image")
        else:
            shapes = [a.shape[1:] for a in arrays]
            self.patch_size = fit_thin_axes(data.choose_patch(shapes, self.spacing, divisor,
                                                              patch_voxel_cap(device, dc.spatial_dims)),
                                            [min(s[a] for s in shapes) for a in range(len(shapes[0]))],
                                            config.model, self.spacing)
        self.voxels = int(sum(a[0].size for a in arrays))  # the images' own, before any padding
        # smaller than the patch: pad with 0 (the normalised mean), as inference pads
        arrays = [np.pad(a, [(0, 0)] + [(0, max(0, p - s)) for p, s in zip(self.patch_size, a.shape[1:])])
                  for a in arrays]
        self.count = len(arrays)
        torch.manual_seed(config.seed + start_step)
        self.network = build_network(config.model, dc.spatial_dims, self.in_channels, self.in_channels,
                                     patch_size=self.patch_size, spacing=self.spacing, norm_choice=False)
        if base is not None:
            self.network.load_state_dict(base.network.state_dict())
        self.blocks = data.block_sizes(config.pretrain.mask_block, self.spacing, dc.spatial_dims)
        corruptor = data.Corruptor(config.pretrain, self.blocks)
        self.sampler = data.UnlabeledSampler(arrays, self.patch_size, dc.batch_size, corruptor,
                                             flip=config.augment.flip.prob,
                                             seed=data_seed(config.seed + start_step))  # each process its own
        # validation: fixed patches with fixed corruption, so epochs compare fairly
        fixed = data.UnlabeledSampler(arrays, self.patch_size, dc.batch_size, corruptor, flip=0.0,
                                      seed=config.seed + 10_000)
        self.val_batches = [fixed.batch() for _ in range(VAL_BATCHES)]

    # --- TrainingTask ---------------------------------------------------------------------

    def start_message(self) -> str:
        cfg = self.config.pretrain
        how = {"mask": f"blocks of {'x'.join(map(str, self.blocks))} voxels blanked ({cfg.mask_ratio:.0%})",
               "noise": f"Gaussian noise (std {cfg.noise_std:g})",
               "mask_noise": f"blocks of {'x'.join(map(str, self.blocks))} voxels blanked ({cfg.mask_ratio:.0%}) "
                             f"and Gaussian noise (std {cfg.noise_std:g})"}[cfg.corruption]
        channels = f", {self.in_channels} channels" if self.in_channels > 1 else ""
        line = (f"pretraining on {self.count} unlabeled image(s), {self.voxels} voxels{channels}, patch "
                f"{'x'.join(map(str, self.patch_size))}: reconstruct {how}, {cfg.loss.upper()} loss")
        return "\n".join([line, *self.notes])

    def train_mode(self) -> None:
        self.network.train()

    def next_batch(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.sampler.batch()

    def loss(self, outputs: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return reconstruction_loss(outputs, targets["clean"], self.config.pretrain.loss)

    def evaluate(self, device: torch.device, amp: bool) -> Evaluation:
        from napari_medml.engine.devices import autocast

        self.network.eval()
        total = 0.0
        with torch.no_grad():
            for inputs, targets in self.val_batches:
                with autocast(amp):
                    outputs = self.network(inputs.to(device))
                total += float(reconstruction_loss(outputs.float(), targets["clean"].to(device),
                                                   self.config.pretrain.loss))
        value = total / len(self.val_batches)
        return Evaluation(report={"val_loss": value}, history={"val_loss": value}, key=(-value,),
                          metrics={"val_loss": value})

    def model(self, history: list[dict], provenance: Mapping[str, Any], metrics: Mapping[str, Any]
              ) -> ReconstructionModel:
        provenance = {"images": self.count, "voxels": self.voxels, **provenance}
        if metrics:
            provenance["val_loss"] = metrics.get("val_loss")
        return ReconstructionModel(self.network, self.config, self.in_channels, self.config.data.spatial_dims,
                                   self.patch_size, self.spacing, self.normalization, history=list(history),
                                   provenance=provenance)


def reconstruction_loss(outputs: torch.Tensor, clean: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean squared (``"mse"``) or absolute (``"mae"``) difference over all voxels."""
    if kind == "mae":
        return torch.nn.functional.l1_loss(outputs, clean)
    return torch.nn.functional.mse_loss(outputs, clean)

