"""The deep stage: a U-Net that keeps learning from the scribbles while the user paints.

``DeepStage`` implements the ``stages.Stage`` protocol. ``fit`` only hands the
newest strokes over (it runs in the session's worker, which must stay quick for
the instant stage); ``train(until, should_stop)``, called from
``LiveSession.train_for`` in whatever thread gives the network time, pulls steps
from one endless ``engine.loop.run`` generator and, between pulls, swaps the new
strokes into its sampler (no restart: same network, optimizer and generator; only
a newly painted class rebuilds the network, keeping the weights it has). Held-out
strokes are never trained on: they score each snapshot of the network.
Every ``snapshot_s`` of training a frozen copy (``DeepPredictor``) becomes the
stage's answer; it predicts regions by sliding window with a context margin and
caches its probabilities in blocks.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from napari_medml.errors import Cancelled, InputError
from napari_medml.live.deep_task import DeepConfig, LiveTask, live_patch_size
from napari_medml.live.filters import Region
from napari_medml.live.stages import Strokes, held_out_accuracy

__all__ = ["DeepConfig", "DeepPredictor", "DeepStage"]


class DeepPredictor:
    """A frozen snapshot of the network, answering regions of one image.

    Parameters
    ----------
    network : torch.nn.Module
        In eval mode, on ``device``; never trained further.
    image : np.ndarray
        Normalised float32 ``(C, *spatial)`` image (read only).
    class_ids : tuple of int
        Output channel -> output label (background 0 first).
    patch_size : tuple of int
        Sliding-window size.
    device : torch.device
    overlap : float
        Sliding-window overlap.
    cache_bytes : int
        Most bytes of cached float16 probabilities (least recently used blocks go).
    """

    def __init__(self, network: Any, image: np.ndarray, class_ids: tuple[int, ...], patch_size: tuple[int, ...],
                 device: Any, overlap: float, cache_bytes: int = 512 * 2**20) -> None:
        self.network, self.image, self.class_ids = network, image, class_ids
        self.patch_size, self.device, self.overlap = patch_size, device, overlap
        self.shape = tuple(image.shape[1:])
        self.block = tuple(min(n, 4 * p) for n, p in zip(self.shape, patch_size))
        self.margin = tuple(max(1, p // 4) for p in patch_size)
        self.cache_bytes = cache_bytes
        self.eligible = True  # may answer (DeepStage sets it from the fit accuracy)
        self.fit_accuracy = float("nan")
        ids = np.asarray(class_ids)
        self._lut = ids.astype(np.min_scalar_type(max(int(ids.max()), 1)))
        self._cache: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()

    def pieces(self) -> list[Region]:
        """The cache's blocks: the whole image is best predicted in these pieces."""
        grid = [range(math.ceil(n / b)) for n, b in zip(self.shape, self.block)]
        return [self._block_region(i) for i in np.ndindex(*[len(g) for g in grid])]

    def predict_proba(self, region: Region, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        """float32 probabilities ``(*region_shape, K)``, K in the order of ``class_ids``.

        ``should_stop`` is asked before each window batch; once it says yes, ``Cancelled``
        is raised (blocks already predicted stay cached, so a later call goes on from there).
        """
        index = [range(s.start // b, (s.stop - 1) // b + 1) for s, b in zip(region, self.block)]
        blocks = list(np.ndindex(*[len(r) for r in index]))
        blocks = [tuple(r[i] for r, i in zip(index, k)) for k in blocks]
        size = math.prod(s.stop - s.start for s in region)
        with self._lock:
            missing = [b for b in blocks if b not in self._cache]
        if missing and size * 3 < sum(math.prod(s.stop - s.start for s in self._block_region(b)) for b in blocks):
            return np.moveaxis(self._compute(region, should_stop), 0, -1)  # a thin region (one slice): no block fill
        out = np.empty((len(self.class_ids),) + tuple(s.stop - s.start for s in region), np.float32)
        for b in blocks:
            with self._lock:
                probs = self._cache.get(b)
                if probs is not None:
                    self._cache.move_to_end(b)
            where = self._block_region(b)
            if probs is None:
                probs = self._compute(where, should_stop).astype(np.float16)
                with self._lock:
                    self._cache[b] = probs
                    self._nbytes += probs.nbytes
                    while self._nbytes > self.cache_bytes and len(self._cache) > 1:
                        self._nbytes -= self._cache.popitem(last=False)[1].nbytes
            both = tuple(slice(max(r.start, q.start), min(r.stop, q.stop)) for r, q in zip(region, where))
            dst = tuple(slice(x.start - r.start, x.stop - r.start) for x, r in zip(both, region))
            src = tuple(slice(x.start - q.start, x.stop - q.start) for x, q in zip(both, where))
            out[(slice(None), *dst)] = probs[(slice(None), *src)]
        return np.moveaxis(out, 0, -1)

    def labels_from_proba(self, proba: np.ndarray) -> np.ndarray:
        """Output labels (background 0) of the probabilities' shape without the class axis."""
        return self._lut[np.argmax(proba, axis=-1)]

    def _block_region(self, index: Sequence[int]) -> Region:
        return tuple(slice(i * b, min(n, (i + 1) * b)) for i, b, n in zip(index, self.block, self.shape))

    def _compute(self, region: Region, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        """Softmax probabilities ``(K, *region)`` by sliding window over the region plus a context margin."""
        import torch
        from monai.inferers import sliding_window_inference

        def predictor(windows: torch.Tensor) -> torch.Tensor:
            if should_stop is not None and should_stop():  # a stroke waits: give the CPU back now
                raise Cancelled("the network's prediction gave way to a stroke")
            return self.network(windows)

        crop = tuple(slice(max(0, s.start - m), min(n, s.stop + m)) for s, m, n in zip(region, self.margin, self.shape))
        x = torch.from_numpy(np.ascontiguousarray(self.image[(slice(None), *crop)]))[None].to(self.device)
        with torch.inference_mode():
            logits = sliding_window_inference(x, roi_size=self.patch_size, sw_batch_size=2, predictor=predictor,
                                              overlap=self.overlap, mode="gaussian", progress=False)
            logits = logits.as_tensor() if hasattr(logits, "as_tensor") else logits
            probs = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
        inner = tuple(slice(s.start - c.start, s.stop - c.start) for s, c in zip(region, crop))
        return probs[(slice(None), *inner)]


class DeepStage:
    """A U-Net trained continuously on the training strokes (see the module docstring).

    Parameters
    ----------
    image : np.ndarray
        The session's image (any numeric dtype), with its channel axis at ``channel_axis``.
    channel_axis : int or None
    spacing : tuple of float
        Voxel size per spatial axis.
    background_id : int
        Painted id meaning background.
    config : DeepConfig
    device : str
        "auto", "cpu", "cuda", "cuda:N" or "mps" (resolved on the first training step).
    on_snapshot : callable
        Called (from the training thread) whenever a new snapshot answers.
    """

    name = "network"

    def __init__(self, image: np.ndarray, channel_axis: int | None, spacing: tuple[float, ...], background_id: int,
                 config: DeepConfig, device: str, on_snapshot: Callable[[], None] = lambda: None) -> None:
        from napari_medml.preprocessing.normalization import apply_normalization, fit_normalization
        from napari_medml.segmentation.data import prepare_image

        arr = np.asarray(image)
        dims = arr.ndim - (channel_axis is not None)
        prepared = prepare_image(arr, channel_axis=channel_axis, spatial_dims=dims, name="image")
        self.normalization = fit_normalization([prepared], "zscore")
        self.image = apply_normalization(prepared, self.normalization)
        self.shape, self.spacing = tuple(self.image.shape[1:]), tuple(spacing)
        self.background_id, self.config, self.device_name = background_id, config, device
        self.on_snapshot = on_snapshot
        self.class_ids: tuple[int, ...] = (0,)
        self.steps = 0
        self.runs = 0
        self._run_step = 0
        self.snapshots = 0
        self.last_loss = float("nan")
        self._pending: Strokes | None = None
        self._strokes: Strokes | None = None
        self._pseudo: tuple[tuple[np.ndarray, ...], np.ndarray] | None = None
        self._pseudo_new = False
        self._label: np.ndarray | None = None
        self._recent: list[np.ndarray] = []
        self._task: LiveTask | None = None
        self._gen: Any = None
        self._model: DeepPredictor | None = None
        self._dirty = False
        self._snapshot_at = 0.0
        self._lock = threading.Lock()  # guards _pending
        self._train_lock = threading.Lock()  # one train() at a time

    # -- Stage protocol --------------------------------------------------------------

    def fit(self, strokes: Strokes, should_stop: Callable[[], bool]) -> None:
        """Hand the strokes to the training thread (applied between two training pulls)."""
        with self._lock:
            self._pending = strokes

    def score(self, strokes: Strokes, should_stop: Callable[[], bool]) -> float | None:
        """Balanced accuracy of the current snapshot on the held-out strokes (never trained on)."""
        model = self._model
        return None if model is None else held_out_accuracy(model, strokes, self.background_id, should_stop)

    def model(self) -> DeepPredictor | None:
        """The latest snapshot, or None before the first one."""
        return self._model

    def close(self) -> None:
        """Stop the training generator and drop the network, snapshot and data."""
        with self._train_lock:
            gen, self._gen = self._gen, None
            if gen is not None:
                gen.close()
            self._task = self._model = self._label = self._strokes = self._pseudo = None
            self._recent = []

    # -- training --------------------------------------------------------------------

    def set_pseudo_labels(self, coords: tuple[np.ndarray, ...], ids: np.ndarray) -> None:
        """Painted ids (``ids``) the instant stage is sure of at voxels ``coords``; unpainted voxels only."""
        with self._lock:
            self._pseudo, self._pseudo_new = (coords, ids), True

    def can_train(self) -> bool:
        """Whether the training strokes hold background and at least one class."""
        with self._lock:
            pending = self._pending
        if pending is not None:
            return _trainable(pending, self.background_id)
        return self._gen is not None

    def train(self, until: float, should_stop: Callable[[], bool]) -> int:
        """Train until ``time.monotonic()`` reaches ``until`` or ``should_stop()``; returns the steps taken.

        A snapshot answers every ``snapshot_s`` of training and when the time is up
        (if the last one is at least ``snapshot_s / 2`` old).
        """
        with self._train_lock:
            self._apply_pending()
            if self._gen is None:
                return 0
            start = self.steps
            while time.monotonic() < until and not should_stop():
                report = next(self._gen)
                self.steps += report.step - self._run_step  # over every run (a new class starts one)
                self._run_step, self.last_loss, self._dirty = report.step, report.train_loss, True
                self._apply_pending()
                if self._gen is None:
                    break
                if time.monotonic() - self._snapshot_at >= self.config.snapshot_s:
                    self._snapshot()
            # time is up: a snapshot, unless one was made lately (the widget trains in short slices)
            if (self._dirty and time.monotonic() >= until and self._gen is not None
                    and time.monotonic() - self._snapshot_at >= self.config.snapshot_s / 2):
                self._snapshot()
            return self.steps - start

    def network_model(self, preprocessing: Sequence[Any] = ()) -> Any:
        """The answering snapshot as a regular segmentation ``Model`` (predicts other images, saves a bundle),
        recording the recipe ``preprocessing`` that made the session's image (see ``LiveSession``).

        Raises
        ------
        InputError
            No network trained yet.
        """
        model, task = self._model, self._task
        if model is None or task is None:
            raise InputError("the network has not learned the strokes yet: give it time (train_for) first")
        from napari_medml.segmentation.model import Model

        network = copy.deepcopy(model.network).cpu().eval()
        provenance = {"trained_by": "live segmentation (scribbles)", "steps": self.steps,
                      "background_id": self.background_id}
        from napari_medml.segmentation.recipes import record_preprocessing

        return record_preprocessing(Model(network, task.train_config, model.class_ids, task.in_channels,
                                          task.spatial_dims, task.patch_size, self.spacing, self.normalization,
                                          provenance=provenance), preprocessing)

    # -- internals -------------------------------------------------------------------

    def _apply_pending(self) -> None:
        """Swap the newest strokes into the sampler (building the task on first use or a new class)."""
        with self._lock:
            strokes, self._pending = self._pending, None
            pseudo, fresh_pseudo, self._pseudo_new = self._pseudo, self._pseudo_new, False
        if strokes is None:
            strokes = self._strokes
            if strokes is None or not fresh_pseudo or self._gen is None:
                return
        self._strokes = strokes
        if not _trainable(strokes, self.background_id):
            self._close_gen()  # e.g. every class stroke erased: nothing to learn
            return
        from napari_medml.segmentation.data import encode_labels

        train = np.where(strokes.held_out, 0, strokes.scribbles)
        new = [int(c) for c in np.unique(train) if c not in (0, self.background_id) and c not in self.class_ids]
        if new or self._gen is None:
            self._build(self.class_ids + tuple(new))
        if pseudo is not None:  # strokes win where both speak
            coords, ids = pseudo
            train = train.copy()
            train[coords] = np.where(train[coords] == 0, ids, train[coords])
        label = encode_labels(train, self.class_ids, "sparse", self.background_id)
        task = self._task
        full = task.sampler.regions[0].label.shape  # the image padded to at least one patch
        pad = [(0, f - s) for f, s in zip(full, label.shape)]
        padded = np.pad(label, pad)  # 0: unlabeled
        old = self._label
        fresh = np.zeros(0, np.intp)
        if old is not None:  # the newest strokes (not pseudo-labels) are drawn more often
            fresh = np.flatnonzero((padded > 0) & (padded != old) & np.pad(strokes.scribbles != 0, pad))
        self._recent = ([self._recent[-1]] if self._recent else []) + [fresh]
        self._label = padded
        task.sampler.set_labels(padded, np.concatenate(self._recent))

    def _build(self, class_ids: tuple[int, ...]) -> None:
        from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
        from napari_medml.engine.devices import resolve_device
        from napari_medml.engine.loop import run
        from napari_medml.segmentation.data import Region as DataRegion
        from napari_medml.segmentation.data import pad_to

        cfg = self.config
        device = resolve_device(self.device_name)
        patch = live_patch_size(self.shape, self.spacing, cfg, device.type != "cpu")
        train_config = TrainConfig(
            data=DataConfig(spatial_dims=len(self.shape), label_mode="sparse", background_id=self.background_id,
                            patch_size=patch, batch_size=cfg.batch_size, foreground_fraction=1.0, val_fraction=0.0),
            augment=AugmentConfig.none(),
            model=ModelConfig(network="unet", channels=cfg.channels, depth=cfg.depth, norm="instance"),
            optim=OptimConfig(loss=cfg.loss, optimizer="adamw", learning_rate=cfg.learning_rate, schedule="constant",
                              epochs=10**6, steps_per_epoch=100),
            device=self.device_name, seed=cfg.seed)
        image = pad_to(DataRegion(self.image, np.zeros(self.shape, np.uint8)), patch).image
        previous = self._task.network if self._task is not None else None
        task = LiveTask(image, class_ids, cfg, train_config, patch, self.spacing, self.normalization,
                        network=previous)
        self._close_gen()
        self.class_ids, self._task, self._label = class_ids, task, None
        self._gen = run(task, train_config)
        self._device = device
        self.runs, self._run_step = self.runs + 1, 0
        if self._model is None:  # the first snapshot after snapshot_s of training, not a blank network
            self._snapshot_at = time.monotonic()

    def _close_gen(self) -> None:
        gen, self._gen = self._gen, None
        if gen is not None:
            gen.close()

    def _snapshot(self) -> None:
        task = self._task
        network = copy.deepcopy(task.network).eval()
        model = DeepPredictor(network, self.image, self.class_ids, task.patch_size, self._device,
                              self.config.overlap)
        model.fit_accuracy = task.fit_accuracy
        model.eligible = bool(task.fit_accuracy >= self.config.min_fit_accuracy)
        self._model = model
        self.snapshots += 1
        self._dirty = False
        self._snapshot_at = time.monotonic()
        self.on_snapshot()


def _trainable(strokes: Strokes, background_id: int) -> bool:
    ids = set(np.unique(strokes.scribbles[strokes.coords("train")]).tolist())
    return background_id in ids and len(ids) >= 2
