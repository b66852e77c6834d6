"""Read and write images as numpy arrays with their spacing, origin and affine.

Every format is presented in napari's axis order, (Y, X) or (Z, Y, X) with any
non-spatial axes (time, channels) in front, so the rest of the package never
sees a file's own layout.

- **NIfTI** (``.nii``, ``.nii.gz``, nibabel) stores (X, Y, Z); arrays are
  transposed. ``spacing`` is the header's voxel size and ``origin`` the affine's
  translation, both in (Z, Y, X) order, so napari's ``scale``/``translate``
  place voxels exactly for a positive diagonal affine. The full 4x4 affine (in
  NIfTI's x, y, z world) is kept in :attr:`Volume.affine`, with the sform and
  qform codes in :attr:`Volume.meta`, and written back as it was, so oblique
  (rotated) volumes survive a read -> write -> read unchanged.
- **TIFF** (``.tif``, ``.tiff``, tifffile): spacing comes from ImageJ metadata
  (``spacing`` for Z, X/YResolution for Y/X, ``unit``, ``x/y/zorigin``), from
  OME-XML (``PhysicalSize*``, first ``Plane`` position) or from tifffile's own
  JSON description. Writing uses ImageJ metadata for the dtypes ImageJ knows
  (uint8, uint16, int16, float32, 2D/3D), OME-XML for the other OME dtypes and
  tifffile's JSON description plus resolution tags for the rest.
- **NumPy** (``.npy``): the array alone; spacing 1 and origin 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_medml.errors import InputError

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "Volume",
    "affine_from_spacing",
    "file_format",
    "is_label_file",
    "read_volume",
    "write_volume",
]

SUPPORTED_EXTENSIONS = (".nii.gz", ".nii", ".tif", ".tiff", ".npy")
_LABEL_WORDS = re.compile(r"seg|label|mask", re.IGNORECASE)
_NIFTI_INTENT_LABEL = 1002  # NIFTI_INTENT_LABEL: voxel values are label ids
_UNITS = {
    "um": "um", "µm": "um", "\\u00b5m": "um", "micron": "um", "microns": "um",
    "micrometer": "um", "mm": "mm", "millimeter": "mm", "nm": "nm",
    "nanometer": "nm", "m": "m", "meter": "m", "cm": "cm", "centimeter": "cm",
}  # fmt: skip
_NIFTI_UNITS = {"um": "micron", "mm": "mm", "m": "meter"}


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
        Voxel size per axis of ``data`` (the colour axis excepted); non-spatial
        axes have spacing 1.
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
        ``sform_code``, ``qform_code``.
    """

    data: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    affine: np.ndarray | None = None
    is_labels: bool = False
    name: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)


def file_format(path: str | Path) -> str:
    """Return ``"nifti"``, ``"tiff"`` or ``"npy"`` for a path's extension.

    Raises
    ------
    InputError
        If the extension is not one of :data:`SUPPORTED_EXTENSIONS`.
    """
    lower = str(path).lower()
    for ext, fmt in ((".nii.gz", "nifti"), (".nii", "nifti"), (".tif", "tiff"),
                     (".tiff", "tiff"), (".npy", "npy")):  # fmt: skip
        if lower.endswith(ext):
            return fmt
    raise InputError(
        f"'{path}' has an unsupported file type; use one of "
        f"{', '.join(SUPPORTED_EXTENSIONS)}"
    )


def is_label_file(path: str | Path, data: np.ndarray) -> bool:
    """Tell whether a file holds labels: integer data and a name with seg/label/mask.

    Parameters
    ----------
    path : str or Path
        The file; only its name is looked at (case-insensitive).
    data : np.ndarray
        The array read from it.
    """
    integer = np.issubdtype(data.dtype, np.integer) or data.dtype == bool
    return bool(integer and _LABEL_WORDS.search(Path(path).name))


def read_volume(path: str | Path) -> Volume:
    """Read a NIfTI, TIFF or NumPy file into a :class:`Volume`.

    Parameters
    ----------
    path : str or Path
        A ``.nii``, ``.nii.gz``, ``.tif``, ``.tiff`` or ``.npy`` file.

    Returns
    -------
    Volume
        Data in napari axis order with spacing, origin and (NIfTI) affine.

    Raises
    ------
    InputError
        If the file is missing, of an unsupported type, or unreadable.
    """
    path = Path(path)
    fmt = file_format(path)
    if not path.is_file():
        raise InputError(f"file '{path}' does not exist; check the path")
    from napari_medml.io_tiff import read_tiff  # here: io_tiff builds on this module

    reader = {"nifti": _read_nifti, "tiff": read_tiff, "npy": _read_npy}[fmt]
    try:
        volume = reader(path)
    except InputError:
        raise
    except Exception as exc:  # any library error means the file is damaged or not this format
        raise InputError(
            f"cannot read '{path}' as {fmt.upper()} ({exc}); check that the file "
            "is complete and really is of that type"
        ) from exc
    if is_label_file(path, volume.data):
        volume = replace(volume, is_labels=True)
    return volume


