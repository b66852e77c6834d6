"""TIFF reading and writing with spacing (ImageJ, OME-XML or tifffile's JSON metadata).

See :mod:`napari_medml.io` for the conventions; this module holds the TIFF half.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from napari_medml.errors import InputError
from napari_medml.io import Volume, canonical_unit, file_stem

__all__ = ["read_tiff", "write_tiff"]

_IMAGEJ_DTYPES = ("uint8", "uint16", "int16", "float32")  # tifffile's 'BHhf'
_OME_DTYPES = ("int8", "int16", "int32", "uint8", "uint16", "uint32", "float32", "float64")
_OME_UNITS = {"um": "µm", "mm": "mm", "nm": "nm", "m": "m", "cm": "cm"}


def read_tiff(path: Path) -> Volume:
    import tifffile

    with tifffile.TiffFile(str(path)) as tif:
        series = tif.series[0]
        data = series.asarray()
        axes = series.axes
        rgb = axes.endswith("S")
        ndim = data.ndim - int(rgb)
        # physical size per axis letter; anything unknown is 1
        sizes: dict[str, float] = {}
        offsets: dict[str, float] = {}
        unit = None
        if tif.is_imagej and tif.imagej_metadata is not None:
            ij = tif.imagej_metadata
            page = tif.pages.first
            sizes["X"] = _resolution_to_spacing(page.tags.get("XResolution"))
            sizes["Y"] = _resolution_to_spacing(page.tags.get("YResolution"))
            sizes["Z"] = float(ij.get("spacing", 1.0))
            for ax in "XYZ":  # ImageJ origins are in pixels: world = (i - origin) * size
                offsets[ax] = -float(ij.get(f"{ax.lower()}origin", 0.0)) * sizes[ax]
            unit = canonical_unit(ij.get("unit"))
        elif tif.is_ome and tif.ome_metadata:
            sizes, offsets, unit = _ome_spatial(tif.ome_metadata)
        elif tif.shaped_metadata:
            info = tif.shaped_metadata[0]
            if "spacing" in info and len(info["spacing"]) == ndim:
                sizes = dict(zip(axes[:ndim], map(float, info["spacing"]), strict=True))
                offsets = dict(zip(axes[:ndim], map(float, info.get("origin", [0.0] * ndim)), strict=True))
            unit = canonical_unit(info.get("unit"))
    spacing = tuple(sizes.get(ax, 1.0) for ax in axes[:ndim])
    origin = tuple(offsets.get(ax, 0.0) for ax in axes[:ndim])
    meta: dict[str, Any] = {}
    if unit:
        meta["unit"] = unit
    if rgb:
        meta["rgb"] = True
    return Volume(data, spacing, origin, None, False, file_stem(path), meta)


def _resolution_to_spacing(tag: Any) -> float:
    if tag is None:
        return 1.0
    num, den = tag.value
    return float(den) / float(num) if num else 1.0


def _ome_spatial(xml: str) -> tuple[dict[str, float], dict[str, float], str | None]:
    root = ET.fromstring(xml)
    pixels = next((el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"), None)
    sizes: dict[str, float] = {}
    offsets: dict[str, float] = {}
    unit = None
    if pixels is None:
        return sizes, offsets, unit
    for ax in "XYZ":
        if f"PhysicalSize{ax}" in pixels.attrib:
            sizes[ax] = float(pixels.attrib[f"PhysicalSize{ax}"])
            unit = unit or canonical_unit(pixels.attrib.get(f"PhysicalSize{ax}Unit", "µm"))
    plane = next((el for el in pixels if el.tag.endswith("Plane")), None)
    if plane is not None:
        for ax in "XYZ":
            if f"Position{ax}" in plane.attrib:
                offsets[ax] = float(plane.attrib[f"Position{ax}"])
    return sizes, offsets, unit


def write_tiff(path: Path, volume: Volume) -> None:
    import tifffile

    data = np.asarray(volume.data)
    rgb = bool(volume.meta.get("rgb"))
    ndim = data.ndim - int(rgb)
    if ndim < 2:
        raise InputError(f"cannot write '{volume.name}' to TIFF '{path}': it is not an image")
    spatial = "ZYX"[-min(ndim, 3):]
    axes = "TCZYX"[-ndim:] if ndim <= 5 else None
    if axes is None:
        raise InputError(f"cannot write '{volume.name}' with {ndim} axes to TIFF; use at most 5")
    axes += "S" if rgb else ""
    size = dict(zip(axes, volume.spacing, strict=False))
    offset = dict(zip(axes, volume.origin, strict=False))
    unit = volume.meta.get("unit")
    resolution = (1.0 / size["X"], 1.0 / size["Y"])
    dtype = data.dtype.name
    if dtype in _IMAGEJ_DTYPES and ndim <= 3 and (not rgb or dtype == "uint8"):
        ij: dict[str, Any] = {"axes": axes}
        if "Z" in spatial:
            ij["spacing"] = size["Z"]
        for ax in spatial:
            if offset[ax]:
                ij[f"{ax.lower()}origin"] = -offset[ax] / size[ax]
        if unit:
            ij["unit"] = unit
        tifffile.imwrite(path, data, imagej=True, resolution=resolution, metadata=ij)
    elif dtype in _OME_DTYPES:
        ome: dict[str, Any] = {"axes": axes}
        ome_unit = _OME_UNITS.get(str(unit), "µm")
        for ax in spatial:
            ome[f"PhysicalSize{ax}"] = size[ax]
            ome[f"PhysicalSize{ax}Unit"] = ome_unit
        # one Plane per 2D plane; Z is the axis just before Y, X, so it cycles fastest
        index = np.arange(int(np.prod(data.shape[: ndim - 2])))
        z = index % data.shape[ndim - 3] if "Z" in spatial else 0 * index
        ome["Plane"] = {f"Position{ax}": [offset[ax]] * len(index) for ax in "YX"}
        if "Z" in spatial:
            ome["Plane"]["PositionZ"] = [offset["Z"] + i * size["Z"] for i in z.tolist()]
        tifffile.imwrite(path, data, ome=True, photometric="rgb" if rgb else "minisblack",
                         resolution=resolution, metadata=ome)  # fmt: skip
    else:  # dtypes neither ImageJ nor OME know (int64, float16, ...): tifffile's JSON
        info = {"spacing": list(volume.spacing), "origin": list(volume.origin), "axes": axes}
        if unit:
            info["unit"] = unit
        tifffile.imwrite(path, data, resolution=resolution, metadata=info,
                         photometric="rgb" if rgb else "minisblack")  # fmt: skip
