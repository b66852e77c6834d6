"""NIfTI reading and writing (nibabel) with affine, units and axes.

See :mod:`napari_medml.io` for the conventions; this module holds the NIfTI half.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_medml.io import axes as io_axes
from napari_medml.errors import InputError
from napari_medml.io.memory import lazy_threshold
from napari_medml.io.time_units import TIME_UNIT_KEY, nifti_time_unit
from napari_medml.io.volume import Volume, affine_from_spacing, canonical_unit, file_stem, length_factor

__all__ = ["load_nifti", "read_nifti", "write_nifti"]

_NIFTI_INTENT_LABEL = 1002  # NIFTI_INTENT_LABEL: voxel values are label ids
_NIFTI_UNITS = {"um": "micron", "mm": "mm", "m": "meter"}

_NIFTI_INTENT_VECTOR = 1007  # NIFTI_INTENT_VECTOR: the 5th (or 4th) dimension holds components
_NIFTI_SLOTS = "XYZTC"  # NIfTI's dimension order; napari's is the reverse
_GZIP_MAGIC = b"\x1f\x8b"


def load_nifti(path: Path) -> Any:
    """Open a NIfTI file with nibabel, gzip-compressed or not whatever its name says.

    nibabel picks the compression from the extension, so a plain NIfTI named ``.nii.gz``
    (or a gzipped one named ``.nii``) would fail as "damaged". The first two bytes (the gzip
    magic ``1f 8b``) decide here; when they disagree with the name the image is built from
    the file's bytes. The data are never memory-mapped: :func:`read_nifti` reads them into
    memory, or a large uncompressed file plane by plane.

    Parameters
    ----------
    path : Path
        A ``.nii`` or ``.nii.gz`` file.

    Returns
    -------
    nibabel.Nifti1Image or nibabel.Nifti2Image
        The image; its ``dataobj`` is not yet read.

    Raises
    ------
    InputError
        If the file is not a NIfTI-1 or NIfTI-2 image.
    """
    import gzip
    import logging

    import nibabel as nib  # imported here: keep `import napari_medml.io` light
    from nibabel.imageglobals import logger as nibabel_logger

    with open(path, "rb") as f:
        gzipped = f.read(2) == _GZIP_MAGIC
    # nibabel prints its header checks ("sizeof_hdr should be 348 ...") on stderr; a damaged file
    # gets one line of ours instead, and a readable one none (trial 40)
    level = nibabel_logger.level
    nibabel_logger.setLevel(logging.CRITICAL + 1)  # with no handler, Python's last resort would print them
    try:
        if gzipped == str(path).lower().endswith(".gz"):  # the name tells the truth: nibabel's way
            img = nib.load(str(path), mmap=False)
        else:
            data = Path(path).read_bytes()
            if gzipped:
                data = gzip.decompress(data)
            # sizeof_hdr, the first 4 bytes, is 540 for NIfTI-2 (348 for NIfTI-1), either byte order
            nifti2 = 540 in (int.from_bytes(data[:4], "little"), int.from_bytes(data[:4], "big"))
            img = (nib.Nifti2Image if nifti2 else nib.Nifti1Image).from_bytes(data)
    finally:
        nibabel_logger.setLevel(level)
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image is a subclass
        raise InputError(f"'{path}' is not a NIfTI-1 or NIfTI-2 image")
    return img


def read_nifti(path: Path) -> Volume:
    """Read a NIfTI-1/2 file into a :class:`Volume` in napari axis order.

    See :mod:`napari_medml.io` for the axes, spacing and affine this gives. An RGB24 or
    RGBA32 image (NIfTI datatypes 128, 2304, as ITK and MITK write) gets a channel axis
    ``C`` of length 3 or 4 in front of the others, like other multi-channel NIfTI.

    Raises
    ------
    InputError
        If the file is not NIfTI, has fewer than 2 or more than 5 dimensions, holds complex
        values, or has both a colour and another channel axis.
    """
    img = load_nifti(path)
    header = img.header
    stored = np.dtype(img.get_data_dtype())
    if stored.kind == "c":  # checked before reading: numpy would drop the imaginary part later
        raise InputError(f"'{path}' holds complex values ({stored}); save its magnitude (abs) or its "
                         "real part as a real-valued image")  # fmt: skip
    # dataobj applies scl_slope/inter only when set, so stored dtypes survive; scaled 8- and 16-bit
    # values (CT's int16 with an intercept of -1024) as float32, which holds them exactly (trial 42:
    # nibabel's float64 took 4x the file's memory, and saved back 4x its size)
    scaled = None if _unscaled(img.dataobj) else (np.float32 if stored.kind in "iu" and stored.itemsize <= 2
                                                  else np.float64)
    if _reads_lazily(img):
        raw = _lazy_dataobj(img, scaled)
    else:
        raw = np.asarray(img.dataobj) if scaled is None else np.asarray(img.dataobj, dtype=scaled)
    if raw.ndim < 2 or raw.ndim > 5:
        raise InputError(f"'{path}' has {raw.ndim} dimensions; expected 2 to 5")
    colours = raw.dtype.names is not None  # RGB24 / RGBA32: one field per colour
    zooms = tuple(float(z) for z in header.get_zooms()[: raw.ndim])
    spatial = min(raw.ndim, 3)
    affine: np.ndarray | None = np.array(img.affine, dtype=np.float64)
    origin = tuple(float(o) for o in affine[:spatial, 3][::-1])
    origin = (0.0,) * (raw.ndim - spatial) + origin
    sform_code = int(header["sform_code"])
    qform_code = int(header["qform_code"])
    if sform_code == 0 and qform_code == 0:
        # no orientation or position, only voxel sizes (NIfTI-1's "method 1", Analyze conversions,
        # nibabel.Nifti1Image(a, None)): nibabel's affine for it (x flipped, origin at the centre) is
        # made up, and another file of the same voxels lay off its grid (cases 38). As a TIFF with a
        # voxel size: no direction, at 0, taken onto the other file's grid with a warning.
        affine, origin = None, (0.0,) * len(origin)
    meta: dict[str, Any] = {"sform_code": sform_code, "qform_code": qform_code}
    if sform_code and qform_code and not np.allclose(img.get_qform(), img.get_sform(), atol=1e-4):
        # two placements: saved back on this grid, the qform stays its own (trial 42: the sform overwrote it)
        meta.update(qform=img.get_qform().tolist(), qform_sform=img.get_sform().tolist())
    space_unit, time_unit = header.get_xyzt_units()
    unit = canonical_unit(space_unit)
    if unit:
        meta["unit"] = unit
    slots = list(_NIFTI_SLOTS[: raw.ndim])
    intent = int(header["intent_code"])
    if raw.ndim == 4:  # time when the header says so; channels for a vector; else unnamed
        has_time = time_unit not in (None, "unknown")
        slots[3] = "C" if intent == _NIFTI_INTENT_VECTOR else "T" if has_time else "Q"
    if time_unit not in (None, "unknown") and "T" in slots:
        meta["time_unit"] = time_unit
    if colours:
        if "C" in slots:
            raise InputError(f"'{path}' has colour voxels ({', '.join(raw.dtype.names)}) and a channel axis "
                             "too; save each colour or each channel as its own image")  # fmt: skip
        # the colour fields as a last NIfTI axis, which napari order puts first
        raw = np.stack([raw[name] for name in raw.dtype.names], axis=-1)
        slots.append("C")
        zooms = (*zooms, 1.0)
        origin = (0.0, *origin)
    data = raw.transpose(tuple(range(raw.ndim))[::-1])
    data = np.ascontiguousarray(data) if isinstance(data, np.ndarray) else data
    is_labels = intent == _NIFTI_INTENT_LABEL and np.issubdtype(data.dtype, np.integer) and not colours
    spacing = tuple(z if a in "XYZT" else 1.0 for a, z in zip(slots, zooms))[::-1]
    return Volume(data, spacing, origin, affine, is_labels, file_stem(path), meta, "".join(slots[::-1]))


def _reads_lazily(img: Any) -> bool:
    """Read plane by plane: a large, uncompressed file of plain numbers (a gzipped file would be
    decompressed from its start for every plane napari shows); scaled values too (trial 42)."""
    proxy = img.dataobj
    on_disk = isinstance(getattr(proxy, "file_like", None), str | Path)  # not bytes read whole
    if not on_disk or str(proxy.file_like).lower().endswith(".gz"):
        return False
    if np.dtype(img.get_data_dtype()).names is not None:  # RGB24 voxels: one field per colour
        return False
    return int(np.prod(proxy.shape, dtype=np.float64)) * np.dtype(img.get_data_dtype()).itemsize > lazy_threshold()


def _unscaled(proxy: Any) -> bool:
    """Whether nibabel's array proxy gives the stored values as they are (no scl_slope/inter)."""
    slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
    return (slope is None or float(slope) == 1.0) and (inter is None or float(inter) == 0.0)


