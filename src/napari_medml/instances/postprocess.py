"""Instances from the network's outputs, and the classical baselines.

The learned path (:func:`instances_from_outputs`) takes the *cached* network
outputs - a foreground probability and the predicted normalised distance map
(see :mod:`napari_medml.instances.targets`) - so its parameters
(:class:`InstanceParams`) can change at predict time without running the network
again, as cellpose-napari re-runs only its mask creation. Seeds are the maxima
of the learned distance map whose dynamic (height above the saddle that joins
them to a higher maximum) is at least ``seed_height`` (h-maxima, Soille,
*Morphological Image Analysis*, 2003, ch. 6); seeds whose centres are closer than
``min_distance`` (physical units) merge; a seeded watershed (``skimage.segmentation.watershed``) on the
inverted map fills the foreground.

The classical baselines that need no training are in
:mod:`napari_medml.instances.classical`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from napari_medml.errors import ConfigError
from napari_medml.instances._checks import check_instances, check_same_shape, check_spacing
from napari_medml.errors import InputError

__all__ = [
    "InstanceParams",
    "foreground_probability",
    "instances_from_outputs",
    "params_from_labels",
    "remove_small_instances",
    "seeded_watershed",
    "stored_params",
]


def stored_params(source: Any) -> "InstanceParams | None":
    """The post-processing an instance model predicts with, without loading its weights.

    Parameters
    ----------
    source : model or path
        An instance model in memory (its ``params``) or a bundle folder (the
        ``instance_params`` of its ``config.json``).

    Returns
    -------
    InstanceParams or None
        None for any other model, or a folder that is not a readable instance bundle
        (loading it says why). Never raises.
    """
    import json
    from pathlib import Path

    if not isinstance(source, (str, Path)):  # a model in memory (or None)
        params = getattr(source, "params", None)
        return params if isinstance(params, InstanceParams) else None
    if str(source) in ("", "."):
        return None
    try:  # config.json read here: bundles.format imports torch, and the Predict widget asks on the GUI thread
        stored = json.loads((Path(source).expanduser() / "config.json").read_text()).get("instance_params")
        return InstanceParams.from_dict(stored) if isinstance(stored, dict) else None
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{name}={value} is out of range: use a value between 0 and 1")


def _check_non_negative(name: str, value: float) -> None:
    if not np.isfinite(value) or value < 0:
        raise ConfigError(f"{name}={value} is invalid: use a physical size >= 0 (0 turns it off)")


@dataclass(frozen=True)
class InstanceParams:
    """Post-processing of the learned outputs; stored in the bundle as JSON.

    Attributes
    ----------
    foreground_threshold : float
        A voxel is part of an object when its foreground probability is at least this.
    seed_height : float
        A maximum of the normalised distance map (values in [0, 1]) starts an
        object when it rises at least this much above the saddle joining it to a
        higher maximum. Lower splits more, higher merges more.
    min_distance : float
        Seeds whose centres are closer than this (physical units, e.g. µm) merge
        into one object; 0 turns it off.
    min_size : float
        Objects smaller than this area (2D) or volume (3D), in physical units
        (voxel count x product of the spacing), are removed; 0 keeps all.
    """

    foreground_threshold: float = 0.5
    seed_height: float = 0.3
    min_distance: float = 0.0
    min_size: float = 0.0

    def __post_init__(self) -> None:
        _check_fraction("foreground_threshold", self.foreground_threshold)
        _check_fraction("seed_height", self.seed_height)
        _check_non_negative("min_distance", self.min_distance)
        _check_non_negative("min_size", self.min_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping of the parameters."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "InstanceParams":
        """Rebuild from :meth:`to_dict` output; unknown keys are a ConfigError."""
        unknown = set(data) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ConfigError(f"instance parameters {sorted(unknown)} are unknown (they are "
                              f"{', '.join(cls.__dataclass_fields__)}): fix the name where they are given, "
                              "the relabel() argument or the bundle's config.json")  # trial 47: config.json only
        return cls(**{k: float(v) for k, v in data.items()})


def params_from_labels(labels: np.ndarray, spacing: Sequence[float] | None = None) -> InstanceParams:
    """Default post-processing for objects like those in the training labels.

    ``min_size`` becomes a quarter of the 10th percentile of the training
    objects' areas/volumes (physical units): noise specks go, small true objects
    stay. The thresholds keep their defaults.

    Parameters
    ----------
    labels : np.ndarray
        Integer instance labels the network is trained on, (Y, X) or (Z, Y, X).
    spacing : sequence of float, optional
        Voxel size per axis; default all 1.

    Returns
    -------
    InstanceParams
    """
    labels = check_instances(labels)
    spacing = check_spacing(spacing, labels.ndim)
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel())[1:]
    counts = counts[counts > 0]
    if len(counts) == 0:
        raise InputError("instance labels have no objects: paint at least one object (ids > 0) to train on")
    size = float(np.percentile(counts, 10)) * float(np.prod(spacing))
    return InstanceParams(min_size=round(0.25 * size, 6))


def foreground_probability(class_probabilities: np.ndarray) -> np.ndarray:
    """Probability that a voxel belongs to any object: 1 - P(background).

    Parameters
    ----------
    class_probabilities : np.ndarray
        Softmax output, (C, Y, X) or (C, Z, Y, X), channel 0 background
        (C = 3 for background / interior / boundary).

    Returns
    -------
    np.ndarray
        float32 (Y, X) or (Z, Y, X) in [0, 1].
    """
    probs = np.asarray(class_probabilities)
    if probs.ndim not in (3, 4) or probs.shape[0] < 2:
        raise InputError(
            f"class probabilities have shape {probs.shape}: expected (C, Y, X) or (C, Z, Y, X) with C >= 2"
        )
    return (1.0 - probs[0]).astype(np.float32)


def _footprint(radius: float, spacing: tuple[float, ...]) -> np.ndarray:
    """Boolean ellipsoid covering ``radius`` physical units along each axis."""
    half = [int(np.floor(radius / s)) for s in spacing]
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    dist2 = sum((g * s) ** 2 for g, s in zip(grids, spacing))
    return dist2 <= radius**2


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber the ids present to 1..N (uint32), 0 stays background."""
    from skimage.segmentation import relabel_sequential

    out, _, _ = relabel_sequential(labels)
    return out.astype(np.uint32, copy=False)


