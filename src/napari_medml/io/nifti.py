"""NIfTI reading and writing (nibabel) with affine, units and axes.

See :mod:`napari_medml.io` for the conventions; this module holds the NIfTI half.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_medml.io import axes as io_axes
from napari_medml.errors import InputError
from napari_medml.io.volume import Volume, affine_from_spacing, canonical_unit, file_stem

__all__ = ["read_nifti", "write_nifti"]

_NIFTI_INTENT_LABEL = 1002  # NIFTI_INTENT_LABEL: voxel values are label ids
_NIFTI_UNITS = {"um": "micron", "mm": "mm", "m": "meter"}

_NIFTI_INTENT_VECTOR = 1007  # NIFTI_INTENT_VECTOR: the 5th (or 4th) dimension holds components
_NIFTI_SLOTS = "XYZTC"  # NIfTI's dimension order; napari's is the reverse


def read_nifti(path: Path) -> Volume:
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
    is_labels = intent == _NIFTI_INTENT_LABEL and np.issubdtype(data.dtype, np.integer)
    spacing = tuple(z if a in "XYZT" else 1.0 for a, z in zip(slots, zooms))[::-1]
    return Volume(data, spacing, origin, affine, is_labels, file_stem(path), meta, "".join(slots[::-1]))


def write_nifti(path: Path, volume: Volume) -> None:
    import nibabel as nib

    data = volume.data
    if volume.meta.get("rgb"):
        raise InputError(
            f"cannot write RGB image '{volume.name}' to NIfTI '{path}'; save it as TIFF"
        )
    axes = io_axes.concrete_axes(volume.axes).replace("Q", "T")
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
    size = dict(zip(axes, volume.spacing, strict=True))
    spacing = tuple(float(size.get(a, 1.0)) for a in napari_slots)
    spatial = [a for a in napari_slots if a in "ZYX"]
    affine = volume.affine
    if affine is None:
        offset = dict(zip(axes, volume.origin, strict=True))
        affine = affine_from_spacing(tuple(size.get(a, 1.0) for a in spatial),
                                     tuple(offset.get(a, 0.0) for a in spatial))  # fmt: skip
    affine = np.asarray(affine, dtype=np.float64)
    # dtype given: nibabel refuses 64-bit integers otherwise, and label ids may need them (2**40)
    img = nib.Nifti1Image(arr.transpose(tuple(range(arr.ndim))[::-1]), affine, dtype=arr.dtype)
    header = img.header
    # keep the file's codes; without them use nibabel's defaults (sform "aligned")
    sform_code = int(volume.meta.get("sform_code", 2))
    qform_code = int(volume.meta.get("qform_code", 0))
    img.set_sform(affine, code=sform_code)
    img.set_qform(affine, code=qform_code)
    # set_qform resets pixdim from the affine; keep the file's own voxel sizes
    header.set_zooms(spacing[::-1])
    nifti_unit = _NIFTI_UNITS.get(str(volume.meta.get("unit")), "unknown")
    frames = np.shape(data)[volume.axes.index("T")] if "T" in volume.axes else 0
    time_unit = str(volume.meta.get("time_unit", "sec")) if frames > 1 else "unknown"
    header.set_xyzt_units(xyz=nifti_unit, t=time_unit)
    if volume.is_labels:
        header.set_intent("label")
    elif "C" in axes:
        header.set_intent("vector")
    nib.save(img, str(path))
