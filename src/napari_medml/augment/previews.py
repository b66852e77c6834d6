"""A preview of the augmentation: what training's transforms do to an image and its labels.

What training passes the builder (:func:`~napari_medml.augment.transforms.augmentation_transforms`),
:func:`preview` passes too: the patch shape the transforms see (``spatial_shape``:
rotate90 turns a quarter only on square patches) and the voxel spacing (anisotropic
volumes get less out-of-plane rotation). A preview of the training patch is a crop of
that shape (:func:`preview_window`), padded at the end where the image is smaller, as
training pads. Each channel is standardised as training does, augmented, and mapped back
to the input's units.

torch is imported inside :func:`preview`: importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from napari_medml.augment import transforms
from napari_medml.config import AugmentConfig
from napari_medml.errors import InputError

__all__ = ["preview", "preview_window"]


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
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` augmented versions of an image (or a crop of it) and its labels.

    The samples go through :func:`~napari_medml.augment.transforms.augmentation_transforms`
    with what training gives it (the patch shape and the voxel spacing), seeded so the same
    ``seed`` gives the same samples. Channels stay channels: every channel moves with the same draw.

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
    progress : callable, optional
        ``progress(done, n)`` before each sample: a front's progress bar and stop check
        (what it raises, e.g. ``Cancelled``, ends the preview).

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
    compose = transforms.augmentation_transforms(config, spatial_dims, ("image", "label"), seed=seed,
                                                 spatial_shape=patch, spacing=sizes)
    out_img = np.empty((n, *chw.shape), dtype=np.float32)
    out_lab = np.empty((n, *labels.shape), dtype=labels.dtype)
    for i in range(n):
        if progress is not None:
            progress(i, n)
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
