"""The fingerprint of a segmentation run's training data: what the planner
(:mod:`napari_medml.segmentation.plan`) knows about intensities, spacing, sizes and
classes, as in nnU-Net's dataset fingerprint (Isensee et al. 2021)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ChannelStats", "Fingerprint", "fingerprint"]


@dataclass(frozen=True)
class ChannelStats:
    """Intensities of one channel: the whole images and the labelled foreground."""

    low: float  # 0.5th percentile of all voxels
    high: float  # 99.5th percentile of all voxels
    at_min: float  # share of voxels at the minimum value (a constant background)
    fg_low: float  # 0.5th / 50th / 99.5th percentile, mean and std inside the labelled foreground
    fg_median: float
    fg_high: float
    fg_mean: float
    fg_std: float


@dataclass(frozen=True)
class Fingerprint:
    """What the planner knows about the training data (spatial axes in array order)."""

    spatial_dims: int
    n_images: int
    shape: tuple[int, ...]  # median spatial shape of the images (voxels)
    train_shape: tuple[int, ...]  # smallest training region after the validation split
    spacing: tuple[float, ...]  # median voxel size
    channels: tuple[ChannelStats, ...]
    class_ids: tuple[int, ...]
    class_fractions: tuple[float, ...]  # share of the labelled voxels per class, background first
    labelled_fraction: float  # share of voxels labelled (1 for dense labels)
    object_extent: tuple[float, ...]  # typical foreground object's extent per axis (voxels)

    @property
    def anisotropy(self) -> float:
        """Largest spacing over the smallest."""
        return max(self.spacing) / min(self.spacing)

    @property
    def modality(self) -> str:
        """"ct" when intensities span Hounsfield units (air near -1000, bone above), else "mr/microscopy"."""
        ct = any(c.low <= -500 and c.high >= 100 for c in self.channels)
        return "ct" if ct else "mr/microscopy"


def fingerprint(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], spacing: Sequence[float] | None,
                train_shape: Sequence[int], class_ids: Sequence[int] = (),
                objects: Sequence[np.ndarray] | None = None) -> Fingerprint:
    """Measure the training data.

    Parameters
    ----------
    images : sequence of np.ndarray
        ``(C, *spatial)`` float32, before normalisation.
    labels : sequence of np.ndarray
        Encoded labels (``channel + 1``, 0 unlabeled; 1 is background), ``(*spatial)``.
    spacing : sequence of float or None
        Voxel size of the spatial axes (None: 1 each).
    train_shape : sequence of int
        Smallest training region after the validation split.
    class_ids : sequence of int
        The class id of each encoded value (background first), for the record.
    objects : sequence of np.ndarray, optional
        Instance labels of each image (one id per object, 0 background), on the image's
        grid or the file's (extents are scaled to the labels' shape): the typical object is
        measured on them. Default: connected components of the foreground, which merge
        touching objects.

    Returns
    -------
    Fingerprint
    """
    from scipy import ndimage

    dims = labels[0].ndim
    spacing = tuple(float(s) for s in (spacing or (1.0,) * dims))
    shape = tuple(int(np.median([lab.shape[a] for lab in labels])) for a in range(dims))
    stats = []
    for c in range(images[0].shape[0]):
        values = np.concatenate([_sample(img[c]) for img in images]).astype(np.float64)
        fg = np.concatenate([_sample(img[c][lab >= 2]) for img, lab in zip(images, labels)]).astype(np.float64)
        if fg.size == 0:
            fg = values
        low, high = np.percentile(values, [0.5, 99.5])
        flo, fmed, fhi = np.percentile(fg, [0.5, 50, 99.5])
        stats.append(ChannelStats(float(low), float(high), float(np.mean(values <= values.min())), float(flo),
                                  float(fmed), float(fhi), float(fg.mean()), float(fg.std())))
    counts = np.zeros(256, np.int64)
    for lab in labels:
        counts += np.bincount(lab.reshape(-1), minlength=256)[:256]
    labelled = counts[1:]
    n_classes = int(np.flatnonzero(labelled).max()) + 1 if labelled.any() else 1
    fractions = tuple(float(v) for v in labelled[:n_classes] / max(labelled.sum(), 1))
    extents, weights = [], []
    for k, lab in enumerate(labels):
        step = max(1, round((lab.size / 8e6) ** (1 / dims)))  # large volumes: every n-th voxel
        scale = [1.0] * dims
        if objects is not None:  # one id per object: touching objects stay apart
            ids = np.asarray(objects[k])
            scale = [n / m for n, m in zip(lab.shape, ids.shape)]
            ids = ids[(slice(None, None, step),) * dims]
            _, comp = np.unique(ids, return_inverse=True)  # ids 0..n-1 (any id values)
            comp = comp.reshape(ids.shape) + (1 if ids.size and ids.min() > 0 else 0)  # 0: background
        else:
            comp, _ = ndimage.label((lab >= 2)[(slice(None, None, step),) * dims])
        sizes = np.bincount(comp.reshape(-1))
        for i, box in enumerate(ndimage.find_objects(comp), start=1):
            if box is not None:
                extents.append([(s.stop - s.start) * step * f for s, f in zip(box, scale)])
                weights.append(sizes[i])
    if extents:
        # the extent of the object a typical foreground voxel belongs to (voxel-weighted median)
        order = np.asarray(extents, float)
        w = np.asarray(weights, float)
        extent = tuple(float(_weighted_median(order[:, a], w)) for a in range(dims))
    else:
        extent = tuple(float(s) for s in shape)
    return Fingerprint(dims, len(labels), shape, tuple(int(s) for s in train_shape), spacing, tuple(stats),
                       tuple(int(c) for c in class_ids), fractions, float(labelled.sum() / max(counts.sum(), 1)), extent)


# --- helpers -------------------------------------------------------------------------------


def _sample(values: np.ndarray, limit: int = 1_000_000) -> np.ndarray:
    flat = values.reshape(-1)
    return flat[:: max(1, flat.size // limit)]


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, cum[-1] / 2)])
