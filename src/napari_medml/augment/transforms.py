"""Augmentation configs -> MONAI dictionary transforms.

``augmentation_transforms`` turns an :class:`~napari_medml.config.AugmentConfig` into
one MONAI ``Compose`` of *dictionary* transforms, so that image and labels are moved by
the same random draw and stay aligned. Training and the preview
(:mod:`napari_medml.augment.previews`) use this very function, so what a user previews
is what the network sees.

Intensity transforms are scaled for standardised images (zero mean, unit standard
deviation), which is what training feeds them.

Label ids pass the float resampling exactly: ids beyond float32's exact integer range
(2**24) are mapped to 0..K-1 first and back afterwards (:func:`compact_ids`).

torch and MONAI are imported inside the functions: importing this module is cheap
(the widgets import it when they dock).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from napari_medml.config import AugmentConfig
from napari_medml.errors import InputError

if TYPE_CHECKING:
    from monai.transforms import Compose

__all__ = ["AUGMENT_DESCRIPTIONS", "FLOAT32_EXACT", "augmentation_transforms", "compact_ids"]

AUGMENT_DESCRIPTIONS: dict[str, str] = {
    "flip": "Mirror image and labels along each spatial axis (strength is not used).",
    "rotate90": "Quarter turns in the last two axes (180 degrees only for non-square "
    "patches; strength is not used).",
    "affine": "Random rotation and zoom; strength 1: up to 15 degrees and +/-15 % "
    "(3D: smaller out-of-plane rotation for anisotropic spacing).",
    "elastic": "Smooth elastic deformation; strength 1: displacements of a few voxels.",
    "noise": "Additive Gaussian noise; strength 1: standard deviation up to 0.1 "
    "(of the standardised image).",
    "smooth": "Gaussian blur; strength 1: sigma 0.5-1 voxel.",
    "contrast": "Gamma contrast change; strength 1: gamma 0.7-1.5.",
    "intensity": "Scale and shift the intensities; strength 1: up to 10 % each.",
    "bias_field": "Smooth multiplicative intensity field (MRI-like shading); "
    "strength 1: coefficients up to 0.3.",
}

_IMAGE_ONLY = ("noise", "smooth", "contrast", "intensity", "bias_field")
FLOAT32_EXACT = 2**24  # float32 holds every integer of smaller magnitude exactly
_TABLE = "{}__ids"  # dict key of a label key's id table while its ids are compacted


def compact_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map label ids to ``0..K-1`` (0 stays 0), so they survive float32 arithmetic.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer ids, any magnitude.

    Returns
    -------
    compact : numpy.ndarray
        int32 (int64 past 2**31 distinct ids), ``labels``' shape; id 0 becomes 0.
    table : numpy.ndarray
        int64, ``table[compact] == labels``; ``table[0] == 0``.

    Examples
    --------
    >>> compact, table = compact_ids(np.array([0, 2**30, 7]))
    >>> compact.tolist(), table[compact].tolist()
    ([0, 2, 1], [0, 1073741824, 7])
    """
    ids, inverse = np.unique(np.asarray(labels), return_inverse=True)
    if ids.size and ids[0] == 0:
        table, compact = ids, inverse
    else:  # 0 (what padding brings in) must be index 0: move it, or add it
        table = np.concatenate([[0], ids[ids != 0]])
        compact = np.searchsorted(ids[ids != 0], np.asarray(labels).ravel()) + 1
        compact[np.asarray(labels).ravel() == 0] = 0
    dtype = np.int32 if table.size < 2**31 else np.int64
    return compact.reshape(np.shape(labels)).astype(dtype), table.astype(np.int64)


