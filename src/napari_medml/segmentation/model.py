"""A trained segmentation model and its prediction: sliding window, TTA,
uncertainty, post-processing, with the training preprocessing re-applied.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medml.bundles.format import (
    CONFIG_NAME,
    SCHEMA_VERSION,
    WEIGHTS_NAME,
    library_versions,
    load_weights,
    read_description,
    read_weights,
)
from napari_medml.config import InferConfig, TrainConfig, from_dict, to_dict
from napari_medml.errors import BundleError, Cancelled, ConfigError, InputError

__all__ = ["Model", "Prediction", "apply_preprocessing", "load_segmentation_model", "model_description"]

# NumPy dtypes torch.from_numpy takes and converts to float32 on the way to the device.
_TORCH_DTYPES = {np.dtype(t) for t in ("float16", "float32", "float64", "int8", "int16", "int32", "int64",
                                       "uint8")}


@dataclass(frozen=True)
class Prediction:
    """What ``Model.predict`` returns.

    Attributes
    ----------
    labels : np.ndarray
        Integer label map of the input's spatial shape with the original class ids.
    probabilities : np.ndarray or None
        float16 ``(K, *spatial)``, channel k = ``class_ids[k]`` (only when asked).
    uncertainty : np.ndarray or None
        float32 entropy of the mean probabilities (only when asked).
    class_ids : tuple of int
        ``class_ids[0] == 0`` (background).
    instances : np.ndarray or None
        uint32 instance ids when ``InferConfig.instances`` is not "none".
    """

    labels: np.ndarray
    probabilities: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    class_ids: tuple[int, ...] = ()
    instances: np.ndarray | None = None


class Model:
    """A segmentation network plus everything needed to use it on new images.

    Parameters
    ----------
    network : torch.nn.Module
    config : TrainConfig
        The configuration it was trained with (preprocessing recipe included).
    class_ids : tuple of int
        Output channel -> label id, background 0 first.
    in_channels, spatial_dims : int
    patch_size : tuple of int
    spacing : tuple of float or None
        Training spacing.
    normalization : dict
        Learned intensity statistics (``normalization.fit_normalization``).
    history : list of dict
        One dict per epoch.
    provenance : dict
        Free-form notes (library versions, data description), stored in bundles.
    """

    def __init__(self, network: torch.nn.Module, config: TrainConfig, class_ids: Sequence[int],
                 in_channels: int, spatial_dims: int, patch_size: Sequence[int],
                 spacing: Sequence[float] | None, normalization: dict,
                 history: list[dict] | None = None, provenance: dict | None = None) -> None:
        self.network = network
        self.config = config
        self.class_ids = tuple(int(c) for c in class_ids)
        self.in_channels = int(in_channels)
        self.spatial_dims = int(spatial_dims)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.normalization = normalization
        self.history = list(history or [])
        self.provenance = dict(provenance or {})

    def __repr__(self) -> str:
        return (f"Model({self.config.model.network}, {self.spatial_dims}D, in_channels={self.in_channels}, "
                f"class_ids={self.class_ids}, patch_size={self.patch_size})")

    def save(self, path: str | Path) -> Path:
        """Write a bundle folder (see ``napari_medml.bundles.format.save_model``)."""
        from napari_medml.bundles.format import save_model

        return save_model(self, path)

    def description(self) -> dict:
        """The bundle's ``config.json`` content (:func:`model_description`)."""
        return model_description(self)

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
            Voxel size of the spatial axes (longer sequences: the last ones are used);
            needed when the preprocessing recipe resamples.
        channel_axis : int, optional
        config : InferConfig, optional
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
            NaN/inf values, or ``axes`` that do not fit the image.
        Cancelled
            Stopped through ``stop``.
        """
        config = config or InferConfig()
        channel_axis, samples = self._layout(image, channel_axis, axes)
        if spacing is not None:
            spacing = tuple(spacing)[-self.spatial_dims:]
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
        return _stack_predictions(parts, lead, self.class_ids)

    def _layout(self, image: Any, channel_axis: int | None, axes: str | None) -> tuple[int | None, tuple[int, ...]]:
        """The channel axis and the sample axes (leading axes predicted one at a time)."""
        shape = np.shape(image)
        if axes is not None:
            from napari_medml.io.axes import AXES_HINT, check_axes, layout, resolve_axes

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

        labels = _argmax_uint8(probs)
        if self.class_ids != tuple(range(len(self.class_ids))):  # channels are not the ids: map them
            lut = np.asarray(self.class_ids, dtype=_label_dtype(max(self.class_ids)))
            labels = lut[labels]
        probabilities = uncertainty = None
        if config.return_uncertainty:
            p = probs.clamp_min(1e-8)
            uncertainty = (-(p * p.log()).sum(0)).float().cpu().numpy()
            del p
        if config.return_probabilities:
            probabilities = probs.to(torch.float16).cpu().numpy()
        del probs
        if recipe is not None and recipe.geometry:
            labels = recipe.restore(labels, order=0)
            if uncertainty is not None:
                uncertainty = recipe.restore(uncertainty, order=1).astype(np.float32)
            if probabilities is not None:
                # outside a crop the background is certain: its channel is filled with 1
                probabilities = np.stack([
                    recipe.restore(channel_probs.astype(np.float32), order=1, fill=1.0 if k == 0 else 0.0)
                    for k, channel_probs in enumerate(probabilities)]).astype(np.float16)
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
                                in_channels=self.in_channels)
            arr, _, recipe = apply_preprocessing(arr, spacing if spacing is not None else self.spacing, steps)
            return torch.from_numpy(apply_normalization(arr, self.normalization)).to(device), recipe
        arr = np.asarray(image)
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
            raise InputError(f"image has dtype {arr.dtype}: give a numeric image")
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
            raise InputError(f"image contains {bad} NaN or infinite value(s): fill or mask them before use")
        _normalize_(x, self.normalization)
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
        """Blended scores ``(K, *spatial)``: softmax probabilities, averaged over the flips,
        with TTA; otherwise blended logits (as MONAI and nnU-Net blend them), turned into
        probabilities in place only when asked for. Either way the argmax is the label.

        On a CUDA device they stay there unless they would take over 2 GiB (then the
        blending buffer is on the host, as MONAI allows).
        """
        spatial = tuple(x.shape[1:])
        flips = self._flips(config)
        total = _count_windows(spatial, self.patch_size, config.overlap) * len(flips)
        predictor = self._predictor(device, amp, config, progress, stop, total)
        k = len(self.class_ids)
        big = k * math.prod(spatial) * 4 > 2 * 2**30
        out_device = device if device.type == "cuda" and not big else torch.device("cpu")
        total_probs = torch.zeros(0)
        with torch.inference_mode():
            for dims in flips:
                out = self._blend(x, dims, predictor, device, out_device, config)
                if not total_probs.numel():
                    total_probs = out
                else:
                    total_probs += out
                    del out
            if len(flips) > 1:
                total_probs /= len(flips)
            elif config.return_probabilities or config.return_uncertainty:
                _softmax_(total_probs)
        return total_probs

    def _flips(self, config: InferConfig) -> list[tuple[int, ...]]:
        """The passes: no flip, and with TTA one flip per spatial axis (axes of ``(C, *spatial)``)."""
        flips: list[tuple[int, ...]] = [()]
        if config.tta:
            flips += [(1 + a,) for a in range(self.spatial_dims)]
        return flips

    def _predictor(self, device: torch.device, amp: bool, config: InferConfig,
                   progress: Callable[[int, int], None] | None, stop: Any | None,
                   total: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """The network as MONAI's sliding window calls it: a window batch in, scores out
        (softmax with TTA, logits otherwise); counts windows for ``progress``, obeys ``stop``."""
        net = self._network_on(device)
        done = 0

        def predictor(window: torch.Tensor) -> torch.Tensor:
            nonlocal done
            if stop is not None and stop.stopped:
                raise Cancelled("prediction stopped")
            ctx = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
            with ctx:
                logits = net(window)
            done += window.shape[0]
            if progress is not None:
                progress(min(done, total), total)
            # with TTA the flips average probabilities ("entropy of the mean probabilities")
            return torch.softmax(logits.float(), dim=1) if config.tta else logits.float()

        return predictor

    def _blend(self, x: torch.Tensor, dims: tuple[int, ...], predictor: Callable[[torch.Tensor], torch.Tensor],
               device: torch.device, out_device: torch.device, config: InferConfig) -> torch.Tensor:
        """One sliding-window pass over ``x`` ``(C, *spatial)`` flipped along ``dims`` (and
        flipped back): blended scores ``(K, *spatial)`` on ``out_device``."""
        from monai.inferers import sliding_window_inference

        inp = torch.flip(x, dims)[None] if dims else x[None]
        out = sliding_window_inference(
            inp, roi_size=self.patch_size, sw_batch_size=config.sw_batch_size, predictor=predictor,
            overlap=config.overlap, mode=config.blend, sw_device=device, device=out_device, progress=False,
        )
        out = out.as_tensor() if hasattr(out, "as_tensor") else out
        return torch.flip(out[0], dims) if dims else out[0]


def _stack_predictions(parts: list[Prediction], lead: tuple[int, ...], class_ids: tuple[int, ...]) -> Prediction:
    """One Prediction from those of each slice/frame (in ``np.ndindex(*lead)`` order)."""
    def stack(arrays: list[Any], axis: int = 0) -> Any:
        if arrays[0] is None:
            return None
        out = np.stack(arrays, axis=axis)
        return out.reshape(out.shape[:axis] + lead + out.shape[axis + 1:])

    instances = None
    if parts[0].instances is not None:  # keep ids unique across slices/frames
        offset, shifted = 0, []
        for part in parts:
            ids = part.instances.astype(np.uint32)
            shifted.append(np.where(ids > 0, ids + offset, 0).astype(np.uint32))
            offset += int(ids.max(initial=0))
        instances = stack(shifted)
    return Prediction(labels=stack([p.labels for p in parts]),
                      probabilities=stack([p.probabilities for p in parts], axis=1),
                      uncertainty=stack([p.uncertainty for p in parts]), class_ids=class_ids,
                      instances=instances)  # fmt: skip


def apply_preprocessing(image: np.ndarray, spacing: Sequence[float] | None, steps: Sequence[Any]
                        ) -> tuple[np.ndarray, tuple[float, ...] | None, Any]:
    """Run the recipe on each channel of ``(C, *spatial)``.

    Returns the image, its new spacing and the first channel's
    ``preprocess.RecipeResult`` (None without a recipe), whose ``restore`` maps
    arrays back to the input grid.
    """
    if not steps:
        return image, None if spacing is None else tuple(spacing), None
    from napari_medml.preprocessing.recipe import run_recipe

    spatial_dims = image.ndim - 1
    sp = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * spatial_dims
    channels, first = [], None
    for c in range(image.shape[0]):
        result = run_recipe(image[c], sp, tuple(steps))
        first = first or result
        channels.append(np.asarray(result.image, dtype=np.float32))
    new_spacing = None if first.spacing is None else tuple(float(s) for s in first.spacing)
    return np.stack(channels), new_spacing, first


def labels_to_recipe_grid(labels: np.ndarray, result: Any) -> np.ndarray:
    """Carry a label map through a recipe's crops and resamplings (nearest neighbour)."""
    if result is None:
        return labels
    from scipy import ndimage

    out = labels
    records = list(result.geometry)
    for i, record in enumerate(records):
        if record[0] == "crop":
            out = out[record[2]]
        else:
            after = records[i + 1][1] if i + 1 < len(records) else result.image.shape
            out = ndimage.zoom(out, [a / b for a, b in zip(after, out.shape)], order=0, mode="nearest",
                               grid_mode=True)
    if out.shape != result.image.shape:
        out = _resize(out, result.image.shape, order=0)
    return np.ascontiguousarray(out)


