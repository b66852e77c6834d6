"""A trained segmentation model and its prediction: sliding window, TTA,
uncertainty, post-processing, with the training preprocessing re-applied.

Its description is a :class:`~napari_medml.segmentation.spec.SegmentationSpec`; the
prediction's pieces live in ``segmentation.prediction`` (the result), ``.scores``
(in-place tensor operations) and ``.recipes`` (the preprocessing recipe).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medml.bundles.spec import BundledModel, SpecField
from napari_medml.config import InferConfig, TrainConfig
from napari_medml.engine.windows import count_windows, window_predictor
from napari_medml.errors import BundleError, InputError, check_numeric, raise_if_stopped
from napari_medml.io.channels_last import check_not_channels_last
from napari_medml.preprocessing.inputs import FILL_NAN, fills_nonfinite
from napari_medml.preprocessing.spacing import check_spacing
from napari_medml.segmentation.planned_inference import planned_infer_config
from napari_medml.segmentation.prediction import Prediction, stack_predictions
from napari_medml.segmentation.recipes import apply_preprocessing, labels_to_recipe_grid, restored_argmax
from napari_medml.segmentation.scores import argmax_uint8, label_dtype, normalize_, softmax_
from napari_medml.segmentation.spec import SegmentationSpec
from napari_medml.segmentation.tta import TTAPass, tta_passes as passes_for

__all__ = ["Model", "Prediction", "SegmentationSpec", "apply_preprocessing", "labels_to_recipe_grid",
           "load_segmentation_model", "model_description"]

# NumPy dtypes torch.from_numpy takes and converts to float32 on the way to the device.
_TORCH_DTYPES = {np.dtype(t) for t in ("float16", "float32", "float64", "int8", "int16", "int32", "int64",
                                       "uint8")}


class Model(BundledModel):
    """A segmentation network plus everything needed to use it on new images.

    Parameters
    ----------
    network : torch.nn.Module
        Built from the spec (``spec.build_network()``): ``(B, C, *patch)`` to
        ``(B, K, *patch)`` logits, channel k = ``class_ids[k]``.
    spec : SegmentationSpec or TrainConfig
        The model's description. The older form gives the ``TrainConfig`` here and the
        spec's other fields as the next arguments (``class_ids``, ``in_channels``,
        ``spatial_dims``, ``patch_size``, ``spacing``, ``normalization``).
    history : list of dict, optional
        One dict per epoch.
    provenance : dict, optional
        Free-form notes (split, plan, initial weights), stored in bundles.

    Attributes
    ----------
    spec : SegmentationSpec
    config, class_ids, in_channels, spatial_dims, patch_size, spacing, normalization
        The spec's fields (setting one replaces the spec by an updated copy).
    """

    spec_type = SegmentationSpec
    spec: SegmentationSpec

    class_ids = SpecField()
    patch_size = SpecField()
    spacing = SpecField()

    def __init__(self, network: torch.nn.Module, spec: SegmentationSpec | TrainConfig,
                 class_ids: Sequence[int] | None = None, in_channels: int | None = None,
                 spatial_dims: int | None = None, patch_size: Sequence[int] | None = None,
                 spacing: Sequence[float] | None = None, normalization: dict | None = None,
                 history: list[dict] | None = None, provenance: dict | None = None) -> None:
        spec = self.spec_from_arguments(spec, class_ids=class_ids, in_channels=in_channels,
                                        spatial_dims=spatial_dims, patch_size=patch_size, spacing=spacing,
                                        normalization=normalization)
        super().__init__(network, spec, history=history, provenance=provenance)

    def record(self) -> dict[str, Any]:
        """History, versions, provenance; the plan (``segmentation.plan``) as its own key."""
        return {**super().record(), "provenance": {k: v for k, v in self.provenance.items() if k != "plan"},
                "plan": self.provenance.get("plan")}

    @classmethod
    def record_arguments(cls, desc: Any) -> dict[str, Any]:
        args = super().record_arguments(desc)
        if desc.get("plan"):
            args["provenance"] = {**args["provenance"], "plan": desc["plan"]}
        return args

    def __repr__(self) -> str:
        return (f"Model({self.config.model.network}, {self.spatial_dims}D, in_channels={self.in_channels}, "
                f"class_ids={self.class_ids}, patch_size={self.patch_size})")

    def predict(self, image: Any, *, spacing: Sequence[float] | None = None, channel_axis: int | None = None,
                config: InferConfig | None = None, progress: Callable[[int, int], None] | None = None,
                stop: Any | None = None, axes: str | None = None) -> Prediction:
        """Segment one image; a stack of them (time frames, or slices for a 2D model) one by one.

        Parameters
        ----------
        image : array
            ``(Y, X)`` or ``(Z, Y, X)`` (the model's dimensions), plus a channel axis named
            by ``channel_axis``. Axes in front of the spatial ones (time, or Z for a 2D
            model) are samples: a 2D model segments a ``(Z, Y, X)`` stack slice by slice,
            a ``(T, Z, Y, X)`` time series is segmented frame by frame.
        spacing : sequence of float, optional
            Voxel size of the spatial axes (longer sequences: the last ones are used).
            When the preprocessing recipe resamples, give it: without it the image is
            taken to be at the model's working spacing (``Model.spacing``) and is not
            resampled.
        channel_axis : int, optional
        config : InferConfig, optional
            Default: ``InferConfig()`` with the model's planned settings (test-time
            augmentation for a model trained with the plan; ``planned_inference.planned_inference``).
        progress : callable, optional
            Called with ``(done, total)`` windows (over all slices/frames).
        stop : StopToken, optional
            When stopped, ``Cancelled`` is raised at the next window.
        axes : str, optional
            What each axis of ``image`` is, one letter each from ``T``, ``C``, ``Z``,
            ``Y``, ``X`` (e.g. ``"TCZYX"``); replaces ``channel_axis``. Unnamed axes
            (``Q``) are resolved from the model's dimensions and channels, or refused
            when that does not settle them.

        Returns
        -------
        Prediction
            Labels (and uncertainty, instances) of the image's shape without channels;
            probabilities ``(K, *that shape)``.

        Raises
        ------
        BundleError
            The image does not fit the model (dimensions or channels).
        InputError
            NaN/inf values, ``axes`` that do not fit the image, or a ``spacing`` that is not
            one positive voxel size per spatial axis.
        Cancelled
            Stopped through ``stop``.
        """
        config = planned_infer_config(self, config)
        channel_axis, samples = self._layout(image, channel_axis, axes)
        # one size per spatial axis, or per non-channel axis (a stack's or series' own first): the last ones count
        # (an unnamed axis that holds the channels may have a size given too: a napari layer's scale)
        named = axes is not None and channel_axis is not None and axes[channel_axis] == "Q"
        spacing = check_spacing(spacing, self.spatial_dims, what="model", extra=len(samples) + int(named))
        if not samples:
            return self._predict_one(image, spacing, channel_axis, config, progress, stop)
        shape = np.shape(image)
        lead = tuple(shape[a] for a in samples)
        count = math.prod(lead)
        parts: list[Prediction] = []
        for i, index in enumerate(np.ndindex(*lead)):
            where: list[Any] = [slice(None)] * len(shape)
            for axis, k in zip(samples, index):
                where[axis] = k
            kept_channel = None if channel_axis is None else channel_axis - sum(a < channel_axis for a in samples)

            def part_progress(done: int, total: int, i: int = i) -> None:
                if progress is not None:
                    progress(i * total + done, count * total)

            parts.append(self._predict_one(image[tuple(where)], spacing, kept_channel, config,
                                           part_progress, stop))  # fmt: skip
        return stack_predictions(parts, lead, self.class_ids)

    def _layout(self, image: Any, channel_axis: int | None, axes: str | None) -> tuple[int | None, tuple[int, ...]]:
        """The channel axis and the sample axes (leading axes predicted one at a time)."""
        shape = np.shape(image)
        if axes is not None:
            from napari_medml.io.axes import AXES_HINT, check_axes, layout
            from napari_medml.io.axes_resolve import resolve_axes

            axes = resolve_axes(check_axes(axes, len(shape), "image", "give one letter per axis, e.g. ZCYX"),
                                shape, what="image", hint=AXES_HINT, spatial_dims=self.spatial_dims,
                                in_channels=self.in_channels)  # fmt: skip
            found = layout(axes, self.spatial_dims, "image", AXES_HINT)
            channel_axis, samples = found.channel_axis, found.sample_axes
        else:
            if channel_axis is not None:
                if not -len(shape) <= channel_axis < len(shape):
                    raise InputError(f"channel_axis={channel_axis} is out of range for an image of shape {shape}")
                channel_axis %= len(shape)
            others = [a for a in range(len(shape)) if a != channel_axis]
            if len(others) < self.spatial_dims:
                where = f" with channel_axis={channel_axis}" if channel_axis is not None else ""
                raise BundleError(f"the model expects a {self.spatial_dims}D image with {self.in_channels} "
                                  f"channel(s) but got an array of shape {shape}{where}")  # fmt: skip
            samples = tuple(others[: len(others) - self.spatial_dims])
            if channel_axis is None and len(shape) > self.spatial_dims:
                check_not_channels_last(shape, self.spatial_dims, self.in_channels)
        channels = 1 if channel_axis is None else shape[channel_axis]
        if channels != self.in_channels:
            hint = (f"; if axis {samples[0]} holds the channels, set channel_axis={samples[0]} (or axes)"
                    if channel_axis is None and samples else "")
            raise BundleError(
                f"the model was trained on {self.in_channels} channel(s) but the image has {channels} "
                f"(shape {shape}, channel_axis={channel_axis}): give the same channels as in training{hint}"
            )
        return channel_axis, tuple(samples)

    def _predict_one(self, image: Any, spacing: Sequence[float] | None, channel_axis: int | None,
                     config: InferConfig, progress: Callable[[int, int], None] | None,
                     stop: Any | None) -> Prediction:
        """Segment one ``spatial_dims``-D image (channels at ``channel_axis``)."""
        from napari_medml.engine.devices import amp_enabled, resolve_device
        from napari_medml.segmentation.postprocess import postprocess

        device = resolve_device(config.device)
        amp = amp_enabled(device, config.amp)
        x, recipe = self._input(image, spacing, channel_axis, device)
        # (K, *spatial) float32, on the GPU when it fits: the argmax, entropy and float16
        # conversion run there and only their results cross to the host.
        probs = self._sliding_window(x, device, amp, config, progress, stop)
        del x
        # the passes after the windows take seconds on a large volume: a Stop there ends the run too
        raise_if_stopped(stop, "prediction stopped")
        probabilities = uncertainty = None
        if config.return_uncertainty:
            p = probs.clamp_min(1e-8)
            uncertainty = (-(p * p.log()).sum(0)).float().cpu().numpy()
            del p
            raise_if_stopped(stop, "prediction stopped")
        if recipe is not None and recipe.geometry:
            labels, probabilities = restored_argmax(probs, recipe, config.return_probabilities)
            if uncertainty is not None:
                raise_if_stopped(stop, "prediction stopped")
                uncertainty = recipe.restore(uncertainty, order=1).astype(np.float32)
        else:
            labels = argmax_uint8(probs)
            if config.return_probabilities:
                raise_if_stopped(stop, "prediction stopped")
                probabilities = probs.to(torch.float16).cpu().numpy()
        del probs
        raise_if_stopped(stop, "prediction stopped")
        if self.class_ids != tuple(range(len(self.class_ids))):  # channels are not the ids: map them
            lut = np.asarray(self.class_ids, dtype=label_dtype(max(self.class_ids)))
            labels = lut[labels]
        labels, instances = postprocess(labels, config)
        return Prediction(labels=labels, probabilities=probabilities, uncertainty=uncertainty,
                          class_ids=self.class_ids, instances=instances)

    # --- internals ------------------------------------------------------------------

    def _input(self, image: Any, spacing: Sequence[float] | None, channel_axis: int | None,
               device: torch.device) -> tuple[torch.Tensor, Any]:
        """The normalised input ``(C, *spatial)`` float32 on ``device`` (never the caller's
        memory) and the recipe's result (None without a recipe).

        Without a preprocessing recipe the image is copied to the device once, converted
        to float32 on the way, and checked and normalised there: on a GPU that saves three
        passes over the volume on the host.
        """
        from napari_medml.segmentation.data import prepare_image
        from napari_medml.preprocessing.normalization import apply_normalization

        steps = self.config.data.preprocessing
        if steps:
            arr = prepare_image(image, channel_axis=channel_axis, spatial_dims=self.spatial_dims,
                                in_channels=self.in_channels, finite=not fills_nonfinite(steps))
            arr, _, recipe = apply_preprocessing(arr, spacing if spacing is not None else self.spacing, steps)
            return torch.from_numpy(apply_normalization(arr, self.normalization)).to(device), recipe
        arr = np.asarray(image)
        check_numeric(arr.dtype, "image")
        arr = np.moveaxis(arr, channel_axis, 0) if channel_axis is not None else arr[None]
        if arr.dtype not in _TORCH_DTYPES or not arr.dtype.isnative:
            arr = arr.astype(np.float32)
        elif any(step < 0 for step in arr.strides):  # a flipped view: torch takes none
            arr = np.ascontiguousarray(arr)
        with warnings.catch_warnings():  # read-only layer data: only read here
            warnings.filterwarnings("ignore", message=".*not writable.*")
            source = torch.from_numpy(arr)
        x = torch.empty(arr.shape, dtype=torch.float32, device=device)
        x.copy_(source)
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise InputError(f"image contains {bad} NaN or infinite value(s): " + FILL_NAN)
        normalize_(x, self.normalization)
        return x, None

    def _network_on(self, device: torch.device) -> torch.nn.Module:
        """The network on ``device`` in eval mode; ``Module.to``/``eval`` walk every module
        (about 1.5 ms for a U-Net), so they run only when something has to change."""
        net = self.network
        param = next(net.parameters(), None)
        if param is not None and (param.device.type != device.type or
                                  (device.index is not None and param.device.index != device.index)):
            net.to(device)
        if net.training:
            net.eval()
        return net

    def _sliding_window(self, x: torch.Tensor, device: torch.device, amp: bool, config: InferConfig,
                        progress: Callable[[int, int], None] | None, stop: Any | None) -> torch.Tensor:
        """Blended scores ``(K, *spatial)``: softmax probabilities, averaged over the TTA
        passes (``tta_passes``), with TTA; otherwise blended logits (as MONAI and nnU-Net blend them), turned into
        probabilities in place only when asked for. Either way the argmax is the label.

        On a CUDA device they stay there unless they would take over 2 GiB (then the
        blending buffer is on the host, as MONAI allows).
        """
        spatial = tuple(x.shape[1:])
        passes = self.tta_passes(config)
        total = sum(count_windows(p.shape(spatial), self.patch_size, config.overlap) for p in passes)
        predictor = self._predictor(device, amp, config, progress, stop, total)
        k = len(self.class_ids)
        big = k * math.prod(spatial) * 4 > 2 * 2**30
        out_device = device if device.type == "cuda" and not big else torch.device("cpu")
        total_probs = torch.zeros(0)
        with torch.inference_mode():
            for tta_pass in passes:
                out = self._blend(x, tta_pass, predictor, device, out_device, config)
                if not total_probs.numel():
                    total_probs = out
                else:
                    total_probs += out
                    del out
            if len(passes) > 1:
                total_probs /= len(passes)
            elif config.return_probabilities or config.return_uncertainty:
                softmax_(total_probs)
        return total_probs

    def tta_passes(self, config: InferConfig) -> tuple[TTAPass, ...]:
        """The passes (``segmentation.tta.tta_passes``): the image as given and, with TTA,
        its flips (and in 2D with square pixels and a square patch, its transposes).

        Parameters
        ----------
        config : InferConfig
            Its ``tta`` turns the passes after the first on.
        """
        return passes_for(self.spatial_dims, config.tta, self.spacing, self.patch_size)

    def _predictor(self, device: torch.device, amp: bool, config: InferConfig,
                   progress: Callable[[int, int], None] | None, stop: Any | None,
                   total: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """The network as MONAI's sliding window calls it (``engine.windows.window_predictor``):
        softmax scores with TTA (the flips average probabilities, "entropy of the mean
        probabilities"), logits otherwise; counts windows for ``progress``, obeys ``stop``."""
        scores = (lambda logits: torch.softmax(logits, dim=1)) if config.tta else None
        return window_predictor(self._network_on(device), total, amp=amp, progress=progress, stop=stop,
                                scores=scores)

    def _blend(self, x: torch.Tensor, tta_pass: TTAPass, predictor: Callable[[torch.Tensor], torch.Tensor],
               device: torch.device, out_device: torch.device, config: InferConfig) -> torch.Tensor:
        """One sliding-window pass over ``x`` ``(C, *spatial)`` in the orientation ``tta_pass``
        (turned back after): blended scores ``(K, *spatial)`` on ``out_device``."""
        from monai.inferers import sliding_window_inference

        inp = tta_pass.apply(x)[None]
        out = sliding_window_inference(
            inp, roi_size=self.patch_size, sw_batch_size=config.sw_batch_size, predictor=predictor,
            overlap=config.overlap, mode=config.blend, sw_device=device, device=out_device, progress=False,
        )
        out = out.as_tensor() if hasattr(out, "as_tensor") else out
        return tta_pass.undo(out[0])


def model_description(model: Model) -> dict:
    """The ``config.json`` content of a segmentation model (``Model.description``)."""
    return Model.description(model)


def load_segmentation_model(path: str | Path) -> Model:
    """Load a segmentation bundle folder (never unpickles).

    Parameters
    ----------
    path : str or Path
        A folder written by :meth:`Model.save` (schema 1).

    Returns
    -------
    Model

    Raises
    ------
    BundleError
        Missing folder or file, invalid JSON, missing keys, another task's bundle, or
        weights that do not fit the network described in ``config.json``.
    """
    return Model.load(path)
