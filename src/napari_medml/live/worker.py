"""The worker thread of a ``LiveSession``: fit, score, pseudo-labels, features, whole answers,
which stage answers, and the answers ``predict`` gives.

``SessionWorker`` is ``LiveSession``'s base: one thread (plain ``threading``: the
core runs without Qt) does, in this order of priority, the fit of the newest
strokes (after a short debounce), the scores of stages whose model has not been
scored on the current strokes, the feature cache, the deep stage's pseudo-labels
and the whole-image answer of the answering stage. Everything it reads and
writes lives on the session (see ``LiveSession.__init__``).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from napari_medml.errors import Cancelled, InputError
from napari_medml.live.features import Region
from napari_medml.live.instant import uncertainty_from_proba
from napari_medml.live.stages import Predictor, Stage, Strokes

__all__ = ["CLEAR_LEAD", "SessionWorker", "Superseded"]

# Held-out balanced accuracy by which the network must lead the forest, on average over the
# session's scorings, before the ensemble answers instead of the forest: a few strokes score in
# steps of 0.1-0.3 and swing by 0.5 from one stroke to the next, so one scoring's lead is mostly
# chance. On the last one alone, every switch a new user saw made the answer worse (trial 40: 6 of
# 6, by 0.02-0.09 Dice); on the mean, docs/benchmarks/bench_live_ensemble*.json's rounds replayed
# give 0.9154 mean Dice over 5 images against 0.9116 (3D nuclei 0.809 against 0.792, none lower)
CLEAR_LEAD = 0.25


class Superseded(Cancelled):
    """A whole answer asked for with ``until_update=True`` stopped because new strokes arrived."""


class SessionWorker:
    """The worker-thread half of ``LiveSession`` (a base class; state is the session's)."""

    _processed = 0  # the strokes version of the last completed fit (the session's)
    _lead_held: int | None = None  # the strokes version in which the network's lead put the ensemble on screen

    def _check_open(self) -> None:
        if self._closed:
            raise InputError("this live session is closed: start a new LiveSession")

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            raise RuntimeError(f"the live session's worker failed: {self._fatal}") from self._fatal

    def _named_stage(self, name: str) -> Stage:
        for stage in self._stages:
            if stage.name == name:
                return stage
        raise InputError(f"stage {name!r} is not one of this session's: {[s.name for s in self._stages]}")

    def _best_stage(self) -> Stage:
        """The stage that should answer.

        Once the network can answer too, the forest answers unless the network leads
        it by ``CLEAR_LEAD`` or more on the held-out strokes, on average over the session's
        scorings; then the ensemble (their
        mean) answers, never the network alone. Measured on real volumes
        (``benchmarks/bench_live.py``): where the network scored far better on the
        held-out strokes (3D nuclei) the mean was at or above the network's Dice in
        almost every round; on a brain MRI the network led the held-out scores by 0.86
        while its Dice trailed the forest's by 0.03, and the mean halved that loss.
        Without an ensemble (an image whose features exceed their budget) the best
        held-out score wins; unscored stages rank last, earlier stages win ties.
        """
        ready = [s for s in self._stages if s.model() is not None and getattr(s.model(), "eligible", True)]
        if not ready:
            return self._stages[0]
        if self._features.evicting or not any(s.name == "ensemble" for s in self._stages):
            return max(ready, key=lambda s: (self._scores.get(s.name, -1.0), -self._stages.index(s)))
        if not self._network_leads():
            return self._stages[0]
        # the ensemble answers with a network snapshot the worker has a whole answer of:
        # until there is one, the network's whole answer is the work to do
        return next((s for s in ready if s.name == "ensemble"),
                    next((s for s in ready if s.name == "network"), self._stages[0]))

    def _network_leads(self) -> bool:
        """Whether the network's held-out score leads the forest's by ``CLEAR_LEAD`` or more on
        average over the session's scorings (one per version of the strokes, the last of it).

        Once it does, it holds until the strokes change: each new network snapshot is scored
        again, and a lead near the bar put the forest and the ensemble on screen by turns
        every few seconds while nobody painted (trial 42: 0.79, 0.84, 0.79, 0.83 Dice).
        """
        if self._lead_held is not None and self._lead_held == self._processed:
            return True
        leads = list(self._leads.values())
        if bool(leads) and sum(leads) / len(leads) >= CLEAR_LEAD:
            self._lead_held = self._processed
            return True
        return False

    def _answering_stage(self) -> Stage:
        """The stage that answers now: the best one, once the worker has its whole answer.

        A later stage (the network, the ensemble) takes over only once the worker has a
        whole-image answer of it; until then the instant stage answers, so the slice on
        screen never waits for a network prediction (on a CPU, seconds for a slice of a
        volume). The network's regions then come from its latest whole answer while the
        worker predicts the newest snapshot; the ensemble's from the current forest and
        that answered snapshot.
        """
        best = self._best_stage()
        if best is self._stages[0]:
            return best
        return best if best.name in self._answers else self._stages[0]

    def _answered_network(self) -> Predictor | None:
        """The network snapshot the worker has a whole-image answer of (None before one)."""
        answer = self._answers.get("network")
        return None if answer is None else answer[0]

    def _wanted_answers(self) -> list[Stage]:
        """Stages whose whole-image answer is due: the best one's; for the ensemble (the
        forest with the answered network snapshot), then the newest snapshot's."""
        stage = self._best_stage()
        if stage.name != "ensemble":
            return [stage]
        return [stage] + [s for s in self._stages if s.name == "network"]

    def _missing_answer(self) -> Stage | None:
        """The first wanted stage without a whole answer of its current model."""
        for stage in self._wanted_answers():
            model, answer = stage.model(), self._answers.get(stage.name)
            # An image whose features exceed the budget is answered on request only.
            # (a later stage, the network, is still answered whole: that is what lets it answer)
            if (model is not None and (not self._features.evicting or stage is not self._stages[0])
                    and (answer is None or answer[0] is not model)):
                return stage
        return None

    def _stale(self) -> bool:
        return self._closed or self._version > self._processed

    def _yielding(self) -> bool:
        """Background work (scores, features, pseudo-labels, whole answers) gives way: the
        strokes changed, or the user waits for a region (``predict(region)``) to be answered."""
        return self._stale() or self._requests > 0

    def _has_work(self) -> bool:
        if self._version > self._processed:
            return True
        if self._requests > 0:  # a region is being answered: the CPU is the user's
            return False
        if self._unscored():
            return True
        if self._precompute_features() or self._pseudo_due():
            return True
        return self._missing_answer() is not None

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
                    todo_score = bool(self._unscored())
                if todo_fit:
                    self._fit_latest()
                elif todo_score:
                    self._score()
                elif self._precompute_features():
                    self._features.compute_all(self._yielding)
                elif self._pseudo_due():
                    self._pseudo_labels()
                else:
                    stage = self._missing_answer()
                    if stage is not None:
                        self._whole(stage.name, stage.model(), self._yielding)
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
        scribbles = np.asarray(scribbles, dtype=np.int32 if scribbles.dtype.itemsize <= 4 else np.int64)
        previous = self._strokes
        if self._birth is None:
            self._birth = np.zeros(self.shape, np.int32)
        new = scribbles != 0 if previous is None else (scribbles != 0) & (scribbles != previous.scribbles)
        self._birth[new] = version
        strokes = Strokes.from_scribbles(version, scribbles, self._instant_config.holdout_every, self._birth)
        shown = self._answering_stage()
        self._painted_under[version] = shown.name if shown.model() is not None else None
        error = None
        for stage in self._stages:
            try:
                stage.fit(strokes, self._stale)
            except InputError as exc:  # e.g. one id painted so far: predict() reports it
                error = exc
        with self._cond:
            self._strokes, self._processed, self._fit_error = strokes, version, error
            self.revision += 1
            self._cond.notify_all()

    def _unscored(self) -> list[Stage]:
        """Stages whose current model has not been scored on the current strokes."""
        if self._strokes is None:
            return []
        out = []
        for stage in self._stages:
            model, done = stage.model(), self._scored.get(stage.name)
            if model is not None and (done is None or done[0] != self._processed or done[1] is not model):
                out.append(stage)
        return out

    def _scored_strokes(self, strokes: Strokes) -> dict[str, Strokes]:
        """Per stage, the strokes to score it on: held-out strokes painted while no single stage was on screen.

        A person paints where the answer on screen is wrong, so a stroke painted to
        correct one stage's answer is a sample of that stage's mistakes and would
        judge it unfairly against the other. Strokes painted before any answer or
        while the ensemble answered judge both alike; once there are such strokes,
        every stage is scored on those only. Until then all are scored on every
        held-out stroke.
        """
        singles = {s.name for s in self._stages if s.name != "ensemble"}
        versions = [v for v, name in self._painted_under.items() if name in singles]
        fair = strokes.held_out & ~np.isin(self._birth, versions) if versions else strokes.held_out
        if not fair.any():
            return {s.name: strokes for s in self._stages}
        return {s.name: replace(strokes, scored=fair) for s in self._stages}

    def _score(self) -> None:
        strokes, processed = self._strokes, self._processed
        scored = self._scored_strokes(strokes)
        for stage in self._unscored():
            model = stage.model()
            value = stage.score(scored[stage.name], self._yielding)
            with self._cond:
                if self._stale() or (value is None and self._requests > 0):  # stopped early: score again later
                    return
                if value is None:  # nothing held out (yet)
                    self._scores.pop(stage.name, None)
                else:
                    self._scores[stage.name] = value
                    if "features" in self._scores and "network" in self._scores:  # this version's lead
                        self._leads[processed] = self._scores["network"] - self._scores["features"]
                self._scored[stage.name] = (processed, model)
                self.revision += 1
                self._cond.notify_all()

    def _snapshot_arrived(self) -> None:
        with self._cond:
            self._busy = True
            self._cond.notify_all()

    def _pseudo_due(self) -> bool:
        deep = self._deep
        return (deep is not None and deep.config.pseudo_labels > 0 and self._strokes is not None
                and self._pseudo_done != self._processed and self._fit_error is None
                and not self._features.evicting and self._features.is_complete())

    def _pseudo_labels(self) -> None:
        """Hand the deep stage the forest's confident answers at random unpainted voxels."""
        if self._yielding():
            return  # again once the user's region is answered
        strokes, deep = self._strokes, self._deep
        source = self._stages[0].training_model(strokes)
        if source is not None and deep is not None:
            rng = np.random.default_rng(strokes.version)
            count = min(deep.config.pseudo_labels, strokes.scribbles.size // 100)  # at most 1 % of the image
            flat = np.unique(rng.integers(0, strokes.scribbles.size, count))
            flat = flat[strokes.scribbles.reshape(-1)[flat] == 0]
            coords = np.unravel_index(flat, self.shape)
            proba = source.classifier.predict_proba(self._features.at(coords))
            sure = proba.max(axis=1) >= deep.config.pseudo_confidence
            ids = source.classifier.classes[np.argmax(proba, axis=1)]
            deep.set_pseudo_labels(tuple(c[sure] for c in coords), ids[sure])
        with self._cond:
            if not self._stale():
                self._pseudo_done = strokes.version

    def _whole(self, name: str, model: Predictor, should_stop) -> tuple[np.ndarray, np.ndarray] | None:
        """Whole-image labels and uncertainty of ``model``, block by block, cached; None if stopped."""
        with self._answer_lock:
            cached = self._answers.get(name)
            if cached is not None and cached[0] is model:
                return cached[1], cached[2]
            labels: np.ndarray | None = None
            unc = np.empty(self.shape, np.float32)
            # a network's pieces are its cache blocks (large: it also stops within one)
            for where in model.pieces() or self._pieces():
                if should_stop():
                    return None
                try:
                    proba = model.predict_proba(where, should_stop)
                except Cancelled:
                    return None
                block = model.labels_from_proba(proba)
                if labels is None:
                    labels = np.zeros(self.shape, block.dtype)
                labels[where] = block
                unc[where] = uncertainty_from_proba(proba.reshape(-1, proba.shape[-1])).reshape(proba.shape[:-1])
            self._answers[name] = (model, labels, unc)
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

    # -- answering --------------------------------------------------------

    def _answer_for(self, region: Region | None, wait: bool, name: str | None = None, until_update: bool = False
                    ) -> tuple[np.ndarray, np.ndarray]:
        if region is None:
            return self._answer_now(region, wait, name, until_update)
        # The region on screen is answered first: until it is, the worker's background work
        # and the network's training wait (each gives way between two of its steps).
        with self._cond:
            self._requests += 1
        try:
            return self._answer_now(region, wait, name)
        finally:
            with self._cond:
                self._requests -= 1
                self._cond.notify_all()

    def _answer_now(self, region: Region | None, wait: bool, name: str | None = None, until_update: bool = False
                    ) -> tuple[np.ndarray, np.ndarray]:
        self._check_open()
        version = self._version
        if wait:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._fatal is not None
                                    or self._processed >= self._version)
        self._check_open()
        self._raise_fatal()
        if self._fit_error is not None:  # the latest strokes cannot be fitted: never answer older ones
            raise self._fit_error
        stage = self._answering_stage() if name is None else self._named_stage(name)
        model = stage.model()
        if model is None:
            if name is not None and name != self._stages[0].name:
                raise InputError(f"the {name} stage has no answer yet: give it time (train_for) first")
            raise InputError(
                f"no strokes fitted yet: paint background (id {self.background_id}) and at least one class"
            )
        if region is not None:
            region = self._features.normalize(region)
            cached = self._answers.get(stage.name)
            # the whole answer is ready: no second prediction (the network's may be of its
            # previous snapshot while the worker predicts the newest: strokes do not change it)
            if cached is not None and (cached[0] is model or (name is None and stage is self._deep)):
                return cached[1][region].copy(), cached[2][region].copy()
            proba = model.predict_proba(region)
            return model.labels_from_proba(proba), uncertainty_from_proba(
                proba.reshape(-1, proba.shape[-1])).reshape(proba.shape[:-1])
        answer = self._whole(stage.name, model, (lambda: self._closed or self._version != version) if until_update
                             else (lambda: self._closed))
        if answer is None:
            self._check_open()
            raise Superseded("new strokes arrived while the whole image was answered: ask again for their answer")
        return answer[0].copy(), answer[1].copy()
