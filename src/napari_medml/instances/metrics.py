"""The field's instance metrics: one-to-one IoU matching, precision/recall/F1, DSB 2018 AP.

A predicted object and a true object *match* at threshold ``t`` when their
intersection over union is at least ``t`` and the pair belongs to a one-to-one
assignment that maximises the number of such pairs (then their summed IoU), as
in StarDist's ``stardist.matching.matching`` (Schmidt et al., MICCAI 2018;
Weigert et al., WACV 2020). Then ``tp`` = matched pairs, ``fp`` = unmatched
predictions, ``fn`` = unmatched true objects, and

* precision = tp / (tp + fp), recall = tp / (tp + fn), F1 = 2 tp / (2 tp + fp + fn);
* average precision (AP) of the Data Science Bowl 2018 (Caicedo et al., *Nucleus
  segmentation across imaging experiments: the 2018 Data Science Bowl*, Nature
  Methods 16, 2019) = tp / (tp + fp + fn), reported by StarDist as "accuracy" and
  by Cellpose as "average precision". By default it is reported at
  t = 0.5, 0.55, ..., 0.9 with its mean (:data:`AP_THRESHOLDS`); the DSB 2018
  leaderboard score is the mean over 0.5, ..., 0.95 (:data:`DSB_THRESHOLDS`,
  pass it as ``thresholds``).

Overlaps come from one ``np.unique`` over the (true id, predicted id) pairs of the
voxels where both are foreground, so memory follows the number of overlapping
pairs, never (objects x voxels). For ``t >= 0.5`` a one-to-one matching is
automatic (two objects cannot both overlap a third by more than half its union);
below 0.5 the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``)
runs on each connected group of candidate pairs separately.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from napari_medml.instances._checks import check_instances, check_same_shape

__all__ = [
    "AP_THRESHOLDS",
    "DSB_THRESHOLDS",
    "InstanceScores",
    "Matching",
    "Overlaps",
    "instance_scores",
    "match_instances",
    "overlaps",
    "sum_matchings",
]

AP_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(9))  # 0.5 ... 0.9
DSB_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.5 ... 0.95


@dataclass(frozen=True)
class Overlaps:
    """Sparse overlap table between true and predicted objects.

    Attributes
    ----------
    true_ids, pred_ids : np.ndarray
        int64 ids of the overlapping pair k (shape (K,)).
    iou : np.ndarray
        float64 IoU of pair k, in (0, 1].
    n_true, n_pred : int
        Number of true and predicted objects (ids > 0 present).
    """

    true_ids: np.ndarray
    pred_ids: np.ndarray
    iou: np.ndarray
    n_true: int
    n_pred: int


@dataclass(frozen=True)
class Matching:
    """Counts and scores at one IoU threshold."""

    threshold: float
    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    mean_matched_iou: float

    # An image with no objects where none were predicted scores 1 everywhere;
    # otherwise a score whose denominator is 0 is 0 (as StarDist).

    @property
    def precision(self) -> float:
        """tp / (tp + fp)."""
        return self._ratio(self.tp, self.n_pred)

    @property
    def recall(self) -> float:
        """tp / (tp + fn)."""
        return self._ratio(self.tp, self.n_true)

    @property
    def f1(self) -> float:
        """2 tp / (2 tp + fp + fn)."""
        return self._ratio(2 * self.tp, self.n_true + self.n_pred)

    @property
    def average_precision(self) -> float:
        """DSB 2018 average precision tp / (tp + fp + fn)."""
        return self._ratio(self.tp, self.tp + self.fp + self.fn)

    def _ratio(self, num: int, den: int) -> float:
        if self.n_true == 0 and self.n_pred == 0:
            return 1.0
        return num / den if den else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Counts and all scores as plain numbers (JSON-ready)."""
        out = asdict(self)
        out.update(precision=self.precision, recall=self.recall, f1=self.f1,
                   average_precision=self.average_precision)
        return out


def overlaps(true: np.ndarray, pred: np.ndarray) -> Overlaps:
    """IoU of every overlapping (true, predicted) pair.

    Parameters
    ----------
    true, pred : np.ndarray
        Integer instance labels of the same shape, (Y, X) or (Z, Y, X); 0 is
        background; ids need not be contiguous.

    Returns
    -------
    Overlaps
    """
    true = check_instances(true, "true labels")
    pred = check_instances(pred, "predicted labels")
    check_same_shape(true, pred, "true labels", "predicted labels")
    t_ids, t_area = np.unique(true[true > 0], return_counts=True)
    p_ids, p_area = np.unique(pred[pred > 0], return_counts=True)
    both = (true > 0) & (pred > 0)
    t = np.searchsorted(t_ids, true[both]).astype(np.int64)
    p = np.searchsorted(p_ids, pred[both]).astype(np.int64)
    pair, inter = np.unique(t * max(len(p_ids), 1) + p, return_counts=True)
    ti, pi = np.divmod(pair, max(len(p_ids), 1))
    iou = inter / (t_area[ti] + p_area[pi] - inter)
    return Overlaps(true_ids=t_ids[ti].astype(np.int64), pred_ids=p_ids[pi].astype(np.int64),
                    iou=iou.astype(np.float64), n_true=len(t_ids), n_pred=len(p_ids))


