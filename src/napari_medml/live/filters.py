"""Filter features of one image or box: the per-voxel feature set of the live stages.

At each scale sigma: Gaussian-smoothed intensity, gradient magnitude, a
difference of Gaussians and the eigenvalues of the Hessian, plus the raw
intensity; one set per channel. This is ilastik's feature set (Berg et al. 2019,
Nature Methods 16:1226) and scikit-image's ``multiscale_basic_features``
(intensity, edges, texture), made anisotropy-aware; see ``features`` for the
block cache and why these are not computed by ``multiscale_basic_features``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_medml.errors import InputError
from napari_medml.preprocessing.inputs import FILL_NAN

__all__ = ["FeatureConfig", "Region", "feature_names", "halo", "multiscale_features", "prepare_image"]

Region = tuple[slice, ...]


@dataclass(frozen=True)
class FeatureConfig:
    """How per-voxel features are computed and cached.

    Attributes
    ----------
    sigmas : tuple of float
        Gaussian scales, in units of the finest voxel spacing (so 1.0 means one
        voxel along the finest axis; along a coarser axis the sigma in voxels is
        ``sigma * min(spacing) / spacing[axis]``). Default 1, 2, 4, 8, 16 as
        ``multiscale_basic_features(sigma_min=1, sigma_max=16)``; ilastik's
        largest default scale is 10.
    truncate : float
        Gaussian window half-width in sigmas (vigra, and so ilastik, use 3).
    block : int or None
        Block edge in voxels per axis (clipped to the image); None: 256 for 2D
        images, 64 for 3D volumes.
    memory_budget : int
        Bytes the feature cache may hold. The whole stack is kept in float32 if it
        fits, else in float16 (features are z-scored, so float16's 3 significant
        digits are enough for a random forest's thresholds), else blocks are
        evicted least recently used first and recomputed when needed again.
    group_voxels : int
        Most voxels (halo included) filtered in one go; missing blocks of a
        request are computed together up to this size to share their halos.
    """

    sigmas: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
    truncate: float = 3.0
    block: int | None = None
    memory_budget: int = 3 * 1024**3
    group_voxels: int = 1 << 23

    def __post_init__(self) -> None:
        if not self.sigmas or any(not (s > 0) for s in self.sigmas):
            raise InputError(f"feature sigmas must be positive numbers, got {self.sigmas}")
        if list(self.sigmas) != sorted(self.sigmas):
            raise InputError(f"feature sigmas must be increasing, got {self.sigmas}")
        if self.truncate < 1:
            raise InputError(f"feature truncate must be at least 1 sigma, got {self.truncate}")
        if self.block is not None and self.block < 8:
            raise InputError(f"feature block must be at least 8 voxels, got {self.block}")


def feature_names(ndim: int, channels: int, sigmas: Sequence[float]) -> list[str]:
    """Names of the features in the order of the last axis of a feature array."""
    per: list[str] = ["intensity"]
    for s in sigmas:
        per += [f"gaussian_{s:g}", f"gradient_{s:g}", f"dog_{s:g}"]
        per += [f"hessian{k}_{s:g}" for k in range(ndim)]
    if channels == 1:
        return per
    return [f"c{c}_{name}" for c in range(channels) for name in per]


def prepare_image(image: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """Copy an image to float32, channels last, each channel z-scored.

    Parameters
    ----------
    image : np.ndarray
        2D (Y, X) or 3D (Z, Y, X) image, with one extra channel axis at
        ``channel_axis`` if given.
    channel_axis : int or None
        Position of the channel axis in ``image``.

    Returns
    -------
    np.ndarray
        float32 array (*spatial, C), a new array.

    Raises
    ------
    InputError
        The image is not 2D or 3D (after removing the channel axis), is empty or
        has non-finite values.
    """
    arr = np.asarray(image)
    if channel_axis is None:
        arr = arr[..., None]
    else:
        if not -arr.ndim <= channel_axis < arr.ndim:
            raise InputError(f"image has {arr.ndim} axes, channel_axis={channel_axis} is not one of them")
        arr = np.moveaxis(arr, channel_axis, -1)
    if arr.ndim - 1 not in (2, 3):
        raise InputError(
            f"image has spatial shape {arr.shape[:-1]}: live segmentation needs a 2D (Y, X) or 3D "
            "(Z, Y, X) image; name the channel axis with channel_axis"
        )
    if arr.size == 0 or min(arr.shape[:-1]) < 2:
        raise InputError(f"image spatial shape {arr.shape[:-1]} is too small: each axis needs 2 voxels or more")
    out = arr.astype(np.float32, copy=True)
    if not np.isfinite(out).all():
        raise InputError("image has NaN or infinite values: " + FILL_NAN)
    for c in range(out.shape[-1]):
        chan = out[..., c]
        chan -= chan.mean(dtype=np.float64)
        std = float(chan.std(dtype=np.float64))
        if std > 0:
            chan /= std
    return out


def _sigma_voxels(sigma: float, spacing: Sequence[float]) -> tuple[float, ...]:
    finest = min(spacing)
    return tuple(sigma * finest / s for s in spacing)


def halo(config: FeatureConfig, spacing: Sequence[float]) -> tuple[int, ...]:
    """Voxels of context per axis that make a box's features equal the whole image's."""
    # scipy's window radius is int(truncate * sigma + 0.5); +2 for the two
    # np.gradient steps of the Hessian (one-sided differences at the box edge).
    top = _sigma_voxels(config.sigmas[-1], spacing)
    return tuple(int(config.truncate * s + 0.5) + 2 for s in top)


def _eigvals_sym3(h: list[np.ndarray]) -> list[np.ndarray]:
    """Eigenvalues (decreasing) of symmetric 3x3 matrices given by their upper entries.

    Closed form (Smith 1961, Commun. ACM 4:168), vectorised in float32: about ten
    times faster than ``np.linalg.eigvalsh`` on (N, 3, 3) stacks, which
    scikit-image's ``hessian_matrix_eigvals`` uses for 3D.
    """
    a00, a01, a02, a11, a12, a22 = h
    q = (a00 + a11 + a22) / 3
    b00, b11, b22 = a00 - q, a11 - q, a22 - q
    p1 = a01 * a01 + a02 * a02 + a12 * a12
    p = np.sqrt((b00 * b00 + b11 * b11 + b22 * b22 + 2 * p1) / 6)
    safe = np.where(p > 0, p, 1).astype(np.float32)
    det = (b00 * (b11 * b22 - a12 * a12) - a01 * (a01 * b22 - a12 * a02) + a02 * (a01 * a12 - b11 * a02))
    r = np.clip(det / (2 * safe**3), -1, 1)
    phi = np.arccos(r) / 3
    e1 = q + 2 * p * np.cos(phi)
    e3 = q + 2 * p * np.cos(phi + np.float32(2 * np.pi / 3))
    return [e1, 3 * q - e1 - e3, e3]


def _eigvals_sym2(h: list[np.ndarray]) -> list[np.ndarray]:
    a00, a01, a11 = h
    mean = (a00 + a11) / 2
    root = np.sqrt(a01 * a01 + ((a00 - a11) / 2) ** 2)
    return [mean + root, mean - root]


def _smooth(chan: np.ndarray, sigma: Sequence[float], truncate: float, need: Region) -> np.ndarray:
    """``gaussian_filter(chan)[need]``, cropping each axis as soon as it is filtered.

    SciPy's ``gaussian_filter`` runs one 1D pass per axis over the whole array; a
    box's halo is up to 100 voxels per axis at sigma 16, so after the pass along
    an axis only the ``need`` part of it is kept and the later passes (and the
    derivatives) run on far fewer voxels. Same passes, same order, same float32
    output as ``gaussian_filter``, so the values are those of the whole image.
    """
    radius = [int(truncate * s + 0.5) for s in sigma]
    # the input a voxel of `need` depends on: its window, clipped to the box
    src = tuple(slice(max(0, q.start - r), min(n, q.stop + r)) for q, r, n in zip(need, radius, chan.shape))
    out = chan[src]
    for axis, (s, q, p) in enumerate(zip(sigma, need, src)):
        out = ndi.gaussian_filter1d(out, s, axis=axis, truncate=truncate, mode="reflect", output=np.float32)
        keep = [slice(None)] * out.ndim
        keep[axis] = slice(q.start - p.start, q.stop - p.start)
        out = out[tuple(keep)]
    return out


def _channel_features(chan: np.ndarray, spacing: Sequence[float], config: FeatureConfig,
                      inner: Region, out: np.ndarray) -> None:
    """Write the features of ``chan[inner]`` into ``out`` (*inner_shape, F_per_channel).

    ``chan`` holds the box with its halo (``halo``): each scale is filtered over
    its own window only and the derivatives over ``inner`` plus their two steps.
    """
    ndim = chan.ndim
    # Derivatives in units of the finest spacing: isotropic images get plain voxel differences.
    steps = [s / min(spacing) for s in spacing]
    # the two np.gradient steps of the Hessian: smooth is needed 2 voxels around `inner`
    need = tuple(slice(max(0, q.start - 2), min(n, q.stop + 2)) for q, n in zip(inner, chan.shape))
    local = tuple(slice(q.start - p.start, q.stop - p.start) for q, p in zip(inner, need))
    out[..., 0] = chan[inner]
    previous = chan[inner]
    k = 1
    for sigma in config.sigmas:
        smooth = _smooth(chan, _sigma_voxels(sigma, spacing), config.truncate, need)
        grads = np.gradient(smooth, *steps)
        out[..., k] = smooth[local]
        out[..., k + 1] = np.sqrt(sum(g[local] * g[local] for g in grads))
        out[..., k + 2] = previous - smooth[local]  # difference to the next finer scale
        upper = [np.gradient(grads[i], steps[j], axis=j)[local] for i in range(ndim) for j in range(i, ndim)]
        del grads
        eig = _eigvals_sym3(upper) if ndim == 3 else _eigvals_sym2(upper)
        for e, values in enumerate(eig):
            out[..., k + 3 + e] = values
        del upper, eig
        previous = smooth[local]
        k += 3 + ndim


def multiscale_features(prepared: np.ndarray, spacing: Sequence[float], config: FeatureConfig,
                        box: Region | None = None) -> np.ndarray:
    """Features of a whole prepared image, or of one box of it (computed with a halo).

    Parameters
    ----------
    prepared : np.ndarray
        float32 (*spatial, C) from ``prepare_image``.
    spacing : sequence of float
        Voxel size per spatial axis, in any one unit (e.g. mm).
    config : FeatureConfig
        Scales and window.
    box : tuple of slice, optional
        Region (with steps of 1) to return; default the whole image.

    Returns
    -------
    np.ndarray
        float32 (*box_shape, F) with ``F = C * (1 + len(sigmas) * (3 + ndim))``;
        the names are ``feature_names(ndim, C, config.sigmas)``.
    """
    spatial = prepared.shape[:-1]
    box = tuple(slice(0, n) for n in spatial) if box is None else tuple(
        slice(*s.indices(n)[:2]) for s, n in zip(box, spatial)
    )
    margin = halo(config, spacing)
    padded = tuple(slice(max(0, s.start - h), min(n, s.stop + h)) for s, h, n in zip(box, margin, spatial))
    inner = tuple(slice(s.start - p.start, s.stop - p.start) for s, p in zip(box, padded))
    ndim = len(spatial)
    per = 1 + len(config.sigmas) * (3 + ndim)
    channels = prepared.shape[-1]
    out = np.empty(tuple(s.stop - s.start for s in box) + (per * channels,), np.float32)
    for c in range(channels):
        _channel_features(np.ascontiguousarray(prepared[padded + (c,)]), spacing, config, inner,
                          out[..., c * per:(c + 1) * per])
    return out
