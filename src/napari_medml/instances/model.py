"""A trained instance model: the network's outputs are cached, instances are made from
them by post-processing whose parameters can change without running the network again
(as cellpose-napari re-runs only its mask creation).

The network (from the segmentation registry) has four output channels: three class
logits (background, interior, boundary) and the logit of the normalised distance map
(:mod:`napari_medml.instances.targets`). Prediction keeps ``foreground`` = 1 -
P(background) and ``distance`` = sigmoid of the last channel, and calls
:func:`~napari_medml.instances.postprocess.instances_from_outputs` on them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medml.bundles.spec import SpecField
from napari_medml.config import InferConfig, TrainConfig
from napari_medml.engine.windows import count_windows, window_predictor
from napari_medml.instances.postprocess import InstanceParams, instances_from_outputs
from napari_medml.segmentation.model import Model
from napari_medml.segmentation.planned_inference import planned_infer_config
from napari_medml.segmentation.spec import SegmentationSpec

__all__ = ["OUT_CHANNELS", "OUTPUT_NAMES", "InstanceModel", "InstancePrediction", "InstanceSpec",
           "load_instance_model", "network_outputs"]

OUTPUT_NAMES = ("background", "interior", "boundary", "distance")
OUT_CHANNELS = len(OUTPUT_NAMES)
CLASS_NAMES = {"0": "background", "1": "interior", "2": "boundary"}  # the three class outputs


@dataclass(frozen=True, kw_only=True)
class InstanceSpec(SegmentationSpec):
    """What an instance bundle says: a segmentation spec with four outputs
    (:data:`OUTPUT_NAMES`: three class logits and a distance logit) and the default
    post-processing.

    Attributes
    ----------
    class_ids : tuple of int
        ``(0, 1, 2)``: background, interior, boundary.
    params : InstanceParams
        Default post-processing (tuned on the held-out part when there was one).
    """

    task = "instances"
    what = "an instance model"

    class_ids: tuple[int, ...] = (0, 1, 2)
    params: InstanceParams

    @property
    def out_channels(self) -> int:
        return OUT_CHANNELS

    def class_names(self) -> dict[str, str]:
        return dict(CLASS_NAMES)

    def description_fields(self) -> dict[str, Any]:
        return {**super().description_fields(), "outputs": list(OUTPUT_NAMES),
                "instance_params": self.params.to_dict()}

    @classmethod
    def arguments(cls, desc: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().arguments(desc), "params": InstanceParams.from_dict(desc.get("instance_params") or {})}


@dataclass(frozen=True)
class InstancePrediction:
    """What :meth:`InstanceModel.predict` returns: instances and the cached outputs.

    Attributes
    ----------
    labels : np.ndarray
        uint32 instance ids of the input's shape without channels: 0 background,
        each object its own id (unique across the slices/frames of a stack).
    foreground : np.ndarray
        float32 probability that a voxel belongs to an object, same shape.
    distance : np.ndarray
        float32 predicted normalised distance to the object's border, same shape.
    spacing : tuple of float or None
        Voxel size of the spatial axes the post-processing measured with.
    params : InstanceParams
        The post-processing that made ``labels``.
    spatial_dims : int
        2 or 3; axes in front of the last ``spatial_dims`` are slices/frames.
    """

    labels: np.ndarray
    foreground: np.ndarray
    distance: np.ndarray
    spacing: tuple[float, ...] | None
    params: InstanceParams
    spatial_dims: int

    def relabel(self, params: InstanceParams | Mapping[str, float]) -> "InstancePrediction":
        """Instances from the cached outputs with other post-processing (no network run).

        Parameters
        ----------
        params : InstanceParams or dict
            The new post-processing; a dict changes only the parameters it names
            (e.g. ``{"seed_height": 0.5}``), the others stay this prediction's.

        Returns
        -------
        InstancePrediction
            The same outputs, new ``labels`` and ``params``.

        Raises
        ------
        ConfigError
            A parameter name that does not exist, or a value out of its range.
        """
        if isinstance(params, Mapping):
            params = InstanceParams.from_dict({**self.params.to_dict(), **params})
        labels = _postprocess(self.foreground, self.distance, self.spacing, params, self.spatial_dims)
        return replace(self, labels=labels, params=params)


def _postprocess(foreground: np.ndarray, distance: np.ndarray, spacing: Sequence[float] | None,
                 params: InstanceParams, spatial_dims: int) -> np.ndarray:
    """Instances of each spatial block of a stack, ids kept unique across the stack."""
    lead = foreground.shape[: foreground.ndim - spatial_dims]
    if not lead:
        return instances_from_outputs(foreground, distance, spacing, params)
    out = np.zeros(foreground.shape, np.uint32)
    offset = 0
    for index in np.ndindex(*lead):
        part = instances_from_outputs(foreground[index], distance[index], spacing, params)
        out[index] = np.where(part > 0, part + np.uint32(offset), 0)
        offset += int(part.max(initial=0))
    return out


def network_outputs(network: torch.nn.Module, x: torch.Tensor, patch_size: Sequence[int], *, amp: bool,
                    sw_batch_size: int, overlap: float = 0.25, blend: str = "gaussian", tta: bool = False,
                    spacing: Sequence[float] | None = None, progress: Callable[[int, int], None] | None = None,
                    stop: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Foreground probability and distance map of one normalised image, by sliding window.

    Parameters
    ----------
    network : torch.nn.Module
        Maps ``(B, C, *patch)`` to ``(B, 4, *patch)`` (three class logits, distance logit);
        must be on ``x``'s device, in eval mode.
    x : torch.Tensor
        ``(C, *spatial)`` float32, normalised.
    patch_size : sequence of int
    amp : bool
        float16 autocast (CUDA).
    sw_batch_size : int
    overlap : float
    blend : {"gaussian", "constant"}
    tta : bool
        Average over the test-time passes (``segmentation.tta.tta_passes``): the flip of each
        spatial axis; in 2D with square pixels and a square patch, the 8 orientations of the square.
    spacing : sequence of float, optional
        The model's training voxel size (decides the 2D transposes).
    progress : callable, optional
        ``(done, total)`` windows.
    stop : StopToken, optional
        ``Cancelled`` is raised at the next window once stopped.

    Returns
    -------
    foreground, distance : np.ndarray
        float32 ``(*spatial)`` each, in [0, 1].
    """
    from monai.inferers import sliding_window_inference

    from napari_medml.segmentation.tta import tta_passes

    passes = tta_passes(x.dim() - 1, tta, spacing, patch_size)
    total = sum(count_windows(p.shape(tuple(x.shape[1:])), patch_size, overlap) for p in passes)

    def scores(logits: torch.Tensor) -> torch.Tensor:
        # probabilities and distances blend linearly across windows (logits would too, but
        # the distance must be blended on the scale it is read on)
        return torch.cat([torch.softmax(logits[:, :3], dim=1), torch.sigmoid(logits[:, 3:4])], dim=1)

    predictor = window_predictor(network, total, amp=amp, progress=progress, stop=stop, scores=scores)
    summed = None
    with torch.inference_mode():
        for tta_pass in passes:
            out = sliding_window_inference(tta_pass.apply(x[None]), roi_size=tuple(patch_size),
                                           sw_batch_size=sw_batch_size, predictor=predictor, overlap=overlap,
                                           mode=blend, progress=False)
            out = tta_pass.undo(out.as_tensor() if hasattr(out, "as_tensor") else out)
            summed = out if summed is None else summed + out
    mean = summed[0] / len(passes)
    foreground = (1.0 - mean[0]).clamp_(0.0, 1.0).cpu().numpy().astype(np.float32)
    distance = mean[3].clamp_(0.0, 1.0).cpu().numpy().astype(np.float32)
    return foreground, distance


