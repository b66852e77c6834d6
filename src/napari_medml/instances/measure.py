"""Per-object measurements as a table for a napari Labels layer's ``features`` and CSV.

The table is a dict of equal-length 1D numpy columns, one row per object id
present in the labels (background has no row), sorted by id. The id column is
named ``index``: napari's Labels layer maps a label value to a features row
through that column (``Labels._make_label_index``), so the status bar shows the
right object's row whatever the ids are. Sizes and centroids are physical
(world) quantities; bounding boxes are voxel indices, half-open ``[start, stop)``.
"""

from __future__ import annotations

import csv
import os
import uuid
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from napari_medml.errors import InputError
from napari_medml.instances._checks import check_instances, check_same_shape, check_spacing

__all__ = ["is_instance_table", "measure_image_instances", "measure_instances", "object_classes", "write_table_csv"]


def _axis_names(ndim: int) -> tuple[str, ...]:
    return ("z", "y", "x")[-ndim:]


def object_classes(labels: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The semantic class of each object: the class covering most of its voxels.

    Parameters
    ----------
    labels : np.ndarray
        Integer instance labels, (Y, X) or (Z, Y, X).
    classes : np.ndarray
        Integer class map of the same shape (e.g. the semantic prediction).

    Returns
    -------
    ids, object_class : np.ndarray
        int64 object ids (sorted) and the majority class id of each (ties: the smaller id).
    """
    labels = check_instances(labels)
    classes = check_instances(classes, "class map")
    check_same_shape(labels, classes, "instance labels", "class map")
    fg = labels > 0
    pairs, counts = np.unique(np.stack([labels[fg].astype(np.int64), classes[fg].astype(np.int64)]),
                              axis=1, return_counts=True)
    # sort by id, then by count descending, then class ascending; the first row per id wins
    order = np.lexsort((pairs[1], -counts, pairs[0]))
    pairs = pairs[:, order]
    first = np.ones(pairs.shape[1], bool)
    first[1:] = pairs[0, 1:] != pairs[0, :-1]
    return pairs[0, first], pairs[1, first]


def measure_instances(
    labels: np.ndarray,
    spacing: Sequence[float] | None = None,
    origin: Sequence[float] | None = None,
    images: Mapping[str, np.ndarray] | None = None,
    classes: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Measure every object of an instance image.

    Parameters
    ----------
    labels : np.ndarray
        Integer instance labels, (Y, X) or (Z, Y, X); 0 background. Not modified.
    spacing : sequence of float, optional
        Voxel size per axis in physical units (napari ``scale``); default all 1.
    origin : sequence of float, optional
        World position of voxel index 0 per axis (napari ``translate``); default all 0.
    images : mapping of str to np.ndarray, optional
        Named intensity channels, each shaped like ``labels``; each adds
        ``mean_<name>`` and ``max_<name>`` columns.
    classes : np.ndarray, optional
        Semantic class map shaped like ``labels``; adds a ``class`` column (the
        class covering most of each object).

    Returns
    -------
    dict of str to np.ndarray
        Columns, one row per object id, sorted: ``index`` (the label id, int64),
        ``class`` (int64, if ``classes``), ``area`` (2D) or ``volume`` (3D) in
        physical units (voxel count x product of spacing), ``centroid_<axis>``
        (world coordinates: origin + index x spacing), ``bbox_start_<axis>`` and
        ``bbox_stop_<axis>`` (voxel indices, stop exclusive), then the intensity
        columns. Axes are named z, y, x.

    Raises
    ------
    InputError
        If an input is not 2D/3D, shapes differ, or spacing/origin do not fit.
    """
    from skimage.measure import regionprops_table

    labels = check_instances(labels)
    ndim = labels.ndim
    spacing = check_spacing(spacing, ndim)
    origin_values = tuple(float(o) for o in origin) if origin is not None else (0.0,) * ndim
    if len(origin_values) != ndim:
        raise InputError(f"origin {tuple(origin_values)} does not fit a {ndim}D image: give {ndim} values")
    names = list(images or {})
    stack = None
    if names:
        channels = [np.asarray(images[n], dtype=np.float64) for n in names]
        for name, channel in zip(names, channels):
            check_same_shape(labels, channel, "instance labels", f"image {name!r}")
        stack = np.stack(channels, axis=-1)  # regionprops wants channels last, keys end "-<c>"
    props = ["label", "area", "centroid", "bbox"] + (["intensity_mean", "intensity_max"] if names else [])
    raw = regionprops_table(labels, intensity_image=stack, properties=props)
    axes = _axis_names(ndim)
    table: dict[str, np.ndarray] = {"index": raw["label"].astype(np.int64)}
    if classes is not None:
        ids, cls = object_classes(labels, classes)
        lookup = dict(zip(ids.tolist(), cls.tolist()))
        table["class"] = np.array([lookup[i] for i in table["index"].tolist()], dtype=np.int64)
    # regionprops' area is the voxel count here (no spacing passed): scale it ourselves
    table["area" if ndim == 2 else "volume"] = raw["area"].astype(np.float64) * float(np.prod(spacing))
    for a, name in enumerate(axes):
        table[f"centroid_{name}"] = origin_values[a] + raw[f"centroid-{a}"] * spacing[a]
    for a, name in enumerate(axes):
        table[f"bbox_start_{name}"] = raw[f"bbox-{a}"].astype(np.int64)
        table[f"bbox_stop_{name}"] = raw[f"bbox-{a + ndim}"].astype(np.int64)
    for c, name in enumerate(names):
        suffix = f"-{c}" if f"intensity_mean-{c}" in raw else ""  # empty labels: no suffix
        table[f"mean_{name}"] = raw[f"intensity_mean{suffix}"].astype(np.float64)
        table[f"max_{name}"] = raw[f"intensity_max{suffix}"].astype(np.float64)
    return table


def measure_image_instances(labels: np.ndarray, image: np.ndarray, *, spacing: Sequence[float] | None = None,
                            origin: Sequence[float] | None = None,
                            channel_axis: int | None = None) -> dict[str, np.ndarray]:
    """:func:`measure_instances` with the intensities of the image the objects were found in.

    Parameters
    ----------
    labels : np.ndarray
        Integer instance labels, (Y, X) or (Z, Y, X).
    image : np.ndarray
        The image: ``labels``' shape, plus a channel axis at ``channel_axis``.
    spacing, origin : sequence of float, optional
        Voxel size and world position of voxel 0 of the spatial axes.
    channel_axis : int, optional
        The image's channel axis: one ``mean_channel_<c>``/``max_channel_<c>`` pair per
        channel; without it one ``mean_intensity``/``max_intensity`` pair.

    Returns
    -------
    dict of str to np.ndarray
        The table (see :func:`measure_instances`).
    """
    data = np.asarray(image)
    if channel_axis is None:
        images = {"intensity": data}
    else:
        moved = np.moveaxis(data, channel_axis, 0)
        images = {f"channel_{c}": moved[c] for c in range(moved.shape[0])}
    return measure_instances(labels, spacing, origin, images)


def write_table_csv(path: str | os.PathLike, table: Mapping[str, Sequence]) -> Path:
    """Write a column table as CSV, atomically (temporary file, then rename).

    Parameters
    ----------
    path : str or PathLike
        Destination ``.csv``; its folder must exist. An existing file is replaced
        only once the new one is complete.
    table : mapping of str to sequence
        Equal-length columns (e.g. :func:`measure_instances`).

    Returns
    -------
    Path
        The written path.

    Raises
    ------
    InputError
        If the columns differ in length or the folder does not exist.
    """
    path = Path(path)
    lengths = {name: len(column) for name, column in table.items()}
    if len(set(lengths.values())) > 1:
        raise InputError(f"table columns differ in length {lengths}: give one value per row in every column")
    if not path.parent.is_dir():
        raise InputError(f"folder {str(path.parent)!r} does not exist: create it or choose another CSV path")
    columns = [np.asarray(c).tolist() for c in table.values()]
    # a unique name opened with "x" keeps the usual file permissions (mkstemp would give 0600)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "x", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(list(table))
            writer.writerows(zip(*columns))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def is_instance_table(columns: Sequence[str]) -> bool:
    """Whether CSV ``columns`` are those of :func:`measure_instances` (an ``index`` and the
    centroid), e.g. to replace only such a file on a re-run."""
    return "index" in columns and any(name.startswith("centroid_") for name in columns)
