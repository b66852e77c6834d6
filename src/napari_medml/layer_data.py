"""The one place that knows napari layer conventions.

A napari layer is data plus keyword arguments; this module converts between
those and :class:`napari_medml.io.Volume` (array, spacing, origin, affine), so
neither the core nor the widgets need to know how napari spells space:

- ``scale`` is the spacing and ``translate`` the origin, in napari axis order;
- ``axis_labels`` say what each axis is (``"t"``, ``"c"``, ``"z"``, ``"y"``, ``"x"``)
  and ``metadata["axes"]`` keeps :attr:`Volume.axes` (also unnamed ``Q`` axes, which
  get no labels). A file's channels open as **one** layer with a ``"c"`` axis (a
  slider), not one layer per channel: so saving it writes the channels back into
  one file, and the widgets read the ``"c"`` axis as the model's channels. A time
  series with channels (``T`` before ``C``) opens as one layer per channel
  (:func:`channel_volumes`): napari lines layers up from their last axis, so a
  result without the channels, ``(T, Z, Y, X)``, would lie on ``(C, Z, Y, X)`` of a
  ``(T, C, Z, Y, X)`` layer, its frames on the channel slider. Labels a
  user sets in napari win over the stored letters; napari's default labels
  (``"-3"``, ``"-2"``, ...) say nothing;
- ``metadata["affine"]`` carries the NIfTI 4x4 affine as a nested list (or None)
  and ``metadata["file_meta"]`` the format details (unit, sform/qform codes), so
  a layer read from a file and saved again writes the same header;
- ``metadata[PLUGIN_MARK]`` says the plugin made the layer, so a re-run may
  replace it while user layers are never overwritten.

**Which wins, scale/translate or the stored affine?** (:func:`spatial_meta`)
The stored affine is kept exactly when it agrees with ``scale``/``translate``
(same voxel sizes and translation to within float32 precision), so reading and
saving is lossless even for oblique volumes. When there is no stored affine,
NIfTI writing builds a diagonal one from scale/translate. When they disagree,
the layer was changed in napari (scale edited, or moved): then scale/translate win
and the affine is rebuilt from them, keeping the stored affine's axis directions so
an oblique volume stays oblique; a move in napari's axis-aligned view is a move
along those directions (:mod:`napari_medml.io.regrid`). A layer cut or resampled
from an oblique one keeps, beside its affine, the view's origin at which that
affine holds (``file_meta["affine_origin"]``).

No napari import here: this module is core and runs without Qt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from napari_medml.io import axes as io_axes
from napari_medml.io import Volume
from napari_medml.io.orientation import STORED_ORIENTATION
from napari_medml.io.regrid import AFFINE_ORIGIN, PLACEMENT_META, moved_affine, view_anchor
from napari_medml.io.time_units import TIME_UNIT_KEY, display_time_unit

__all__ = [
    "AFFINE_KEY",
    "AXES_KEY",
    "FILE_META_KEY",
    "PLUGIN_MARK",
    "LayerDataTuple",
    "SpatialMeta",
    "channel_volumes",
    "is_generated",
    "layer_axes",
    "layer_to_volume",
    "mark_generated",
    "placement_mismatch",
    "spatial_meta",
    "volume_to_layer_data",
]

LayerDataTuple = tuple[Any, dict[str, Any], str]
PLUGIN_MARK = "napari_medml_generated"
AFFINE_KEY = "affine"
AXES_KEY = "axes"
FILE_META_KEY = "file_meta"
# header values are float32: agreement to this precision means "unchanged"
_RTOL, _ATOL = 1e-5, 1e-6


# The file details of a layer that say where and in what unit its voxels lie; a result
# layer takes them from its source, so it saves as the source would (unit, NIfTI codes,
# the length-1 axes the reader dropped), as the command line's outputs do
GEOMETRY_META = (*PLACEMENT_META, io_axes.SINGLETONS_KEY, AFFINE_ORIGIN)


class SpatialMeta(NamedTuple):
    """Where a layer's voxels lie: spacing and origin in napari order, NIfTI affine, the
    voxel order its file was stored in (``"LAS"``; None: RAS or no NIfTI), which results
    carry so a prediction saves as NIfTI in its image's own voxel order, and the file's
    other :data:`GEOMETRY_META` details."""

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    affine: np.ndarray | None
    stored_orientation: str | None = None
    file_meta: Mapping[str, Any] | None = None


def channel_volumes(volume: Volume) -> list[Volume]:
    """A time series with channels as one volume per channel; any other volume as it is.

    Parameters
    ----------
    volume : Volume
        Axes in :mod:`napari_medml.io.axes` order, e.g. ``TCZYX``.

    Returns
    -------
    list of Volume
        With a ``C`` axis after another axis (``TCZYX``, ``TCYX``) and not RGB or labels:
        one ``(T, Z, Y, X)`` volume per channel, named ``"<name> [<channel>]"`` (the file's
        channel name, e.g. an OME-TIFF's ``DAPI``, or ``ch<k>``; lazy data
        stays lazy); otherwise ``[volume]``. A ``CZYX`` volume stays one: its results
        ``(Z, Y, X)`` line up with its last axes.
    """
    from dataclasses import replace

    axes = volume.axes
    c = axes.find("C")
    if c <= 0 or volume.is_labels or volume.meta.get("rgb"):
        return [volume]
    keep = [i for i in range(len(axes)) if i != c]
    names = io_axes.channel_names_of(volume) or [f"ch{k}" for k in range(volume.data.shape[c])]
    meta = {k: v for k, v in volume.meta.items() if k != io_axes.SINGLETONS_KEY}  # the file's, not a channel's
    return [replace(volume, data=volume.data[(slice(None),) * c + (k,)],
                    spacing=tuple(volume.spacing[i] for i in keep), origin=tuple(volume.origin[i] for i in keep),
                    axes=axes.replace("C", ""), name=f"{volume.name} [{names[k]}]", meta={**meta, "channel": k})
            for k in range(volume.data.shape[c])]


def volume_to_layer_data(volume: Volume) -> LayerDataTuple:
    """Turn a :class:`~napari_medml.io.Volume` into a napari LayerDataTuple.

    Parameters
    ----------
    volume : Volume
        Data with spacing, origin and optional affine.

    Returns
    -------
    tuple
        ``(data, kwargs, layer_type)``; kwargs has ``name``, ``scale`` (spacing),
        ``translate`` (origin), ``axis_labels`` (when every axis is named), ``units``
        (the file's length unit on its spatial axes, its time unit on T, "pixel" on the others,
        when the file names either) and ``metadata`` (affine, file details, axes);
        ``layer_type`` is ``"labels"`` or ``"image"``.
    """
    metadata: dict[str, Any] = {
        AFFINE_KEY: None if volume.affine is None else np.asarray(volume.affine).tolist(),
        FILE_META_KEY: dict(volume.meta),
        AXES_KEY: volume.axes,
    }
    kwargs: dict[str, Any] = {
        "name": volume.name,
        "scale": tuple(volume.spacing),
        "translate": tuple(volume.origin),
        "metadata": metadata,
    }
    labels = io_axes.axes_to_labels(volume.axes, bool(volume.meta.get("rgb")))
    if labels is not None and _add_image_takes_axis_labels():
        kwargs["axis_labels"] = labels
    unit = volume.meta.get("unit")
    unit = unit if unit in _LENGTH_UNITS else None
    time = display_time_unit(volume.meta.get(TIME_UNIT_KEY)) if "T" in volume.axes else None
    if (unit or time) and _add_image_takes_axis_labels():  # napari >= 0.5.1, as axis_labels
        body = volume.axes[: len(volume.axes) - int(bool(volume.meta.get("rgb")))]
        # the scale bar's unit, and the time slider's (napari showed "pixel" for a frame interval: trial 42)
        kwargs["units"] = tuple(unit if a in "ZYX" and unit else time if a == "T" and time else "pixel" for a in body)
    if volume.is_labels:
        return volume.data, kwargs, "labels"
    # said either way: napari guesses RGB(A) from a last axis of 3 or 4 (a 4-voxel-wide crop)
    kwargs["rgb"] = bool(volume.meta.get("rgb"))
    return volume.data, kwargs, "image"


_LENGTH_UNITS = ("nm", "um", "mm", "cm", "m")  # io's canonical units (io.units), all known to napari's pint


def _add_image_takes_axis_labels() -> bool:
    """napari 0.5.0's ``add_image`` refuses ``axis_labels`` and ``units`` (fixed in 0.5.1, napari#7089);
    there ``metadata["axes"]`` alone carries them. Read from the installed version,
    without importing napari."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        parts = version("napari").split(".")[:3]
    except PackageNotFoundError:
        return True
    numbers = tuple(int("".join(ch for ch in part if ch.isdigit()) or 0) for part in parts)
    return numbers >= (0, 5, 1)


