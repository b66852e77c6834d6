"""Refuse an array whose last axis looks like colour or channels where a spatial axis is expected.

A NumPy image from ``skimage.io.imread`` or PIL is ``(Y, X, C)``; given without
``channel_axis``, a 2D model took its rows as a stack of ``(X, C)`` images and answered
in strips without a word (trial 47).
"""

from __future__ import annotations

from collections.abc import Sequence

from napari_medml.errors import InputError

__all__ = ["check_not_channels_last"]

MAX_CHANNELS = 4  # RGB(A), or a few stains
NARROW = 8  # the last axis is this many times shorter than the one before it


def check_not_channels_last(shape: Sequence[int], spatial_dims: int, in_channels: int = 1,
                            what: str = "the image") -> None:
    """Refuse ``shape`` when its last axis, taken as X, is 4 or fewer voxels against 8 or more
    times as many before it: channels, as ``(Y, X, C)`` images hold them.

    Parameters
    ----------
    shape : sequence of int
        The array's shape, channels not named (no ``channel_axis`` or ``axes``).
    spatial_dims : int
        2 or 3: the model's dimensions.
    in_channels : int
        The channels the model takes.
    what : str
        How the message names the array.

    Raises
    ------
    InputError
        Naming the shape and what works: ``channel_axis=-1`` where the model takes that many
        channels, one channel of them where it takes one, or ``axes`` with one letter per axis
        for a stack of images that narrow (review 47: the letters given did not fit).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < spatial_dims or len(shape) < 2:
        return
    last, before = shape[-1], shape[-2]
    if last > MAX_CHANNELS or before < NARROW * last:
        return
    narrow = {3: "ZYX", 4: "TZYX"}.get(len(shape))
    if in_channels == last:
        fix = "pass channel_axis=-1"
    elif in_channels == 1:
        fix = "give one of them (image[..., 0]) or a grey image: the model takes one channel"
    else:
        fix = f"the model takes {in_channels} channels: give those, with channel_axis=-1"
    fix += f"; for images that narrow, name the axes (axes='{narrow}')" if narrow else ""
    raise InputError(f"{what} has shape {shape}: its last axis ({last}) looks like colour or channels, not X (the "
                     f"{'images' if spatial_dims == 2 else 'volumes'} would be {last} voxel{'s' * (last != 1)} "
                     f"wide): {fix}")