def write_volume(path: str | Path, volume: Volume) -> Path:
    """Write a :class:`Volume` to NIfTI, TIFF or NumPy, chosen by extension.

    Boolean data are written as uint8 (no format here stores booleans).

    Parameters
    ----------
    path : str or Path
        Target file; its folder must exist.
    volume : Volume
        What to write; NIfTI uses ``volume.affine`` when given, else an affine
        built from spacing and origin (:func:`affine_from_spacing`).

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    InputError
        If the extension is unsupported or the folder does not exist.
    """
    path = Path(path)
    fmt = file_format(path)
    if not path.parent.is_dir():
        raise InputError(f"cannot write '{path}': folder '{path.parent}' does not exist")
    if volume.data.dtype == bool:
        volume = replace(volume, data=volume.data.astype(np.uint8))
    from napari_medml.io_tiff import write_tiff

    writer = {"nifti": _write_nifti, "tiff": write_tiff, "npy": _write_npy}[fmt]
    try:
        writer(path, volume)
    except InputError:
        raise
    except Exception as exc:  # e.g. a dtype the format cannot store
        raise InputError(
            f"cannot write '{volume.name or 'data'}' ({volume.data.dtype}, shape "
            f"{volume.data.shape}) to '{path}' as {fmt.upper()} ({exc}); try another "
            "file type or convert the data type"
        ) from exc
    return path


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


# --------------------------------------------------------------------- helpers


def file_stem(path: Path) -> str:
    name = path.name
    for ext in (".ome.tif", ".ome.tiff", *SUPPORTED_EXTENSIONS):
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


# ----------------------------------------------------------------------- NIfTI


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib  # imported here: keep `import napari_medml.io` light

    img = nib.load(str(path), mmap=False)
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image is a subclass
        raise InputError(f"'{path}' is not a NIfTI-1 or NIfTI-2 image")
    header = img.header
    # dataobj applies scl_slope/inter only when set, so stored dtypes survive
    raw = np.asarray(img.dataobj)
    if raw.ndim < 2 or raw.ndim > 5:
        raise InputError(f"'{path}' has {raw.ndim} dimensions; expected 2 to 5")
    data = np.ascontiguousarray(raw.transpose(tuple(range(raw.ndim))[::-1]))
    zooms = tuple(float(z) for z in header.get_zooms()[: raw.ndim])
    spatial = min(raw.ndim, 3)
    affine = np.array(img.affine, dtype=np.float64)
    origin = tuple(float(o) for o in affine[:spatial, 3][::-1])
    origin = (0.0,) * (raw.ndim - spatial) + origin
    sform_code = int(header["sform_code"])
    qform_code = int(header["qform_code"])
    meta: dict[str, Any] = {"sform_code": sform_code, "qform_code": qform_code}
    unit = canonical_unit(header.get_xyzt_units()[0])
    if unit:
        meta["unit"] = unit
    is_labels = (
        int(header["intent_code"]) == _NIFTI_INTENT_LABEL and np.issubdtype(data.dtype, np.integer)
    )
    return Volume(data, zooms[::-1], origin, affine, is_labels, file_stem(path), meta)


def _write_nifti(path: Path, volume: Volume) -> None:
    import nibabel as nib

    data = volume.data
    if volume.meta.get("rgb"):
        raise InputError(
            f"cannot write RGB image '{volume.name}' to NIfTI '{path}'; save it as TIFF"
        )
    if data.ndim < 2 or data.ndim > 5:
        raise InputError(
            f"cannot write '{volume.name}' with {data.ndim} dimensions to '{path}'; "
            "NIfTI here takes 2 to 5"
        )
    affine = volume.affine
    if affine is None:
        affine = affine_from_spacing(volume.spacing, volume.origin)
    affine = np.asarray(affine, dtype=np.float64)
    img = nib.Nifti1Image(np.asarray(data).transpose(tuple(range(data.ndim))[::-1]), affine)
    header = img.header
    # keep the file's codes; without them use nibabel's defaults (sform "aligned")
    sform_code = int(volume.meta.get("sform_code", 2))
    qform_code = int(volume.meta.get("qform_code", 0))
    img.set_sform(affine, code=sform_code)
    img.set_qform(affine, code=qform_code)
    # set_qform resets pixdim from the affine; keep the file's own voxel sizes
    header.set_zooms(tuple(float(s) for s in volume.spacing[::-1]))
    nifti_unit = _NIFTI_UNITS.get(str(volume.meta.get("unit")), "unknown")
    header.set_xyzt_units(xyz=nifti_unit)
    if volume.is_labels:
        header.set_intent("label")
    nib.save(img, str(path))


# ----------------------------------------------------------------------- NumPy


def _read_npy(path: Path) -> Volume:
    data = np.load(path, allow_pickle=False)  # never unpickle a file we were handed
    return Volume(data, (1.0,) * data.ndim, (0.0,) * data.ndim, None, False, file_stem(path))


def _write_npy(path: Path, volume: Volume) -> None:
    np.save(path, np.asarray(volume.data), allow_pickle=False)