def layer_to_volume(data: Any, meta: Mapping[str, Any], is_labels: bool) -> Volume:
    """Turn a layer's data and its kwargs (or npe2 writer ``meta``) into a Volume.

    Parameters
    ----------
    data : array-like
        The layer data; for a multiscale layer, the list of levels (the full
        resolution one is used). Dask and zarr arrays are kept as they are (lazy).
    meta : Mapping
        LayerDataTuple kwargs, ``layer.as_layer_data_tuple()[1]`` or the npe2
        writer's ``meta``: ``name``, ``scale``, ``translate``, ``metadata``.
    is_labels : bool
        Whether the layer is a Labels layer.

    Returns
    -------
    Volume
        Spacing/origin/affine resolved by :func:`spatial_meta`.
    """
    if isinstance(data, Sequence):  # multiscale (a list, napari's MultiScaleData): level 0 is full resolution
        data = data[0]
    # dask and zarr arrays stay lazy: the core reads the regions it needs
    array = data if _is_lazy(data) else np.asarray(data)
    metadata = meta.get("metadata") or {}
    file_meta = dict(metadata.get(FILE_META_KEY) or {})
    if meta.get("rgb"):
        file_meta["rgb"] = True
    rgb = bool(file_meta.get("rgb"))
    ndim = array.ndim - int(rgb)
    found = spatial_meta(meta.get("scale"), meta.get("translate"), metadata, ndim=ndim)
    spacing, origin, affine = found[:3]
    file_meta.pop(AFFINE_ORIGIN, None)  # the one that holds for the affine resolved here
    if found.file_meta and AFFINE_ORIGIN in found.file_meta:
        file_meta[AFFINE_ORIGIN] = found.file_meta[AFFINE_ORIGIN]
    axes = layer_axes(array.ndim, meta.get("axis_labels"), metadata, rgb)
    unit = _spatial_unit(meta.get("units"), axes)
    if unit:  # the layer's own (napari >= 0.5.1), set in the viewer or by the reader (trial 47: saved as pixels)
        file_meta["unit"] = unit
    return Volume(array, spacing, origin, affine, is_labels, str(meta.get("name") or ""), file_meta, axes)