class _CompactIds:
    """Label keys with ids beyond float32's exact range -> 0..K-1 (cheap when not needed:
    narrow dtypes are never looked at, others by their extremes)."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = tuple(keys)

    def __call__(self, data: dict) -> dict:
        data = dict(data)
        for key in self.keys:
            values = np.asarray(data[key])
            if values.dtype.kind not in "iu" or values.dtype.itemsize < 4 or not values.size:
                continue
            if values.max() < FLOAT32_EXACT and values.min() > -FLOAT32_EXACT:
                continue
            data[key], data[_TABLE.format(key)] = compact_ids(values)
            if len(data[_TABLE.format(key)]) >= FLOAT32_EXACT:
                raise InputError(f"labels '{key}' hold {len(data[_TABLE.format(key)])} distinct ids, more than "
                                 f"float32 resampling keeps apart ({FLOAT32_EXACT}): relabel them with fewer ids")
        return data


class _RestoreIds:
    """The ids :class:`_CompactIds` replaced, back (int64)."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = tuple(keys)

    def __call__(self, data: dict) -> dict:
        import torch

        data = dict(data)
        for key in self.keys:
            table = data.pop(_TABLE.format(key), None)
            if table is not None:
                data[key] = torch.as_tensor(table)[data[key]]
        return data


