"""The ensemble stage: the mean of the forest and the network, and when one of them answers alone."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from napari_medml.live import LiveSession
from napari_medml.live.deep import DeepConfig
from napari_medml.live.ensemble import EnsemblePredictor
from napari_medml.live.features import FeatureConfig
from napari_medml.live.worker import CLEAR_LEAD, SessionWorker

from test_live_deep import _first_strokes, _ramp_image, _train_until


class _Fixed:
    """A predictor answering fixed probabilities for every voxel."""

    def __init__(self, proba, class_ids=None, classes=None):
        self.proba = np.asarray(proba, np.float32)
        self.class_ids = class_ids
        self.classifier = SimpleNamespace(classes=np.asarray(classes)) if classes is not None else None
        self.eligible = True

    def predict_proba(self, region, should_stop=None):
        shape = tuple(s.stop - s.start for s in region)
        return np.broadcast_to(self.proba, shape + self.proba.shape).copy()

    def labels_from_proba(self, proba):
        ids = self.classifier.classes
        return np.where(ids == 9, 0, ids)[np.argmax(proba, axis=-1)]


def test_the_ensemble_averages_the_classes_in_the_forests_order():
    # forest: painted ids 1, 3 and 9 (background); network: output labels 0 (background) and 1;
    # class 3 is painted but not learned by the network yet: the forest's probability stays
    forest = _Fixed([0.5, 0.3, 0.2], classes=[1, 3, 9])
    network = _Fixed([0.9, 0.1], class_ids=(0, 1))
    mean = EnsemblePredictor(forest, network, background_id=9)
    proba = mean.predict_proba((slice(0, 2), slice(0, 3)))
    assert proba.shape == (2, 3, 3)
    np.testing.assert_allclose(proba[0, 0], [0.5 * (0.5 + 0.1), 0.3, 0.5 * (0.2 + 0.9)])
    assert (mean.labels_from_proba(proba) == 0).all()  # background wins once the network weighs in


def _referee(scores: dict[str, float], names=("features", "network", "ensemble"), leads: list | None = None) -> str:
    stages = [SimpleNamespace(name=n, model=lambda: SimpleNamespace(eligible=True)) for n in names]
    worker = SessionWorker()  # the referee reads only the stages, their scores and the session's leads
    worker._stages, worker._scores = stages, scores
    if leads is None:  # one scoring: these scores
        leads = [scores["network"] - scores["features"]] if "network" in scores and "features" in scores else []
    worker._leads = dict(enumerate(leads))
    worker._features = SimpleNamespace(evicting=False)
    return worker._best_stage().name


def test_the_ensemble_answers_once_the_network_clearly_leads_the_forest():
    assert _referee({}) == "features"  # nothing scored yet
    assert _referee({"features": 0.6, "network": 0.8, "ensemble": 0.9}) == "features"  # a lead of 0.2: chance
    assert _referee({"features": 0.5, "network": 0.5 + CLEAR_LEAD}) == "ensemble"
    assert _referee({"features": 0.9, "network": 0.2}) == "features"
    # the network has no whole answer yet (no ensemble): it is the one to answer next
    assert _referee({"features": 0.0, "network": 1.0}, names=("features", "network")) == "network"
    # no ensemble at all (features over their memory budget): the best score wins
    worker = SessionWorker()
    worker._stages = [SimpleNamespace(name=n, model=lambda: SimpleNamespace(eligible=True))
                      for n in ("features", "network")]
    worker._scores, worker._features = {"features": 0.5, "network": 0.6}, SimpleNamespace(evicting=True)
    assert worker._best_stage().name == "network"


def test_the_lead_that_switches_is_the_mean_over_the_sessions_scorings():
    """Trial 40: on one scoring's lead, each of 6 switches a new user saw made the answer worse (the
    scores swing by 0.5 from one stroke to the next). The mean of the session's leads decides."""
    scores = {"features": 0.3, "network": 0.9, "ensemble": 0.8}  # the last scoring: a lead of 0.6
    assert _referee(scores, leads=[-0.2, -0.2, 0.6]) == "features"  # mean 0.07: chance
    assert _referee({"features": 0.6, "network": 0.7}, leads=[0.3, 0.4, 0.1]) == "ensemble"  # mean 0.27
    assert _referee(scores, leads=[]) == "features"  # not scored together yet


