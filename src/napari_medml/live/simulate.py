"""A simulated user painting strokes from ground truth, for benchmarks and tests.

Round 1 paints one short stroke per class on each of three slices (2D images:
three strokes per class); each later round adds one short stroke inside the
largest wrongly predicted region of unpainted voxels, as a person correcting the
answer would. Quality is Dice against the ground truth on the unpainted voxels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_medml.errors import InputError

__all__ = ["SimulatedUser", "dice_unpainted"]


def dice_unpainted(prediction: np.ndarray, truth: np.ndarray, scribbles: np.ndarray) -> float:
    """Mean Dice over the foreground classes of ``truth`` (ids > 0), on unpainted voxels only.

    Parameters
    ----------
    prediction, truth, scribbles : np.ndarray
        Arrays of one shape: predicted labels and true labels (0 background) and
        scribbles (0 unpainted).
    """
    free = scribbles == 0
    p, t = prediction[free], truth[free]
    scores = []
    for c in np.unique(truth[truth > 0]):
        a, b = p == c, t == c
        denom = int(a.sum()) + int(b.sum())
        scores.append(2.0 * np.logical_and(a, b).sum() / denom if denom else 1.0)
    return float(np.mean(scores)) if scores else 1.0


class SimulatedUser:
    """Paints strokes like a user correcting a live segmentation.

    Parameters
    ----------
    truth : np.ndarray
        Integer ground truth (Y, X) or (Z, Y, X): 0 background, classes > 0.
    background_id : int
        Painted id used for background (must not be a class id of ``truth``).
    length : int
        Stroke length in voxels (in-plane).
    brush : int
        Brush radius in voxels (0: one voxel wide).
    seed : int
        Seed of stroke positions and directions.
    """

    def __init__(self, truth: np.ndarray, background_id: int, length: int = 12, brush: int = 1, seed: int = 0) -> None:
        self.truth = np.asarray(truth)
        if self.truth.ndim not in (2, 3):
            raise InputError(f"simulated user needs 2D or 3D ground truth, got shape {self.truth.shape}")
        if background_id in set(np.unique(self.truth).tolist()) - {0}:
            raise InputError(f"background_id {background_id} is also a class id of the ground truth")
        self.background_id = background_id
        self.length = length
        self.brush = brush
        self.rng = np.random.default_rng(seed)

    def painted_id(self, c: int) -> int:
        """The id painted for ground-truth class ``c``."""
        return self.background_id if c == 0 else int(c)

    def first_round(self) -> np.ndarray:
        """int32 scribbles of round 1: a short stroke per class on three slices (2D: three per class)."""
        scribbles = np.zeros(self.truth.shape, np.int32)
        classes = np.unique(self.truth)
        if self.truth.ndim == 2:
            for c in classes:
                for _ in range(3):
                    self._stroke_2d(scribbles, None, self.truth == c, c, deepest=False)
            return scribbles
        present = np.stack([(self.truth == c).any(axis=(1, 2)) for c in classes], axis=1).sum(axis=1)
        candidates = np.flatnonzero(present == present.max())
        picks = candidates[np.linspace(0, len(candidates) - 1, 5).round().astype(int)[1:4]]
        for z in picks:
            for c in classes:
                if (self.truth[z] == c).any():
                    self._stroke_2d(scribbles, int(z), self.truth[z] == c, c, deepest=False)
        return scribbles

    def correct(self, scribbles: np.ndarray, prediction: np.ndarray) -> np.ndarray:
        """New scribbles with one stroke inside the largest wrong region of unpainted voxels."""
        out = scribbles.copy()
        wrong = (prediction != self.truth) & (scribbles == 0)
        best, best_size, best_class = None, 0, 0
        for c in np.unique(self.truth[wrong]):
            lab, n = ndi.label(wrong & (self.truth == c))
            if n == 0:
                continue
            sizes = np.bincount(lab.ravel())[1:]
            k = int(np.argmax(sizes))
            if sizes[k] > best_size:
                best, best_size, best_class = lab == k + 1, int(sizes[k]), int(c)
        if best is None:
            return out
        if best.ndim == 3:
            z = int(np.argmax(best.sum(axis=(1, 2))))
            self._stroke_2d(out, z, best[z], best_class, deepest=True)
        else:
            self._stroke_2d(out, None, best, best_class, deepest=True)
        return out

    def _stroke_2d(self, scribbles: np.ndarray, z: int | None, region: np.ndarray, c: int, deepest: bool) -> None:
        """Paint a short straight stroke of class ``c`` inside ``region`` (a 2D mask) on slice ``z``."""
        depth = ndi.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
        if depth.max() <= 0:
            return
        if deepest:
            centre = np.unravel_index(int(np.argmax(depth)), depth.shape)
        else:  # a random point well inside, as a person paints inside an object
            ys, xs = np.nonzero(depth >= max(1.0, 0.5 * depth.max()))
            i = int(self.rng.integers(len(ys)))
            centre = (ys[i], xs[i])
        angle = self.rng.uniform(0, np.pi)
        step = np.array([np.sin(angle), np.cos(angle)])
        points = []
        for sign in (1, -1):  # walk both ways from the centre while inside the region
            for t in range(0 if sign == 1 else 1, self.length // 2 + 1):
                y, x = np.round(np.array(centre) + sign * t * step).astype(int)
                if not (0 <= y < region.shape[0] and 0 <= x < region.shape[1] and region[y, x]):
                    break
                points.append((y, x))
        line = np.zeros(region.shape, bool)
        ys, xs = zip(*points)
        line[list(ys), list(xs)] = True
        if self.brush > 0:
            line = ndi.binary_dilation(line, ndi.generate_binary_structure(2, 1), iterations=self.brush)
        line &= region
        target = scribbles if z is None else scribbles[z]
        target[line & (target == 0)] = self.painted_id(c)
