"""The array type of the io package: :class:`Volume` (data, spacing, origin, affine, axes)
and the small helpers every format module shares (file types, units, affines)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_medml.errors import InputError
from napari_medml.io import axes as io_axes

__all__ = ["LENGTH_UNITS", "SUPPORTED_EXTENSIONS", "Volume", "canonical", "affine_from_spacing", "canonical_unit",
           "file_format", "file_stem", "inside_zarr", "is_label_file", "label_name_note", "length_factor"]


SUPPORTED_EXTENSIONS = (".nii.gz", ".nii", ".tif", ".tiff", ".npy", ".zarr")


_LABEL_WORDS = re.compile(r"seg|label|mask|scribble", re.IGNORECASE)  # scribble: trial 51
# whole words only (between _, -, . or digits): "lab_01" and "img_gt", not "collaboration"
_LABEL_TOKENS = re.compile(r"(?:^|[^a-z])(lab|labs|gt|annot|annotations?|truth|groundtruth|objects|instances|"
                           r"pred|preds|predictions?|predicted)"
                           r"(?:[^a-z]|$)", re.IGNORECASE)


_UNITS = {
    "um": "um", "µm": "um", "\\u00b5m": "um", "micron": "um", "microns": "um",
    "micrometer": "um", "mm": "mm", "millimeter": "mm", "nm": "nm",
    "nanometer": "nm", "m": "m", "meter": "m", "cm": "cm", "centimeter": "cm",
}  # fmt: skip


@dataclass(frozen=True, eq=False)
class Volume:
    """An image or labels array with where its voxels lie in space.

    Parameters
    ----------
    data : np.ndarray
        The array in napari axis order, (Y, X) or (Z, Y, X); extra leading axes
        (time, channels) are allowed. RGB(A) TIFFs keep a trailing colour axis
        and set ``meta["rgb"] = True``.
    spacing : tuple of float
        Voxel size per axis of ``data`` (the colour axis excepted); channel
        axes have spacing 1, a time axis the frame interval.
    origin : tuple of float
        World position of the first voxel's centre per axis, same order.
    affine : np.ndarray or None
        The 4x4 NIfTI voxel-to-world affine in NIfTI's (x, y, z) order, or None
        when the file has none (TIFF, NumPy).
    is_labels : bool
        True when the array holds label ids rather than intensities.
    name : str
        Display name, the file name without its extension.
    meta : Mapping
        Format details kept for a faithful write: ``unit``, ``rgb``,
        ``sform_code``, ``qform_code``, ``time_unit`` and ``singletons`` (the
        length-1 axes dropped on reading, restored on writing).
    axes : str
        One letter per axis of ``data`` (``T``, ``C``, ``Z``, ``Y``, ``X``; ``Q``
        unnamed; an RGB colour axis is a trailing ``C``). Empty means
        :func:`napari_medml.io.axes.default_axes`: ``(…, C, Z, Y, X)`` from the right.
    """

    data: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    affine: np.ndarray | None = None
    is_labels: bool = False
    name: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)
    axes: str = ""

    def __post_init__(self) -> None:
        rgb = bool(self.meta.get("rgb"))
        ndim = np.ndim(self.data)
        if self.axes:
            axes = io_axes.check_axes(self.axes, ndim, f"'{self.name or 'image'}'")
        else:
            axes = io_axes.default_axes(ndim, rgb)
        object.__setattr__(self, "axes", axes)

    @property
    def channel_axis(self) -> int | None:
        """Index of the channel axis (an RGB colour axis included), or None."""
        return self.axes.index("C") if "C" in self.axes else None


def inside_zarr(path: str | Path) -> bool:
    """Tell whether ``path`` lies inside a ``*.zarr`` store (a group or array below its root)."""
    return any(part.lower().endswith(".zarr") for part in Path(str(path).rstrip("/\\")).parts[:-1])


def file_format(path: str | Path) -> str:
    """Return ``"nifti"``, ``"tiff"``, ``"npy"`` or ``"zarr"`` (a folder) for a path's extension.

    Raises
    ------
    InputError
        If the extension is not one of :data:`SUPPORTED_EXTENSIONS`.
    """
    lower = str(path).lower().rstrip("/\\")
    for ext, fmt in ((".nii.gz", "nifti"), (".nii", "nifti"), (".tif", "tiff"),
                     (".tiff", "tiff"), (".npy", "npy"), (".zarr", "zarr")):  # fmt: skip
        if lower.endswith(ext):
            return fmt
    if inside_zarr(path):  # a group inside a store, e.g. OME-Zarr labels "img.zarr/labels/seg"
        return "zarr"
    if Path(path).is_dir():
        raise InputError(f"'{path}' is a folder, not an image file: give one file "
                         f"({', '.join(SUPPORTED_EXTENSIONS)}; a .zarr folder is one image)")
    raise InputError(
        f"'{path}' has an unsupported file type; use one of "
        f"{', '.join(SUPPORTED_EXTENSIONS)}"
    )


def is_label_file(path: str | Path, data: np.ndarray) -> bool:
    """Tell whether a file holds labels: a name with seg/label/mask/scribble (or the word lab, gt,
    annot, annotation, truth, objects, instances, pred, prediction or predicted), and integer data (or floats that are all whole non-negative
    numbers, as some tools save masks).

    Parameters
    ----------
    path : str or Path
        The file; only its name is looked at (case-insensitive).
    data : np.ndarray
        The array read from it.
    """
    name = Path(path).name
    if not (_LABEL_WORDS.search(name) or _LABEL_TOKENS.search(name)):
        return False
    if np.issubdtype(data.dtype, np.integer) or data.dtype == bool:
        return True
    if not np.issubdtype(data.dtype, np.floating) or not data.size:
        return False
    values = np.asarray(data)
    return bool(np.all(np.isfinite(values)) and values.min() >= 0 and values.max() < 2**31
                and np.all(values == np.round(values)))


def label_name_note(path: str | Path, data: Any) -> str:
    """Why a file named like labels (see :func:`is_label_file`) and holding a mask is not read as
    labels: some of its values are fractions (note 48: an interpolated float mask named
    ``*_seg.tif`` opened as an image, so no labels box offered it, and nothing said why).

    Only a mask is meant: finite values from 0 to 2**31, nine in ten of them whole numbers. A CT
    or a probability map whose name holds "seg" or "mask" ("t1_masked", "seg_probability") gets
    no line (review 50).

    Parameters
    ----------
    path : str or Path
        The file; only its name is looked at.
    data : array-like
        The array read from it; a lazy (dask, zarr) array is not read, and gives "".

    Returns
    -------
    str
        One line naming the file, a fractional value and a fix; "" otherwise.
    """
    name = Path(path).name
    if not isinstance(data, np.ndarray) or not (_LABEL_WORDS.search(name) or _LABEL_TOKENS.search(name)):
        return ""
    if not np.issubdtype(data.dtype, np.floating) or not data.size:
        return ""
    if not (np.all(np.isfinite(data)) and data.min() >= 0 and data.max() < 2**31):
        return ""
    fractions = data[data != np.round(data)]
    if not fractions.size or fractions.size > data.size / 10:
        return ""
    return (f"'{name}' is named like labels but holds fractions ({fractions.size} of its {data.size} values, e.g. "
            f"{float(fractions[0]):g}), so it opened as an image: right-click its layer > Convert to Labels (napari "
            "drops the fractions, so 0.99 becomes 0), or save it with whole-number ids 0, 1, 2, ...")


def affine_from_spacing(
    spacing: tuple[float, ...],
    origin: tuple[float, ...],
    direction: np.ndarray | None = None,
) -> np.ndarray:
    """Build a 4x4 NIfTI affine from napari-ordered spacing and origin.

    Parameters
    ----------
    spacing, origin : tuple of float
        Per axis in napari order; only the last two or three (spatial) are used.
    direction : np.ndarray, optional
        A 4x4 affine whose unit column directions (orientation) to keep;
        identity when omitted.

    Returns
    -------
    np.ndarray
        float64 (4, 4): column i is direction_i * spacing_i, last column origin.
    """
    k = min(len(spacing), 3)
    affine = np.eye(4) if direction is None else np.array(direction, dtype=np.float64)
    sizes = [float(s) for s in spacing[::-1][:k]]  # napari (..., Z, Y, X) -> NIfTI (x, y, z)
    for i in range(k):
        column = affine[:3, i]
        norm = np.linalg.norm(column)
        affine[:3, i] = (column / norm if norm > 0 else np.eye(3)[i]) * sizes[i]
    affine[:k, 3] = [float(o) for o in origin[::-1][:k]]
    return affine


def file_stem(path: Path) -> str:
    name = path.name
    for ext in (".ome.tif", ".ome.tiff", ".ome.zarr", *SUPPORTED_EXTENSIONS):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def canonical_unit(raw: Any) -> str | None:
    if raw is None:
        return None
    text = str(raw).strip()
    if text.lower() in ("", "pixel", "pixels", "unknown", "none"):
        return None
    return _UNITS.get(text.lower(), _UNITS.get(text, text))


_METRES = {"nm": 1e-9, "um": 1e-6, "mm": 1e-3, "cm": 1e-2, "m": 1.0}
LENGTH_UNITS = tuple(_METRES)  # the canonical length units


def length_factor(unit: str | None, target: str | None) -> float:
    """What one ``unit`` is in ``target`` (``length_factor("nm", "um") == 0.001``); 1 when either
    is not a known length unit (canonical names: nm, um, mm, cm, m)."""
    if unit not in _METRES or target not in _METRES:
        return 1.0
    return _METRES[unit] / _METRES[target]


def canonical(volume: Volume) -> Volume:
    """The volume in canonical axis order with its length-1 axes dropped (see io_axes)."""
    rgb = bool(volume.meta.get("rgb"))
    order = io_axes.canonical_order(volume.axes, rgb)
    data, axes = volume.data, volume.axes
    spacing, origin = volume.spacing, volume.origin
    if order != sorted(order):
        data = np.transpose(data, order)  # a lazy (dask) array stays lazy
        if isinstance(data, np.ndarray):
            data = np.ascontiguousarray(data)
        body = order[: len(order) - int(rgb)]
        axes = "".join(axes[i] for i in order)
        spacing = tuple(spacing[i] for i in body)
        origin = tuple(origin[i] for i in body)
    data, axes, spacing, origin, dropped = io_axes.squeeze(data, axes, spacing, origin, rgb)
    body = volume.axes[: len(volume.axes) - int(rgb)]
    if "C" in body and "X" in body and body.index("C") > body.index("X"):  # stored channel-last: (Y, X, 1) goes
        dropped = [[*d, io_axes.LAST] if d[0] == "C" else d for d in dropped]  # back as (Y, X, 1), not (1, Y, X)
    meta = dict(volume.meta)
    if dropped:
        meta[io_axes.SINGLETONS_KEY] = [*meta.get(io_axes.SINGLETONS_KEY, []), *dropped]
    return replace(volume, data=data, axes=axes, spacing=spacing, origin=origin, meta=meta)
