"""The data side of pretraining: unlabeled images checked, normalised and cut into
corrupted patches (masked blocks and/or noise) with their clean targets.

Plain NumPy; torch enters only where a batch becomes tensors. Image checks, the
recipe and the patch budget are every task's (``preprocessing.inputs``); the sampler is
its own, as task packages do not import each other (the import-linter layers
contract) and unlabeled sampling is simpler: uniform windows, no class balance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_medml.config import PretrainConfig
from napari_medml.preprocessing.inputs import check_image, run_recipe_channels, shrink_patch

__all__ = ["Corruptor", "UnlabeledSampler", "block_sizes", "check_image", "checker_masks", "choose_patch",
           "run_recipe_channels", "split_unlabeled"]


def split_unlabeled(image: Any, axes: str, spatial_dims: int, spacing: Sequence[float] | None, *,
                    what: str = "image", hint: str = "") -> tuple[list, list, int | None]:
    """Cut an image into the samples a ``spatial_dims``-D network sees: one per frame of
    a time series, one per slice of a volume under a 2D network (views, no copies).

    Returns
    -------
    tuple
        ``(images, spacings, channel_axis)``.

    Raises
    ------
    InputError
        Axes that cannot be told apart, or too few for the network.
    """
    from napari_medml.io.axes import layout
    from napari_medml.io.axes_resolve import resolve_axes

    shape = np.shape(image)
    axes = resolve_axes(axes, shape, what=what, hint=hint, spatial_dims=spatial_dims)
    lay = layout(axes, spatial_dims, what, hint)
    sizes = None if spacing is None else tuple(float(v) for v in spacing)[-spatial_dims:]
    channel = lay.channel_axis
    if channel is not None:
        channel -= sum(a < channel for a in lay.sample_axes)
    images = []
    for index in np.ndindex(*(shape[a] for a in lay.sample_axes)):
        where: list[Any] = [slice(None)] * len(shape)
        for axis, k in zip(lay.sample_axes, index):
            where[axis] = k
        images.append(image[tuple(where)])
    return images, [sizes] * len(images), channel


def choose_patch(shapes: Sequence[Sequence[int]], spacing: Sequence[float] | None, divisor: int,
                 max_voxels: int | None, *, target: int = 128) -> tuple[int, ...]:
    """A patch of at most ``target`` voxels per axis and ``max_voxels`` in all, a multiple of
    ``divisor`` per axis, no larger than the smallest image (rounded up to ``divisor``);
    over the cap, the axis with the largest physical extent shrinks first, so a coarse
    Z axis gets fewer voxels."""
    dims = len(shapes[0])
    smallest = [min(int(s[a]) for s in shapes) for a in range(dims)]
    patch = [max(divisor, min(-(-s // divisor) * divisor, target // divisor * divisor)) for s in smallest]
    return shrink_patch(patch, spacing, divisor, max_voxels if max_voxels is not None else target**dims)


def block_sizes(block: int, spacing: Sequence[float] | None, dims: int) -> tuple[int, ...]:
    """Mask block size per axis: ``block`` voxels along the finest axis, the same physical
    length along the others (at least one voxel), so masks are isotropic in mm."""
    spacing = [float(s) for s in (spacing or (1.0,) * dims)]
    finest = min(spacing)
    return tuple(max(1, int(round(block * finest / s))) for s in spacing)


@dataclass(frozen=True)
class Corruptor:
    """Corrupts ``(C, *spatial)`` patches the way ``PretrainConfig`` says.

    ``mask`` blanks blocks (to 0, the normalised mean) on a grid with a random offset;
    ``noise`` adds Gaussian noise; ``mask_noise`` does both.
    """

    config: PretrainConfig
    blocks: tuple[int, ...]

    @property
    def masks(self) -> bool:
        return self.config.corruption in ("mask", "mask_noise")

    def block_mask(self, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
        """A boolean ``shape`` array, True in the blanked blocks (a share ``mask_ratio``)."""
        offsets = [int(rng.integers(b)) for b in self.blocks]
        grid = [-(-(s + o) // b) for s, o, b in zip(shape, offsets, self.blocks)]
        coarse = rng.random(grid) < self.config.mask_ratio
        for axis, b in enumerate(self.blocks):
            coarse = np.repeat(coarse, b, axis=axis)
        return coarse[tuple(slice(o, o + s) for o, s in zip(offsets, shape))]

    def __call__(self, patch: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(corrupted, mask)``: the corrupted copy and where blocks were blanked."""
        out = patch.copy()
        mask = np.zeros(patch.shape[1:], bool)
        if self.config.corruption in ("noise", "mask_noise") and self.config.noise_std > 0:
            out += rng.normal(0.0, self.config.noise_std, out.shape).astype(np.float32)
        if self.masks:
            mask = self.block_mask(patch.shape[1:], rng)
            out[:, mask] = 0.0
        return out, mask


def checker_masks(shape: Sequence[int], blocks: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Two complementary block masks (a 3D/2D checkerboard of blocks): each voxel is blanked
    in exactly one, so two passes predict every voxel from its context."""
    index = np.indices(tuple(shape), sparse=True)
    parity = sum(idx // b for idx, b in zip(index, blocks)) % 2
    first = np.broadcast_to(parity == 0, tuple(shape))
    return np.ascontiguousarray(first), np.ascontiguousarray(~first)


class UnlabeledSampler:
    """Batches of corrupted patches and their clean targets from normalised images.

    Parameters
    ----------
    images : list of np.ndarray
        ``(C, *spatial)`` float32, normalised, each at least the patch size.
    patch_size : tuple of int
    batch_size : int
    corruptor : Corruptor
    flip : float
        Probability of flipping a patch along each axis (augmentation).
    seed : int
    """

    def __init__(self, images: list[np.ndarray], patch_size: Sequence[int], batch_size: int,
                 corruptor: Corruptor, *, flip: float, seed: int) -> None:
        self.images = images
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size = batch_size
        self.corruptor = corruptor
        self.flip = flip
        self.rng = np.random.default_rng(seed)
        weights = np.array([math.prod(im.shape[1:]) for im in images], float)
        self.weights = weights / weights.sum()

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(corrupted, clean, mask)``: ``(B, C, *patch)`` float32 twice and ``(B, 1, *patch)`` bool."""
        channels = self.images[0].shape[0]
        corrupted = np.empty((self.batch_size, channels, *self.patch_size), np.float32)
        clean = np.empty_like(corrupted)
        masks = np.empty((self.batch_size, 1, *self.patch_size), bool)
        for b in range(self.batch_size):
            image = self.images[int(self.rng.choice(len(self.images), p=self.weights))]
            starts = [int(self.rng.integers(s - p + 1)) for s, p in zip(image.shape[1:], self.patch_size)]
            patch = image[(slice(None), *(slice(s, s + p) for s, p in zip(starts, self.patch_size)))]
            flips = [1 + a for a in range(len(self.patch_size)) if self.rng.random() < self.flip]
            if flips:
                patch = np.flip(patch, flips)
            clean[b] = patch
            corrupted[b], masks[b, 0] = self.corruptor(clean[b], self.rng)
        return corrupted, clean, masks

    def batch(self) -> tuple[Any, dict[str, Any]]:
        """``(inputs, {"clean": targets, "mask": blanked})`` as tensors."""
        import torch

        corrupted, clean, masks = self.arrays()
        return torch.from_numpy(corrupted), {"clean": torch.from_numpy(clean), "mask": torch.from_numpy(masks)}