def _spatial_unit(units: Sequence[Any] | None, axes: str) -> str | None:
    """The one length unit of a layer's spatial axes (``layer.units``), in io's names; None when
    they are pixels, differ or are not lengths."""
    from napari_medml.io.volume import canonical_unit

    found = {canonical_unit(str(u)) for u, a in zip(units or (), axes) if a in "ZYX"}
    unit = found.pop() if len(found) == 1 else None
    return unit if unit in _LENGTH_UNITS else None


def _is_lazy(data: Any) -> bool:
    """A dask or zarr array (sliceable, with shape and dtype), as napari layers may hold."""
    kind = type(data).__module__.split(".")[0]
    return kind in ("dask", "zarr") and hasattr(data, "shape") and hasattr(data, "dtype")


def layer_axes(ndim: int, axis_labels: Sequence[Any] | None, metadata: Mapping[str, Any] | None,
               rgb: bool = False) -> str:
    """What each axis of a layer is, as a :attr:`Volume.axes` string.

    The layer's ``axis_labels`` when they name the axes (RGB's colour axis has none),
    else ``metadata["axes"]`` when it fits, else Y, X last and unnamed (``Q``) axes
    in front (resolved later from what the layer meets, see ``io.axes_resolve.resolve_axes``).

    Parameters
    ----------
    ndim : int
        Number of axes of the layer data (an RGB colour axis included).
    axis_labels : sequence of str or None
        The layer's ``axis_labels`` (one per non-colour axis).
    metadata : Mapping or None
        The layer's ``metadata``.
    rgb : bool
        Whether the last axis is an RGB colour axis.
    """
    body = ndim - int(rgb)
    named = io_axes.axes_from_labels(axis_labels, body)
    if named is not None and "C" in named and rgb:
        named = None  # a second channel axis next to RGB: not ours to guess
    if named is not None:
        return named + ("C" if rgb else "")
    stored = str((metadata or {}).get(AXES_KEY) or "")
    if len(stored) == ndim and (not rgb or stored.endswith("C")):
        try:
            return io_axes.check_axes(stored, ndim, "layer")
        except ValueError:
            pass
    return io_axes.unknown_axes(ndim, rgb)


