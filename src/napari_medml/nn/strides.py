"""The down-sampling a segmentation network applies along each axis, without torch: what a
training patch must divide by, axis by axis.

The U-Net and SegResNet halve every axis at each level below the top. DynUNet (nnU-Net's
network) follows the grid: a coarse or short axis is not pooled until the others have caught
up, so a thin, anisotropic volume (a few thick slices) needs no padding along its slices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from napari_medml.config import ModelConfig

__all__ = ["dynunet_kernels_strides", "fit_thin_axes", "network_levels", "patch_divisor", "patch_divisors",
           "patch_fits"]


def dynunet_kernels_strides(patch_size: Sequence[int], spacing: Sequence[float] | None,
                            depth: int) -> tuple[list[list[int]], list[list[int]]]:
    """nnU-Net's rule: pool an axis only while it is fine enough and >= 8 voxels.

    On an anisotropic grid the coarse axis is pooled later (stride 1 and kernel 1
    until the other axes have caught up), so the receptive field grows evenly in mm.
    "Fine enough" is against the finest axis that can still be pooled, as nnU-Net's
    ``get_pool_and_conv_props``: a short axis that is never pooled (3 slices) does not stop
    the others (review 44: a 3-slice volume at 3 x 1 x 1 pooled its planes once).
    """
    sizes = [float(s) for s in patch_size]
    spacings = [float(s) for s in (spacing or [1.0] * len(sizes))]
    kernels: list[list[int]] = []
    strides: list[list[int]] = []
    while len(strides) < depth - 1:
        poolable = [sp for sp, size in zip(spacings, sizes) if size >= 8]
        if not poolable:
            break
        stride = [2 if size >= 8 and sp / min(poolable) <= 2 else 1 for sp, size in zip(spacings, sizes)]
        kernel = [3 if sp / min(spacings) <= 2 else 1 for sp in spacings]
        if all(s == 1 for s in stride):
            break
        sizes = [size / s for size, s in zip(sizes, stride)]
        spacings = [sp * s for sp, s in zip(spacings, stride)]
        kernels.append(kernel)
        strides.append(stride)
    strides.insert(0, [1] * len(sizes))
    kernels.append([3] * len(sizes))
    return kernels, strides


def patch_divisor(config: ModelConfig) -> int:
    """Every patch axis must be divisible by this (one halving per level below the top).

    Parameters
    ----------
    config : ModelConfig
        Its ``depth`` (levels).

    Returns
    -------
    int
        ``2 ** (depth - 1)``: the U-Net's and SegResNet's factor on every axis, and the most
        DynUNet pools an axis by (see :func:`patch_divisors` for its factor per axis).
    """
    return 2 ** max(config.depth - 1, 0)


def patch_divisors(config: ModelConfig, patch_size: Sequence[int],
                   spacing: Sequence[float] | None = None) -> tuple[int, ...]:
    """What each axis of a ``patch_size`` patch must be divisible by, for ``config``'s network.

    Parameters
    ----------
    config : ModelConfig
        The network and its depth.
    patch_size : sequence of int
        Voxels per spatial axis, ``(Z, Y, X)`` or ``(Y, X)``: DynUNet's strides depend on it.
    spacing : sequence of float, optional
        Voxel size per axis (any unit; only the ratios count). None: isotropic.

    Returns
    -------
    tuple of int
        One factor per axis: :func:`patch_divisor` on every axis, except for DynUNet, whose
        factor on an axis is the product of its strides there (:func:`dynunet_kernels_strides`).
    """
    if config.network != "dynunet":
        return (patch_divisor(config),) * len(patch_size)
    _, strides = dynunet_kernels_strides(patch_size, spacing, config.depth)
    return tuple(math.prod(s[a] for s in strides) for a in range(len(patch_size)))


def network_levels(config: ModelConfig, patch_size: Sequence[int], spacing: Sequence[float] | None = None) -> int:
    """The resolution levels ``config``'s network has on a ``patch_size`` patch.

    Parameters
    ----------
    config : ModelConfig
        The network and its depth.
    patch_size : sequence of int
        Voxels per spatial axis.
    spacing : sequence of float, optional
        Voxel size per axis.

    Returns
    -------
    int
        ``config.depth``, except for DynUNet, which stops pooling when no axis is 8 voxels or
        more: its levels are its strides (:func:`dynunet_kernels_strides`).
    """
    if config.network != "dynunet":
        return config.depth
    return len(dynunet_kernels_strides(patch_size, spacing, config.depth)[1])


def patch_fits(config: ModelConfig, patch_size: Sequence[int], spacing: Sequence[float] | None = None) -> bool:
    """Whether ``config``'s network has its ``depth`` levels on the patch and every axis divides by
    what it is pooled by (:func:`network_levels`, :func:`patch_divisors`).

    Parameters
    ----------
    config : ModelConfig
        The network and its depth.
    patch_size : sequence of int
        Voxels per spatial axis.
    spacing : sequence of float, optional
        Voxel size per axis.

    Returns
    -------
    bool
    """
    factors = patch_divisors(config, patch_size, spacing)
    return (network_levels(config, patch_size, spacing) == config.depth
            and not any(int(p) % f for p, f in zip(patch_size, factors)))


def fit_thin_axes(patch_size: Sequence[int], shape: Sequence[int], config: ModelConfig,
                  spacing: Sequence[float] | None = None) -> tuple[int, ...]:
    """A DynUNet patch cut to the image along the axes where it is longer than the image.

    A patch axis longer than the image is padding. DynUNet pools a short axis less (or not at
    all, below 8 voxels), so that axis needs only to divide by its own factor: 3 slices take
    a 3-slice patch, where the U-Net's factor of 8 would pad them to 8. Other networks: the
    patch as given.

    Parameters
    ----------
    patch_size : sequence of int
        The patch, each axis a multiple of :func:`patch_divisor`.
    shape : sequence of int
        The smallest training region, voxels per spatial axis.
    config : ModelConfig
        The network and its depth.
    spacing : sequence of float, optional
        Voxel size per axis.

    Returns
    -------
    tuple of int
        The patch, no axis longer than the region rounded up to that axis's factor, and each
        axis divisible by its factor under the new patch's strides.
    """
    patch = [int(p) for p in patch_size]
    if config.network != "dynunet":
        return tuple(patch)
    for axis, size in enumerate(int(s) for s in shape):
        if patch[axis] <= size:
            continue
        trial = list(patch)
        trial[axis] = size
        factor = patch_divisors(config, trial, spacing)[axis]
        trial[axis] = -(-size // factor) * factor  # rounded up: padded to the axis's own factor
        if trial[axis] < patch[axis] and not any(p % f for p, f in zip(trial, patch_divisors(config, trial,
                                                                                              spacing))):
            patch = trial
    return tuple(patch)
