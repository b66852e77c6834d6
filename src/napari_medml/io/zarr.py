"""Zarr and OME-Zarr: volumes too large for memory, read lazily and written block by block.

- **Reading** (:func:`read_zarr`, :func:`read_levels`): an OME-Zarr image group
  (NGFF 0.4 ``.zattrs``/``multiscales`` or 0.5 ``zarr.json``/``ome``) gives each
  resolution level as a lazy ``dask`` array with its spacing (the level's ``scale``
  transformation), origin (``translation``), axis names and unit; a plain Zarr
  array (or a group holding one array) gives spacing 1 and unnamed leading axes; a level's
  array opened by its folder (``img.ome.zarr/2``) gives that level as its image's.
  Nothing is read until a region is sliced and computed. :func:`choose_level`
  picks the level whose spacing is nearest a model's training spacing.
- **Writing** (:func:`create_ome_zarr`, :func:`write_zarr`): an OME-Zarr 0.4 image
  group (Zarr format 2, which every OME-Zarr reader knows) with one level ``"0"``,
  its ``scale``/``translation`` and axes; a NIfTI affine and the format details ride
  in the group's ``napari_medml`` attributes so a NIfTI -> OME-Zarr -> NIfTI trip
  keeps the header. A dask input is stored chunk by chunk, never loaded whole.

The NGFF metadata is a small JSON dictionary read here by hand: ``ome-zarr-py`` would
bring S3/HTTP clients and pydantic models for what is a few keys of attributes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_medml.config import to_dict
from napari_medml.errors import InputError
from napari_medml.io import axes as io_axes
from napari_medml.io.time_units import TIME_UNIT_KEY, canonical_time_unit, ngff_time_unit
from napari_medml.io.volume import Volume, canonical, canonical_unit, inside_zarr, length_factor
from napari_medml.io.zarr_rgb import RGB_AS_CHANNELS, channels_to_rgb, rgb_to_channels

__all__ = ["ATTRS_KEY", "Level", "choose_level", "create_ome_zarr", "is_zarr_path", "read_levels", "read_zarr",
           "write_zarr"]

ATTRS_KEY = "napari_medml"  # our group attributes: affine, file details, labels flag, progress
_NGFF_UNITS = {"um": "micrometer", "mm": "millimeter", "nm": "nanometer", "m": "meter", "cm": "centimeter"}
_NGFF_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
_LABEL_HINT = ("seg", "label", "mask", "scribble")


@dataclass(frozen=True)
class Level:
    """One resolution level of a (multiscale) Zarr image.

    Attributes
    ----------
    data : dask.array.Array
        The level, lazily read, in the store's axis order.
    spacing, origin : tuple of float
        Per axis of ``data`` (channels 1 and 0).
    path : str
        The level's array path inside the group (``""`` for a plain array).
    """

    data: Any
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    path: str


def is_zarr_path(path: str | Path) -> bool:
    """Tell whether ``path`` names a Zarr store (a ``*.zarr`` folder, existing or not) or a group
    inside one (OME-Zarr labels: ``img.zarr/labels/seg``)."""
    return str(path).rstrip("/\\").lower().endswith(".zarr") or inside_zarr(path)


def _open(path: Path) -> Any:
    import zarr

    if not path.is_dir():
        raise InputError(f"'{path}' does not exist or is not a Zarr folder; check the path")
    try:
        return zarr.open(str(path), mode="r")
    except Exception as exc:  # any library error: not a Zarr store or damaged
        raise InputError(f"cannot read '{path}' as Zarr: it is damaged or not a Zarr store ({exc}); "
                         "check that it is a complete .zarr folder") from exc


def _multiscales(attrs: Mapping[str, Any]) -> dict | None:
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), Mapping) else attrs  # NGFF 0.5 nests under "ome"
    found = ome.get("multiscales")
    return found[0] if isinstance(found, list) and found else None


def _transforms(items: Sequence[Mapping[str, Any]] | None, ndim: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    scale, translation = [1.0] * ndim, [0.0] * ndim
    for item in items or ():
        if item.get("type") == "scale" and len(item.get("scale", ())) == ndim:
            scale = [s * float(v) for s, v in zip(scale, item["scale"])]
        elif item.get("type") == "translation" and len(item.get("translation", ())) == ndim:
            translation = [t + float(v) for t, v in zip(translation, item["translation"])]
    return tuple(scale), tuple(translation)


def read_levels(path: str | Path) -> tuple[list[Level], str, dict[str, Any]]:
    """All resolution levels of a Zarr or OME-Zarr image, lazily.

    Parameters
    ----------
    path : str or Path
        A ``.zarr`` folder: an OME-Zarr image group, a group with one array, or an array.

    Returns
    -------
    tuple
        ``(levels, axes, info)``: levels finest first; the axes letters of every level
        (``Q`` for axes the store does not name); ``info`` holds ``unit``, ``name``,
        ``is_labels`` (OME ``image-label`` or our flag), ``affine`` and ``meta`` (our
        stored file details).

    Raises
    ------
    InputError
        Missing folder, not Zarr, no array, several arrays without OME metadata.
    """
    import dask.array as da
    import zarr

    path = Path(path)
    node = _open(path)
    name = path.name[: -len(".ome.zarr")] if path.name.lower().endswith(".ome.zarr") else path.stem
    info: dict[str, Any] = {"name": name, "unit": None, "is_labels": False, "affine": None, "meta": {}}
    if isinstance(node, zarr.Array):
        if (path.parent / ".zattrs").is_file() or (path.parent / "zarr.json").is_file():  # a level of an OME image
            try:  # its own voxel size, place and axes (trial 50: 'ms.ome.zarr/2' opened at scale 1, origin 0)
                if _multiscales(dict(_open(path.parent).attrs)) is None:
                    raise StopIteration  # a plain group's array keeps its own name
                levels, letters, parent = read_levels(path.parent)
                k = next(k for k, lev in enumerate(levels) if lev.path == path.name)
                return [levels[k]], letters, {**parent, "name": f"{parent['name']} level {k}", "affine": None}
            except (InputError, StopIteration):  # not one of its levels: a plain array
                pass
        data = da.from_zarr(node)
        return [Level(data, (1.0,) * data.ndim, (0.0,) * data.ndim, "")], io_axes.unknown_axes(data.ndim), info
    attrs = dict(node.attrs)
    ours = dict(attrs.get(ATTRS_KEY) or {})
    info["affine"] = ours.get("affine")
    info["meta"] = dict(ours.get("meta") or {})
    omero = attrs.get("omero") or (attrs.get("ome") or {}).get("omero") or {}  # NGFF 0.4, 0.5
    labels = [str(c.get("label") or "").strip() for c in omero.get("channels") or [] if isinstance(c, dict)]
    if labels and all(labels):  # another tool's channel names (ours ride in meta)
        info["meta"].setdefault(io_axes.CHANNEL_NAMES_KEY, labels)
    info["is_labels"] = bool(ours.get("labels")) or "image-label" in attrs or "image-label" in (attrs.get("ome") or {})
    multi = _multiscales(attrs)
    if multi is None:
        arrays = [key for key, _ in node.arrays()]
        if len(arrays) != 1:
            raise InputError(f"'{path}' is a Zarr group with {len(arrays)} arrays ({', '.join(arrays) or 'none'}) "
                             "and no OME-Zarr metadata: open one array folder inside it")
        data = da.from_zarr(node[arrays[0]])
        return ([Level(data, (1.0,) * data.ndim, (0.0,) * data.ndim, arrays[0])],
                io_axes.unknown_axes(data.ndim), info)  # fmt: skip
    axes_meta = multi.get("axes") or []
    names, units = [], []
    for entry in axes_meta:
        entry = {"name": entry} if isinstance(entry, str) else entry  # NGFF 0.3 lists names
        names.append(str(entry.get("name", "")))
        own = canonical_unit(entry["unit"]) if entry.get("type") == "space" and entry.get("unit") else None
        units.append(own)
        if own and info["unit"] is None:
            info["unit"] = own
    # a unit per axis (z in nm, y/x in um) brought to one, nanometres as micrometres (as TIFF)
    common = "um" if info["unit"] == "nm" else info["unit"]
    factors = [length_factor(own, common) if own else 1.0 for own in units]
    info["unit"] = common
    for i, entry in enumerate(axes_meta):  # a time axis's unit (minutes read as seconds: io.time_units)
        if isinstance(entry, dict) and entry.get("type") == "time" and entry.get("unit"):
            time_unit, factors[i] = canonical_time_unit(entry["unit"])
            if time_unit:
                info["meta"][TIME_UNIT_KEY] = time_unit
    levels = []
    for dataset in multi.get("datasets") or []:
        try:
            array = node[dataset["path"]]
        except KeyError:  # trial 42: a bare KeyError '1'
            raise InputError(f"'{path}' lists resolution level '{dataset['path']}' in its OME-Zarr metadata but "
                             "holds no such array (a level folder is missing): copy the store again whole, or "
                             "write it again") from None
        scale, translation = _transforms(dataset.get("coordinateTransformations"), array.ndim)
        outer_scale, outer_translation = _transforms(multi.get("coordinateTransformations"), array.ndim)
        f = factors if len(factors) == array.ndim else [1.0] * array.ndim
        levels.append(Level(da.from_zarr(array), tuple(s * o * k for s, o, k in zip(scale, outer_scale, f)),
                            tuple((t * o + u) * k for t, o, u, k in zip(translation, outer_scale, outer_translation,
                                                                          f)),
                            str(dataset["path"])))  # fmt: skip
    if not levels:
        raise InputError(f"'{path}' has OME-Zarr metadata but no datasets: it is incomplete")
    # names the shared rules do not know (or repeated ones) stay unnamed (Q) for the user to state
    letters = io_axes.axes_from_labels(names, levels[0].data.ndim) or io_axes.unknown_axes(levels[0].data.ndim)
    return levels, letters, info


def choose_level(levels: Sequence[Level], axes: str, target: Sequence[float] | None) -> int:
    """The level whose spatial spacing is nearest ``target`` (log scale), 0 without one.

    Parameters
    ----------
    levels : sequence of Level
    axes : str
        Axes letters of the levels.
    target : sequence of float or None
        A model's training spacing (its spatial axes, last ones matched).
    """
    if not target:
        return 0
    spatial = [i for i, a in enumerate(axes) if a in "ZYX"][-len(target):]

    def distance(level: Level) -> float:
        return sum(abs(math.log(max(level.spacing[i], 1e-12) / max(t, 1e-12))) for i, t in zip(spatial, target))

    return int(min(range(len(levels)), key=lambda k: distance(levels[k])))


def read_zarr(path: str | Path, level: int | str = 0, *, target_spacing: Sequence[float] | None = None,
              axes: str | None = None, target_unit: str | None = None) -> Volume:
    """Read one level of a Zarr or OME-Zarr image as a :class:`Volume` with lazy ``data``.

    Parameters
    ----------
    path : str or Path
        The ``.zarr`` folder.
    level : int or "match"
        Which resolution level (0 the finest); ``"match"`` takes :func:`choose_level`
        with ``target_spacing``.
    target_spacing : sequence of float, optional
        A model's training spacing, for ``level="match"``, in ``target_unit`` (compared in the store's).
    axes : str, optional
        What the stored axes are, one letter each; replaces what the store says.

    Returns
    -------
    Volume
        ``data`` a dask array (nothing read yet) in canonical axis order, length-1
        non-spatial axes dropped, with spacing, origin, axes and unit.

    Raises
    ------
    InputError
        Unreadable store, a level that does not exist, or ``axes`` that do not fit.
    """

    levels, letters, info = read_levels(path)
    if target_spacing is not None and target_unit is not None:  # review 51: mm numbers against a model's um
        target_spacing = [t * length_factor(target_unit, info["unit"]) for t in target_spacing]
    index = choose_level(levels, letters, target_spacing) if level == "match" else int(level)
    if not 0 <= index < len(levels):
        raise InputError(f"'{path}' has {len(levels)} resolution level(s) (0 to {len(levels) - 1}): "
                         f"choose one of those, not {level}")
    chosen = levels[index]
    if axes is not None:
        letters = io_axes.check_axes(axes, chosen.data.ndim, f"'{path}'",
                                     io_axes.one_letter_each(chosen.data.ndim))
    meta = dict(info["meta"])
    if info["unit"]:
        meta["unit"] = info["unit"]
    meta["level"] = index
    affine = None if info["affine"] is None or index else np.asarray(info["affine"], dtype=np.float64)
    volume = Volume(chosen.data, chosen.spacing, chosen.origin, affine, False, info["name"], meta, letters)
    volume = canonical(volume)
    if info["meta"].get(RGB_AS_CHANNELS) and volume.axes.count("C") == 1 and axes is None:
        volume = channels_to_rgb(volume)
    labels = info["is_labels"] or (any(w in str(path).lower() for w in _LABEL_HINT)
                                   and np.issubdtype(volume.data.dtype, np.integer))
    if labels:
        volume = replace(volume, is_labels=True)
    return volume


def default_chunks(shape: Sequence[int], axes: str, itemsize: int) -> tuple[int, ...]:
    """About 1-4 MiB chunks: one per channel/time point, spatial edges of 64 to 256."""
    spatial = [i for i, a in enumerate(axes) if a in "ZYXQ"]
    edge = 128 if len(spatial) >= 3 else 1024
    edge = edge if itemsize <= 2 else edge // 2 if len(spatial) < 3 else 96
    return tuple(min(int(s), edge) if i in spatial else 1 for i, s in enumerate(shape))


def create_ome_zarr(path: str | Path, shape: Sequence[int], dtype: Any, *, axes: str,
                    spacing: Sequence[float], origin: Sequence[float], chunks: Sequence[int] | None = None,
                    unit: str | None = None, is_labels: bool = False, extra: Mapping[str, Any] | None = None,
                    affine: Any = None, meta: Mapping[str, Any] | None = None) -> Any:
    """Create an empty OME-Zarr 0.4 image group with one level and return that level's array.

    Parameters
    ----------
    path : str or Path
        The ``.zarr`` folder to create; it must not exist (the caller decides on resuming).
    shape : sequence of int
    dtype : numpy dtype
    axes : str
        One letter per axis (``T``, ``C``, ``Z``, ``Y``, ``X``); ``Q`` is written as a
        channel-free custom axis named ``q``.
    spacing, origin : sequence of float
        Per axis (channels 1 and 0).
    chunks : sequence of int, optional
        Chunk shape (default :func:`default_chunks`).
    unit : str, optional
        Spatial unit (``um``, ``mm``...).
    is_labels : bool
        Mark the image as labels (our flag; napari opens it as a Labels layer).
    extra : mapping, optional
        Further entries for our ``napari_medml`` attributes (e.g. a block plan).
    affine : array, optional
        A NIfTI 4x4 affine to keep; ``meta`` the file details (see :class:`Volume`).

    Returns
    -------
    zarr.Array
        Writable level ``"0"``, filled with zeros where nothing was written.

    Raises
    ------
    InputError
        ``path`` exists or its folder does not.
    """
    import zarr

    path = Path(path)
    if path.exists():
        raise InputError(f"'{path}' already exists: remove it or choose another output name")
    if not path.parent.is_dir():
        raise InputError(f"cannot write '{path}': folder '{path.parent}' does not exist")
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    chunks = tuple(int(c) for c in chunks) if chunks is not None else default_chunks(shape, axes, dtype.itemsize)
    version3 = int(zarr.__version__.split(".")[0]) >= 3
    group = zarr.open_group(str(path), mode="w-", **({"zarr_format": 2} if version3 else {}))
    ngff_axes = []
    for letter in axes:
        entry: dict[str, Any] = {"name": letter.lower(), "type": _NGFF_TYPES.get(letter, "custom")}
        if letter in "ZYX" and unit:
            entry["unit"] = _NGFF_UNITS.get(unit, unit)
        if letter == "T" and ngff_time_unit((meta or {}).get(TIME_UNIT_KEY)):
            entry["unit"] = ngff_time_unit((meta or {})[TIME_UNIT_KEY])
        ngff_axes.append(entry)
    transforms = [{"type": "scale", "scale": [float(s) for s in spacing]}]
    if any(float(o) != 0.0 for o in origin):
        transforms.append({"type": "translation", "translation": [float(o) for o in origin]})
    ours: dict[str, Any] = {"labels": bool(is_labels), **dict(extra or {})}
    if affine is not None:
        ours["affine"] = np.asarray(affine, dtype=np.float64).tolist()
    if meta:
        ours["meta"] = to_dict(meta)
    group.attrs.update({
        "multiscales": [{"version": "0.4", "name": path.name, "axes": ngff_axes,
                         "datasets": [{"path": "0", "coordinateTransformations": transforms}]}],
        ATTRS_KEY: ours,
    })  # fmt: skip
    names = [str(n) for n in (meta or {}).get(io_axes.CHANNEL_NAMES_KEY) or []]
    if "C" in axes and len(names) == shape[axes.index("C")]:  # other viewers name the channels from it
        group.attrs["omero"] = {"channels": [{"label": n} for n in names]}
    if version3:
        return group.create_array("0", shape=shape, chunks=chunks, dtype=dtype, fill_value=0,
                                  chunk_key_encoding={"name": "v2", "separator": "/"})  # fmt: skip
    return group.create_dataset("0", shape=shape, chunks=chunks, dtype=dtype, fill_value=0,
                                dimension_separator="/")  # fmt: skip


def write_zarr(path: str | Path, volume: Volume, chunks: Sequence[int] | None = None) -> Path:
    """Write a :class:`Volume` as an OME-Zarr image, chunk by chunk (dask data stay lazy).

    Parameters
    ----------
    path : str or Path
        The ``.zarr`` folder to create (it must not exist).
    volume : Volume
        Data (numpy, dask or zarr), spacing, origin, axes, unit, labels flag.
    chunks : sequence of int, optional

    Returns
    -------
    Path
    """
    import dask.array as da

    data = volume.data
    if data.dtype == bool:
        data = data.astype(np.uint8)
    rgb = bool(volume.meta.get("rgb"))
    axes, spacing, origin = volume.axes, tuple(volume.spacing), tuple(volume.origin)
    meta = {k: v for k, v in volume.meta.items() if k not in ("level", "rgb", "unit")}
    if rgb:  # OME-Zarr has no colour axis at the end: the colours become channels (zarr_rgb)
        data, axes, spacing, origin = rgb_to_channels(replace(volume, data=data))
        meta[RGB_AS_CHANNELS] = True
    target = create_ome_zarr(path, np.shape(data), data.dtype, axes=axes, spacing=spacing, origin=origin,
                             chunks=chunks, unit=volume.meta.get("unit"), is_labels=volume.is_labels,
                             affine=volume.affine, meta=meta)  # fmt: skip
    if isinstance(data, np.ndarray):
        target[...] = data
    else:
        da.store(da.asarray(data).rechunk(target.chunks), target, lock=False)
    return Path(path)
