"""Test-time augmentation passes: the orientations a network sees an image in at prediction.

With TTA a 3D image is predicted as given and flipped along each axis (4 passes, as
nnU-Net mirrors). A 2D network trained on square patches of square pixels is run in all 8
orientations of the square (4 flip combinations, each also transposed: the quarter turns
and the two diagonal mirrors); with non-square pixels a transpose would change the pixel
shape the network learned, and with an elongated patch its windows would be mostly
padding, so those get the 3 flip passes. Every pass is undone on the scores before
they are averaged.

No library gives both the passes and their inverses for an arbitrary sliding-window pass
(MONAI's ``TestTimeAugmentation`` runs random transforms and inverts them through a
dataloader, per window): these are a flip and a transpose, written here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["SQUARE_PIXEL_TOLERANCE", "TTAPass", "square_pixels", "tta_passes"]

# pixels whose edges differ by up to 1 % count as square (a transpose changes them by that much)
SQUARE_PIXEL_TOLERANCE = 0.01


@dataclass(frozen=True)
class TTAPass:
    """One orientation of a ``spatial_dims``-D image: ``flips`` (spatial axes, 0 first),
    then, when ``transposed``, the last two spatial axes swapped."""

    spatial_dims: int
    flips: tuple[int, ...] = ()
    transposed: bool = False

    def _dims(self) -> list[int]:
        return [a - self.spatial_dims for a in self.flips]

    def apply(self, t: Any) -> Any:
        """``t`` ``(..., *spatial)`` (a torch tensor) in this orientation (a new tensor or ``t``)."""
        import torch

        if self.flips:
            t = torch.flip(t, self._dims())
        if self.transposed:
            t = t.transpose(-2, -1).contiguous()
        return t

    def undo(self, t: Any) -> Any:
        """The inverse of :meth:`apply`: scores ``(..., *spatial')`` back in the image's orientation."""
        import torch

        if self.transposed:
            t = t.transpose(-2, -1)
        if self.flips:
            t = torch.flip(t, self._dims())
        return t.contiguous() if self.transposed else t

    def source_axis(self, axis: int) -> int:
        """The image's spatial axis that lies along ``axis`` of this orientation."""
        if self.transposed and axis >= self.spatial_dims - 2:
            return 2 * self.spatial_dims - 3 - axis
        return axis

    def shape(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """The spatial shape of an image of shape ``spatial`` in this orientation; also the window
        edge along each of the image's axes when windows of ``spatial`` run over this orientation."""
        return tuple(int(spatial[self.source_axis(a)]) for a in range(self.spatial_dims))

    def record(self) -> list:
        """JSON form: the flipped axes of ``(C, *spatial)`` (so 1 is the first spatial axis),
        then ``"T"`` when transposed; ``[]`` is the image as given."""
        return [*(1 + a for a in self.flips), *(["T"] if self.transposed else [])]


def square_pixels(spacing: Sequence[float] | None) -> bool:
    """Whether the last two spatial axes have the same voxel size, within
    :data:`SQUARE_PIXEL_TOLERANCE`.

    Parameters
    ----------
    spacing : sequence of float or None
        Voxel size per spatial axis (any one unit); None (unknown) is taken as square.
    """
    if spacing is None or len(spacing) < 2:
        return True
    a, b = float(spacing[-2]), float(spacing[-1])
    return math.isclose(a, b, rel_tol=SQUARE_PIXEL_TOLERANCE)


def tta_passes(spatial_dims: int, tta: bool, spacing: Sequence[float] | None = None,
               patch_size: Sequence[int] | None = None) -> tuple[TTAPass, ...]:
    """The prediction passes.

    Parameters
    ----------
    spatial_dims : int
        2 or 3.
    tta : bool
        Test-time augmentation; without it the one pass is the image as given.
    spacing : sequence of float, optional
        The voxel size the network was trained at (any unit, axis order of the image).
    patch_size : sequence of int, optional
        The network's training patch (its sliding window).

    Returns
    -------
    tuple of TTAPass
        The image as given first. With TTA, in 2D with square pixels and a square patch (a
        network whose augmentation turned it by quarter turns, ``segmentation.plan_rules``)
        the 8 orientations of the square: on the 2D nuclei of ``benchmarks/bench_plan_quality.py``
        the plan's bundle (square 120x120 patches) scored Dice 0.9385 with them, 0.9377 with the
        flips alone, 0.9369 with neither (``docs/benchmarks/plan_quality_tta_dihedral.json``). Otherwise the image
        and its flip along each axis, as nnU-Net mirrors (Isensee et al. 2021, Nature Methods
        18:203): a transposed elongated window would be mostly padding the network never saw.
    """
    plain = TTAPass(spatial_dims)
    if not tta:
        return (plain,)
    square_patch = patch_size is None or int(patch_size[-1]) == int(patch_size[-2])
    if spatial_dims == 2 and square_pixels(spacing) and square_patch:
        return tuple(TTAPass(2, tuple(a for a, f in zip((0, 1), mask) if f), transposed)
                     for transposed in (False, True) for mask in itertools.product((False, True), repeat=2))
    return (plain, *(TTAPass(spatial_dims, (a,)) for a in range(spatial_dims)))
