"""``--spacing``: the voxel size of image and label files that store none (``.npy``, a TIFF
without resolution), for ``train``, ``predict``, ``evaluate`` and ``pretrain``.

A file that stores a voxel size keeps its own: the option never overrides what a file says,
so a mix of ``.npy`` crops and TIFFs of the same microscope takes one command line.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

__all__ = ["SPACING_GIVEN", "add_spacing_option", "check_spacing_covers", "stores_voxel_size", "with_spacing"]


def add_spacing_option(parser: Any, what: str = "image and labels files") -> None:
    """Add ``--spacing S [S ...]`` to ``parser`` (dest ``spacing``, default None)."""
    from napari_medml.cli.values import real

    parser.add_argument("--spacing", type=real(0, low_open=True), nargs="+", default=None, metavar="S",
                        help=f"voxel size of the {what} that store{'' if what.endswith('s') else 's'} none (.npy, "
                        "a TIFF without resolution), one "
                        "number per spatial axis in the file's order (Z Y X; a 2D file takes the last ones), in "
                        "the units of the other files (e.g. µm); a file that stores a voxel size keeps its own "
                        "(default: 1 per axis)")  # fmt: skip


SPACING_GIVEN = "spacing_option"  # Volume.meta: the --spacing values applied (check_spacing_covers)


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

    if spacing is None:
        return vol, False
    if stores_voxel_size(vol):  # trial 44: an option typed and ignored without a word
        from napari_medml.cli.common import info

        body = vol.axes[: len(vol.spacing)]
        own = "x".join(f"{float(s):g}" for a, s in zip(body, vol.spacing) if a in "ZYX")
        unit = f" {vol.meta['unit']}" if vol.meta.get("unit") else ""
        info(f"--spacing: '{path}' stores its own voxel size ({own}{unit}), which is kept: the option is for "
             "files that store none")
        return vol, False
    body = vol.axes[: len(vol.spacing)]
    spatial = [i for i, a in enumerate(body) if a in ("ZYXQ" if unnamed_is_spatial else "ZYX")]
    if spatial and len(spacing) > len(spatial) and spatial[0] > 0 and body[spatial[0] - 1] == "Q":
        spatial.insert(0, spatial[0] - 1)  # an axis the file does not name (a .npy stack): its slices
    if len(spacing) < len(spatial):
        letters = "".join(body[i] for i in spatial)
        values = " ".join(f"{s:g}" for s in spacing)
        # trial 44: a .npy volume's unnamed first axis (its slices) was left out of the example
        slices = (f"; if its first axis, which the file does not name, holds the slices of a volume (a 3D network), "
                  "one for it too: "
                  f"--spacing {' '.join(['1'] * (len(spatial) + 1 - len(spacing)))} {values}"
                  if spatial[0] > 0 and body[spatial[0] - 1] == "Q" else "")
        raise UsageError(f"--spacing {values} gives {len(spacing)} voxel size(s) but "
                         f"'{path}' has {len(spatial)} spatial axes ({letters}"
                         f"{'; Q is an axis the file does not name, measured as one' if 'Q' in letters else ''}"
                         f"): give one per axis, e.g. --spacing {' '.join(['1'] * (len(spatial) - len(spacing)))} "
                         f"{values}{' (a 2D network)' if slices else ''}{slices}")
    sizes = list(vol.spacing)
    for i, s in zip(spatial, list(spacing)[len(spacing) - len(spatial):]):
        sizes[i] = float(s)
    return replace(vol, spacing=tuple(sizes), meta={**vol.meta, SPACING_GIVEN: tuple(float(s) for s in spacing)}), True


def check_spacing_covers(vol: Any, path: str | Path, spatial_dims: int) -> None:
    """Refuse ``--spacing`` values that left a spatial axis at 1: an axis the file does not name
    (``Q``, a ``.npy`` stack's first) that the network then takes as Z (trial 44: ``--spacing 0.5 0.5``
    on a 6x200x200 ``.npy`` planned a 1 x 0.5 x 0.5 volume, a U-Net where 5 x 0.5 x 0.5 takes dynunet).

    Parameters
    ----------
    vol : io.Volume
        After :func:`with_spacing` and ``cli.layout.image_layout`` (its axes resolved).
    path : str or Path
        The file, for the message.
    spatial_dims : int
        The network's spatial axes: a 2D network's slices need no voxel size (review 44), nor
        does a one-slice volume's Z.

    Raises
    ------
    UsageError
        Fewer ``--spacing`` values than the resolved spatial axes the network measures.
    """
    from napari_medml.cli.common import UsageError

    given = vol.meta.get(SPACING_GIVEN)
    spatial = [(a, n) for a, n in zip(vol.axes, vol.data.shape) if a in "ZYX"][-spatial_dims:]
    letters = "".join(a for a, n in spatial if n > 1)
    if given is None or len(given) >= len(letters):
        return
    values = " ".join(f"{s:g}" for s in given)
    raise UsageError(f"--spacing {values} gives {len(given)} voxel size(s) but '{path}' is read as {len(letters)} "
                     f"spatial axes ({letters}; the file does not name its first, taken as {letters[0]}): give one "
                     f"per axis, e.g. --spacing {' '.join(['1'] * (len(letters) - len(given)))} {values}")
