"""The ensemble stage of a live session: the mean of the forest's and the network's
class probabilities.

On real images neither stage is reliably ahead (brain MRI: the forest by 0.01-0.03
Dice; 3D nuclei: the network by 0.03-0.07), and their mean was within 0.02 of the
better one and above the ilastik-style baseline in every round measured
(``benchmarks/bench_live.py``). It answers once both stages can; a stage answers
alone only when it is clearly ahead on the held-out strokes (``worker.SessionWorker``).
Averaging the probabilities of different models is the classic ensemble (Dietterich
2000, "Ensemble methods in machine learning").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from napari_medml.live.features import FeatureStack, Region
from napari_medml.live.stages import InstantPredictor, InstantStage, Strokes, held_out_accuracy

__all__ = ["EnsemblePredictor", "EnsembleStage", "network_note"]


@dataclass(frozen=True, eq=False)
class EnsemblePredictor:
    """The forest's and a network snapshot's probabilities, averaged.

    Parameters
    ----------
    forest : InstantPredictor
    network : Predictor
        A ``deep.DeepPredictor`` snapshot (its ``class_ids`` are output labels, 0 first).
    background_id : int
        The painted id meaning background (the forest's classes are painted ids).
    """

    forest: InstantPredictor
    network: object
    background_id: int
    eligible: bool = True
    _order: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ids = self.forest.classifier.classes
        labels = np.where(ids == self.background_id, 0, ids)
        # network channel feeding each forest class (-1: a class the network has not learned yet)
        net = list(self.network.class_ids)
        object.__setattr__(self, "_order", np.array([net.index(c) if c in net else -1 for c in labels]))

    def predict_proba(self, region: Region, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        """float32 ``(*region_shape, K)``, K = the forest's classes (painted ids in increasing order).

        Raises ``Cancelled`` when ``should_stop`` says so during the network's part.
        """
        forest = self.forest.predict_proba(region)
        net = self.network.predict_proba(region, should_stop)
        known = self._order >= 0
        mixed = forest.copy()
        mixed[..., known] = 0.5 * (forest[..., known] + net[..., self._order[known]])
        return mixed

    def labels_from_proba(self, proba: np.ndarray) -> np.ndarray:
        """Output labels (background 0) of the probabilities' shape without the class axis."""
        return self.forest.labels_from_proba(proba)

    def pieces(self) -> None:
        """No preference: the network's half comes from its cache, the forest's costs the same anywhere."""
        return None


class EnsembleStage:
    """The mean of the instant and deep stages, once the network has a whole answer.

    Parameters
    ----------
    features : FeatureStack
        The image's features; an image whose features exceed their budget has no
        ensemble (its forest answers regions on request only).
    instant : InstantStage
    network : callable
        The network snapshot the session has a whole-image answer of (its blocks are
        cached, so a region costs the forest's time only), or None.
    background_id : int
    """

    name = "ensemble"

    def __init__(self, features: FeatureStack, instant: InstantStage, network: Callable[[], object | None],
                 background_id: int) -> None:
        self.features, self.instant, self.network = features, instant, network
        self.background_id = background_id
        self._model: EnsemblePredictor | None = None

    def fit(self, strokes: Strokes, should_stop: Callable[[], bool]) -> None:
        """Nothing to fit: the mean follows the two stages."""

    def score(self, strokes: Strokes, should_stop: Callable[[], bool]) -> float | None:
        """Balanced accuracy on the held-out strokes of the forest fit without them and the network."""
        forest, network = self.instant.training_model(strokes), self.network()
        if forest is None or network is None:
            return None
        return held_out_accuracy(EnsemblePredictor(forest, network, self.background_id), strokes,
                                 self.background_id, should_stop)

    def model(self) -> EnsemblePredictor | None:
        """The mean of the current forest and the answered network snapshot, or None."""
        forest, network = self.instant.model(), self.network()
        if forest is None or network is None or not getattr(network, "eligible", True) or self.features.evicting:
            return None
        model = self._model
        if model is None or model.forest is not forest or model.network is not network:
            model = self._model = EnsemblePredictor(forest, network, self.background_id)
        return model

    def close(self) -> None:
        """Drop the ensemble."""
        self._model = None


def network_note(scores: dict[str, float], shown: str, margin: float = 0.05) -> str | None:
    """A line when the network (the model a session's Accept hands on) scores more than
    ``margin`` below the stage on screen (``shown``) on the held-out strokes (``scores``:
    stage name -> balanced accuracy), so a segmentation accepted now is better than what
    the model would predict; else None."""
    net, best = scores.get("network"), scores.get(shown)
    if shown == "network" or net is None or best is None or net >= best - margin:
        return None
    return (f"the model is the network, which scores {net:.2f} on the held-out strokes against {best:.2f} for "
            f"the {shown} answer now shown: let it train longer (or paint more) before it predicts other images")
