"""``LiveSession``: headless live segmentation from scribbles, worked in a background thread.

The session owns one image's cached features and its stages (the instant
random-forest stage now; a deep network stage on the shared training engine is
to join ``_stages``). ``update`` hands over the scribbles and returns at once; a
worker thread (plain ``threading``: the core runs without Qt) refits after a
short debounce, then, while idle, scores the stages on held-out strokes, fills
the feature cache and predicts the whole image. ``predict(region)`` answers a
region from the latest fit, computing only the features of the blocks the region
touches, so the slice on screen is answered before the rest of the volume.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np

from napari_medml.errors import InputError
from napari_medml.live.features import FeatureConfig, FeatureStack, Region
from napari_medml.live.instant import InstantConfig, Suggestion, stroke_counts, suggest_next, uncertainty_from_proba
from napari_medml.live.stages import InstantStage, Predictor, Stage, Strokes

__all__ = ["LiveSession"]

_DEVICES = ("auto", "cpu", "cuda", "mps")


class LiveSession:
    """Live segmentation of one image from the user's scribbles.

    Parameters
    ----------
    image : np.ndarray
        2D (Y, X) or 3D (Z, Y, X) image in napari axis order, optionally with a
        channel axis (``channel_axis``). Never modified; the session keeps a
        float32 copy.
    spacing : sequence of float, optional
        Voxel size per spatial axis (the layer's ``scale``), e.g. mm; features
        smooth by the same physical distance along every axis. Default all 1.
    channel_axis : int, optional
        Position of the channel axis in ``image``.
    background_id : int
        The painted id meaning background; it comes back as 0 in the answer.
    device : str
        "auto", "cpu", "cuda", "cuda:N" or "mps", for the deep stage; the instant
        stage always runs on the CPU.
    features : FeatureConfig, optional
        Feature scales, blocks and cache budget.
    instant : InstantConfig, optional
        Random forest settings and the hold-out rate.
    debounce : float
        Seconds the worker waits for further updates before refitting.

    Raises
    ------
    InputError
        Bad image, spacing, background id or device.

    Examples
    --------
    >>> session = LiveSession(volume, spacing=(2.0, 1.0, 1.0))
    >>> session.update(scribbles)          # returns at once
    >>> labels = session.predict((slice(30, 31), slice(None), slice(None)))
    >>> session.close()
    """

    def __init__(self, image: np.ndarray, spacing: Sequence[float] | None = None, channel_axis: int | None = None,
                 background_id: int = 1, device: str = "auto", *, features: FeatureConfig | None = None,
                 instant: InstantConfig | None = None, debounce: float = 0.05) -> None:
        if isinstance(background_id, bool) or not isinstance(background_id, (int, np.integer)) or background_id < 1:
            raise InputError(f"background_id {background_id!r} must be a painted label id (an integer of 1 or more)")
        if not isinstance(device, str) or device.split(":")[0] not in _DEVICES:
            raise InputError(f"device {device!r} must be one of 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        self.background_id = int(background_id)
        self.device = device
        self.debounce = float(debounce)
        self._features = FeatureStack(image, spacing, channel_axis, features)
        self.shape: tuple[int, ...] = self._features.shape
        self.spacing: tuple[float, ...] = self._features.spacing
        self._instant_config = instant or InstantConfig()
        # The deep stage joins this list; the answer comes from the best-scoring ready stage.
        self._stages: list[Stage] = [InstantStage(self._features, self._instant_config, self.background_id)]
        self._cond = threading.Condition()
        self._answer_lock = threading.Lock()
        self._latest: np.ndarray | None = None
        self._version = 0  # updates received
        self._processed = 0  # version of the last completed fit
        self._strokes: Strokes | None = None
        self._fit_error: InputError | None = None
        self._fatal: BaseException | None = None
        self._scores: dict[str, float] = {}
        self._scored = 0
        self._answer: tuple[Predictor, np.ndarray, np.ndarray] | None = None
        self._busy = True
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="napari-medml-live", daemon=True)
        self._thread.start()

    # -- public API -------------------------------------------------------

    def update(self, scribbles: np.ndarray) -> None:
        """Hand over the current scribbles; returns at once (the fit runs in the worker thread).

        Parameters
        ----------
        scribbles : np.ndarray
            Integer array of the image's spatial shape: 0 unpainted, ``background_id``
            background, any other positive id a class. Copied, so the caller may
            keep painting into it.

        Raises
        ------
        InputError
            Wrong shape, a non-integer dtype or negative ids; or the session is closed.
        """
        self._check_open()
        arr = np.asarray(scribbles)
        if arr.shape != self.shape:
            raise InputError(f"scribbles have shape {arr.shape} but the image has spatial shape {self.shape}")
        if arr.dtype.kind not in "iub":
            raise InputError(f"scribbles have dtype {arr.dtype}: paint them in an integer Labels layer")
        copy = np.array(arr, dtype=np.int32 if arr.dtype.itemsize <= 4 else np.int64, copy=True)
        if copy.min() < 0:
            raise InputError("scribbles have negative ids: use 0 for unpainted and positive ids for classes")
        with self._cond:
            self._latest = copy
            self._version += 1
            self._busy = True
            self._cond.notify_all()

    def predict(self, region: Region | None = None, wait: bool = True) -> np.ndarray:
        """The current best answer for the whole image or a region.

        Parameters
        ----------
        region : tuple of slice or int, optional
            One slice (or index) per spatial axis, e.g. ``(30, slice(None), slice(None))``
            for slice 30 of a volume; default the whole image.
        wait : bool
            Wait until the strokes of the last ``update`` are fitted (default);
            False answers at once from the latest completed fit.

        Returns
        -------
        np.ndarray
            Unsigned integer labels of the region's shape (an int index keeps its
            axis, of length 1): 0 background, the painted class ids otherwise.

        Raises
        ------
        InputError
            No fit yet (fewer than two ids painted), a bad region, or a closed session.
        """
        return self._answer_for(region, wait)[0]

    def uncertainty(self, region: Region | None = None, wait: bool = True) -> np.ndarray:
        """float32 ``1 - max class probability`` of the current answer (0 sure), same region rules as ``predict``."""
        return self._answer_for(region, wait)[1]

    def suggest_next(self, axis: int = 0) -> Suggestion:
        """The slice along ``axis`` (volumes) and the point with the most uncertain unpainted voxels."""
        _, unc = self._answer_for(None, True)
        with self._cond:
            scribbles = self._latest
        return suggest_next(unc, scribbles if scribbles is not None else np.zeros(self.shape, np.int32), axis)

    def train_for(self, seconds: float) -> None:
        """Give the background stages up to ``seconds`` of work, returning early when all are idle.

        The instant stage uses the time to finish its fit, score itself on the
        held-out strokes, compute the features of the whole image and predict it
        (so ``predict()`` and ``suggest_next()`` then answer at once). A deep stage
        will train its network for the time given.

        Raises
        ------
        InputError
            Negative ``seconds`` or a closed session.
        """
        self._check_open()
        if not seconds >= 0:
            raise InputError(f"train_for needs a number of seconds of 0 or more, got {seconds!r}")
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._fatal is not None or not self._busy, timeout=seconds)
        self._raise_fatal()

    @property
    def stage(self) -> str:
        """Name of the stage ``predict`` answers with: "features" (instant) or "network" (deep)."""
        return self._answering_stage().name

    @property
    def scores(self) -> dict[str, float]:
        """Stage name -> balanced accuracy on the held-out strokes (every 5th stroke of each id).

        A stage appears once it has been scored; a stage is scored by a fit
        without the held-out strokes (the answer itself uses every stroke).
        """
        with self._cond:
            return dict(self._scores)

    @property
    def stroke_counts(self) -> dict[int, int]:
        """Painted id -> number of strokes (connected components) in the last fitted scribbles."""
        strokes = self._strokes
        return stroke_counts(strokes.ids) if strokes is not None else {}

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed

    def close(self) -> None:
        """Stop the worker thread and free the features, models and answers (idempotent)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()
        for stage in self._stages:
            stage.close()
        self._features.clear()
        self._answer = None
        self._latest = None
        self._strokes = None

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- answering --------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InputError("this live session is closed: start a new LiveSession")

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            raise RuntimeError(f"the live session's worker failed: {self._fatal}") from self._fatal

    def _answering_stage(self) -> Stage:
        ready = [s for s in self._stages if s.model() is not None]
        if not ready:
            return self._stages[0]
        # The best held-out score wins; unscored stages rank last, earlier stages win ties.
        return max(ready, key=lambda s: (self._scores.get(s.name, -1.0), -self._stages.index(s)))

    def _answer_for(self, region: Region | None, wait: bool) -> tuple[np.ndarray, np.ndarray]:
        self._check_open()
        if wait:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._fatal is not None
                                    or self._processed >= self._version)
        self._check_open()
        self._raise_fatal()
        if self._fit_error is not None:  # the latest strokes cannot be fitted: never answer older ones
            raise self._fit_error
        model = self._answering_stage().model()
        if model is None:
            raise InputError(
                f"no strokes fitted yet: paint background (id {self.background_id}) and at least one class"
            )
        if region is not None:
            proba = model.predict_proba(self._features.normalize(region))
            return model.labels_from_proba(proba), uncertainty_from_proba(
                proba.reshape(-1, proba.shape[-1])).reshape(proba.shape[:-1])
        answer = self._whole(model, lambda: self._closed)
        if answer is None:
            self._check_open()
        return answer[0].copy(), answer[1].copy()

    def _whole(self, model: Predictor, should_stop) -> tuple[np.ndarray, np.ndarray] | None:
        """Whole-image labels and uncertainty of ``model``, block by block, cached; None if stopped."""
        with self._answer_lock:
            cached = self._answer
            if cached is not None and cached[0] is model:
                return cached[1], cached[2]
            labels: np.ndarray | None = None
            unc = np.empty(self.shape, np.float32)
            for where in self._pieces():
                if should_stop():
                    return None
                proba = model.predict_proba(where)
                block = model.labels_from_proba(proba)
                if labels is None:
                    labels = np.zeros(self.shape, block.dtype)
                labels[where] = block
                unc[where] = uncertainty_from_proba(proba.reshape(-1, proba.shape[-1])).reshape(proba.shape[:-1])
            self._answer = (model, labels, unc)
            return labels, unc

    def _pieces(self, voxels: int = 1 << 16) -> list[Region]:
        """Block-aligned slabs of at most about ``voxels`` voxels: stop checks between them stay frequent."""
        pieces = []
        for index in self._features.blocks_in(None):
            block = self._features.block_region(index)
            plane = max(1, int(np.prod([s.stop - s.start for s in block[1:]])))
            step = max(1, voxels // plane)
            first = block[0]
            for start in range(first.start, first.stop, step):
                pieces.append((slice(start, min(first.stop, start + step)),) + block[1:])
        return pieces

    # -- worker thread ----------------------------------------------------

    def _stale(self) -> bool:
        return self._closed or self._version > self._processed

    def _has_work(self) -> bool:
        if self._version > self._processed:
            return True
        if self._strokes is not None and self._scored < self._processed:
            return True
        if self._precompute_features():
            return True
        model = self._answering_stage().model()
        answer = self._answer
        # An image whose features exceed the budget is answered on request only.
        return model is not None and not self._features.evicting and (answer is None or answer[0] is not model)

    def _precompute_features(self) -> bool:
        # Only when the whole stack fits the budget: otherwise blocks would be evicted and refilled forever.
        return not self._features.evicting and not self._features.is_complete()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closed and not self._has_work():
                        self._busy = False
                        self._cond.notify_all()
                        self._cond.wait()
                    if self._closed:
                        return
                    self._busy = True
                    todo_fit = self._version > self._processed
                    todo_score = self._strokes is not None and self._scored < self._processed
                if todo_fit:
                    self._fit_latest()
                elif todo_score:
                    self._score()
                elif self._precompute_features():
                    self._features.compute_all(self._stale)
                else:
                    model = self._answering_stage().model()
                    if model is not None:
                        self._whole(model, self._stale)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by predict/train_for
            with self._cond:
                self._fatal = exc
                self._busy = False
                self._cond.notify_all()

    def _fit_latest(self) -> None:
        # Debounce: wait until updates stop arriving for `debounce` s (at most 0.5 s).
        start = time.monotonic()
        with self._cond:
            seen = self._version
            while not self._closed and time.monotonic() - start < 0.5:
                self._cond.wait(self.debounce)
                if self._version == seen:
                    break
                seen = self._version
            if self._closed:
                return
            version, scribbles = self._version, self._latest
        assert scribbles is not None  # version > 0 means update() stored scribbles
        strokes = Strokes.from_scribbles(version, scribbles, self._instant_config.holdout_every)
        error = None
        for stage in self._stages:
            try:
                stage.fit(strokes, self._stale)
            except InputError as exc:  # e.g. one id painted so far: predict() reports it
                error = exc
        with self._cond:
            self._strokes, self._processed, self._fit_error = strokes, version, error
            self._cond.notify_all()

    def _score(self) -> None:
        strokes, processed = self._strokes, self._processed
        scores = {}
        for stage in self._stages:
            if stage.model() is None or self._stale():
                continue
            value = stage.score(strokes, self._stale)
            if value is not None:
                scores[stage.name] = value
        with self._cond:
            if not self._stale():
                self._scores.update(scores)
                self._scored = processed
