"""Read and write images as numpy arrays with their spacing, origin, affine and axes.

Every format is presented in napari's axis order, (Y, X) or (Z, Y, X) with any
non-spatial axes (time, channels) in front, so the rest of the package never
sees a file's own layout. :attr:`Volume.axes` names every axis (``"CZYX"``,
``"TYX"``, ``"YXC"`` for RGB; ``Q`` where the file does not say, see
:mod:`napari_medml.io.axes`): nothing downstream guesses channels from position.
Length-1 axes (other than Y, X) are dropped on reading and restored on writing,
so a (X, Y, 1) NIfTI is a 2D image and what is written "like" it has its shape.

- **NIfTI** (``.nii``, ``.nii.gz``, nibabel) stores (X, Y, Z); arrays are
  transposed. ``spacing`` is the header's voxel size and ``origin`` the affine's
  translation, both in (Z, Y, X) order, so napari's ``scale``/``translate``
  place voxels exactly for a positive diagonal affine. The full 4x4 affine (in
  NIfTI's x, y, z world) is kept in :attr:`Volume.affine`, with the sform and
  qform codes in :attr:`Volume.meta`, and written back as it was, so oblique
  (rotated) volumes survive a read -> write -> read unchanged. A file whose sform
  and qform codes are both 0 stores voxel sizes only: it has no affine and lies
  at 0 as stored (nibabel's stand-in affine, x flipped about the centre, is not
  used), and it is compared to other files as a TIFF with a voxel size is. The 4th NIfTI
  dimension is time (``T``) when the header gives a time unit, channels (``C``)
  for a vector intent, otherwise unnamed (``Q``: some datasets keep modalities
  there); the 5th is channels (ITK vector images are (X, Y, Z, 1, C)). Channels
  are written as the 5th dimension with a vector intent, so they read back as
  channels.
- **TIFF** (``.tif``, ``.tiff``, tifffile): axes from ImageJ hyperstacks (any
  of T, Z, C, Y, X; a plain ImageJ stack is Z, as in ImageJ), OME-XML or
  tifffile's JSON description; spacing from ImageJ metadata (``spacing`` for Z,
  ``finterval`` for T, X/YResolution for Y/X, ``unit``, ``x/y/zorigin``), from
  OME-XML (``PhysicalSize*``, ``TimeIncrement``, first ``Plane`` position) or
  from the JSON description; a one-plane TIFF with none of these takes its pixel
  size from X/YResolution when its ResolutionUnit is centimetre (in mm, or um below
  10 um); a resolution in inches, or a print one (72 dpi...) in centimetres, is a
  print size and is not read. Writing uses ImageJ metadata for the dtypes ImageJ
  knows (uint8, uint16, int16, float32), OME-XML for the other OME dtypes and
  tifffile's JSON description plus resolution tags for the rest. Compressed
  files need ``imagecodecs``; a file that decodes to fewer planes than its
  header promises is reported as damaged. A file larger than
  :func:`napari_medml.io.memory.lazy_threshold` (1 GiB) is read lazily: ``data`` is a dask
  array over tifffile's Zarr store, one chunk per plane. So is an uncompressed ``.nii``
  without intensity scaling (a ``.nii.gz`` is always read whole).
- **NumPy** (``.npy``): the array alone; spacing 1 and origin 0; axes other
  than the last two are unnamed (``Q``). What is written like an image read with
  ``axes`` out of napari's order (a MATLAB-style ``YXZ``) is stored in that order.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_medml.io import axes as io_axes
from napari_medml.errors import InputError
from napari_medml.io.volume import (
    canonical,
    SUPPORTED_EXTENSIONS,
    Volume,
    affine_from_spacing,
    file_format,
    file_stem,
    is_label_file,
)

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "Volume",
    "affine_from_spacing",
    "file_format",
    "is_label_file",
    "read_volume",
    "write_volume",
]

GIVEN_ORDER_KEY = "given_axes"  # meta: the stored order ``axes`` named, when it is not napari's


def read_volume(path: str | Path, axes: str | None = None) -> Volume:
    """Read a NIfTI, TIFF or NumPy file, or a Zarr/OME-Zarr folder, into a :class:`Volume`.

    Parameters
    ----------
    path : str or Path
        A ``.nii``, ``.nii.gz``, ``.tif``, ``.tiff`` or ``.npy`` file, or a ``.zarr``
        folder (read lazily: ``data`` is a dask array, see :mod:`napari_medml.io.zarr`).
    axes : str, optional
        What the file's axes are, one letter each (``T``, ``C``, ``Z``, ``Y``,
        ``X``), in the order the array is stored as NumPy/tifffile read it (for
        NIfTI the reverse of the file's (X, Y, Z, T, C) order); replaces what the
        file says. Length-1 axes count.

    Returns
    -------
    Volume
        Data in canonical napari axis order (non-spatial axes in front) with
        spacing, origin, (NIfTI) affine and axes; length-1 axes other than Y, X
        dropped (listed in ``meta["singletons"]``).

    Raises
    ------
    InputError
        If the file is missing, of an unsupported type, unreadable or damaged,
        or ``axes`` do not fit it.
    """
    path = Path(path)
    fmt = file_format(path)
    if fmt == "zarr":  # a folder, read lazily
        from napari_medml.io.zarr import read_zarr

        return read_zarr(path, axes=axes)
    if path.is_dir():
        raise InputError(f"'{path}' is a folder, not a {fmt.upper()} file; give the file inside it")
    if not path.is_file():
        raise InputError(f"file '{path}' does not exist; check the path")
    from napari_medml.io.nifti import read_nifti  # here: they build on this module
    from napari_medml.io.tiff import AXIS_SIZES_KEY, read_tiff

    reader = {"nifti": read_nifti, "tiff": read_tiff, "npy": _read_npy}[fmt]
    try:
        volume = reader(path)
    except InputError:
        raise
    except Exception as exc:  # any library error means the file is damaged or not this format
        # a codec tifffile imports on demand (imagecodecs, or compression.zstd on newer Python)
        if "imagecodecs" in str(exc) or (fmt == "tiff" and isinstance(exc, ImportError)):
            raise InputError(f"cannot read '{path}': its compression needs the imagecodecs package "
                             f"({exc}); install it with 'pip install imagecodecs'") from exc
        raise InputError(
            f"cannot read '{path}' as {fmt.upper()}: it is damaged or not of that type ({exc}); "
            "check that the file is complete and really is of that type"
        ) from exc
    told = volume.meta.get(AXIS_SIZES_KEY) or {}
    volume = replace(volume, meta={k: v for k, v in volume.meta.items() if k != AXIS_SIZES_KEY})
    if axes is not None:
        given = io_axes.check_axes(axes, volume.data.ndim, f"'{path}'",
                                   io_axes.one_letter_each(volume.data.ndim))
        rgb = bool(volume.meta.get("rgb")) and given.endswith("C")
        meta = {k: v for k, v in volume.meta.items() if k != "rgb"} | ({"rgb": True} if rgb else {})
        n = volume.data.ndim - int(rgb)
        spacing, origin = _fit_length(volume.spacing, n, 1.0), _fit_length(volume.origin, n, 0.0)
        # a spatial axis the file named keeps the file's voxel size wherever --axes puts it
        # (an ImageJ stack written without axes swaps slices and channels; its Z step stays)
        said = {a: (float(v[0]), float(v[1])) for a, v in told.items()}
        said.update(_by_letter(volume.axes[: len(volume.axes) - int(bool(volume.meta.get("rgb")))],
                               volume.spacing, volume.origin))
        spacing = tuple(said[a][0] if a in said else v for a, v in zip(given, spacing))
        origin = tuple(said[a][1] if a in said else v for a, v in zip(given, origin))
        if io_axes.canonical_order(given, rgb) != list(range(len(given))):  # a .npy's outputs go back to it
            meta[GIVEN_ORDER_KEY] = given
        volume = replace(volume, axes=given, meta=meta, spacing=spacing, origin=origin)
    volume = canonical(volume)
    if is_label_file(path, volume.data):
        data = volume.data
        if np.issubdtype(data.dtype, np.floating):  # whole-number floats: the ids they are
            data = np.asarray(data).astype(np.min_scalar_type(max(int(np.max(data)), 1)))
        volume = replace(volume, data=data, is_labels=True)
    if volume.is_labels and not isinstance(volume.data, np.ndarray) and fmt != "zarr" and _fits(volume.data):
        # napari paints only in-memory labels: a large labels file that fits is read whole after all
        volume = replace(volume, data=np.asarray(volume.data))
    return volume


def _fits(data: object) -> bool:
    from napari_medml.io.memory import memory_budget

    return int(np.prod(data.shape, dtype=np.float64)) * np.dtype(data.dtype).itemsize <= memory_budget()


def _by_letter(axes: str, spacing: tuple[float, ...], origin: tuple[float, ...]) -> dict[str, tuple[float, float]]:
    """``{letter: (spacing, origin)}`` of the spatial axes a file named (Z, Y, X), if it gave one per axis."""
    if len(spacing) != len(axes) or len(origin) != len(axes):
        return {}
    return {a: (float(s), float(o)) for a, s, o in zip(axes, spacing, origin) if a in "ZYX"}


def _fit_length(values: tuple[float, ...], n: int, fill: float) -> tuple[float, ...]:
    values = tuple(values)[-n:] if len(values) >= n else tuple(values)
    return (fill,) * (n - len(values)) + values


def write_volume(path: str | Path, volume: Volume) -> Path:
    """Write a :class:`Volume` to NIfTI, TIFF or NumPy, chosen by extension.

    Boolean data are written as uint8 (no format here stores booleans), and float16 data as
    float32 in NIfTI and TIFF (neither NIfTI nor ImageJ reads half floats).

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
    if volume.data.dtype == np.float16 and fmt in ("nifti", "tiff"):
        # NIfTI has no half float and ImageJ/Fiji read no half-float TIFF (trial 44: probability layers
        # could not be saved); float32 holds every float16 value exactly
        volume = replace(volume, data=volume.data.astype(np.float32))
    dropped = volume.meta.get(io_axes.SINGLETONS_KEY)
    if fmt != "npy":  # TIFF, NIfTI and Zarr store Y and X last: a channel-last C of 1 stays off (not (1, Y, X))
        dropped = [d for d in dropped or () if list(d[3:]) != [io_axes.LAST]]
    if dropped and fmt != "zarr":  # the length-1 axes the file had go back (Zarr keeps them listed)
        data, axes, spacing, origin = io_axes.unsqueeze(volume.data, volume.axes, volume.spacing, volume.origin,
                                                        dropped, rgb=bool(volume.meta.get("rgb")))
        meta = {k: v for k, v in volume.meta.items() if k != io_axes.SINGLETONS_KEY}
        volume = replace(volume, data=data, axes=axes, spacing=spacing, origin=origin, meta=meta)
    from napari_medml.io.nifti import write_nifti
    from napari_medml.io.tiff import write_tiff
    from napari_medml.io.zarr import write_zarr

    writer = {"nifti": write_nifti, "tiff": write_tiff, "npy": _write_npy, "zarr": write_zarr}[fmt]
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


# --------------------------------------------------------------------- helpers


# ----------------------------------------------------------------------- NumPy


def _read_npy(path: Path) -> Volume:
    data = np.load(path, allow_pickle=False)  # never unpickle a file we were handed
    if data.dtype.kind == "c":  # trial 42: napari's thumbnail raised a bare NotImplementedError
        raise InputError(f"'{path}' holds complex values ({data.dtype}); save its magnitude (np.abs) or its real "
                         "part as a real-valued image")
    if data.dtype.kind not in "biuf":
        raise InputError(f"'{path}' holds {data.dtype} values, not numbers: save the image as numbers")
    if data.ndim < 2:
        raise InputError(f"'{path}' holds a {data.ndim}D array of shape {data.shape}; give an image")
    axes = io_axes.unknown_axes(data.ndim)
    if data.ndim >= 3 and data.shape[-1] == 1:  # NumPy's (..., Y, X, C) image with one channel: not X = 1
        axes = io_axes.unknown_axes(data.ndim - 1) + "C"
    if data.ndim >= 3 and data.shape[-1] in (3, 4) and min(data.shape[-3:-1]) > 30 and not is_label_file(path, data):
        # an RGB(A) image (..., Y, X, 3|4), by napari's own rule (napari.layers.image._image_utils.guess_rgb),
        # so that the file reads here as napari shows it; a volume of 3 or 4 slices last says --axes ZYX
        n = data.ndim - 1
        return Volume(data, (1.0,) * n, (0.0,) * n, None, False, file_stem(path), meta={"rgb": True},
                      axes=io_axes.unknown_axes(data.ndim, rgb=True))
    return Volume(data, (1.0,) * data.ndim, (0.0,) * data.ndim, None, False, file_stem(path), axes=axes)


def _write_npy(path: Path, volume: Volume) -> None:
    data = np.asarray(volume.data)
    given = volume.meta.get(GIVEN_ORDER_KEY)
    if given and "Q" not in volume.axes:  # a .npy names no axes: it keeps the order --axes gave its input's
        order = [a for a in volume.axes if a not in given] + [a for a in given if a in volume.axes]
        data = np.transpose(data, [volume.axes.index(a) for a in order])
    with open(path, "wb") as f:  # a file object: np.save adds ".npy" to a name without it (".NPY")
        np.save(f, data, allow_pickle=False)
