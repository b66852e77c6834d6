"""Lengths in the units files name: a grid in millimetres beside the same grid in micrometres."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from napari_medml.io.volume import Volume, length_factor

__all__ = ["in_unit", "in_unit_of"]


def in_unit_of(moving: Volume, reference: Volume, first: int, stop: int) -> tuple[Volume, str | None]:
    """``moving`` with its spatial geometry in ``reference``'s unit, when both name a different one.

    Parameters
    ----------
    moving, reference : Volume
        Their ``meta["unit"]`` (``"nm"``, ``"um"``, ``"mm"``, ``"cm"``, ``"m"``) name the unit of
        spacing, origin and affine; a volume naming none, or another, is left as it is.
    first, stop : int
        ``moving``'s spatial axes (``data`` axes ``first:stop``); the others (time, channels)
        keep their spacing.

    Returns
    -------
    (Volume, str or None)
        The volume in ``reference``'s unit and a note naming both units; ``moving`` itself and
        None when there is nothing to convert.
    """
    have, want = moving.meta.get("unit"), reference.meta.get("unit")
    volume = in_unit(moving, want, first, stop)
    if volume is moving:
        return moving, None
    return volume, f"its voxel size and position in {have} were compared in {want}"


def in_unit(volume: Volume, unit: str | None, first: int, stop: int) -> Volume:
    """``volume`` with its spatial voxel size, position and affine in ``unit``.

    Parameters
    ----------
    volume : Volume
        Its ``meta["unit"]`` names the unit of its spatial geometry.
    unit : str or None
        A length unit (``"nm"``, ``"um"``, ``"mm"``, ``"cm"``, ``"m"``).
    first, stop : int
        The spatial axes (``data`` axes ``first:stop``); the others keep their spacing.

    Returns
    -------
    Volume
        ``volume`` itself when either unit is unknown or they are the same length.
    """
    have = volume.meta.get("unit")
    f = length_factor(have, unit)
    if have == unit or f == 1.0:
        return volume
    spacing = tuple(s * f if first <= a < stop else s for a, s in enumerate(volume.spacing))
    origin = tuple(o * f if first <= a < stop else o for a, o in enumerate(volume.origin))
    affine = None if volume.affine is None else np.diag([f, f, f, 1.0]) @ np.asarray(volume.affine, float)
    return replace(volume, spacing=spacing, origin=origin, affine=affine, meta={**volume.meta, "unit": unit})