def spatial_meta(
    scale: Sequence[float] | None,
    translate: Sequence[float] | None,
    metadata: Mapping[str, Any] | None,
    ndim: int | None = None,
) -> SpatialMeta:
    """Resolve a layer's spacing, origin and affine (the rule is in the module doc).

    Parameters
    ----------
    scale, translate : sequence of float or None
        The layer's ``scale`` and ``translate``; None means 1 and 0.
    metadata : Mapping or None
        The layer's ``metadata``; ``metadata["affine"]`` is read when present.
    ndim : int, optional
        Number of axes when ``scale`` and ``translate`` are both None.

    Returns
    -------
    SpatialMeta
        ``(spacing, origin, affine)``; affine is None when none is stored.
    """
    if ndim is None:
        ndim = len(scale) if scale is not None else len(translate or ())
    spacing = tuple(float(s) for s in scale) if scale is not None else (1.0,) * ndim
    origin = tuple(float(t) for t in translate) if translate is not None else (0.0,) * ndim
    stored = (metadata or {}).get(AFFINE_KEY)
    file_meta = (metadata or {}).get(FILE_META_KEY) or {}
    order = file_meta.get(STORED_ORIENTATION)
    geometry = {k: file_meta[k] for k in GEOMETRY_META if k in file_meta and k != AFFINE_ORIGIN}
    if stored is None:
        return SpatialMeta(spacing, origin, None, None, geometry or None)
    affine = np.array(stored, dtype=np.float64)
    k = min(len(spacing), 3)
    anchor = file_meta.get(AFFINE_ORIGIN)  # the view's origin where the affine holds (io.regrid); else its own
    sizes = np.linalg.norm(affine[:3, :k], axis=0)  # NIfTI (x, y, z) order
    view = np.asarray(origin[::-1][:k], dtype=np.float64)
    at = affine[:k, 3] if anchor is None else np.asarray(anchor, dtype=np.float64)[:k]
    agrees = np.allclose(sizes, spacing[::-1][:k], rtol=_RTOL, atol=_ATOL) and np.allclose(
        at, view, rtol=_RTOL, atol=_ATOL
    )
    if not agrees:
        affine = moved_affine(affine, anchor, spacing, origin)
    holds_at = view_anchor(affine, view, _RTOL, _ATOL)  # a grid cut from a turned one
    if holds_at is not None:
        geometry[AFFINE_ORIGIN] = holds_at
    return SpatialMeta(spacing, origin, affine, order, geometry or None)


def placement_mismatch(image: SpatialMeta, labels: SpatialMeta, frames: Sequence[int] = ()) -> str | None:
    """How a labels layer's voxels miss its image's, or None when they lie on them.

    Parameters
    ----------
    image, labels : SpatialMeta
        The two layers' :func:`spatial_meta`; the labels' axes are compared with the same
        number of trailing axes of the image (an image's channel axis comes first).
    frames : sequence of int, optional
        Time axes, counted from the end (e.g. ``(-3,)`` for ``TYX``): left out, since a
        frame interval is not where a voxel lies (labels saved without it pair frames by
        index, as training and evaluation do).

    Returns
    -------
    str or None
        ``"scale (1, 1, 1) against (2, 1, 1)"`` and/or ``"translate ... against ..."``:
        the layers would not overlay in the viewer, so labels and voxels would be paired
        wrongly. Differences below a thousandth of a voxel count as none.
    """
    n = min(len(labels.spacing), len(image.spacing))
    keep = [k for k in range(-n, 0) if k not in set(frames)]
    img_sp, lab_sp = (np.asarray([meta.spacing[k] for k in keep], float) for meta in (image, labels))
    img_or, lab_or = (np.asarray([meta.origin[k] for k in keep], float) for meta in (image, labels))
    tol = 1e-3 * np.abs(img_sp)
    show = lambda v: "(" + ", ".join(f"{x:g}" for x in v) + ")"  # noqa: E731
    parts = []
    if np.any(np.abs(img_sp - lab_sp) > tol):
        parts.append(f"scale {show(lab_sp)} against {show(img_sp)}")
    if np.any(np.abs(img_or - lab_or) > tol):
        parts.append(f"translate {show(lab_or)} against {show(img_or)}")
    return " and ".join(parts) or None


def mark_generated(metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return a copy of ``metadata`` marked as made by this plugin."""
    return {**(metadata or {}), PLUGIN_MARK: True}


def is_generated(metadata: Mapping[str, Any] | None) -> bool:
    """Tell whether layer ``metadata`` carries the plugin's mark."""
    return bool((metadata or {}).get(PLUGIN_MARK, False))
