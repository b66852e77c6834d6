"""Lengths in the units files name: a grid in millimetres beside the same grid in micrometres."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from napari_medml.io.volume import Volume, length_factor

__all__ = ["in_unit_of"]


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
    f = length_factor(have, want)
    if have == want or f == 1.0:
        return moving, None
    spacing = tuple(s * f if first <= a < stop else s for a, s in enumerate(moving.spacing))
    origin = tuple(o * f if first <= a < stop else o for a, o in enumerate(moving.origin))
    affine = None if moving.affine is None else np.diag([f, f, f, 1.0]) @ np.asarray(moving.affine, float)
    volume = replace(moving, spacing=spacing, origin=origin, affine=affine, meta={**moving.meta, "unit": want})
    return volume, f"its voxel size and position in {have} were compared in {want}"
