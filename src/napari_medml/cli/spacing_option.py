"""``--spacing``: the voxel size of image and label files that store none (``.npy``, a TIFF
without resolution), for ``train``, ``predict``, ``evaluate`` and ``pretrain``.

A file that stores a voxel size keeps its own: the option never overrides what a file says,
so a mix of ``.npy`` crops and TIFFs of the same microscope takes one command line.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

__all__ = ["add_spacing_option", "stores_voxel_size", "with_spacing"]


def add_spacing_option(parser: Any, what: str = "image and labels files") -> None:
    """Add ``--spacing S [S ...]`` to ``parser`` (dest ``spacing``, default None)."""
    from napari_medml.cli.values import real

    parser.add_argument("--spacing", type=real(0, low_open=True), nargs="+", default=None, metavar="S",
                        help=f"voxel size of the {what} that store{'' if what.endswith('s') else 's'} none (.npy, "
                        "a TIFF without resolution), one "
                        "number per spatial axis in the file's order (Z Y X; a 2D file takes the last ones), in "
                        "the units of the other files (e.g. µm); a file that stores a voxel size keeps its own "
                        "(default: 1 per axis)")  # fmt: skip


def stores_voxel_size(vol: Any) -> bool:
    """Whether a read ``io.Volume``'s file says its voxel size: a NIfTI affine, a unit (ImageJ,
    OME), or a spatial voxel size other than 1."""
    body = vol.axes[: len(vol.spacing)]  # an RGB colour axis has no spacing
    sizes = [float(s) for a, s in zip(body, vol.spacing) if a in "ZYX"]
    return vol.affine is not None or "unit" in vol.meta or set(sizes) != {1.0}


def with_spacing(vol: Any, spacing: Any, path: str | Path, unnamed_is_spatial: bool = False) -> tuple[Any, bool]:
    """``vol`` with ``spacing`` (the ``--spacing`` values) on its spatial axes when its file
    stores no voxel size, and whether it was given.

    Parameters
    ----------
    vol : io.Volume
        As read from ``path``.
    spacing : sequence of float or None
        The option's values; None: ``vol`` as it is.
    path : str or Path
        The file, for the error message.
    unnamed_is_spatial : bool
        Axes the file does not name (``Q``) are spatial and need a value each (``evaluate``
        measures distances across them: a ``.npy`` volume); else one before the spatial axes
        takes a value only when one is given for it.

    Returns
    -------
    io.Volume, bool

    Raises
    ------
    UsageError
        Fewer values than the file has spatial axes. An axis the file does not name (``Q``,
        the first of a ``.npy`` stack) before them takes a value given for it.
    """
    from napari_medml.cli.common import UsageError

    if spacing is None or stores_voxel_size(vol):
        return vol, False
    body = vol.axes[: len(vol.spacing)]
    spatial = [i for i, a in enumerate(body) if a in ("ZYXQ" if unnamed_is_spatial else "ZYX")]
    if spatial and len(spacing) > len(spatial) and spatial[0] > 0 and body[spatial[0] - 1] == "Q":
        spatial.insert(0, spatial[0] - 1)  # an axis the file does not name (a .npy stack): its slices
    if len(spacing) < len(spatial):
        letters = "".join(body[i] for i in spatial)
        raise UsageError(f"--spacing {' '.join(f'{s:g}' for s in spacing)} gives {len(spacing)} voxel size(s) but "
                         f"'{path}' has {len(spatial)} spatial axes ({letters}"
                         f"{'; Q is an axis the file does not name, measured as one' if 'Q' in letters else ''}"
                         "): give one per axis, "
                         f"e.g. --spacing {' '.join(['1'] * (len(spatial) - len(spacing)))} "
                         f"{' '.join(f'{s:g}' for s in spacing)}")
    sizes = list(vol.spacing)
    for i, s in zip(spatial, list(spacing)[len(spacing) - len(spatial):]):
        sizes[i] = float(s)
    return replace(vol, spacing=tuple(sizes)), True
