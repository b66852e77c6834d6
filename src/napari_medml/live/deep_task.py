"""The deep stage's training task: a small U-Net learning from the scribbles on the shared engine.

``LiveTask`` is a :class:`~napari_medml.engine.task.TrainingTask` that
``engine.loop.run`` drives as one endless run (constant learning rate, no
validation: the held-out strokes score the network instead). Its
``StrokeSampler`` draws patches centred on painted voxels and its labels are
swapped in place when strokes arrive, so new strokes join the running training:
same network, same optimizer state, same generator.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_medml.errors import InputError
from napari_medml.segmentation.data import PatchSampler, Region, auto_patch_size

__all__ = ["DeepConfig", "LiveTask", "StrokeSampler", "live_patch_size"]


@dataclass(frozen=True)
class DeepConfig:
    """Settings of the deep stage (a U-Net trained on the scribbles in the background).

    Attributes
    ----------
    channels : int
        Width of the U-Net's first level (``ModelConfig.channels``); 8 keeps a CPU
        step near 0.1-0.2 s.
    depth : int
        Resolution levels of the U-Net.
    batch_size : int
        Patches per step.
    patch_voxels : int or None
        Most voxels in a training patch; None: 40**3 (3D) or 128**2 (2D) on a CPU,
        eight times as many on a GPU.
    learning_rate : float
        AdamW's rate, constant (the strokes keep changing: no schedule to the end).
    loss : str
        Masked loss on painted voxels ("ce", "dice", "dice_ce", "focal").
    recent_fraction : float
        Share of patches centred on the strokes of the last two updates, so a
        correction is learned within seconds.
    snapshot_s : float
        Seconds of training between two snapshots of the network that answer
        ``predict`` (each one is re-scored and, when it answers, re-predicted).
    min_fit_accuracy : float
        A snapshot may answer only once it fits its own training labels this well
        (balanced accuracy over the recent batches): a few held-out strokes are a
        noisy referee, and an untrained network can get them right by luck.
    pseudo_labels : int
        Voxels (at most 1 % of the image) drawn at random each time the strokes change and
        labelled by the instant stage's forest (fit without the held-out strokes)
        where its vote is at least ``pseudo_confidence``; they teach the network
        the image's bulk while the strokes teach the boundaries. 0: strokes only.
    pseudo_confidence : float
        Least forest vote fraction for a pseudo-label.
    overlap : float
        Sliding-window overlap when the network answers.
    seed : int
        Seed of the network's initial weights and of the patch draws.
    """

    channels: int = 8
    depth: int = 3
    batch_size: int = 2
    patch_voxels: int | None = None
    learning_rate: float = 2e-3
    loss: str = "dice_ce"
    recent_fraction: float = 0.5
    snapshot_s: float = 5.0
    min_fit_accuracy: float = 0.9
    pseudo_labels: int = 20000
    pseudo_confidence: float = 0.9
    overlap: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.channels < 1 or self.depth < 2 or self.batch_size < 1:
            raise InputError(f"deep stage needs channels >= 1, depth >= 2 and batch_size >= 1 (got {self.channels}, "
                             f"{self.depth}, {self.batch_size})")
        if not 0.0 <= self.recent_fraction <= 1.0 or not 0.0 <= self.overlap < 1.0:
            raise InputError("deep stage recent_fraction must be in [0, 1] and overlap in [0, 1)")
        if not 0.0 <= self.min_fit_accuracy <= 1.0 or not 0.0 <= self.pseudo_confidence <= 1.0 \
                or self.pseudo_labels < 0:
            raise InputError("deep stage min_fit_accuracy and pseudo_confidence must be in [0, 1], "
                             "pseudo_labels 0 or more")
        if not (self.snapshot_s > 0 and self.learning_rate > 0):
            raise InputError("deep stage snapshot_s and learning_rate must be positive")


def live_patch_size(shape: Sequence[int], spacing: Sequence[float], config: DeepConfig, gpu: bool) -> tuple[int, ...]:
    """Training patch for an image: at most half the image per axis (so patches move and the network
    cannot learn where a stroke lies), capped in voxels (anisotropy-aware)."""
    dims = len(shape)
    cap = config.patch_voxels or (40**3 if dims == 3 else 128**2) * (8 if gpu else 1)
    divisor = 2 ** (config.depth - 1)
    half = [max(divisor, int(s) // 2) for s in shape]
    patch = list(auto_patch_size(half, spacing, dims, 1024, divisor, max_voxels=cap))
    if all(p <= divisor for p in patch):  # a tiny image (6x6): instance norm needs 2 voxels at the deepest level,
        patch[int(np.argmax(shape))] = 2 * divisor  # so one axis takes two (the image is padded to the patch)
    return tuple(patch)


class StrokeSampler(PatchSampler):
    """``PatchSampler`` over one image whose scribbles change while it samples.

    Every patch is centred on a painted voxel (class-balanced, or with
    ``recent_fraction`` on the newest strokes), randomly flipped and its contrast
    and brightness jittered (10 %). ``set_labels``
    swaps the encoded labels and the centre lists together under a lock.
    """

    def __init__(self, region: Region, patch_size: Sequence[int], batch_size: int, recent_fraction: float,
                 seed: int) -> None:
        super().__init__([region], patch_size, batch_size, 1.0, sparse=True, transform=None, seed=seed)
        self.recent_fraction = recent_fraction
        self.recent = np.zeros(0, np.intp)
        self._lock = threading.Lock()

    def set_labels(self, label: np.ndarray, recent: np.ndarray) -> None:
        """New encoded labels (uint8, 0 unlabeled) and flat indices of the newest painted voxels."""
        centres: dict[int, list[tuple[int, np.ndarray]]] = {}
        flat = label.reshape(-1)
        for cls in np.unique(flat):
            if cls >= 1:
                idx = np.flatnonzero(flat == cls)
                if idx.size > 200_000:
                    idx = np.sort(self.rng.choice(idx, 200_000, replace=False))
                centres[int(cls)] = [(0, idx)]
        with self._lock:
            self.regions = [Region(self.regions[0].image, label)]
            self.centres, self.recent = centres, recent

    def _pick(self) -> tuple[int, tuple[int, ...]]:
        if self.recent.size and self.rng.random() < self.recent_fraction:
            flat = self.recent[self.rng.integers(self.recent.size)]
            return 0, tuple(int(c) for c in np.unravel_index(flat, self.regions[0].label.shape))
        return super()._pick()

    def batch(self) -> tuple[Any, Any]:
        """A batch as ``PatchSampler.batch``, each patch flipped along random spatial axes."""
        import torch

        with self._lock:
            images, labels = super().batch()
        for b in range(images.shape[0]):
            axes = [1 + a for a in range(images.dim() - 2) if self.rng.random() < 0.5]  # (C, *spatial)
            if axes:
                images[b] = torch.flip(images[b], axes)
                labels[b] = torch.flip(labels[b], axes)
            if self.rng.random() < 0.5:  # contrast and brightness (10 %) of the normalised image
                images[b] = images[b] * float(self.rng.uniform(0.9, 1.1)) + float(self.rng.uniform(-0.1, 0.1))
        return images, labels


class LiveTask:
    """The deep stage as a task of the shared engine (see the module docstring).

    Parameters
    ----------
    image : np.ndarray
        Normalised float32 ``(C, *spatial)`` image (padded to at least the patch).
    class_ids : tuple of int
        Output channel -> output label id, background (0) first, then the painted
        classes in the order they were first painted (new classes append channels).
    config : DeepConfig
    train_config : TrainConfig
        Stored with the model (network, data and optimiser settings).
    patch_size : tuple of int
    spacing : tuple of float
    normalization : dict
        ``fit_normalization`` statistics of the raw image.
    network : torch.nn.Module, optional
        A network to continue (its weights), e.g. after a class was added.
    """

    def __init__(self, image: np.ndarray, class_ids: tuple[int, ...], config: DeepConfig, train_config: Any,
                 patch_size: tuple[int, ...], spacing: tuple[float, ...], normalization: dict,
                 network: Any = None) -> None:
        import torch

        from napari_medml.nn.segmentation import build_network

        self.config, self.train_config = config, train_config
        self.class_ids, self.patch_size, self.spacing = class_ids, patch_size, spacing
        self.normalization = normalization
        self.spatial_dims, self.in_channels = image.ndim - 1, image.shape[0]
        torch.manual_seed(config.seed)
        self.network = build_network(train_config.model, self.spatial_dims, self.in_channels, len(class_ids),
                                     patch_size=patch_size, spacing=spacing)
        if network is not None:
            _transfer(network, self.network)
        empty = np.zeros(image.shape[1:], np.uint8)
        self.sampler = StrokeSampler(Region(image, empty), patch_size, config.batch_size, config.recent_fraction,
                                     config.seed)
        self.loss_fn: Any = None
        self.accuracy = np.full(len(class_ids), np.nan)  # per class, moving average over batches

    @property
    def fit_accuracy(self) -> float:
        """Balanced accuracy on the recent training batches (NaN before any)."""
        seen = self.accuracy[np.isfinite(self.accuracy)]
        return float(seen.mean()) if seen.size else float("nan")

    def start_message(self) -> str:
        return f"live: a {self.spatial_dims}D U-Net learns the strokes (patch {'x'.join(map(str, self.patch_size))})"

    def train_mode(self) -> None:
        self.network.train()

    def next_batch(self) -> tuple[Any, Any]:
        return self.sampler.batch()

    def loss(self, outputs: Any, label: Any) -> Any:
        if self.loss_fn is None:
            from napari_medml.nn.losses import build_loss

            self.loss_fn = build_loss(self.train_config.optim, len(self.class_ids), outputs.device)
        target, mask = label.long() - 1, label > 0
        self._track_accuracy(outputs, target, mask)
        return self.loss_fn(outputs, target, mask)

    def _track_accuracy(self, outputs: Any, target: Any, mask: Any) -> None:
        import torch

        with torch.no_grad():
            hit = (outputs.argmax(1, keepdim=True) == target)[mask]
            cls = target[mask]
            total = torch.bincount(cls, minlength=len(self.class_ids)).cpu().numpy()
            right = torch.bincount(cls[hit], minlength=len(self.class_ids)).cpu().numpy()
        for c in np.flatnonzero(total):
            value = right[c] / total[c]
            old = self.accuracy[c]
            self.accuracy[c] = value if not np.isfinite(old) else 0.9 * old + 0.1 * value

    def evaluate(self, device: Any, amp: bool) -> None:
        return None  # the session scores snapshots on held-out strokes instead

    def model(self, history: list[dict], provenance: Mapping[str, Any], metrics: Mapping[str, Any]) -> Any:
        """A regular segmentation ``Model`` around a CPU copy of the current network."""
        import copy

        from napari_medml.segmentation.model import Model

        network = copy.deepcopy(self.network).cpu().eval()
        return Model(network, self.train_config, self.class_ids, self.in_channels, self.spatial_dims,
                     self.patch_size, self.spacing, self.normalization, history=list(history),
                     provenance={"trained_by": "live segmentation (scribbles)", **provenance})


def _transfer(old: Any, new: Any) -> None:
    """Copy ``old``'s weights into ``new`` where they fit; tensors that grew (a new class's
    output channels) get the old values in their leading part."""
    import torch

    target = new.state_dict()
    with torch.no_grad():
        for key, value in old.state_dict().items():
            if key not in target:
                continue
            dest = target[key]
            if dest.shape == value.shape:
                dest.copy_(value)
            elif dest.dim() == value.dim():
                part = tuple(slice(0, min(a, b)) for a, b in zip(dest.shape, value.shape))
                dest[part] = value[part]
    new.load_state_dict(target)

