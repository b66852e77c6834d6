"""TIFF reading and writing with spacing (ImageJ, OME-XML or tifffile's JSON metadata).

See :mod:`napari_medml.io` for the conventions; this module holds the TIFF half.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from napari_medml.io import axes as io_axes
from napari_medml.io.axes import CHANNEL_NAMES_KEY, channel_names_of
from napari_medml.errors import InputError
from napari_medml.io.memory import lazy_threshold
from napari_medml.io.time_units import TIME_UNIT_KEY, canonical_time_unit, imagej_time_unit, ome_time_unit
from napari_medml.io.volume import LENGTH_UNITS, Volume, canonical_unit, file_stem, length_factor

__all__ = ["read_tiff", "write_tiff"]

_IMAGEJ_DTYPES = ("uint8", "uint16", "int16", "float32")  # tifffile's 'BHhf'
_OME_DTYPES = ("int8", "int16", "int32", "uint8", "uint16", "uint32", "float32", "float64")
_OME_UNITS = {"um": "µm", "mm": "mm", "nm": "nm", "m": "m", "cm": "cm"}
_PRINT_DPI = (72.0, 96.0, 150.0, 300.0, 600.0)  # print resolutions, not a pixel's size (in cm too)


LABELS_INFO = "napari-medml: labels"  # ImageJ Info text of the label files this package writes
AXIS_SIZES_KEY = "axis_sizes"  # Volume.meta key, only between read_tiff and read_volume
# a whole-slide file's side images, by tifffile's series names (and Bio-Formats' in OME-TIFF)
_SLIDE_EXTRAS = ("thumbnail", "label", "macro", "thumbnail image", "label image", "macro image")


def read_tiff(path: Path) -> Volume:
    """Read a TIFF file's image (its first series) into a :class:`Volume`.

    See :mod:`napari_medml.io` for the metadata used. tifffile's own log lines are held back
    while reading: a problem reaches the user as one :class:`InputError` line.

    Raises
    ------
    InputError
        If the file is cut short, holds complex values, or holds more than one image
        (pyramid levels and a whole-slide file's thumbnail, label and macro images excepted).
    """
    with _quiet_tifffile():
        return _read_tiff(path)


@contextmanager
def _quiet_tifffile() -> Iterator[None]:
    """Silence the ``tifffile`` logger (its warnings on damaged files) and restore its level."""
    import logging

    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.ERROR + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _read_tiff(path: Path) -> Volume:
    import tifffile

    with tifffile.TiffFile(str(path)) as tif:
        _check_pages(tif, path)
        _check_one_image(tif, path)
        series = tif.series[0]
        if np.dtype(series.dtype).kind == "c":
            raise InputError(f"'{path}' holds complex values ({series.dtype}); save its magnitude (abs) "
                             "or its real part as a real-valued image")  # fmt: skip
        rgb = series.axes.endswith("S") and series.keyframe.photometric in (2, 6)  # RGB, YCbCr
        data = _lazy_series(series, rgb) if series.nbytes > lazy_threshold() else series.asarray()
        axes = _axes_letters(series.axes, rgb, imagej=bool(tif.is_imagej))
        if axes.endswith("YXQ") and data.shape[-1] == 1 and "C" not in axes:
            axes = axes[:-1] + "C"  # NumPy's (..., Y, X, 1) one-channel image, as a .npy of it reads
        ndim = data.ndim - int(rgb)
        # physical size per axis letter; anything unknown is 1
        sizes: dict[str, float] = {}
        offsets: dict[str, float] = {}
        unit = time_unit = None
        is_labels = False
        channel_names: list[str] = []
        if tif.is_imagej and tif.imagej_metadata is not None:
            ij = tif.imagej_metadata
            page = tif.pages.first
            sizes["X"] = _resolution_to_spacing(page.tags.get("XResolution"))
            sizes["Y"] = _resolution_to_spacing(page.tags.get("YResolution"))
            sizes["Z"] = float(ij.get("spacing", 1.0))
            sizes["T"] = float(ij.get("finterval", 1.0))
            if "finterval" in ij:  # ImageJ's default unit is seconds
                time_unit, factor = canonical_time_unit(ij.get("tunit", "sec"))
                sizes["T"] *= factor
            for ax in "XYZ":  # ImageJ origins are in pixels: world = (i - origin) * size
                offsets[ax] = -float(ij.get(f"{ax.lower()}origin", 0.0)) * sizes[ax]
            unit = canonical_unit(ij.get("unit"))
            is_labels = ij.get("Info") == LABELS_INFO
            planes = int(np.prod([n for n, a in zip(data.shape[:ndim], axes) if a not in "YX"]))
            _check_count(path, int(ij.get("images", 0) or 0), planes, "planes")
        elif tif.is_ome and tif.ome_metadata:
            sizes, offsets, unit, time_unit = _ome_spatial(tif.ome_metadata)
            channel_names = _ome_channel_names(tif.ome_metadata)
        elif tif.shaped_metadata:
            info = tif.shaped_metadata[0]
            _check_count(path, int(np.prod(info.get("shape", data.shape))), int(data.size), "values")
            if "spacing" in info and len(info["spacing"]) == ndim:
                sizes = dict(zip(axes[:ndim], map(float, info["spacing"]), strict=True))
                offsets = dict(zip(axes[:ndim], map(float, info.get("origin", [0.0] * ndim)), strict=True))
            unit = canonical_unit(info.get("unit"))
            time_unit = canonical_time_unit(info.get(TIME_UNIT_KEY))[0]  # written in nibabel's names
            is_labels = bool(info.get("labels"))
        if not sizes and not tif.is_imagej and not tif.is_ome and set(axes[:ndim]) <= set("YXC"):
            sizes, unit = _centimetre_resolution(tif.pages.first, unit)  # one plane: a stack's step is unknown
    if unit == "nm":  # nanometres as micrometres, so files of one microscope compare whatever they say
        factor = length_factor("nm", "um")
        sizes = {ax: v * factor if ax in "XYZ" else v for ax, v in sizes.items()}
        offsets = {ax: v * factor if ax in "XYZ" else v for ax, v in offsets.items()}
        unit = "um"
    spacing = tuple(sizes.get(ax, 1.0) for ax in axes[:ndim])
    origin = tuple(offsets.get(ax, 0.0) for ax in axes[:ndim])
    meta: dict[str, Any] = {}
    if unit:
        meta["unit"] = unit
    if time_unit and "T" in axes:
        meta[TIME_UNIT_KEY] = time_unit
    if rgb:
        meta["rgb"] = True
    if "C" in axes and len(channel_names) == data.shape[axes.index("C")]:
        meta[CHANNEL_NAMES_KEY] = channel_names
    # what the file says of an axis it does not show (ImageJ's Z step of a stack it calls channels):
    # read_volume gives it to that axis when --axes names it, then drops this key
    meta[AXIS_SIZES_KEY] = {a: [float(sizes[a]), float(offsets.get(a, 0.0))] for a in "ZYX" if a in sizes}
    return Volume(data, spacing, origin, None, is_labels, file_stem(path), meta, axes)


def _lazy_series(series: Any, rgb: bool) -> Any:
    """A large series as a dask array read plane by plane from the file (tifffile's Zarr store
    of its full-resolution level), so opening it in napari reads only the planes shown.

    One dask chunk is one whole plane (Y, X and an RGB axis): napari shows planes, and the
    block-by-block prediction reads slabs of them."""
    import dask.array as da
    import zarr

    array = zarr.open(series.aszarr(level=0), mode="r")
    outer = array.ndim - 2 - int(rgb)  # the axes in front of a plane
    chunks = (1,) * outer + tuple(array.shape[outer:])
    return da.from_zarr(array, chunks=chunks)


def _axes_letters(tiff_axes: str, rgb: bool, imagej: bool) -> str:
    """tifffile's axis codes as ours: S is an RGB colour axis (C); ImageJ's plain stack
    (I) is Z, as in ImageJ; any other code is unnamed (Q)."""
    out = []
    for i, code in enumerate(tiff_axes):
        if code == "S" and rgb and i == len(tiff_axes) - 1:
            out.append("C")
        elif code in "TCZYX" and code not in out:
            out.append(code)
        elif code == "I" and imagej and "Z" not in tiff_axes:
            out.append("Z")
        else:
            out.append("Q")
    return "".join(out)


def _check_pages(tif: Any, path: Path) -> None:
    """Refuse a file whose image data run past its end (a truncated download or copy):
    tifffile reads what is there, which can look like other data."""
    import os

    size = os.path.getsize(path)
    for page in tif.pages:
        ends = [int(o) + int(n) for o, n in zip(getattr(page, "dataoffsets", ()),
                                                 getattr(page, "databytecounts", ()))]  # fmt: skip
        if ends and max(ends) > size:
            raise InputError(f"'{path}' is damaged: its image data run past the end of the file "
                             f"({max(ends)} of {size} bytes); it was cut short - copy or export it again")  # fmt: skip


def _check_one_image(tif: Any, path: Path) -> None:
    """Refuse a file holding several images (series), of which only the first would be read.

    Pyramid levels belong to one series; a whole-slide file's Thumbnail, Label and Macro
    series are side images, so such files still read their main image."""
    images = [s for s in tif.series if str(getattr(s, "name", "") or "").lower() not in _SLIDE_EXTRAS]
    if len(images) > 1:
        shapes = ", ".join(str(tuple(s.shape)) for s in images[:5]) + (", ..." if len(images) > 5 else "")
        raise InputError(f"'{path}' holds {len(images)} images (shapes {shapes}) and only one can be read; "
                         "save each image as its own file, e.g. with tifffile or Fiji")  # fmt: skip


def _check_count(path: Path, promised: int, got: int, what: str) -> None:
    if promised and got < promised:
        raise InputError(f"'{path}' is damaged: its header promises {promised} {what} but only "
                         f"{got} could be read; copy or export it again")  # fmt: skip


def _centimetre_resolution(page: Any, unit: str | None) -> tuple[dict[str, float], str | None]:
    """A plain TIFF's pixel size from its XResolution/YResolution tags in pixels per centimetre.

    Only ResolutionUnit CENTIMETER (3) is read, with both tags set: a resolution in inches
    (tifffile's and most writers' default, often 72 dpi) is a print size, not the pixel's, and so
    is a print resolution written in centimetres (72, 96, 150, 300 or 600 dpi, as an editor in a
    metric locale saves it): the image stays "no size". The size is given in mm, or in um below
    10 um (a microscope's), as the other files name them.
    """
    if int(getattr(page.tags.get("ResolutionUnit"), "value", 0) or 0) != 3:
        return {}, unit
    tags = {ax: page.tags.get(f"{ax}Resolution") for ax in "XY"}
    if any(tag is None or not tag.value[0] or not tag.value[1] for tag in tags.values()):
        return {}, unit
    cm = {ax: _resolution_to_spacing(tag) for ax, tag in tags.items()}
    per_inch = [2.54 / v for v in cm.values()]
    if any(not np.isfinite(v) or v <= 0 for v in cm.values()) or all(
            any(abs(d - p) < 0.01 * p for p in _PRINT_DPI) for d in per_inch):
        return {}, unit
    target = "um" if max(cm.values()) < 1e-3 else "mm"
    return {ax: v * length_factor("cm", target) for ax, v in cm.items()}, target


def _resolution_to_spacing(tag: Any) -> float:
    if tag is None:
        return 1.0
    num, den = tag.value
    return float(den) / float(num) if num else 1.0


def _ome_spatial(xml: str) -> tuple[dict[str, float], dict[str, float], str | None, str | None]:
    """Sizes and positions per axis letter, the length unit and the time unit of an OME-XML."""
    root = ET.fromstring(xml)
    pixels = next((el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"), None)
    sizes: dict[str, float] = {}
    offsets: dict[str, float] = {}
    unit = time_unit = None
    if pixels is None:
        return sizes, offsets, unit, time_unit
    units: dict[str, str | None] = {}
    for ax in "XYZ":
        if f"PhysicalSize{ax}" in pixels.attrib:
            sizes[ax] = float(pixels.attrib[f"PhysicalSize{ax}"])
            units[ax] = canonical_unit(pixels.attrib.get(f"PhysicalSize{ax}Unit", "µm"))
            unit = unit or units[ax]
    # OME allows a unit per axis (Z in nm, X/Y in µm): every axis in the first one's unit
    for ax, own in units.items():
        sizes[ax] *= length_factor(own, unit)
    if "TimeIncrement" in pixels.attrib:
        time_unit, factor = canonical_time_unit(pixels.attrib.get("TimeIncrementUnit", "s"))
        sizes["T"] = float(pixels.attrib["TimeIncrement"]) * factor
    plane = next((el for el in pixels if el.tag.endswith("Plane")), None)
    if plane is not None:
        for ax in "XYZ":
            if f"Position{ax}" in plane.attrib:
                own = canonical_unit(plane.attrib.get(f"Position{ax}Unit", "µm"))
                offsets[ax] = float(plane.attrib[f"Position{ax}"]) * length_factor(own, unit)
    return sizes, offsets, unit, time_unit


def _ome_channel_names(xml: str) -> list[str]:
    """The OME ``Channel`` names of the first image, in order ([] when any is missing or blank)."""
    root = ET.fromstring(xml)
    pixels = next((el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"), None)
    if pixels is None:
        return []
    names = [el.attrib.get("Name", "").strip() for el in pixels if el.tag.endswith("Channel")]
    return names if all(names) else []


def write_tiff(path: Path, volume: Volume) -> None:
    import tifffile

    data = np.asarray(volume.data)
    rgb = bool(volume.meta.get("rgb"))
    ndim = data.ndim - int(rgb)
    if ndim < 2:
        raise InputError(f"cannot write '{volume.name}' to TIFF '{path}': it is not an image")
    axes = io_axes.concrete_axes(volume.axes, rgb, labels=volume.is_labels)[:ndim]  # a file must name every axis
    if not axes.endswith("YX"):
        raise InputError(f"cannot write '{volume.name}' with axes {volume.axes} to TIFF; Y and X must be last")
    spatial = "".join(a for a in axes if a in "ZYX")
    size = dict(zip(axes, volume.spacing, strict=False))
    offset = dict(zip(axes, volume.origin, strict=False))
    unit = volume.meta.get("unit")
    resolution = (1.0 / size["X"], 1.0 / size["Y"])
    # OME and tifffile's JSON pages: the resolution tags in centimetres, as the sizes say (trial 48: tifffile's
    # default unit, the inch, gave 0.26 inch pixels beside PhysicalSizeX 0.26 µm), or with no unit; ImageJ's
    # convention is pixels per its own unit with no TIFF unit, as tifffile writes it
    unit_cm = length_factor(canonical_unit(unit), "cm") if canonical_unit(unit) in LENGTH_UNITS else None
    tagged = ({"resolution": (resolution[0] / unit_cm, resolution[1] / unit_cm), "resolutionunit": "CENTIMETER"}
              if unit_cm else {"resolution": resolution, "resolutionunit": "NONE"})
    dtype = data.dtype.name
    ome_name = path.name.lower().endswith((".ome.tif", ".ome.tiff"))  # the name promises OME-TIFF
    # ImageJ drops length-1 axes (a (1, Y, X) stack reads back as (Y, X)); tifffile's JSON keeps them
    length1 = any(n == 1 for n in data.shape[: ndim - 2])
    if dtype in _IMAGEJ_DTYPES and (not rgb or dtype == "uint8") and not ome_name and not length1:
        # ImageJ hyperstacks are stored T, Z, C, Y, X (S): reorder to that
        order = sorted(range(ndim), key=lambda i: "TZCYX".index(axes[i]))
        data = np.transpose(data, order + ([ndim] if rgb else []))
        ij: dict[str, Any] = {"axes": "".join(axes[i] for i in order) + ("S" if rgb else "")}
        if "Z" in spatial:
            ij["spacing"] = size["Z"]
        if "T" in axes and (size["T"] != 1.0 or volume.meta.get(TIME_UNIT_KEY)):
            ij["finterval"] = size["T"]
            if imagej_time_unit(volume.meta.get(TIME_UNIT_KEY)):
                ij["tunit"] = imagej_time_unit(volume.meta.get(TIME_UNIT_KEY))
        for ax in spatial:
            if offset[ax]:
                ij[f"{ax.lower()}origin"] = -offset[ax] / size[ax]
        if unit:
            ij["unit"] = unit
        if volume.is_labels:  # ImageJ's Info text: this reader opens the file as labels again
            ij["Info"] = LABELS_INFO
        tifffile.imwrite(path, data, imagej=True, resolution=resolution, metadata=ij)
    elif dtype in _OME_DTYPES and not length1:
        ome: dict[str, Any] = {"axes": axes + ("S" if rgb else "")}
        # no unit: OME's "pixel" (a bare size would read as OME's default, µm: trial 40)
        ome_unit = _OME_UNITS.get(str(unit), "µm") if unit else "pixel"
        # a volume with no geometry (voxels of 1, no unit, at 0) gets none: OME's default unit would
        # make it 1 µm voxels, which another file in mm is then compared to (review 35)
        placed = unit or any(size[ax] != 1.0 or offset[ax] for ax in spatial)
        for ax in spatial if placed else "":
            ome[f"PhysicalSize{ax}"] = size[ax]
            ome[f"PhysicalSize{ax}Unit"] = ome_unit
        time_unit = volume.meta.get(TIME_UNIT_KEY)
        # an interval only when one is known: a bare 1 read back as "1 s" (review 43), and a unit OME
        # cannot name ('frame', NIfTI's 'hz') is left out rather than called seconds (OME's default)
        if "T" in axes and (ome_time_unit(time_unit) or (time_unit is None and size["T"] != 1.0)):
            ome["TimeIncrement"] = size["T"]
            ome["TimeIncrementUnit"] = ome_time_unit(time_unit) or "s"
        names = channel_names_of(volume, axes)
        if names:
            ome["Channel"] = {"Name": names}
        # one Plane per 2D plane; Z is the axis just before Y, X (canonical order), so it
        # cycles fastest
        index = np.arange(int(np.prod(data.shape[: ndim - 2])))
        z = index % data.shape[ndim - 3] if "Z" in spatial else 0 * index
        ome["Plane"] = {f"Position{ax}": [offset[ax]] * len(index) for ax in ("YX" if placed else "")}
        if "Z" in spatial and placed:
            ome["Plane"]["PositionZ"] = [offset["Z"] + i * size["Z"] for i in z.tolist()]
        for ax in spatial if placed else "":  # a position without its unit is read as µm (OME's default): name it
            ome["Plane"][f"Position{ax}Unit"] = [ome_unit] * len(index)
        tifffile.imwrite(path, data, ome=True, photometric="rgb" if rgb else "minisblack", metadata=ome,
                         **tagged)  # fmt: skip
    else:  # dtypes neither ImageJ nor OME know (int64, float16, ...), or length-1 axes: tifffile's JSON
        info = {"spacing": list(volume.spacing), "origin": list(volume.origin),
                "axes": axes + ("S" if rgb else "")}  # fmt: skip
        if unit:
            info["unit"] = unit
        if "T" in axes and volume.meta.get(TIME_UNIT_KEY):
            info[TIME_UNIT_KEY] = volume.meta[TIME_UNIT_KEY]
        if volume.is_labels:  # read back as labels whatever the file's name
            info["labels"] = True
        # ome=False: tifffile takes a .ome.tif name for OME and dropped this JSON, voxel size and unit with it
        # (review 43: a one-slice NIfTI saved as x.ome.tif read back at 1 x 1 pixels)
        tifffile.imwrite(path, data, metadata=info, ome=False, photometric="rgb" if rgb else "minisblack",
                         **tagged)  # fmt: skip
