"""Augmentation configs -> MONAI dictionary transforms, and a preview of them.

``augmentation_transforms`` turns an :class:`~napari_medml.config.AugmentConfig` into
one MONAI ``Compose`` of *dictionary* transforms, so that image and labels are moved by
the same random draw and stay aligned. Training and :func:`preview` use this very
function, so what a user previews is what the network sees.

Intensity transforms are scaled for standardised images (zero mean, unit standard
deviation), which is what training feeds them; :func:`preview` standardises each
channel, augments, and maps the result back to the input's units.

What training passes the builder, :func:`preview` passes too: the patch shape the
transforms see (``spatial_shape``: rotate90 turns a quarter only on square patches) and
the voxel spacing (anisotropic volumes get less out-of-plane rotation). A preview of
the training patch is a crop of that shape (:func:`preview_window`), padded at the end
where the image is smaller, as training pads.

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

__all__ = ["AUGMENT_DESCRIPTIONS", "augmentation_transforms", "compact_ids", "preview", "preview_window"]

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


def preview_window(shape: Sequence[int], size: Sequence[int | None], centre: Sequence[float] | None = None
                   ) -> tuple[slice, ...]:
    """The crop a preview draws from: ``size`` voxels around ``centre``, inside the image.

    Parameters
    ----------
    shape : sequence of int
        The image's spatial shape.
    size : sequence of int or None
        The crop's size along the last ``len(size)`` axes (e.g. the training patch);
        None along an axis keeps it whole. Axes in front of them are kept whole.
    centre : sequence of float, optional
        Voxel coordinates (one per axis of ``shape``, e.g. where the viewer looks);
        default the image's middle. The crop is shifted to lie inside the image, and is
        the whole axis where the image is smaller.

    Returns
    -------
    tuple of slice
        One per axis of ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    size = (None,) * (len(shape) - len(size)) + tuple(size)
    centre = tuple(centre) if centre is not None else tuple(s / 2 for s in shape)
    window = []
    for s, p, c in zip(shape, size, centre):
        if p is None or p >= s:
            window.append(slice(0, s))
            continue
        start = min(max(int(round(c)) - int(p) // 2, 0), s - int(p))
        window.append(slice(start, start + int(p)))
    return tuple(window)


def preview(
    image: np.ndarray,
    labels: np.ndarray,
    config: AugmentConfig,
    n: int = 8,
    seed: int = 0,
    spatial_dims: int | None = None,
    channel_axis: int | None = None,
    *,
    spacing: Sequence[float] | None = None,
    patch_size: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` augmented versions of an image (or a crop of it) and its labels.

    The samples go through :func:`augmentation_transforms` with what training gives it
    (the patch shape and the voxel spacing), seeded so the same ``seed`` gives the same
    samples. Channels stay channels: every channel moves with the same draw.

    Parameters
    ----------
    image : numpy.ndarray
        ``(*spatial)`` or, with ``channel_axis``, spatial axes plus one channel axis
        (e.g. RGB last, or ``(C, Z, Y, X)``).
    labels : numpy.ndarray
        Integer array of the image's spatial shape; any ids (they come back exactly).
    config : AugmentConfig
        The augmentation to preview.
    n : int
        Number of samples.
    seed : int
        Random seed.
    spatial_dims : int, optional
        2 or 3; defaults to the number of spatial axes of ``image`` (at most 3). Axes in
        front of the last ``spatial_dims`` are augmented slice by slice, as in
        slice-wise training (a 3D image in 2D, a time series).
    channel_axis : int, optional
        The image's channel axis, if it has one.
    spacing : sequence of float, optional
        Voxel spacing of the spatial axes (the last ``spatial_dims`` values are used), as
        training passes it: in 3D a coarse first axis gets less out-of-plane rotation.
    patch_size : sequence of int, optional
        The training patch (``spatial_dims`` values), which sets how the transforms
        behave (rotate90: quarter turns only on square patches); crop the image to it
        first (:func:`preview_window`). Smaller images are padded at the end, as training
        pads (image at its mean, labels 0). Default: the image's own shape.

    Returns
    -------
    images : numpy.ndarray
        float32, ``(n, *image.shape)`` (spatial axes padded to ``patch_size``), channel
        axis where it was given, intensities in the input's units.
    labels : numpy.ndarray
        ``(n, *labels.shape)`` (padded likewise) in the labels' dtype.
    """
    import torch

    image = np.asarray(image)
    labels = np.asarray(labels)
    if n < 1:
        raise InputError(f"preview needs n >= 1 samples, got {n}")
    if channel_axis is not None:
        if not -image.ndim <= channel_axis < image.ndim:
            raise InputError(
                f"channel_axis {channel_axis} is out of range for an image of shape {image.shape}"
            )
        channel_axis %= image.ndim
        chw = np.moveaxis(image, channel_axis, 0)
    else:
        chw = image[np.newaxis]
    spatial_shape = chw.shape[1:]
    if labels.shape != spatial_shape:
        raise InputError(
            f"labels have shape {labels.shape} but the image has spatial shape "
            f"{spatial_shape} (image shape {image.shape}); they must match"
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise InputError(f"labels must be an integer array, got dtype {labels.dtype}")
    if spatial_dims is None:
        spatial_dims = min(len(spatial_shape), 3)
    if spatial_dims not in (2, 3) or spatial_dims > len(spatial_shape):
        raise InputError(
            f"spatial_dims {spatial_dims} does not fit an image with spatial shape "
            f"{spatial_shape}; use 2 or 3 and at most {len(spatial_shape)}"
        )
    lead = spatial_shape[: len(spatial_shape) - spatial_dims]
    body = spatial_shape[len(spatial_shape) - spatial_dims :]
    patch = body if patch_size is None else tuple(int(p) for p in patch_size)
    if len(patch) != spatial_dims or min(patch) < 1:
        raise InputError(f"patch_size {tuple(patch_size or ())} needs {spatial_dims} positive sizes "
                         f"(one per spatial axis), e.g. {body}")
    if any(b > p for b, p in zip(body, patch)):
        raise InputError(f"the image's spatial shape {body} is larger than patch_size {patch}: crop it to the "
                         "patch first (augment.preview_window)")
    sizes = None if spacing is None else tuple(float(v) for v in spacing)[-spatial_dims:]

    # Standardise per channel as training does; map back afterwards for display.
    chw = chw.astype(np.float32)  # a copy: the input is never touched
    axes = tuple(range(1, chw.ndim))
    mean = np.nanmean(chw, axis=axes, keepdims=True)
    std = np.nanstd(chw, axis=axes, keepdims=True)
    std = np.where(std > 0, std, 1.0).astype(np.float32)
    chw = (chw - mean) / std
    # thinner than the patch: padded at the end, as training pads (segmentation.data.pad_to)
    pad = [(0, 0)] * len(lead) + [(0, p - b) for b, p in zip(body, patch)]
    chw, labels = np.pad(chw, [(0, 0), *pad]), np.pad(labels, pad)

    # Extra leading spatial axes (a 3D image previewed in 2D) become independent slices.
    n_slices = int(np.prod(lead)) if lead else 1
    img_slices = chw.reshape((chw.shape[0], n_slices, *patch))
    # integer all the way (int64: torch has no uint16/uint32); ids past float32's range stay exact
    lab_slices = labels.reshape((n_slices, *patch)).astype(np.int64, copy=False)

    # the very call training makes (segmentation.task.training_transform)
    compose = augmentation_transforms(config, spatial_dims, ("image", "label"), seed=seed,
                                      spatial_shape=patch, spacing=sizes)
    out_img = np.empty((n, *chw.shape), dtype=np.float32)
    out_lab = np.empty((n, *labels.shape), dtype=labels.dtype)
    for i in range(n):
        for j in range(n_slices):
            sample = compose(
                {
                    "image": torch.from_numpy(img_slices[:, j].copy()),
                    "label": lab_slices[j][np.newaxis].copy(),
                }
            )
            idx = np.unravel_index(j, lead) if lead else ()
            out_img[(i, slice(None), *idx)] = sample["image"].numpy()
            out_lab[(i, *idx)] = sample["label"][0].numpy().astype(labels.dtype)
    out_img = out_img * std[np.newaxis] + mean[np.newaxis]
    if channel_axis is not None:
        out_img = np.moveaxis(out_img, 1, channel_axis + 1)
    else:
        out_img = out_img[:, 0]
    return np.ascontiguousarray(out_img, dtype=np.float32), out_lab
