"""A pretrained (reconstruction) model: its bundle, and what it gives on its own, the
reconstruction and a per-voxel reconstruction error (an anomaly map)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medml.bundles.spec import BundledModel, PatchSpec, SpecField
from napari_medml.config import TrainConfig, to_dict
from napari_medml.engine.windows import count_windows, window_predictor
from napari_medml.errors import InputError

__all__ = ["Reconstruction", "ReconstructionModel", "ReconstructionSpec", "load_pretrained"]


@dataclass(frozen=True, kw_only=True)
class ReconstructionSpec(PatchSpec):
    """What a pretraining bundle says: a segmentation-registry network whose outputs are
    its input channels (``out_channels == in_channels``), and how it was pretrained
    (``config.pretrain``: corruption, mask blocks, loss). Fields as ``PatchSpec``."""

    task = "pretraining"
    what = "a pretrained model"

    @property
    def out_channels(self) -> int:
        return self.in_channels

    def description_fields(self) -> dict[str, Any]:
        return {"class_ids": [], **super().description_fields(), "pretraining": to_dict(self.config.pretrain)}


@dataclass(frozen=True)
class Reconstruction:
    """What :meth:`ReconstructionModel.reconstruct` returns.

    Attributes
    ----------
    image : np.ndarray
        float32, the input's shape and axes: the reconstruction of the uncorrupted
        image in the input's intensity units (the image as the network predicts it; not a
        better denoiser than a light Gaussian blur, see benchmarks/README.md).
    error : np.ndarray
        float32, the input's shape without channels: per voxel, the squared (MSE model)
        or absolute (MAE model) difference, in normalised units averaged over channels,
        between the image and its prediction from context (each voxel predicted while
        blanked, for a model pretrained with masking; otherwise the reconstruction).
        High where the image is unlike the rest: an anomaly map.
    note : str or None
        One line when the image's intensities are far from the pretraining images'
        (``preprocessing.normalization.intensity_note``): the error map then shows the
        other contrast everywhere more than what is unusual in the image.
    """

    image: np.ndarray
    error: np.ndarray
    note: str | None = None


class ReconstructionModel(BundledModel):
    """A segmentation network pretrained to reconstruct its inputs (outputs = input channels).

    Parameters
    ----------
    network : torch.nn.Module
        ``(B, C, *patch)`` to ``(B, C, *patch)``.
    spec : ReconstructionSpec or TrainConfig
        The model's description (``config.task == "pretraining"``; ``config.model``
        the network, ``config.pretrain`` the corruption and loss). The older form gives
        the ``TrainConfig`` here and the spec's other fields as the next arguments
        (``in_channels``, ``spatial_dims``, ``patch_size``, ``spacing``,
        ``normalization``).
    history, provenance
        As for the segmentation ``Model``.
    """

    spec_type = ReconstructionSpec
    spec: ReconstructionSpec

    patch_size = SpecField()
    spacing = SpecField()

    def __init__(self, network: torch.nn.Module, spec: ReconstructionSpec | TrainConfig,
                 in_channels: int | None = None, spatial_dims: int | None = None,
                 patch_size: Sequence[int] | None = None, spacing: Sequence[float] | None = None,
                 normalization: dict | None = None, history: list[dict] | None = None,
                 provenance: dict | None = None) -> None:
        spec = self.spec_from_arguments(spec, in_channels=in_channels, spatial_dims=spatial_dims,
                                        patch_size=patch_size, spacing=spacing, normalization=normalization)
        super().__init__(network, spec, history=history, provenance=provenance)

    def __repr__(self) -> str:
        return (f"ReconstructionModel({self.config.model.network}, {self.spatial_dims}D, "
                f"in_channels={self.in_channels}, patch_size={self.patch_size})")

    def reconstruct(self, image: Any, *, spacing: Sequence[float] | None = None, channel_axis: int | None = None,
                    axes: str | None = None, overlap: float = 0.25, device: str = "auto",
                    progress: Callable[[int, int], None] | None = None, stop: Any | None = None,
                    name: str = "the image") -> Reconstruction:
        """Reconstruct an image and map its reconstruction error.

        Parameters
        ----------
        image : array
            ``(Y, X)`` or ``(Z, Y, X)`` (the model's dimensions) plus a channel axis;
            leading time axes (or Z under a 2D model) are taken one index at a time.
        spacing : sequence of float, optional
            Voxel size; needed when the preprocessing recipe resamples.
        channel_axis : int, optional
        axes : str, optional
            One letter per axis (``T``, ``C``, ``Z``, ``Y``, ``X``; ``Q`` unknown);
            replaces ``channel_axis``.
        overlap : float
            Sliding-window overlap in [0, 1).
        device : str
        progress : callable, optional
            ``(done, total)`` windows.
        stop : StopToken, optional
            Raises ``Cancelled`` at the next window once stopped.
        name : str
            How the intensity note (``Reconstruction.note``) names the image.

        Returns
        -------
        Reconstruction

        Raises
        ------
        InputError
            Axes or channels that do not fit the model, NaN/inf values.
        Cancelled
        """
        from napari_medml.io.axes import layout
        from napari_medml.io.axes_resolve import resolve_axes
        from napari_medml.engine.devices import resolve_device

        shape = np.shape(image)
        if axes is None:  # the last axes are spatial, the channel axis is named, the rest time
            if channel_axis is not None and not -len(shape) <= channel_axis < len(shape):
                raise InputError(f"channel_axis={channel_axis} is out of range for an image of shape {shape}")
            rest = [a for a in range(len(shape)) if channel_axis is None or a != channel_axis % len(shape)]
            letters = {a: "T" for a in rest}
            letters.update(zip(rest[-self.spatial_dims:], "ZYX"[3 - self.spatial_dims:]))
            if channel_axis is not None:
                letters[channel_axis % len(shape)] = "C"
            axes = "".join(letters[a] for a in range(len(shape)))
        hint = "say what the axes are (e.g. axes='ZYX' or 'CYX')"
        axes = resolve_axes(axes, shape, what="image", hint=hint, spatial_dims=self.spatial_dims,
                            in_channels=self.in_channels)
        lay = layout(axes, self.spatial_dims, "image", hint)
        channels = 1 if lay.channel_axis is None else shape[lay.channel_axis]
        if channels != self.in_channels:
            raise InputError(f"the model was pretrained on {self.in_channels} channel(s) but the image has "
                             f"{channels} (shape {shape}, axes {axes}): give the same channels")
        from napari_medml.preprocessing.normalization import intensity_note

        note = intensity_note(image, lay.channel_axis, self.normalization or {}, name, self.config.data.preprocessing)
        arr = np.asarray(image)
        moved = np.moveaxis(arr, lay.channel_axis, 0) if lay.channel_axis is not None else arr[None]
        # sample axes lead the spatial ones: after the channels they come first
        lead = tuple(moved.shape[1:1 + len(lay.sample_axes)])
        moved = moved.reshape(moved.shape[0], math.prod(lead), *moved.shape[1 + len(lead):])
        dev = resolve_device(device)
        sp = None if spacing is None else tuple(float(s) for s in spacing)[-self.spatial_dims:]
        recon = np.empty(moved.shape, np.float32)
        error = np.empty(moved.shape[1:], np.float32)
        count = moved.shape[1]
        for i in range(count):
            def part(done: int, total: int, i: int = i) -> None:
                if progress is not None:
                    progress(i * total + done, count * total)
            recon[:, i], error[i] = self._one(moved[:, i], sp, dev, overlap, part, stop)
        recon = recon.reshape(moved.shape[0], *lead, *moved.shape[2:])
        error = error.reshape(*lead, *moved.shape[2:])
        recon = np.moveaxis(recon, 0, lay.channel_axis) if lay.channel_axis is not None else recon[0]
        return Reconstruction(image=recon, error=error, note=note)

    def _one(self, image: np.ndarray, spacing: tuple[float, ...] | None, device: torch.device, overlap: float,
             progress: Callable[[int, int], None], stop: Any | None) -> tuple[np.ndarray, np.ndarray]:
        """Reconstruction ``(C, *spatial)`` and error ``(*spatial)`` of one ``(C, *spatial)`` image."""
        from monai.inferers import sliding_window_inference

        from napari_medml.pretraining.data import block_sizes, check_image, checker_masks, run_recipe_channels
        from napari_medml.preprocessing.normalization import apply_normalization

        x = check_image(image, channel_axis=0, spatial_dims=self.spatial_dims, in_channels=self.in_channels)
        x, _, recipe = run_recipe_channels(x, spacing or self.spacing, self.config.data.preprocessing)
        x = apply_normalization(x, self.normalization)
        masks = checker_masks(x.shape[1:], block_sizes(self.config.pretrain.mask_block, self.spacing,
                                                       self.spatial_dims))
        masked = self.config.pretrain.corruption in ("mask", "mask_noise")
        inputs = [x] + ([np.where(m, 0.0, x).astype(np.float32) for m in masks] if masked else [])
        net = self.network.to(device).eval()
        total = count_windows(x.shape[1:], self.patch_size, overlap) * len(inputs)
        predictor = window_predictor(net, total, progress=progress, stop=stop, what="reconstruction")

        outputs = []
        with torch.inference_mode():
            for inp in inputs:
                out = sliding_window_inference(torch.from_numpy(inp)[None].to(device), roi_size=self.patch_size,
                                               sw_batch_size=4, predictor=predictor, overlap=overlap,
                                               mode="gaussian", progress=False)
                out = out.as_tensor() if hasattr(out, "as_tensor") else out
                outputs.append(out[0].float().cpu().numpy())
        recon = outputs[0]
        context = np.where(masks[0], outputs[1], outputs[2]) if masked else recon
        diff = context - x
        error = (np.abs(diff) if self.config.pretrain.loss == "mae" else diff**2).mean(0).astype(np.float32)
        recon = _denormalize(recon, self.normalization)
        if recipe is not None and recipe.geometry:  # back onto the input's grid
            recon = np.stack([recipe.restore(c, order=1) for c in recon]).astype(np.float32)
            error = recipe.restore(error, order=1).astype(np.float32)
        return recon, error


def _denormalize(x: np.ndarray, stats: dict) -> np.ndarray:
    """The inverse of ``apply_normalization`` on ``(C, *spatial)`` (back to intensity units;
    values that ``ct``, ``percentile`` or ``minmax`` clipped stay at the clip bounds)."""
    out = np.array(x, dtype=np.float32, copy=True)
    method = stats.get("method", "none")
    for c, s in enumerate(stats.get("channels", [])):
        if method in ("zscore", "zscore_nonzero", "ct"):
            out[c] = out[c] * max(s["std"], 1e-8) + s["mean"]
        elif method in ("percentile", "minmax"):
            out[c] = out[c] * max(s["high"] - s["low"], 1e-8) + s["low"]
    return out


def load_pretrained(path: str | Path) -> ReconstructionModel:
    """Load a pretraining bundle folder (never unpickles).

    Raises
    ------
    BundleError
        A missing or damaged bundle, or one of another task.
    """
    return ReconstructionModel.load(path)