def _count_windows(spatial: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Windows MONAI's sliding_window_inference visits (same rule as its scan interval)."""
    n = 1
    for size, r in zip(spatial, roi):
        size = max(size, r)
        interval = r if size == r else max(int(r * (1 - overlap)), 1)
        n *= int(math.ceil((size - r) / interval)) + 1 if size > r else 1
    return n


def _softmax_(logits: torch.Tensor) -> None:
    """Softmax over the channel axis of ``(K, *spatial)``, in place: no second volume."""
    logits.sub_(logits.amax(0, keepdim=True)).exp_()
    logits.div_(logits.sum(0, keepdim=True))


def _argmax_uint8(probs: torch.Tensor) -> np.ndarray:
    """Channel argmax as a uint8 host array, on the tensor's device.

    Chunked along the first spatial axis so that no int64 volume is made; only the
    uint8 labels are copied from a GPU.
    """
    out = np.empty(tuple(probs.shape[1:]), dtype=np.uint8)
    step = max(1, 2**24 // max(1, math.prod(probs.shape[2:]) * probs.shape[0]))
    for start in range(0, probs.shape[1], step):
        out[start:start + step] = probs[:, start:start + step].argmax(0).to(torch.uint8).cpu().numpy()
    return out


def _normalize_(x: torch.Tensor, stats: dict) -> None:
    """``normalization.apply_normalization`` on a ``(C, *spatial)`` tensor, in place (same float32 arithmetic)."""
    method = stats.get("method", "none")
    for c, s in enumerate(stats.get("channels", [])):
        if method == "ct":
            x[c].clamp_(s["low"], s["high"])
        if method in ("zscore", "zscore_nonzero", "ct"):
            x[c].sub_(s["mean"]).div_(max(s["std"], 1e-8))
        elif method in ("percentile", "minmax"):
            x[c].clamp_(s["low"], s["high"]).sub_(s["low"]).div_(max(s["high"] - s["low"], 1e-8))


def _label_dtype(max_id: int) -> type:
    return (np.uint8 if max_id < 256 else np.uint16 if max_id < 65536 else np.uint32 if max_id < 2**32
            else np.uint64)


def _resize(arr: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    from skimage.transform import resize

    return resize(arr, tuple(shape), order=order, preserve_range=True, anti_aliasing=False,
                  mode="edge").astype(arr.dtype)


# --- the bundle of a segmentation model ------------------------------------------------


def model_description(model: Model) -> dict:
    """The ``config.json`` content for a model."""
    cfg: TrainConfig = model.config
    names = dict(cfg.class_names or {})
    return {
        "schema_version": SCHEMA_VERSION,
        "task": cfg.task,
        "network": {
            "name": cfg.model.network,
            "arguments": to_dict(cfg.model),
            "spatial_dims": model.spatial_dims,
            "in_channels": model.in_channels,
            "out_channels": len(model.class_ids),
        },
        "spatial_dims": model.spatial_dims,
        "in_channels": model.in_channels,
        "out_channels": len(model.class_ids),
        "class_ids": list(model.class_ids),
        "class_names": {str(c): names.get(c, "background" if c == 0 else f"class {c}") for c in model.class_ids},
        "preprocessing": to_dict(cfg.data.preprocessing),
        "normalization": model.normalization,
        "patch_size": list(model.patch_size),
        "spacing": None if model.spacing is None else list(model.spacing),
        "history": model.history,
        "versions": library_versions(),
        "seed": cfg.seed,
        "provenance": {k: v for k, v in model.provenance.items() if k != "plan"},
        "plan": model.provenance.get("plan"),  # segmentation.plan: the fingerprint and choices, when planned
        "train_config": to_dict(cfg),
    }


def load_segmentation_model(path: str | Path) -> Model:
    """Load a segmentation bundle folder (never unpickles).

    Raises
    ------
    BundleError
        Missing folder or file, invalid JSON, missing keys, or weights that do not
        fit the network described in ``config.json``.
    """
    from napari_medml.segmentation.model import Model
    from napari_medml.nn.segmentation import build_network

    path = Path(path).expanduser()
    desc = read_description(path)
    if desc.get("task", "segmentation") != "segmentation":
        raise BundleError(f"{path} is a {desc.get('task')!r} bundle, not a segmentation model: load it with "
                          "napari_medml.load_model")
    try:
        config = from_dict(TrainConfig, desc["train_config"])
    except (ConfigError, TypeError, KeyError, AttributeError) as exc:
        raise BundleError(f"{path / CONFIG_NAME} has an invalid train_config ({exc})") from exc
    try:
        class_ids = tuple(int(c) for c in desc["class_ids"])
        spatial_dims = int(desc["spatial_dims"])
        in_channels = int(desc["in_channels"])
        patch_size = tuple(int(p) for p in desc["patch_size"])
        spacing = None if desc.get("spacing") is None else tuple(float(s) for s in desc["spacing"])
        network = build_network(config.model, spatial_dims, in_channels, len(class_ids),
                                patch_size=patch_size, spacing=spacing)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path / CONFIG_NAME} does not describe a network this version can build ({exc})") from exc
    load_weights(network, read_weights(path), str(path / WEIGHTS_NAME))
    return Model(network, config, class_ids, in_channels, spatial_dims, patch_size, spacing,
                 desc["normalization"], history=desc.get("history") or [],
                 provenance={**(desc.get("provenance") or {}), **({"plan": desc["plan"]} if desc.get("plan") else {})})