def _matched_ious(table: Overlaps, threshold: float) -> np.ndarray:
    """IoUs of the pairs in a maximum one-to-one matching among pairs with IoU >= threshold."""
    keep = table.iou >= threshold
    t, p, iou = table.true_ids[keep], table.pred_ids[keep], table.iou[keep]
    if threshold > 0.5 or len(iou) == 0:
        return iou  # one-to-one already (see module docstring)
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    _, ti = np.unique(t, return_inverse=True)
    _, pi = np.unique(p, return_inverse=True)
    n = int(ti.max()) + 1
    graph = coo_matrix((np.ones(len(iou)), (ti, pi + n)), shape=(n + int(pi.max()) + 1,) * 2)
    _, component = connected_components(graph, directed=False)
    pair_component = component[ti]
    size = np.bincount(pair_component)
    single = size[pair_component] == 1
    matched = [iou[single]]  # a pair alone in its group is matched as it is
    order = np.flatnonzero(~single)
    order = order[np.argsort(pair_component[order], kind="stable")]
    for group in np.split(order, np.flatnonzero(np.diff(pair_component[order])) + 1):
        if len(group) == 0:
            continue
        rows, r = np.unique(ti[group], return_inverse=True)
        cols, k = np.unique(pi[group], return_inverse=True)
        # most pairs first, then the largest summed IoU: each pair weighs 1 + iou / (pairs + 1)
        weight = np.zeros((len(rows), len(cols)))
        weight[r, k] = 1.0 + iou[group] / (len(group) + 1)
        best = np.full((len(rows), len(cols)), np.nan)
        best[r, k] = iou[group]
        rr, kk = linear_sum_assignment(weight, maximize=True)
        chosen = best[rr, kk]
        matched.append(chosen[~np.isnan(chosen)])
    return np.concatenate(matched)


def match_instances(true: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> Matching:
    """Match predicted to true objects one-to-one at an IoU threshold.

    Parameters
    ----------
    true, pred : np.ndarray
        Integer instance labels of the same shape, (Y, X) or (Z, Y, X).
    threshold : float
        Minimum IoU of a match, in [0, 1].

    Returns
    -------
    Matching
        Counts, precision, recall, F1 and DSB average precision.
    """
    return _matching(overlaps(true, pred), threshold)


def _matching(table: Overlaps, threshold: float) -> Matching:
    matched = _matched_ious(table, float(threshold))
    tp = len(matched)
    return Matching(threshold=float(threshold), n_true=table.n_true, n_pred=table.n_pred, tp=tp,
                    fp=table.n_pred - tp, fn=table.n_true - tp,
                    mean_matched_iou=float(matched.mean()) if tp else 0.0)


@dataclass(frozen=True)
class InstanceScores:
    """Matchings at several IoU thresholds and the DSB 2018 mean average precision."""

    matchings: tuple[Matching, ...]

    def at(self, threshold: float) -> Matching:
        """The matching at ``threshold`` (KeyError if it was not computed)."""
        for m in self.matchings:
            if abs(m.threshold - threshold) < 1e-9:
                return m
        raise KeyError(f"IoU threshold {threshold} was not computed")

    @property
    def mean_average_precision(self) -> float:
        """Mean of the average precision over the thresholds computed."""
        return float(np.mean([m.average_precision for m in self.matchings]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the mean AP and each threshold's counts and scores."""
        return {"mean_average_precision": self.mean_average_precision,
                "thresholds": [m.to_dict() for m in self.matchings]}

    def summary(self) -> dict[str, Any]:
        """The report of ``napari-medml evaluate --instances`` and the Evaluate widget: counts,
        precision, recall, F1 and AP at IoU 0.5 (when computed), the mean AP, and every threshold."""
        head: dict[str, Any] = {}
        if any(abs(m.threshold - 0.5) < 1e-9 for m in self.matchings):
            at = self.at(0.5)
            head = {"n_true": at.n_true, "n_pred": at.n_pred, "precision_at_0.5": at.precision,
                    "recall_at_0.5": at.recall, "f1_at_0.5": at.f1, "ap_at_0.5": at.average_precision}
        return {**head, "mean_ap": self.mean_average_precision, "thresholds": [m.to_dict() for m in self.matchings]}


def instance_scores(true: np.ndarray, pred: np.ndarray,
                    thresholds: Sequence[float] = AP_THRESHOLDS) -> InstanceScores:
    """Instance metrics at every threshold from one overlap table.

    Parameters
    ----------
    true, pred : np.ndarray
        Integer instance labels of the same shape, (Y, X) or (Z, Y, X).
    thresholds : sequence of float
        IoU thresholds; default 0.5 to 0.9 in steps of 0.05 (:data:`AP_THRESHOLDS`);
        :data:`DSB_THRESHOLDS` adds 0.95 (the DSB 2018 leaderboard's list).

    Returns
    -------
    InstanceScores
    """
    table = overlaps(true, pred)
    return InstanceScores(tuple(_matching(table, t) for t in thresholds))


def sum_matchings(scores: Iterable[InstanceScores]) -> InstanceScores:
    """Pool several images: counts add up per threshold, scores are recomputed from the sums.

    This is StarDist's ``matching_dataset(..., by_image=False)``: every object
    counts once, so large images weigh more than small ones.
    """
    scores = list(scores)
    if not scores:
        raise ValueError("sum_matchings needs at least one InstanceScores")
    pooled = []
    for group in zip(*(s.matchings for s in scores)):
        tp = sum(m.tp for m in group)
        iou_sum = sum(m.mean_matched_iou * m.tp for m in group)
        pooled.append(Matching(threshold=group[0].threshold, n_true=sum(m.n_true for m in group),
                               n_pred=sum(m.n_pred for m in group), tp=tp,
                               fp=sum(m.fp for m in group), fn=sum(m.fn for m in group),
                               mean_matched_iou=iou_sum / tp if tp else 0.0))
    return InstanceScores(tuple(pooled))