def _lazy_dataobj(img: Any, scaled: Any = None) -> Any:
    """The image as a dask array over nibabel's array proxy (NIfTI order, X fastest), one chunk
    per (X, Y) plane: the slabs napari shows as (Y, X) planes; ``scaled``: the dtype of a file
    with scl_slope/inter (nibabel scales each plane read, in float64)."""
    import dask.array as da

    shape = tuple(img.dataobj.shape)
    chunks = shape[:2] + (1,) * (len(shape) - 2)
    if scaled is None:
        return da.from_array(img.dataobj, chunks=chunks, meta=np.empty((0,) * len(shape), img.get_data_dtype()))
    return da.from_array(img.dataobj, chunks=chunks, meta=np.empty((0,) * len(shape), np.float64)).astype(scaled)


def write_nifti(path: Path, volume: Volume) -> None:
    import nibabel as nib

    data = volume.data
    if volume.meta.get("rgb"):
        raise InputError(
            f"cannot write RGB image '{volume.name}' to NIfTI '{path}'; save it as TIFF"
        )
    axes = io_axes.concrete_axes(volume.axes, labels=volume.is_labels).replace("Q", "T")
    if data.ndim < 2 or data.ndim > 5 or "Y" not in axes[-2:] or "X" != axes[-1]:
        raise InputError(
            f"cannot write '{volume.name}' with axes {volume.axes} to '{path}'; "
            "NIfTI here takes 2 to 5 axes, Y and X last"
        )
    # NIfTI dimensions are positional (X, Y, Z, T, C): fill the gaps with length-1 axes
    used = max(_NIFTI_SLOTS.index(a) for a in axes) + 1
    napari_slots = _NIFTI_SLOTS[:used][::-1]
    arr = np.asarray(data)
    arr = np.transpose(arr, [axes.index(a) for a in napari_slots if a in axes])
    present = [a for a in napari_slots if a in axes]
    arr = arr.reshape(tuple(arr.shape[present.index(a)] if a in axes else 1 for a in napari_slots))
    unit = str(volume.meta.get("unit"))
    # NIfTI stores lengths in m, mm or µm only: a layer in nm or cm is written in µm or mm (was "unknown")
    target = {"nm": "um", "cm": "mm"}.get(unit, unit)
    factor, unit = length_factor(unit, target), target
    size = {a: s * (factor if a in "ZYX" else 1.0) for a, s in zip(axes, volume.spacing, strict=True)}
    spacing = tuple(float(size.get(a, 1.0)) for a in napari_slots)
    spatial = [a for a in napari_slots if a in "ZYX"]
    affine = volume.affine
    if affine is None:
        offset = {a: o * (factor if a in "ZYX" else 1.0) for a, o in zip(axes, volume.origin, strict=True)}
        affine = affine_from_spacing(tuple(size.get(a, 1.0) for a in spatial),
                                     tuple(offset.get(a, 0.0) for a in spatial))  # fmt: skip
    else:
        affine = np.asarray(affine, dtype=np.float64).copy()
        affine[:3] *= factor  # world coordinates in the unit written
    affine = np.asarray(affine, dtype=np.float64)
    # dtype given: nibabel refuses 64-bit integers otherwise, and label ids may need them (2**40)
    img = nib.Nifti1Image(arr.transpose(tuple(range(arr.ndim))[::-1]), affine, dtype=arr.dtype)
    header = img.header
    # keep the file's codes; without them use nibabel's defaults (sform "aligned")
    sform_code = int(volume.meta.get("sform_code", 2))
    qform_code = int(volume.meta.get("qform_code", 0))
    if sform_code == qform_code == 0 and any(volume.origin):  # a moved layer of a file without codes:
        sform_code = 2  # codes 0 would drop its position; "aligned" (to another image) keeps it
    img.set_sform(affine, code=sform_code)
    own = volume.meta.get("qform")  # the file's qform beside this sform: on the same grid, it is kept
    same_grid = own is not None and factor == 1.0 and np.allclose(
        affine, np.asarray(volume.meta.get("qform_sform")), atol=1e-4)
    img.set_qform(np.asarray(own, np.float64) if same_grid else affine, code=qform_code)
    # set_qform resets pixdim from the affine; keep the file's own voxel sizes
    header.set_zooms(spacing[::-1])
    nifti_unit = _NIFTI_UNITS.get(unit, "unknown")
    frames = np.shape(data)[volume.axes.index("T")] if "T" in volume.axes else 0
    header.set_xyzt_units(xyz=nifti_unit, t=nifti_time_unit(volume.meta.get(TIME_UNIT_KEY), frames))
    if volume.is_labels:
        header.set_intent("label")
    elif "C" in axes:
        header.set_intent("vector")
    nib.save(img, str(path))