class InstanceModel(Model):
    """An instance network plus everything needed to use it on new images.

    A :class:`~napari_medml.segmentation.model.Model` (same preprocessing, layout and
    bundle) whose ``predict`` returns instances; ``params`` is the post-processing
    stored in the bundle.

    Parameters
    ----------
    network : torch.nn.Module
        Four output channels (:data:`OUTPUT_NAMES`).
    spec : InstanceSpec or TrainConfig
        The model's description. The older form gives the ``TrainConfig``
        (``task="instances"``) here and the spec's other fields as the next arguments
        (``in_channels``, ``spatial_dims``, ``patch_size``, ``spacing``,
        ``normalization``, ``params``).
    history, provenance
        As for ``Model``.
    """

    spec_type = InstanceSpec
    spec: InstanceSpec

    params = SpecField()

    def __init__(self, network: torch.nn.Module, spec: InstanceSpec | TrainConfig, in_channels: int | None = None,
                 spatial_dims: int | None = None, patch_size: Sequence[int] | None = None,
                 spacing: Sequence[float] | None = None, normalization: dict | None = None,
                 params: InstanceParams | None = None, history: list[dict] | None = None,
                 provenance: dict | None = None) -> None:
        spec = self.spec_from_arguments(spec, in_channels=in_channels, spatial_dims=spatial_dims,
                                        patch_size=patch_size, spacing=spacing, normalization=normalization,
                                        params=params)
        super().__init__(network, spec, history=history, provenance=provenance)

    def __repr__(self) -> str:
        return (f"InstanceModel({self.config.model.network}, {self.spatial_dims}D, in_channels={self.in_channels}, "
                f"patch_size={self.patch_size}, params={self.params})")

    def predict(self, image: Any, *, spacing: Sequence[float] | None = None, channel_axis: int | None = None,
                config: InferConfig | None = None, params: InstanceParams | None = None,
                progress: Callable[[int, int], None] | None = None, stop: Any | None = None,
                axes: str | None = None) -> InstancePrediction:  # type: ignore[override]
        """Instances of one image (a stack of them, time frames or slices, one by one).

        Parameters
        ----------
        image : array
            ``(Y, X)`` or ``(Z, Y, X)`` (the model's dimensions) plus ``channel_axis``;
            leading axes (time, or Z for a 2D model) are predicted one at a time.
        spacing : sequence of float, optional
            Voxel size of the spatial axes (physical units); default the training
            spacing. Sizes and distances of the post-processing are measured in it.
        channel_axis : int, optional
        config : InferConfig, optional
            Overlap, blending, TTA, device (its semantic post-processing is not used).
        params : InstanceParams, optional
            Post-processing; default the bundle's (:attr:`params`).
        progress : callable, optional
            ``(done, total)`` windows.
        stop : StopToken, optional
        axes : str, optional
            Letters ``TCZYX`` per axis (replaces ``channel_axis``).

        Returns
        -------
        InstancePrediction
            Instance labels and the cached outputs; ``relabel(params)`` re-runs only
            the post-processing.

        Raises
        ------
        BundleError
            The image does not fit the model.
        InputError
            NaN/inf values, or ``axes`` that do not fit.
        Cancelled
            Stopped through ``stop``.
        """
        from napari_medml.engine.devices import amp_enabled, resolve_device

        config = planned_infer_config(self, config)
        params = params or self.params
        channel_axis, samples = self._layout(image, channel_axis, axes)
        spacing = tuple(float(s) for s in spacing)[-self.spatial_dims:] if spacing is not None else self.spacing
        device = resolve_device(config.device)
        amp = amp_enabled(device, config.amp)
        shape = np.shape(image)
        lead = tuple(shape[a] for a in samples)
        count = math.prod(lead)
        kept_channel = None if channel_axis is None else channel_axis - sum(a < channel_axis for a in samples)
        foregrounds, distances = [], []
        for i, index in enumerate(np.ndindex(*lead)):
            where: list[Any] = [slice(None)] * len(shape)
            for axis, k in zip(samples, index):
                where[axis] = k

            def part_progress(done: int, total: int, i: int = i) -> None:
                if progress is not None:
                    progress(i * total + done, count * total)

            x, recipe = self._input(image[tuple(where)], spacing, kept_channel, device)
            fg, dist = network_outputs(self._network_on(device), x, self.patch_size, amp=amp,
                                       sw_batch_size=config.sw_batch_size, overlap=config.overlap,
                                       blend=config.blend, tta=config.tta, spacing=self.spacing,
                                       progress=part_progress, stop=stop)
            if recipe is not None and recipe.geometry:
                fg = recipe.restore(fg, order=1, fill=0.0).astype(np.float32)
                dist = recipe.restore(dist, order=1, fill=0.0).astype(np.float32)
            foregrounds.append(fg)
            distances.append(dist)
        foreground = np.stack(foregrounds).reshape(lead + foregrounds[0].shape)
        distance = np.stack(distances).reshape(lead + distances[0].shape)
        labels = _postprocess(foreground, distance, spacing, params, self.spatial_dims)
        return InstancePrediction(labels, foreground, distance, spacing, params, self.spatial_dims)


def load_instance_model(path: str | Path) -> InstanceModel:
    """Load an instance bundle folder (never unpickles).

    Parameters
    ----------
    path : str or Path
        A folder written by :meth:`InstanceModel.save`.

    Returns
    -------
    InstanceModel

    Raises
    ------
    BundleError
        Missing or damaged files, another task's bundle, or weights that do not fit.
    """
    return InstanceModel.load(path)
