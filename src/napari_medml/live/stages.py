"""Stages of a live session: what each one fits on the strokes and how it answers.

A stage turns the current strokes (``Strokes``) into per-voxel class
probabilities. ``LiveSession`` runs every stage in its worker thread and answers
with the best-scoring one. The instant stage (random forest on filter features)
lives here; the deep stage (a network trained continuously on the shared
training engine) is ``deep.DeepStage``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from napari_medml.live.features import FeatureStack, Region
from napari_medml.live.instant import (
    InstantClassifier,
    InstantConfig,
    balanced_accuracy,
    holdout_mask,
    stroke_components,
)

__all__ = ["InstantPredictor", "InstantStage", "Predictor", "Stage", "Strokes", "held_out_accuracy"]


@dataclass(frozen=True)
class Strokes:
    """One version of the user's scribbles, split into training and held-out voxels.

    Attributes
    ----------
    version : int
        Count of ``LiveSession.update`` calls this version reflects.
    scribbles : np.ndarray
        int array of the image's spatial shape (a private copy), 0 = unpainted.
    components : np.ndarray
        int32 stroke number per voxel (see ``instant.stroke_components``).
    ids : np.ndarray
        Painted id of each stroke number.
    held_out : np.ndarray
        bool mask of the voxels of held-out strokes (see ``instant.holdout_mask``):
        no stage trains on them.
    scored : np.ndarray or None
        bool mask of the held-out voxels a stage is scored on (None: all of them);
        ``LiveSession`` leaves out strokes painted to correct that stage's answer.
    """

    version: int
    scribbles: np.ndarray
    components: np.ndarray
    ids: np.ndarray
    held_out: np.ndarray
    scored: np.ndarray | None = None

    @classmethod
    def from_scribbles(cls, version: int, scribbles: np.ndarray, holdout_every: int,
                       birth: np.ndarray | None = None) -> Strokes:
        """Split scribbles into strokes; ``birth`` (see ``stroke_components``) keeps their numbers stable."""
        components, ids = stroke_components(scribbles, birth)
        return cls(version, scribbles, components, ids, holdout_mask(components, ids, holdout_every))

    def coords(self, which: str = "all") -> tuple[np.ndarray, ...]:
        """Voxel coordinates of ``"all"`` painted, the ``"train"``, the ``"held_out"`` or the ``"scored"`` voxels."""
        painted = self.scribbles != 0
        scored = self.held_out if self.scored is None else self.scored
        mask = {"all": painted, "train": painted & ~self.held_out, "held_out": self.held_out, "scored": scored}
        return np.nonzero(mask[which])


class Stage(Protocol):
    """What ``LiveSession`` needs from a stage (instant and deep).

    ``fit`` and ``score`` run in the session's worker thread; ``predict_proba``
    may run in any thread, concurrently with them, and must answer from the last
    completed fit. ``should_stop`` returns True when newer strokes arrived or the
    session is closing: long work checks it and returns early.
    """

    name: str

    def fit(self, strokes: Strokes, should_stop: Callable[[], bool]) -> None: ...

    def score(self, strokes: Strokes, should_stop: Callable[[], bool]) -> float | None: ...

    def model(self) -> Predictor | None: ...

    def close(self) -> None: ...


class Predictor(Protocol):
    """A stage's fitted model, frozen: later fits make a new one."""

    def predict_proba(self, region: Region, should_stop: Callable[[], bool] | None = None) -> np.ndarray: ...

    def labels_from_proba(self, proba: np.ndarray) -> np.ndarray: ...

    def pieces(self) -> list[Region] | None:
        """The regions the whole image is best predicted in, or None for no preference."""
        ...


