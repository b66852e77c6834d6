"""What differs between two voxel grids (shape, voxel size, direction, origin), said in words."""

from __future__ import annotations

import numpy as np

__all__ = ["grid_differences", "header_rounding"]


def grid_differences(shapes: tuple, a: np.ndarray, b: np.ndarray) -> str:
    """What differs between two voxel grids of one axis order, in words for a refusal.

    Cases 39: two files at a rotation from each other were described alike (the same axis
    codes, shape, spacing and origin), and the fix offered was true of them already.

    Parameters
    ----------
    shapes : tuple of two tuples of int
        The grids' shapes (voxels).
    a, b : np.ndarray
        ``(n + 1, n + 1)`` voxel-to-world affines (NIfTI order, the file's units).

    Returns
    -------
    str
        E.g. ``"their axes point 30 degrees apart (an oblique scan and a resliced copy?)"``,
        the differences joined by "; ".
    """
    n = a.shape[1] - 1
    size_a, size_b = np.linalg.norm(a[:n, :n], axis=0), np.linalg.norm(b[:n, :n], axis=0)
    cosines = np.clip(((a[:n, :n] / size_a) * (b[:n, :n] / size_b)).sum(axis=0), -1.0, 1.0)
    degrees = float(np.degrees(np.arccos(cosines)).max())
    found = ["the shapes differ"] if shapes[0] != shapes[1] else []
    found += ["the voxel sizes differ"] if not np.allclose(size_a, size_b, rtol=1e-3) else []
    found += [f"their axes point {degrees:.2g} degrees apart (an oblique scan and a resliced copy?)"
              ] if degrees > 0.01 else []
    shift = a[:n, n] - b[:n, n]
    if not np.allclose(shift, 0.0, atol=1e-3 * size_a.min()):  # in world x, y(, z): NIfTI's order (trial 47)
        found.append(f"the origins differ by ({', '.join(f'{v:.4g}' for v in shift)}) along world x, y"
                     + (", z" if n == 3 else ""))
    return "; ".join(found) or "the grids differ"


def header_rounding(shapes: tuple, a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two grids of one axis order differ only in an origin shift under a tenth of a voxel
    (header rounding, or labels saved by another tool): the same voxels, not worth a resampling.

    Parameters
    ----------
    shapes, a, b
        As :func:`grid_differences`.

    Returns
    -------
    bool
    """
    n = a.shape[1] - 1
    size = np.linalg.norm(a[:n, :n], axis=0)
    return (shapes[0] == shapes[1] and np.allclose(a[:n, :n], b[:n, :n], atol=1e-4 * size.min())
            and bool(np.all(np.abs(a[:n, n] - b[:n, n]) < 0.1 * size.min())))