def augmentation_transforms(
    config: AugmentConfig,
    spatial_dims: int,
    keys: Sequence[str] = ("image", "label"),
    *,
    seed: int | None = None,
    spatial_shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
) -> Compose:
    """Build the MONAI dictionary transforms for one augmentation config.

    Parameters
    ----------
    config : AugmentConfig
        Probability and strength of each transform; transforms with probability 0
        (or strength 0, for those scaled by strength) are left out.
    spatial_dims : int
        2 or 3.
    keys : sequence of str
        Dictionary keys. The first is the image, ``(C, *spatial)`` float; the others
        are label-like, ``(1, *spatial)`` integer (e.g. labels and a scribble mask):
        they follow every spatial transform with nearest-neighbour interpolation and
        never see intensity transforms; their ids come back exactly, also above
        float32's exact range (:func:`compact_ids`).
    seed : int, optional
        Seeds the random state of the whole pipeline, for reproducible draws.
    spatial_shape : sequence of int, optional
        The patch shape the pipeline will see. When the last two axes differ, a
        quarter turn would change the shape, so ``rotate90`` turns by 180 degrees only.
    spacing : sequence of float, optional
        Voxel spacing. In 3D, when the first axis is much coarser than the others,
        out-of-plane rotation is reduced.

    Returns
    -------
    monai.transforms.Compose
        Takes a dict of numpy arrays or torch tensors; returns plain torch tensors,
        the image as float32 and label keys as int64.
    """
    import torch
    from monai import transforms as mt

    if spatial_dims not in (2, 3):
        raise InputError(f"augmentation needs spatial_dims 2 or 3, got {spatial_dims}")
    keys = tuple(keys)
    if not keys:
        raise InputError("augmentation needs at least one key (the image)")
    image_key, label_keys = keys[0], keys[1:]
    # Linear interpolation for the image, nearest for labels so ids stay ids.
    modes = ("bilinear",) + ("nearest",) * len(label_keys)
    spatial = dict(keys=keys, mode=modes, padding_mode="zeros")

    steps: list = [
        mt.EnsureTyped(keys=image_key, data_type="tensor", dtype=torch.float32),
    ]

    def on(name: str) -> bool:
        spec = getattr(config, name)
        if spec.prob <= 0:
            return False
        return name in ("flip", "rotate90") or spec.strength > 0

    if on("flip"):
        for axis in range(spatial_dims):
            steps.append(mt.RandFlipd(keys=keys, prob=config.flip.prob, spatial_axis=axis))
    if on("rotate90"):
        axes = (spatial_dims - 2, spatial_dims - 1)
        if spatial_shape is not None and spatial_shape[-1] != spatial_shape[-2]:
            # A half turn is a flip of both in-plane axes; it keeps the shape.
            steps.append(mt.RandFlipd(keys=keys, prob=config.rotate90.prob, spatial_axis=axes))
        else:
            steps.append(mt.RandRotate90d(keys=keys, prob=config.rotate90.prob, spatial_axes=axes))
    if on("affine"):
        s = config.affine.strength
        angle = math.radians(15.0) * s
        if spatial_dims == 2:
            rotate = (angle,)
        else:
            # MONAI's first 3D angle turns within the last two axes (Y, X): in-plane.
            out_of_plane = angle
            if spacing is not None and len(spacing) == 3:
                if spacing[0] > 2.0 * min(spacing[1], spacing[2]):
                    out_of_plane = angle / 4.0
            rotate = (angle, out_of_plane, out_of_plane)
        steps.append(
            mt.RandAffined(
                prob=config.affine.prob,
                rotate_range=rotate,
                scale_range=(0.15 * s,) * spatial_dims,
                **spatial,
            )
        )
    if on("elastic"):
        s = config.elastic.strength
        if spatial_dims == 2:
            # Control points every 24 px, moved up to 3 px at strength 1: mean
            # displacement ~2-3 px, at most ~5-8 px.
            steps.append(
                mt.Rand2DElasticd(
                    spacing=(24.0, 24.0),
                    magnitude_range=(0.0, 3.0 * s),
                    prob=config.elastic.prob,
                    **spatial,
                )
            )
        else:
            # Smoothed random field (sigma 5-8 voxels) at strength 1: mean displacement
            # ~1.5-2.5 voxels, at most ~3-5 (measured), like the 2D setting.
            steps.append(
                mt.Rand3DElasticd(
                    sigma_range=(5.0, 8.0),
                    magnitude_range=(100.0 * s, 300.0 * s),
                    prob=config.elastic.prob,
                    **spatial,
                )
            )
    resampled = bool(label_keys) and len(steps) > 1  # a spatial transform moves the labels
    if resampled:
        # float for resampling; integer again at the end (nearest keeps values exact, and
        # ids past float32's exact range are compacted first, restored last).
        steps[1:1] = [_CompactIds(label_keys),
                      mt.EnsureTyped(keys=label_keys, data_type="tensor", dtype=torch.float32)]
    if on("noise"):
        steps.append(
            mt.RandGaussianNoised(
                keys=image_key, prob=config.noise.prob, std=0.1 * config.noise.strength
            )
        )
    if on("smooth"):
        sigma = (0.5 * config.smooth.strength, 1.0 * config.smooth.strength)
        steps.append(
            mt.RandGaussianSmoothd(
                keys=image_key,
                sigma_x=sigma,
                sigma_y=sigma,
                sigma_z=sigma,
                prob=config.smooth.prob,
            )
        )
    if on("contrast"):
        s = config.contrast.strength
        steps.append(
            mt.RandAdjustContrastd(
                keys=image_key,
                prob=config.contrast.prob,
                gamma=(max(1.0 - 0.3 * s, 0.1), 1.0 + 0.5 * s),
            )
        )
    if on("intensity"):
        s = config.intensity.strength
        steps.append(
            mt.RandScaleIntensityd(keys=image_key, factors=0.1 * s, prob=config.intensity.prob)
        )
        steps.append(
            mt.RandShiftIntensityd(keys=image_key, offsets=0.1 * s, prob=config.intensity.prob)
        )
    if on("bias_field"):
        steps.append(
            mt.RandBiasFieldd(
                keys=image_key,
                coeff_range=(0.0, 0.3 * config.bias_field.strength),
                prob=config.bias_field.prob,
            )
        )

    steps.append(mt.EnsureTyped(keys=image_key, dtype=torch.float32, track_meta=False))
    if label_keys:
        steps.append(mt.EnsureTyped(keys=label_keys, dtype=torch.int64, track_meta=False))
    if resampled:
        steps.append(_RestoreIds(label_keys))
    compose = mt.Compose(steps)
    if seed is not None:
        compose.set_random_state(seed=seed)
    return compose
