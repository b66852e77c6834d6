"""``LiveSession``: headless live segmentation from scribbles, worked in a background thread.

The session owns one image's cached features and its stages: the instant
random-forest stage and the deep stage (a U-Net on the shared training engine,
``deep.DeepStage``). ``update`` hands over the scribbles and returns at once; a
worker thread (plain ``threading``: the core runs without Qt) refits after a
short debounce, then, while idle, scores the stages on held-out strokes, fills
the feature cache and predicts the whole image. ``predict(region)`` answers a
region from the latest fit, computing only the features of the blocks the region
touches (a volume's slice: of that plane), so the slice on screen is answered
before the rest of the volume.
``train_for(seconds)`` gives the network that much training in the calling thread
(the widget calls it in a loop in its own worker); new strokes join the running
training. Once the network can answer too, ``predict`` answers with the mean of
both stages' probabilities (``ensemble.EnsembleStage``), or with one of them alone
when it is clearly ahead on the held-out strokes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_medml.errors import InputError
from napari_medml.live.deep import DeepConfig, DeepStage
from napari_medml.live.ensemble import EnsembleStage, network_note
from napari_medml.live.features import FeatureConfig, FeatureStack, Region
from napari_medml.live.instant import InstantConfig, Suggestion, stroke_counts, suggest_next
from napari_medml.live.stages import InstantStage, Predictor, Stage, Strokes
from napari_medml.live.worker import SessionWorker, Superseded

__all__ = ["LiveSession", "Superseded"]

_DEVICES = ("auto", "cpu", "cuda", "mps")


# Fewer voxels than this along an axis of a volume: no network stage (trial 40: on a 2-slice volume
# the 3D U-Net's Dice fell from 0.74 to 0.36 as strokes came, and its ensemble reached the screen)
MIN_NETWORK_EXTENT = 8


class LiveSession(SessionWorker):
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
    deep : DeepConfig or None
        The deep stage's settings; None: the instant stage only. A volume with fewer than
        :data:`MIN_NETWORK_EXTENT` voxels along an axis gets none either (``network_off``
        says why).
    features : FeatureConfig, optional
        Feature scales, blocks and cache budget.
    instant : InstantConfig, optional
        Random forest settings and the hold-out rate; default ``InstantConfig()``
        with 100 trees for a 2D image, 50 for a volume.
    debounce : float
        Seconds the worker waits for further updates before refitting.

    Raises
    ------
    InputError
        Bad image, spacing, background id or device.
    ConfigError
        A device that is not available here ("cuda" without CUDA).

    Examples
    --------
    >>> session = LiveSession(volume, spacing=(2.0, 1.0, 1.0))
    >>> session.update(scribbles)          # returns at once
    >>> labels = session.predict((slice(30, 31), slice(None), slice(None)))
    >>> session.close()
    """

    def __init__(self, image: np.ndarray, spacing: Sequence[float] | None = None, channel_axis: int | None = None,
                 background_id: int = 1, device: str = "auto", *, features: FeatureConfig | None = None,
                 instant: InstantConfig | None = None, deep: DeepConfig | None = DeepConfig(),
                 debounce: float = 0.05) -> None:
        if isinstance(background_id, bool) or not isinstance(background_id, (int, np.integer)) or background_id < 1:
            raise InputError(f"background_id {background_id!r} must be a painted label id (an integer of 1 or more)")
        if not isinstance(device, str) or device.split(":")[0] not in _DEVICES:
            raise InputError(f"device {device!r} must be one of 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        if device.split(":")[0] in ("cuda", "mps"):  # fail now, not at the first training step
            from napari_medml.engine.devices import resolve_device

            resolve_device(device)
        self.background_id = int(background_id)
        self.device = device
        self.debounce = float(debounce)
        self._features = FeatureStack(image, spacing, channel_axis, features)
        self.shape: tuple[int, ...] = self._features.shape
        self.spacing: tuple[float, ...] = self._features.spacing
        # 2D: ilastik's 100 trees (cheap there); volumes: 50, see InstantConfig.trees
        self._instant_config = instant or InstantConfig(trees=100 if len(self.shape) == 2 else 50)
        # The answer comes from the best-scoring ready stage (ties: the earlier one).
        self._stages: list[Stage] = [InstantStage(self._features, self._instant_config, self.background_id)]
        self._deep: DeepStage | None = None
        self.network_off: str | None = None  # why a requested network does not run, for the status
        thinnest = min(self.shape)
        if deep is not None and len(self.shape) == 3 and thinnest < MIN_NETWORK_EXTENT:
            self.network_off = (f"network off: a 3D network on {thinnest} voxels along an axis learns little and "
                                "drifts (2 slices: Dice 0.74 fell to 0.36 while the forest held 0.8); the forest "
                                "answers alone")
            deep = None
        if deep is not None:
            self._deep = DeepStage(image, channel_axis, self.spacing, self.background_id, deep, device,
                                   on_snapshot=self._snapshot_arrived)
            self._stages.append(self._deep)
            self._stages.append(EnsembleStage(self._features, self._stages[0], self._answered_network,
                                              self.background_id))
        self._cond = threading.Condition()
        self._answer_lock = threading.Lock()
        self._latest: np.ndarray | None = None
        self._version = 0  # updates received
        self._requests = 0  # region answers being computed for the user: background work waits
        self._processed = 0  # version of the last completed fit
        self._strokes: Strokes | None = None
        self._fit_error: InputError | None = None
        self._fatal: BaseException | None = None
        self._scores: dict[str, float] = {}
        self._leads: dict[int, float] = {}  # strokes version -> the network's held-out lead on the forest
        self._scored: dict[str, tuple[int, Predictor]] = {}  # stage -> (version, model) last scored
        self._birth: np.ndarray | None = None  # update count when each voxel was painted
        self._pseudo_done = 0  # strokes version whose pseudo-labels the deep stage has
        self._painted_under: dict[int, str | None] = {}  # version -> stage on screen when it was painted
        self.revision = 0  # grows whenever the answer may have changed (a fit, a new score)
        # stage name -> (model, labels, uncertainty) of its last whole-image answer
        self._answers: dict[str, tuple[Predictor, np.ndarray, np.ndarray]] = {}
        self._busy = True
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="napari-medml-live", daemon=True)
        self._thread.start()

    # -- public API -------------------------------------------------------

    def update(self, scribbles: np.ndarray, copy: bool = True) -> None:
        """Hand over the current scribbles; returns at once (the fit runs in the worker thread).

        Parameters
        ----------
        scribbles : np.ndarray
            Integer array of the image's spatial shape: 0 unpainted, ``background_id``
            background, any other positive id a class. Copied, so the caller may
            keep painting into it.
        copy : bool
            False: the caller hands over an array it made for this (and never writes to).

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
        if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
            raise InputError("scribbles have negative ids: use 0 for unpainted and positive ids for classes")
        # a copy in the caller's dtype (one memcpy: the GUI thread calls this on every stroke;
        # widening 52 M voxels to int32 here took 0.5 s); the worker widens it
        kept = np.array(arr, copy=True) if copy else arr
        with self._cond:
            self._latest = kept
            self._version += 1
            self._busy = True
            self._cond.notify_all()

    def predict(self, region: Region | None = None, wait: bool = True, stage: str | None = None, *,
                until_update: bool = False) -> np.ndarray:
        """The current best answer for the whole image or a region.

        Parameters
        ----------
        region : tuple of slice or int, optional
            One slice (or index) per spatial axis, e.g. ``(30, slice(None), slice(None))``
            for slice 30 of a volume; default the whole image.
        wait : bool
            Wait until the strokes of the last ``update`` are fitted (default);
            False answers at once from the latest completed fit.
        stage : str, optional
            "features", "network" or "ensemble" (their mean): that stage's answer
            instead of the best one (to compare them; the deep stage answers once it
            has a snapshot, the ensemble once the network has a whole answer).
        until_update : bool
            For the whole image only: strokes handed over (``update``) while it is
            being answered stop it, and ``Superseded`` is raised (a GUI then answers
            the slice on screen first, and asks again). Default False: it finishes.

        Returns
        -------
        np.ndarray
            Unsigned integer labels of the region's shape (an int index keeps its
            axis, of length 1): 0 background, the painted class ids otherwise.

        Raises
        ------
        InputError
            No fit yet (fewer than two ids painted), a bad region, an unknown stage
            or one not ready yet, or a closed session.
        Superseded
            With ``until_update``: new strokes arrived during a whole answer.
        """
        return self._answer_for(region, wait, stage, until_update)[0]

    def uncertainty(self, region: Region | None = None, wait: bool = True, stage: str | None = None, *,
                    until_update: bool = False) -> np.ndarray:
        """float32 ``1 - max class probability`` of the current answer (0 sure), same rules as ``predict``."""
        return self._answer_for(region, wait, stage, until_update)[1]

    def suggest_next(self, axis: int = 0) -> Suggestion:
        """The slice along ``axis`` (volumes) and the point with the most uncertain unpainted voxels."""
        _, unc = self._answer_for(None, True)
        with self._cond:
            scribbles = self._latest
        return suggest_next(unc, scribbles if scribbles is not None else np.zeros(self.shape, np.int32), axis)

    def train_for(self, seconds: float) -> None:
        """Give the stages ``seconds`` of work; the network trains in the calling thread.

        The instant stage's worker meanwhile finishes its fit, scores the stages on
        the held-out strokes, computes the features of the whole image and predicts
        it. The network trains whenever no fit is pending (new strokes are answered
        by the instant stage first), for the whole time given; without a deep
        stage, or before background and a class are painted, this returns as soon
        as the worker is idle. Strokes passed to ``update`` meanwhile join the
        running training.

        Raises
        ------
        InputError
            Negative ``seconds`` or a closed session.
        ConfigError
            The session's device is not available.
        """
        self._check_open()
        if not seconds >= 0:
            raise InputError(f"train_for needs a number of seconds of 0 or more, got {seconds!r}")
        deadline = time.monotonic() + seconds
        deep = self._deep
        pending = lambda: (self._closed or self._fatal is not None or self._version > self._processed  # noqa: E731
                           or self._requests > 0)  # a stroke's fit or a region answer goes first
        while not self._closed and self._fatal is None and time.monotonic() < deadline:
            with self._cond:  # a pending fit goes first: the instant stage answers the stroke
                self._cond.wait_for(lambda: not pending(), timeout=max(0.0, deadline - time.monotonic()))
            if pending():
                continue
            if deep is not None and deep.can_train():
                deep.train(deadline, pending)
                continue
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._fatal is not None or not self._busy,
                                    timeout=max(0.0, deadline - time.monotonic()))
                if not self._busy and not pending() and (deep is None or not deep.can_train()):
                    break
        self._raise_fatal()

    def network_model(self, preprocessing: Sequence[Any] = ()) -> Any:
        """The deep stage's network as a regular segmentation ``Model`` (Accept hands it to the session).

        The model predicts other images (``Model.predict``), saves as a bundle
        (``Model.save``) and fine-tunes like any trained model; its class ids are
        the painted ones, background 0.

        Parameters
        ----------
        preprocessing : sequence of PreprocessStep
            The recipe that made this session's image from a raw one (a crop, a
            resampling, a filter): the model records it and re-applies it to every raw
            image it predicts, as a model trained on a preprocessed layer does.

        Raises
        ------
        InputError
            No deep stage, or the network has not been trained yet.
        """
        self._check_open()
        if self._deep is None:
            raise InputError(self.network_off or "this live session has no deep stage (deep=None): start one "
                             "with deep=DeepConfig()")
        return self._deep.network_model(preprocessing)

    @property
    def training(self) -> dict[str, Any]:
        """The deep stage's progress (empty without one).

        ``steps`` taken, ``runs`` of the training generator (a newly painted class
        starts another, keeping the weights), ``snapshots`` made, the last training
        ``loss``, the answering snapshot's ``fit_accuracy`` and the network's output
        ``class_ids``.
        """
        deep = self._deep
        if deep is None:
            return {}
        model = deep.model()
        return {"steps": deep.steps, "runs": deep.runs, "snapshots": deep.snapshots, "loss": deep.last_loss,
                "fit_accuracy": None if model is None else model.fit_accuracy, "class_ids": deep.class_ids}

    @property
    def stage(self) -> str:
        """Name of the stage ``predict`` answers with: "features" (instant), "network" (deep)
        or "ensemble" (the mean of both: once both answer, unless one is clearly ahead)."""
        return self._answering_stage().name

    @property
    def scores(self) -> dict[str, float]:
        """Stage name -> balanced accuracy on the held-out strokes (every 5th stroke of each id).

        A stage appears once it has been scored; a stage is scored by a fit
        without the held-out strokes (the answer itself uses every stroke; the
        network never trains on them). Strokes painted while one stage alone was on
        screen correct its mistakes, so once there are held-out strokes painted
        before any answer or while the ensemble answered, every stage is scored on
        those only.
        """
        with self._cond:
            return dict(self._scores)

    def network_note(self) -> str | None:
        """:func:`~napari_medml.live.ensemble.network_note` for this session's scores and stage."""
        return network_note(self.scores, self.stage)

    @property
    def stroke_counts(self) -> dict[int, int]:
        """Painted id -> number of strokes (connected components) in the last fitted scribbles."""
        strokes = self._strokes
        return stroke_counts(strokes.ids) if strokes is not None else {}

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed

    def cancel(self) -> None:
        """Close the session without waiting: a ``predict`` or ``train_for`` running in another
        thread stops within one piece of work and raises InputError; ``close`` then frees it.

        For a GUI's Stop: a whole answer of a large volume may take minutes.
        """
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the worker thread and free the features, models and answers (idempotent)."""
        self.cancel()
        if self._thread is not threading.current_thread():
            self._thread.join()
        for stage in self._stages:
            stage.close()
        self._deep = None
        self._stages = self._stages[:1]
        self._features.clear()
        self._answers = {}
        self._latest = None
        self._strokes = None
        self._birth = None
        self._painted_under = {}

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
