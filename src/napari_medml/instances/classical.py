"""Classical instance baselines that need no training: Otsu, then components or a watershed.

The numbers a learned instance model has to beat (see
``benchmarks/bench_instances_classical.py``): Otsu's threshold (Otsu, IEEE
Trans. SMC 9(1), 1979) on the smoothed image, holes filled, then each connected
component as one object, or a watershed of the inverted Euclidean distance
transform of the mask from its peaks (``skimage.feature.peak_local_max``), the
textbook split of touching blobs. All sizes are in physical units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from scipy import ndimage as ndi

from napari_medml.errors import ConfigError
from napari_medml.errors import InputError
from napari_medml.instances._checks import check_spacing
from napari_medml.instances.postprocess import (
    _check_non_negative,
    _footprint,
    _merge_close_seeds,
    remove_small_instances,
)

__all__ = ["ClassicalParams", "classical_instances", "connected_instances"]


@dataclass(frozen=True)
class ClassicalParams:
    """The classical baseline: Otsu threshold, then connected components or a distance watershed.

    Attributes
    ----------
    method : {"watershed", "connected"}
        ``"watershed"`` splits touching objects at the seeds of the distance
        transform of the Otsu mask; ``"connected"`` keeps each connected component.
    smooth : float
        Gaussian smoothing of the image before Otsu, sigma in physical units; 0 off.
    min_distance : float
        Physical distance between distance-transform peaks (the watershed seeds).
    seed_height : float
        Minimum dynamic of a distance-transform peak, in physical units; 0 keeps every peak.
    min_size : float
        Smallest kept object area/volume in physical units; 0 keeps all.
    """

    method: Literal["watershed", "connected"] = "watershed"
    smooth: float = 1.0
    min_distance: float = 5.0
    seed_height: float = 0.0
    min_size: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in ("watershed", "connected"):
            raise ConfigError(f"method={self.method!r} is unknown: use 'watershed' or 'connected'")
        for name in ("smooth", "min_distance", "seed_height", "min_size"):
            _check_non_negative(name, getattr(self, name))


def connected_instances(mask: np.ndarray) -> np.ndarray:
    """Each face-connected foreground component as one object (uint32 ids 1..N)."""
    labels, _ = ndi.label(np.asarray(mask, dtype=bool))
    return labels.astype(np.uint32, copy=False)


def classical_instances(
    image: np.ndarray, spacing: Sequence[float] | None = None, params: ClassicalParams | None = None
) -> np.ndarray:
    """The classical baseline for bright objects on a dark background.

    Parameters
    ----------
    image : np.ndarray
        float or integer intensities, (Y, X) or (Z, Y, X), one channel.
    spacing : sequence of float, optional
        Voxel size per axis in physical units; default all 1.
    params : ClassicalParams, optional
        Method and its parameters; default ``ClassicalParams()``.

    Returns
    -------
    np.ndarray
        uint32 instance labels of the image's shape, objects 1..N.

    Raises
    ------
    InputError
        If the image is not 2D/3D or is constant (Otsu needs two intensity levels).
    """
    from skimage.filters import threshold_otsu

    params = params or ClassicalParams()
    image = np.asarray(image, dtype=np.float32)
    if image.ndim not in (2, 3):
        raise InputError(f"image has shape {image.shape}: expected one channel, (Y, X) or (Z, Y, X)")
    spacing = check_spacing(spacing, image.ndim)
    if params.smooth > 0:
        image = ndi.gaussian_filter(image, sigma=[params.smooth / s for s in spacing])
    if float(image.max()) == float(image.min()):
        raise InputError("image is constant: Otsu's threshold needs at least two intensity levels")
    mask = ndi.binary_fill_holes(image > threshold_otsu(image))
    if params.method == "connected":
        labels = connected_instances(mask)
    else:
        dist = ndi.distance_transform_edt(mask, sampling=spacing)
        labels = _peak_watershed(dist, mask, spacing, params)
    return remove_small_instances(labels, params.min_size, spacing)


def _peak_watershed(dist: np.ndarray, mask: np.ndarray, spacing: tuple[float, ...], params: ClassicalParams) -> np.ndarray:
    """Watershed of ``-dist`` from its peaks at least ``min_distance`` apart (physical units)."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    components, _ = ndi.label(mask)
    footprint = _footprint(max(params.min_distance, min(spacing)), spacing)
    peaks = peak_local_max(dist, footprint=footprint, labels=components, exclude_border=False)
    if params.seed_height > 0:
        from skimage.morphology import h_maxima

        keep = h_maxima(dist, params.seed_height).astype(bool)[tuple(peaks.T)]
        peaks = peaks[keep]
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # a distance transform has plateaus and ridges of equal values: all their
    # pixels are peaks, so peaks closer than min_distance become one seed
    n_seeds = len(peaks)
    if params.min_distance > 0 and n_seeds > 1:
        markers, n_seeds = _merge_close_seeds(markers, n_seeds, spacing, params.min_distance, dist, mask)
    out = watershed(-dist, markers, mask=mask)
    unseeded = mask & (out == 0)
    if unseeded.any():
        extra, _ = ndi.label(unseeded)
        out = np.where(unseeded, extra + n_seeds, out)
    return out
