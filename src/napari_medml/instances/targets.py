"""Training targets derived from an instance Labels array.

The network learns two things per voxel (chosen by measurement, see the
instance benchmark and tests):

* **classes** - 0 background, 1 object interior, 2 boundary between touching
  objects (the one voxel of each object that faces a *different* object), the
  three-class formulation of Caicedo et al. (2019), *Evaluation of deep learning
  strategies for nucleus segmentation in fluorescence images*, Cytometry A 95(9).
  Trained with cross-entropy / Dice over three channels.
* **distance** - per object, the Euclidean distance from each of its voxels to
  the nearest voxel outside it (another object, background or the image edge),
  measured in physical units (``sampling=spacing``, so an anisotropic voxel is
  measured at its true size), then divided by the object's maximum so that every
  object peaks at exactly 1 whatever its size. 0 on background. Trained as a
  regression (MSE or L1) inside the foreground. Because the map drops to ~0 on
  both sides of every border between touching objects, each object has its own
  peak: seeds for the watershed in :mod:`napari_medml.instances.postprocess`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from napari_medml.instances._checks import check_instances, check_spacing

__all__ = ["BACKGROUND", "BOUNDARY", "INTERIOR", "InstanceTarget", "instance_target", "touching_boundaries"]

BACKGROUND = 0
INTERIOR = 1
BOUNDARY = 2


@dataclass(frozen=True)
class InstanceTarget:
    """What the network learns for one instance image.

    Attributes
    ----------
    classes : np.ndarray
        uint8, same shape as the labels ((Y, X) or (Z, Y, X)): 0 background,
        1 object interior, 2 boundary between touching objects.
    distance : np.ndarray
        float32, same shape: normalised distance to the object's border, in
        (0, 1] inside each object (exactly 1 at its deepest voxel), 0 on background.
    spacing : tuple of float
        Voxel size per axis the distances were measured with.
    """

    classes: np.ndarray
    distance: np.ndarray
    spacing: tuple[float, ...]


def touching_boundaries(labels: np.ndarray) -> np.ndarray:
    """Voxels of an object that touch a different object across a face.

    Parameters
    ----------
    labels : np.ndarray
        Integer instance labels, (Y, X) or (Z, Y, X); 0 is background.

    Returns
    -------
    np.ndarray
        bool, same shape: True on both sides of every border between two
        objects (one voxel thick on each side); borders with background are False.
    """
    labels = check_instances(labels)
    lab = labels.astype(np.int64, copy=False)
    footprint = ndi.generate_binary_structure(lab.ndim, 1)
    # A neighbour with a larger id shows in the max filter; one with a smaller
    # non-zero id shows in the max filter of the ids reversed (background kept 0).
    top = int(lab.max()) + 1
    reversed_ids = np.where(lab > 0, top - lab, 0)
    larger = ndi.maximum_filter(lab, footprint=footprint, mode="nearest") != lab
    smaller = ndi.maximum_filter(reversed_ids, footprint=footprint, mode="nearest") != reversed_ids
    return (lab > 0) & (larger | smaller)


def _normalised_distance(labels: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Per-object distance transform, each object scaled to a maximum of 1."""
    out = np.zeros(labels.shape, np.float32)
    # one bounding box per object: the cost follows the objects, not N full-size transforms
    for index, box in enumerate(ndi.find_objects(labels)):
        if box is None:
            continue
        object_id = index + 1
        mask = labels[box] == object_id
        # pad with background so the image edge counts as the object's border
        padded = np.pad(mask, 1)
        dist = ndi.distance_transform_edt(padded, sampling=spacing)[(slice(1, -1),) * mask.ndim]
        peak = float(dist.max())
        if peak > 0:
            out[box][mask] = (dist[mask] / peak).astype(np.float32)
    return out


def instance_target(labels: np.ndarray, spacing: Sequence[float] | None = None) -> InstanceTarget:
    """Derive the network's training target from instance labels.

    Parameters
    ----------
    labels : np.ndarray
        Integer instance labels, (Y, X) or (Z, Y, X): 0 background, each object
        its own positive id (ids need not be contiguous). Not modified.
    spacing : sequence of float, optional
        Voxel size per axis in physical units (napari's ``scale``); default all 1.

    Returns
    -------
    InstanceTarget
        ``classes`` (uint8: 0 background, 1 interior, 2 boundary between
        touching objects) and ``distance`` (float32 in [0, 1], 1 at each
        object's deepest voxel), both shaped like ``labels``.

    Raises
    ------
    InputError
        If ``labels`` is not a 2D/3D non-negative integer array or ``spacing``
        does not have one positive value per axis.
    """
    labels = check_instances(labels)
    spacing = check_spacing(spacing, labels.ndim)
    dense = labels
    if labels.size and int(labels.max()) > max(10 * labels.size, 1 << 20):
        # find_objects keeps one slot per id up to the largest: renumber huge ids first
        from skimage.segmentation import relabel_sequential

        dense = relabel_sequential(labels)[0]
    classes = np.zeros(labels.shape, np.uint8)
    classes[labels > 0] = INTERIOR
    classes[touching_boundaries(dense)] = BOUNDARY
    return InstanceTarget(classes=classes, distance=_normalised_distance(dense, spacing), spacing=spacing)