def remove_small_instances(labels: np.ndarray, min_size: float, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Drop objects whose area/volume is below ``min_size`` physical units; ids become 1..N.

    Parameters
    ----------
    labels : np.ndarray
        Integer instance labels, (Y, X) or (Z, Y, X). Not modified.
    min_size : float
        Smallest kept area (2D) or volume (3D) in physical units; 0 keeps all.
    spacing : sequence of float, optional
        Voxel size per axis; default all 1.

    Returns
    -------
    np.ndarray
        uint32 labels of the same shape, ids 1..N in the order of the input ids.
    """
    labels = check_instances(labels)
    spacing = check_spacing(spacing, labels.ndim)
    out = np.asarray(labels, dtype=np.int64)
    if min_size > 0:
        counts = np.bincount(out.ravel())
        small = counts * float(np.prod(spacing)) < min_size
        small[0] = False
        if small.any():
            out = np.where(small[out], 0, out)
    return _relabel(out)


def seeded_watershed(
    height: np.ndarray,
    mask: np.ndarray,
    spacing: tuple[float, ...],
    seed_height: float,
    min_distance: float,
) -> np.ndarray:
    """Split ``mask`` into objects by a watershed on ``-height`` from its h-maxima.

    Parameters
    ----------
    height : np.ndarray
        float map, (Y, X) or (Z, Y, X), high at object centres (a distance map).
    mask : np.ndarray
        bool foreground of the same shape; the watershed stays inside it.
    spacing : tuple of float
        Voxel size per axis (physical units).
    seed_height : float
        Minimum dynamic of a maximum to become a seed (units of ``height``).
    min_distance : float
        A seed whose centre is closer than this physical distance to a higher seed of the same
        foreground component joins it; 0 turns it off.

    Returns
    -------
    np.ndarray
        int32 labels; foreground components without a seed keep one id each.
    """
    from scipy import ndimage as ndi  # here: the Predict widget reads stored_params on the GUI thread
    from skimage.morphology import local_maxima, reconstruction
    from skimage.segmentation import watershed

    height = np.where(mask, height, 0.0).astype(np.float64)
    if seed_height > 0:
        # h-maxima as the regional maxima of the reconstruction of (height - h)
        # under height: two equal peaks joined by a ridge higher than peak - h
        # are one seed (skimage's h_maxima keeps such twins apart)
        height_h = reconstruction(height - seed_height, height, method="dilation")
    else:
        height_h = height
    peaks = local_maxima(height_h, allow_borders=True) & mask
    # a discrete distance map often peaks on two diagonal neighbours: one seed
    markers, n_seeds = ndi.label(peaks, structure=np.ones((3,) * peaks.ndim, bool))
    if min_distance > 0 and n_seeds > 1:
        markers, n_seeds = _merge_close_seeds(markers, n_seeds, spacing, min_distance, height, mask)
    out = watershed(-height, markers, mask=mask)
    unseeded = mask & (out == 0)
    if unseeded.any():
        extra, _ = ndi.label(unseeded)
        out = np.where(unseeded, extra + n_seeds, out)
    return out.astype(np.int32, copy=False)


def _merge_close_seeds(markers: np.ndarray, n_seeds: int, spacing: tuple[float, ...], min_distance: float,
                       height: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Seeds closer than ``min_distance`` (physical, between centroids) to a higher seed of the
    same foreground component join it, highest first, as ``peak_local_max``'s ``min_distance``
    keeps the highest peak. Merging every close pair chained across a cluster and gave nuclei
    that do not touch one id (trial 43: min distance 100 µm made 45 separate nuclei object 1);
    skimage merges no seeds by label and distance, so this is ours."""
    from scipy import ndimage as ndi
    from scipy.spatial import cKDTree

    index = np.arange(1, n_seeds + 1)
    centres = np.array(ndi.center_of_mass(markers > 0, markers, index)) * np.array(spacing)
    components = ndi.label(mask)[0]
    component = np.asarray(ndi.maximum(components, markers, index))
    peak = np.asarray(ndi.maximum(height, markers, index))
    tree = cKDTree(centres)
    owner = np.full(n_seeds, -1)
    for i in np.argsort(-peak, kind="stable"):
        near = [j for j in tree.query_ball_point(centres[i], min_distance)
                if owner[j] == j and component[j] == component[i] and j != i]
        owner[i] = min(near, key=lambda j: float(np.sum((centres[j] - centres[i]) ** 2))) if near else i
    kept = np.flatnonzero(owner == np.arange(n_seeds))
    new_id = np.zeros(n_seeds, np.int32)
    new_id[kept] = np.arange(1, len(kept) + 1)
    lut = np.concatenate([[0], new_id[owner]]).astype(np.int32)
    return lut[markers], len(kept)


def instances_from_outputs(
    foreground: np.ndarray,
    distance: np.ndarray,
    spacing: Sequence[float] | None = None,
    params: InstanceParams | None = None,
) -> np.ndarray:
    """Instance labels from cached network outputs; cheap to re-run with new ``params``.

    Parameters
    ----------
    foreground : np.ndarray
        float foreground probability in [0, 1], (Y, X) or (Z, Y, X)
        (:func:`foreground_probability` of the class output), or a bool mask.
    distance : np.ndarray
        float predicted normalised distance map of the same shape (about 1 at
        object centres, 0 at borders; see :func:`~napari_medml.instances.targets.instance_target`).
    spacing : sequence of float, optional
        Voxel size per axis in physical units; default all 1.
    params : InstanceParams, optional
        Thresholds and sizes; default ``InstanceParams()``.

    Returns
    -------
    np.ndarray
        uint32 instance labels of the same shape: 0 background, objects 1..N.

    Raises
    ------
    InputError
        If the two maps differ in shape, are not 2D/3D, or ``spacing`` does not fit.
    """
    params = params or InstanceParams()
    foreground = np.asarray(foreground)
    distance = np.asarray(distance, dtype=np.float32)
    check_same_shape(foreground, distance, "foreground probability", "distance map")
    if foreground.ndim not in (2, 3):
        raise InputError(f"network outputs have shape {foreground.shape}: expected (Y, X) or (Z, Y, X)")
    spacing = check_spacing(spacing, foreground.ndim)
    mask = foreground >= params.foreground_threshold if foreground.dtype != bool else foreground
    labels = seeded_watershed(distance, mask, spacing, params.seed_height, params.min_distance)
    return remove_small_instances(labels, params.min_size, spacing)