def test_a_session_answers_with_the_mean_and_follows_new_strokes_at_once() -> None:
    image, _ = _ramp_image()
    first = _first_strokes(image.shape)
    held = first.copy()
    held[96, 106:118] = 1  # the 5th strokes of each id: held out; a one-scale forest gets them wrong
    held[64, 2:12] = 2
    with LiveSession(image, background_id=2, features=FeatureConfig(sigmas=(1.0,)),
                     deep=DeepConfig(snapshot_s=1.0, pseudo_labels=0)) as session:
        session.update(first)
        session.predict()
        session.update(held)
        _train_until(session, lambda: session.stage == "ensemble", rounds=60)
        assert session.stage == "ensemble", (session.scores, session.training)
        forest = session.predict(stage="features")
        network = session.predict(stage="network")
        answer = session.predict()
        np.testing.assert_array_equal(answer, session.predict(stage="ensemble"))
        # where both stages agree, so does their mean
        agree = forest == network
        assert (answer[agree] == forest[agree]).all()

        second = held.copy()
        second[24:40, 100:104] = 1  # a new stroke: the slice answer follows it at once
        session.update(second)
        row = (slice(30, 31), slice(None))
        shown = session.predict(row)
        model = session._answering_stage().model()
        assert session.stage == "ensemble" and model.forest is session._stages[0].model()  # the new forest
        region = session._features.normalize(row)
        np.testing.assert_array_equal(shown, model.labels_from_proba(model.predict_proba(region)))


def test_accept_is_told_when_the_network_lags_the_answer_on_screen() -> None:
    """Accept hands on the network as the model: when it scores below the stage on screen on
    the held-out strokes (a new user's brain crop: features 1.00, network 0.67), the line says
    so; within the margin, or with the network on screen, nothing is said."""
    from napari_medml.live.ensemble import network_note

    assert network_note({"features": 1.0, "network": 0.67}, "features") == (
        "the model is the network, which scores 0.67 on the held-out strokes against 1.00 for the features answer "
        "now shown: let it train longer (or paint more) before it predicts other images")
    assert network_note({"features": 0.9, "network": 0.87}, "features") is None
    assert network_note({"features": 1.0, "network": 0.5}, "network") is None
    assert network_note({"features": 1.0}, "features") is None  # the network not scored yet


def test_the_ensemble_stays_on_screen_until_the_strokes_change():
    """Trial 42: every new network snapshot is scored again, and a lead near the bar put the
    forest and the ensemble on screen by turns every few seconds while nobody painted (Dice
    0.79, 0.84, 0.79, 0.83). The choice holds until the strokes change."""
    stages = [SimpleNamespace(name=n, model=lambda: SimpleNamespace(eligible=True))
              for n in ("features", "network", "ensemble")]
    worker = SessionWorker()
    worker._stages, worker._features = stages, SimpleNamespace(evicting=False)
    worker._scores, worker._processed = {"features": 0.5, "network": 0.8}, 3
    worker._leads = {3: 0.3}
    assert worker._best_stage().name == "ensemble"
    worker._scores, worker._leads = {"features": 0.5, "network": 0.6}, {3: 0.1}  # a later snapshot, same strokes
    assert worker._best_stage().name == "ensemble"
    worker._processed, worker._leads = 4, {3: 0.1, 4: 0.1}  # new strokes: decided again
    assert worker._best_stage().name == "features"
    worker._leads = {3: 0.1, 4: 0.1, 5: 0.2}
    assert worker._best_stage().name == "features"