@dataclass(frozen=True, eq=False)
class InstantPredictor:
    """One fitted forest bound to the image's features."""

    features: FeatureStack
    classifier: InstantClassifier

    def predict_proba(self, region: Region, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        """float32 probabilities (*region_shape, K), K = painted ids in increasing order
        (``should_stop`` is not asked: a forest's region takes a fraction of a second)."""
        feats = self.features.region(region)
        proba = self.classifier.predict_proba(feats.reshape(-1, feats.shape[-1]))
        return proba.reshape(feats.shape[:-1] + (proba.shape[-1],))

    def labels_from_proba(self, proba: np.ndarray) -> np.ndarray:
        """Output labels of the probabilities' shape without the class axis (background 0)."""
        return self.classifier.labels_from_proba(proba.reshape(-1, proba.shape[-1])).reshape(proba.shape[:-1])

    def pieces(self) -> None:
        """No preference: any region costs the same per voxel."""
        return None


class InstantStage:
    """Random forest on cached filter features, refit on every new version of the strokes.

    Parameters
    ----------
    features : FeatureStack
        The image's features (shared with other stages).
    config : InstantConfig
        Forest settings.
    background_id : int
        Painted id meaning background.
    """

    name = "features"

    def __init__(self, features: FeatureStack, config: InstantConfig, background_id: int) -> None:
        self.features = features
        self.config = config
        self.background_id = background_id
        self._model: InstantPredictor | None = None
        self._train_model: InstantPredictor | None = None

    def _fit(self, strokes: Strokes, which: str) -> InstantClassifier:
        coords = strokes.coords(which)
        ids = strokes.scribbles[coords]
        keep = InstantClassifier(self.config, self.background_id).sample(ids, np.random.default_rng(self.config.seed))
        coords = tuple(c[keep] for c in coords)
        return InstantClassifier(self.config, self.background_id).fit(self.features.at(coords), ids[keep])

    def fit(self, strokes: Strokes, should_stop: Callable[[], bool]) -> None:
        """Refit on every painted voxel (held-out strokes included: they improve the answer)."""
        self._model = InstantPredictor(self.features, self._fit(strokes, "all"))
        self._train_model = None

    def score(self, strokes: Strokes, should_stop: Callable[[], bool]) -> float | None:
        """Balanced accuracy on the held-out strokes of a forest fit without them; None if none held out."""
        held = strokes.coords("scored")
        if len(held[0]) == 0:
            return None
        train_ids = strokes.scribbles[strokes.coords("train")]
        if len(np.unique(train_ids)) < 2:
            return None
        classifier = self._fit(strokes, "train")
        self._train_model = InstantPredictor(self.features, classifier)
        if should_stop():
            return None
        proba = classifier.predict_proba(self.features.at(held))
        return balanced_accuracy(strokes.scribbles[held], classifier.classes[np.argmax(proba, axis=1)])

    def model(self) -> InstantPredictor | None:
        """The last fitted forest, or None before the first fit."""
        return self._model

    def training_model(self, strokes: Strokes) -> InstantPredictor | None:
        """A forest that never saw the held-out strokes (the answering one when none is held out).

        The deep stage's pseudo-labels come from it, so they carry nothing of the
        strokes that score the network.
        """
        if not strokes.held_out.any():
            return self._model
        if self._train_model is None:
            train_ids = strokes.scribbles[strokes.coords("train")]
            if len(np.unique(train_ids)) < 2:
                return None
            self._train_model = InstantPredictor(self.features, self._fit(strokes, "train"))
        return self._train_model

    def close(self) -> None:
        """Drop the forests."""
        self._model = self._train_model = None


def held_out_accuracy(model: Predictor, strokes: Strokes, background_id: int,
                      should_stop: Callable[[], bool]) -> float | None:
    """Balanced accuracy of ``model`` on the scored held-out strokes, one stroke's box at a time.

    Returns None when nothing is held out or the scoring was stopped (a network's
    ``predict_proba`` raises ``Cancelled`` once ``should_stop`` says so).
    """
    from scipy import ndimage as ndi

    from napari_medml.errors import Cancelled

    held = np.unique(strokes.components[strokes.coords("scored")])
    if held.size == 0:
        return None
    boxes = ndi.find_objects(strokes.components, max_label=int(held.max()))
    truth, predicted = [], []
    for c in held:
        if should_stop():
            return None
        box = boxes[int(c) - 1]
        try:
            proba = model.predict_proba(box, should_stop)
        except Cancelled:
            return None
        labels = model.labels_from_proba(proba)
        inside = strokes.components[box] == c
        truth.append(strokes.scribbles[box][inside])
        predicted.append(np.where(labels == 0, background_id, labels)[inside])
    return balanced_accuracy(np.concatenate(truth), np.concatenate(predicted))
