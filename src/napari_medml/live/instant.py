"""The instant stage: a random forest refit on the scribbled voxels after each stroke.

ilastik's pixel classification (Berg et al. 2019, Nature Methods 16:1226),
scikit-image's ``skimage.future.fit_segmenter`` and napari-convpaint all use a
scikit-learn ``RandomForestClassifier`` on per-voxel filter features: it fits a
few thousand samples in well under a second, needs no tuning, and its vote
fractions are a usable uncertainty. This module also holds the scribble
bookkeeping shared by the stages: stroke components, the automatic hold-out, stroke
counts and where to paint next.

Scribble convention (DESIGN.md, Labels): 0 is unpainted; the painted id
``background_id`` means background and comes back as 0; other ids are classes
and come back unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_medml.errors import InputError

__all__ = [
    "InstantClassifier",
    "InstantConfig",
    "Suggestion",
    "balanced_accuracy",
    "holdout_mask",
    "same_scribbles",
    "stroke_components",
    "stroke_counts",
    "suggest_next",
]


@dataclass(frozen=True)
class InstantConfig:
    """Settings of the instant stage's random forest.

    Attributes
    ----------
    trees : int
        Number of trees. 50 by default, half ilastik's 100: on a 2-core CPU it
        halves the refit and the whole-volume answer (slice p95 0.55 s, 64 x 256 x
        256 volume p95 5.1 s, against 1.2 s and 11 s with 100 trees) at the same
        Dice after 10 simulated rounds (within 0.001 on four images;
        ``benchmarks/bench_live.py``). ``LiveSession`` takes 100 for a 2D image,
        where the whole answer is cheap and 50 trailed the 100-tree baseline on the
        DSB nuclei (0.877 vs 0.885 Dice at round 10).
    max_samples_per_class : int
        Painted voxels per class used for one fit, drawn at random (fixed seed)
        when a class has more; bounds the fit time of long strokes.
    holdout_every : int
        Every n-th stroke (connected component of one painted id, in painting order)
        is held out to score the stages; 0 holds none out.
    seed : int
        Seed of the forest and of the subsampling.
    n_jobs : int or None
        Threads for fitting and predicting; None: all cores (``os.cpu_count()``).
    """

    trees: int = 50
    max_samples_per_class: int = 20000
    holdout_every: int = 5
    seed: int = 0
    n_jobs: int | None = None

    def __post_init__(self) -> None:
        if self.trees < 1 or self.max_samples_per_class < 1 or self.holdout_every < 0:
            raise InputError(
                f"instant stage settings must be positive (trees={self.trees}, "
                f"max_samples_per_class={self.max_samples_per_class}, holdout_every={self.holdout_every})"
            )


class InstantClassifier:
    """A random forest over per-voxel features, mapping painted ids to output labels.

    Parameters
    ----------
    config : InstantConfig
        Forest size, sampling and seed.
    background_id : int
        The painted id that means background (predicted as 0).
    """

    def __init__(self, config: InstantConfig, background_id: int = 1) -> None:
        self.config = config
        self.background_id = int(background_id)
        self.classes: np.ndarray = np.zeros(0, np.int64)
        self._forest: Any = None

    @property
    def fitted(self) -> bool:
        """Whether ``fit`` has run."""
        return self._forest is not None

    def sample(self, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Indices into ``ids`` (painted id per voxel) keeping at most ``max_samples_per_class`` per id."""
        keep = []
        for c in np.unique(ids):
            rows = np.flatnonzero(ids == c)
            if len(rows) > self.config.max_samples_per_class:
                rows = np.sort(rng.choice(rows, self.config.max_samples_per_class, replace=False))
            keep.append(rows)
        return np.concatenate(keep) if keep else np.zeros(0, np.intp)

    def fit(self, features: np.ndarray, ids: np.ndarray) -> InstantClassifier:
        """Fit on painted voxels.

        Parameters
        ----------
        features : np.ndarray
            float32 (N, F) features of the painted voxels.
        ids : np.ndarray
            int (N,) painted id of each voxel (never 0).

        Raises
        ------
        InputError
            Fewer than two different ids are painted.
        """
        from sklearn.ensemble import RandomForestClassifier

        classes = np.unique(ids)
        if len(classes) < 2:
            only = [f"background (id {c})" if c == self.background_id else f"id {c}" for c in classes.tolist()]
            painted = f"only {only[0]} is painted" if only else "nothing is painted yet"
            raise InputError(f"{painted} in the scribbles: paint background (id {self.background_id}) "
                             "and at least one class before asking for an answer")
        forest = RandomForestClassifier(
            n_estimators=self.config.trees, n_jobs=self.config.n_jobs or os.cpu_count(),
            random_state=self.config.seed,
        )
        forest.fit(features, ids)
        self._forest, self.classes = forest, forest.classes_.astype(np.int64)
        return self

    def predict_proba(self, features: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
        """float32 (N, K) class probabilities, columns in the order of ``classes``."""
        if self._forest is None:
            raise InputError("the instant classifier is not fitted yet: paint strokes first")
        out = np.empty((features.shape[0], len(self.classes)), np.float32)
        for start in range(0, features.shape[0], chunk):
            out[start:start + chunk] = self._forest.predict_proba(features[start:start + chunk])
        return out

    def labels_from_proba(self, proba: np.ndarray) -> np.ndarray:
        """Output labels (N,) from probabilities: background id -> 0, others unchanged."""
        out_ids = np.where(self.classes == self.background_id, 0, self.classes)
        dtype = np.min_scalar_type(max(int(out_ids.max()), 1))
        return out_ids.astype(dtype)[np.argmax(proba, axis=1)]


def uncertainty_from_proba(proba: np.ndarray) -> np.ndarray:
    """float32 (N,) uncertainty ``1 - max probability`` (0 sure, up to 1 - 1/K)."""
    return (1.0 - proba.max(axis=1)).astype(np.float32)


def stroke_components(scribbles: np.ndarray, birth: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of each painted id (full connectivity).

    Parameters
    ----------
    scribbles : np.ndarray
        int array, 0 unpainted.
    birth : np.ndarray, optional
        int array of the same shape: when each voxel was painted (e.g. the update
        count). Strokes are then numbered in the order they were painted (a stroke's
        oldest voxel), ties in scan order, so a new stroke never renumbers older
        ones (and the hold-out, every n-th stroke, stays put).

    Returns
    -------
    components : np.ndarray
        int32 array of the scribbles' shape: 0 unpainted, 1..S one id per stroke,
        numbered in painting order (``birth``) or else in scan order of their first voxel.
    ids : np.ndarray
        int64 (S + 1,) painted id of each component (entry 0 is 0).
    """
    components = np.zeros(scribbles.shape, np.int32)
    painted = np.flatnonzero(scribbles)
    if len(painted) == 0:
        return components, np.zeros(1, np.int64)
    # Label inside the painted bounding box only: strokes are small next to a volume.
    corners = np.unravel_index(painted[[0, -1]], scribbles.shape)
    coords = np.unravel_index(painted, scribbles.shape)
    box = tuple(slice(int(c.min()), int(c.max()) + 1) for c in coords) if scribbles.ndim > 1 else (
        slice(int(corners[0][0]), int(corners[0][1]) + 1),)
    crop = scribbles[box]
    out = components[box]
    structure = ndi.generate_binary_structure(crop.ndim, crop.ndim)
    count = 0
    for c in np.unique(scribbles.ravel()[painted]):
        lab, n = ndi.label(crop == c, structure=structure)
        inside = lab > 0
        out[inside] = lab[inside] + count
        count += n
    # Renumber in painting order (birth), ties in scan order of each stroke's first voxel (painted is sorted).
    at = components.ravel()[painted]
    seen, first_seen = np.unique(at, return_index=True)
    if birth is None:
        order = at[np.sort(first_seen)]
    else:
        oldest = ndi.minimum(birth.ravel()[painted], at, index=seen)
        order = seen[np.lexsort((first_seen, np.asarray(oldest)))]
    renumber = np.zeros(count + 1, np.int32)
    renumber[order] = np.arange(1, count + 1, dtype=np.int32)
    ids = np.zeros(count + 1, np.int64)
    ids[renumber[at]] = scribbles.ravel()[painted]
    return renumber[components], ids


def holdout_mask(components: np.ndarray, ids: np.ndarray, every: int) -> np.ndarray:
    """Boolean mask of the held-out strokes: each id's every ``every``-th stroke.

    A class keeps at least ``every - 1`` training strokes: its 5th, 10th, ...
    stroke (``every=5``) is held out, so scores exist once some class has 5.
    """
    held = np.zeros(len(ids), bool)
    if every > 0:
        for c in np.unique(ids[1:]):
            strokes = np.flatnonzero(ids == c)
            held[strokes[every - 1::every]] = True
    held[0] = False
    return held[components]


def stroke_counts(ids: np.ndarray) -> dict[int, int]:
    """Painted id -> number of strokes (connected components), from ``stroke_components``."""
    values, counts = np.unique(ids[1:], return_counts=True)
    return {int(v): int(n) for v, n in zip(values, counts)}


def balanced_accuracy(truth: np.ndarray, predicted: np.ndarray) -> float | None:
    """Mean over painted ids of the fraction of their voxels predicted as that id.

    ``truth`` and ``predicted`` are painted ids (N,); None when ``truth`` is empty.
    """
    present = np.unique(truth)
    if len(present) == 0:
        return None
    return float(np.mean([np.mean(predicted[truth == c] == c) for c in present]))


@dataclass(frozen=True)
class Suggestion:
    """Where to paint next.

    Attributes
    ----------
    point : tuple of int
        Voxel (Y, X) or (Z, Y, X) at the centre of the most uncertain unpainted patch.
    axis : int or None
        Slicing axis of ``index`` (the ``axis`` asked for, for volumes; None for 2D images).
    index : int or None
        Slice along ``axis`` holding the most uncertainty over unpainted voxels.
    uncertainty : float
        Mean uncertainty of the unpainted voxels in that slice (or image).
    """

    point: tuple[int, ...]
    axis: int | None
    index: int | None
    uncertainty: float


def suggest_next(uncertainty: np.ndarray, scribbles: np.ndarray, axis: int = 0, patch: float = 4.0) -> Suggestion:
    """The slice, and the patch in it, with the most uncertain unpainted voxels: the sum of the
    uncertainties of at least half the largest, so that a wide, mildly unsure background does not
    outweigh a slice's clearly unsure voxels.

    Parameters
    ----------
    uncertainty : np.ndarray
        float (Y, X) or (Z, Y, X) uncertainty of the current answer.
    scribbles : np.ndarray
        int array of the same shape, 0 = unpainted.
    axis : int
        Slicing axis for volumes (napari's default view slices axis 0).
    patch : float
        Gaussian sigma in voxels of the patch the point is the centre of. Along an axis
        longer than 4 patches, the outer ``patch`` voxels on either side are not chosen:
        the answer there is unsure because the image ends (filters and networks pad it),
        and a stroke at the edge teaches little about the rest.
    """
    if uncertainty.shape != scribbles.shape:
        raise InputError(f"uncertainty {uncertainty.shape} and scribbles {scribbles.shape} differ in shape")
    unpainted_all = scribbles == 0
    free = np.where(unpainted_all, uncertainty, 0).astype(np.float32)
    band = int(round(patch))
    inner = tuple(slice(band, n - band) if n > 4 * band else slice(None) for n in free.shape)
    chosen = np.zeros_like(free)
    chosen[inner] = free[inner]
    if not chosen.any():  # nothing unsure inside: the edges are all there is
        chosen = free
    # the clearly unsure voxels only: a wide background the forest is mildly unsure of everywhere (the
    # air around a head, 0.05 each) summed to more than any slice's errors (trial 44: slice 184 of air)
    chosen = np.where(chosen >= 0.5 * chosen.max(), chosen, 0) if chosen.any() else chosen
    index = None
    if free.ndim == 3:
        other = tuple(a for a in range(3) if a != axis)
        index = int(np.argmax(chosen.sum(axis=other)))
        plane = np.take(free, index, axis=axis)
        unpainted = np.take(unpainted_all, index, axis=axis)
        target = np.take(chosen, index, axis=axis)
    else:
        plane, unpainted, target = free, unpainted_all, chosen
    smooth = ndi.gaussian_filter(target, patch)
    at = [int(v) for v in np.unravel_index(int(np.argmax(smooth)), plane.shape)]
    if index is not None:
        at.insert(axis, index)
    mean = float(plane[unpainted].mean()) if unpainted.any() else 0.0
    return Suggestion(tuple(at), axis if index is not None else None, index, mean)


def same_scribbles(a: np.ndarray, b: np.ndarray | None) -> bool:
    """Whether two scribble arrays hold the same ids (same shape and dtype), in one pass.

    The GUI thread asks on every stroke and every slice change: ``np.array_equal`` made a
    boolean array of every voxel (0.16 s for 200 x 512 x 512); this compares 8 bytes at a time.
    """
    if b is None or a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.flags.c_contiguous and b.flags.c_contiguous and a.nbytes % 8 == 0:
        return bool(np.array_equal(a.reshape(-1).view(np.uint64), b.reshape(-1).view(np.uint64)))
    return bool(np.array_equal(a, b))
