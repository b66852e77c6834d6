"""The training files of ``napari-medml train``: image and labels pairs read, checked and cut into samples."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from napari_medml.cli.common import info

__all__ = ["in_first_unit", "network_dims", "read_pairs", "unknown_spacing_line"]


def read_pairs(image_paths: list[Path], label_paths: list[Path], spatial_dims: int | None,
               axes: str | None = None, ids: str = "class", spacing: Any = None, unit: dict | None = None) -> tuple:
    """Read image/labels files; check they fit; cut them into training samples.

    Axes come from each file (or ``axes``, the ``--axes`` option, for the images);
    length-1 axes are gone already (io). A time series gives one sample per frame; a
    2D network on volumes one per slice (the labels are cut the same way). ``ids`` names
    what a label id is in the messages: ``"class"``, or ``"object"`` for instance labels.
    ``spacing`` (``--spacing``) is the voxel size of the files that store none. ``unit``, when
    given, receives the length unit the spacings are in (:func:`in_first_unit`).

    Returns
    -------
    tuple
        ``(images, labels, spacings, channel_axis, spatial_dims, groups, channel_names)``:
        lists of samples, the spatial voxel size of each, the channel axis of the samples
        (None without channels), the network's dimensions (3 when the images have Z, else 2,
        unless given), the number of samples cut from each file, in order (the config's
        ``data.sample_groups``), and the channels' names when every file names them (an
        image that stores the first one's channels in another order is taken in its order).
    """
    import numpy as np

    from napari_medml import io
    from napari_medml.cli.common import label_values, spatial_spacing
    from napari_medml.cli.layout import image_layout
    from napari_medml.cli.transposed import check_not_transposed
    from napari_medml.cli.spacing_option import check_spacing_covers, stores_voxel_size, with_spacing
    from napari_medml.io.axes import samples_phrase
    from napari_medml.io.axes_resolve import neighbour_runs
    from napari_medml.io.length1_axes import fit_length1_axes
    from napari_medml.io.orientation import file_orientation, to_orientation
    from napari_medml.preprocessing.inputs import check_finite, check_not_constant
    from napari_medml.errors import InputError

    images, labels, spacings, channels, groups = [], [], [], set(), []
    held = unit if unit is not None else {}
    named: list[tuple[str, ...]] = []  # each image's channel names (the file's), in the first image's order
    painted: list[bool] = []  # per labels file: any voxel above 0
    stored: dict[Path, tuple[float, ...] | None] = {}  # each image file's voxel size, None when it stores none
    reads = [io.read_volume(path, axes) for path in image_paths]
    spatial_dims = network_dims(reads, image_paths, spatial_dims)
    # a 3D model records the first image's orientation and predict puts images in it (cli.train); a 2D one does not
    first = file_orientation(image_paths[0], 3) if image_paths and spatial_dims != 2 else None
    for img_path, lab_path, read in zip(image_paths, label_paths, reads, strict=True):
        raw, given = with_spacing(read, spacing, img_path)
        check_finite(raw.data, f"image '{img_path}'")  # named by its file, before the core numbers it
        check_not_constant(raw.data, f"image '{img_path}'")
        # labels that store no voxel size beside an image that does lie on its grid: --spacing is not theirs
        lab = with_spacing(_read_labels(lab_path, axes), None if stores_voxel_size(read) else spacing, lab_path)[0]
        lab = replace(lab, data=label_values(lab, lab_path, ids=ids))
        own = file_orientation(img_path, 3) if first else None
        # (labels that store no orientation lie on the image as stored: then both stay so)
        if own and own != first and file_orientation(lab_path, 3):  # trial 47: resampled along the wrong axis
            raw, lab = to_orientation(raw, first), to_orientation(lab, first)  # its labels too (4D ones: review 47)
            info(f"image '{img_path}': stored in {own} voxel order, trained in {first} as the first image "
                 f"'{image_paths[0]}' (predict puts images in it too)")
        painted.append(bool(np.any(lab.data)))
        check_not_transposed(lab, lab_path, raw, img_path)
        if lab.data.ndim > raw.data.ndim:  # a NIfTI saved with an extra leading axis, (1, X, Y, Z)
            lab, note = fit_length1_axes(lab, raw.data.shape, f"labels '{lab_path}'")
            if note:
                info(note)
        if "Q" in raw.axes and lab.data.ndim == 3 < raw.data.ndim:  # on the image's grid before they tell its axes
            try:  # (a 2-channel NIfTI stored PSL beside labels stored RAS: their shapes differ until then)
                lab = _on_image_grid(lab, raw, 3, f"labels '{lab_path}'", f"image '{img_path}'")
            except InputError:
                pass  # said below, once the image's axes are known
        vol, lay = image_layout(raw, img_path, spatial_dims, labels_shape=lab.data.shape,
                                labels_what=f"labels '{lab_path}'")
        spatial_dims = spatial_dims or len(vol.data.shape) - len(lay.sample_axes) - int(lay.channel_axis is not None)
        check_spacing_covers(vol, img_path, spatial_dims)
        spatial = sum(a in "ZYX" for a in vol.axes)
        # an image whose file swaps channels and slices (an ImageJ stack written without axes)
        example = vol.axes if "Z" in vol.axes else vol.axes.replace("C", "Z")  # ImageJ stores Z before C
        if vol.meta.get("rgb") and tuple(lab.data.shape) == tuple(vol.data.shape):  # a last axis of 3 or 4: no colour
            example = "TZYX"[-vol.data.ndim:]
        swapped = (f"; if the image's file names its axes wrongly (it reads as {vol.axes}, shape "
                   f"{vol.data.shape}), give them in stored order with --axes, e.g. --axes {example}"
                   if "C" in vol.axes and axes is None else "")
        if swapped and tuple(lab.data.shape) == tuple(vol.data.shape):  # or labels painted over its channels
            swapped += "; if they are labels painted over its channels, save the painted channel's labels only"
        lab = _over_channels(lab, vol, f"labels '{lab_path}'", f"image '{img_path}'")  # labels saved from napari
        if lab.data.ndim == spatial:  # compared in world space: never train on mirrored labels
            try:
                lab = _on_image_grid(lab, vol, spatial, f"labels '{lab_path}'", f"image '{img_path}'")
            except InputError as exc:
                raise InputError(f"{exc}{swapped}") from exc
            vol = _grid_of_labels(vol, lab, spatial)
        vol = in_first_unit(vol, img_path, spatial_dims, held)
        shape = tuple(n for n, a in zip(vol.data.shape, vol.axes) if a != "C")
        frame = tuple(n for n, a in zip(vol.data.shape, vol.axes) if a not in "CT")
        if "T" in vol.axes and lab.data.shape == frame:
            frames = vol.data.shape[vol.axes.index("T")]
            channels = ("" if "C" in vol.axes else  # dcm2niix marks every 4th axis as time (case 34 v01)
                        f"; or, if that axis holds channels (contrasts) rather than frames, say so with --axes "
                        f"{vol.axes.replace('T', 'C')}")
            raise InputError(f"labels '{lab_path}' {lab.data.shape} are for one frame, but image '{img_path}' "
                             f"(axes {vol.axes}, shape {vol.data.shape}) holds {frames} time frames: give labels for "
                             f"every frame, shape {shape}, or save the frame they belong to as an image of its own"
                             f"{channels}")
        if lab.data.shape != shape:
            raise InputError(f"labels '{lab_path}' have shape {lab.data.shape} but image '{img_path}' "
                             f"(axes {vol.axes}, shape {vol.data.shape}) has {shape} without channels: "
                             f"they must match{swapped}")  # fmt: skip
        if lay.channel_axis is not None:
            info(f"image '{img_path}': {vol.data.shape[lay.channel_axis]} channels (axes {vol.axes}, "
                 f"shape {vol.data.shape})")  # fmt: skip
            vol = _in_first_channel_order(vol, lay.channel_axis, img_path, image_paths[0], named)
        lead = [vol.data.shape[a] for a in lay.sample_axes]
        if lead:
            info(f"image '{img_path}': {samples_phrase(vol.axes, vol.data.shape, spatial_dims)} (axes {vol.axes}) "
                 f"as samples of a {spatial_dims}D network")  # fmt: skip
        sizes = spatial_spacing(vol, spatial_dims)
        stored[img_path] = sizes if given or stores_voxel_size(raw) else None
        channel = lay.channel_axis
        if channel is not None:
            channel -= sum(a < channel for a in lay.sample_axes)
        label_axes = [i for i, a in enumerate(vol.axes) if a != "C"]
        groups.extend(neighbour_runs(lead))  # a (T, Z) series under a 2D network: T runs of Z slices
        for index in np.ndindex(*lead):
            where: list = [slice(None)] * vol.data.ndim
            for axis, k in zip(lay.sample_axes, index):
                where[axis] = k
            images.append(vol.data[tuple(where)])
            labels.append(lab.data[tuple(where[i] for i in label_axes)])
            spacings.append(spatial_spacing(vol, spatial_dims))
        channels.add(channel)
    if not any(painted):  # the core's line cannot name the files, nor say it in the command line's words
        names = ", ".join(f"'{p}'" for p in label_paths)
        raise InputError(f"labels {names} are empty (every voxel 0): give labels with at least one {ids} (an id "
                         "above 0; scribbles also need the background id painted)")  # fmt: skip
    if len(channels) > 1:
        raise InputError("the training images differ in channels: give all with or all without "
                         "a channel axis")  # fmt: skip
    line = unknown_spacing_line(stored)
    if line:
        info(line)
    # the model records the channels' names when every image names them (predict matches an image's by them)
    names = named[0] if named and len(named) == len(image_paths) and all(n == named[0] for n in named) else None
    return images, labels, spacings, channels.pop(), spatial_dims, tuple(groups), names


def _over_channels(lab: Any, vol: Any, lab_name: str, img_name: str) -> Any:
    """Labels that cover the image's channel axis (napari's new labels on a CZYX layer, saved) as
    labels of its voxels, with a note (``io.axes_resolve.labels_over_channels``)."""
    from dataclasses import replace

    from napari_medml.io.axes_resolve import labels_over_channels

    c = vol.axes.find("C")
    if c >= 0 and lab.data.ndim == len(vol.axes) == len(lab.axes) and lab.axes[c] in "ZYX":  # called spatial there:
        return lab  # the image's file names its axes wrongly (refused below with the --axes that fixes it)
    merged, note = labels_over_channels(lab.data, vol.data.shape, vol.axes, what=img_name, labels_what=lab_name)
    if note is None:
        return lab
    info(note)
    keep = [i for i, a in enumerate(vol.axes) if a != "C"]
    return replace(lab, data=merged, spacing=tuple(lab.spacing[i] for i in keep),
                   origin=tuple(lab.origin[i] for i in keep), axes=vol.axes.replace("C", ""))


def _on_image_grid(lab: Any, vol: Any, spatial_dims: int, lab_name: str, img_name: str) -> Any:
    """Labels on their image's voxel grid (reoriented with a note), or an error naming both."""
    from napari_medml.io.geometry import align_to

    aligned = align_to(lab, vol, moving_name=lab_name, reference_name=img_name,
                       spatial_dims=spatial_dims, reference_spatial_dims=spatial_dims)  # fmt: skip
    if aligned.line:
        info(aligned.line)
    return aligned.volume


def _grid_of_labels(vol: Any, lab: Any, spatial: int) -> Any:
    """An image that stores no voxel size, position or unit, beside labels on its voxels that do: the
    labels' geometry, as the line "taken to lie on the grid of labels" says (trial 48: the model
    recorded voxels of 1 and warned at every prediction on the real images)."""
    from dataclasses import replace

    from napari_medml.io.geometry import spatial_axes

    first, stop = spatial_axes(vol, spatial)
    l_first, l_stop = spatial_axes(lab, spatial)
    bare = vol.affine is None and not vol.meta.get("unit") and all(
        float(s) == 1.0 for s in vol.spacing[first:stop]) and not any(vol.origin[first:stop])
    placed = lab.meta.get("unit") or any(float(s) != 1.0 for s in lab.spacing[l_first:l_stop]) or any(
        lab.origin[l_first:l_stop])
    if not bare or not placed or stop - first != l_stop - l_first:  # (a NIfTI's too: review 48)
        return vol
    spacing, origin = list(vol.spacing), list(vol.origin)
    spacing[first:stop], origin[first:stop] = lab.spacing[l_first:l_stop], lab.origin[l_first:l_stop]
    unit = {"unit": lab.meta["unit"]} if lab.meta.get("unit") else {}  # review 48: labels with a size, no unit
    return replace(vol, spacing=tuple(spacing), origin=tuple(origin), meta={**vol.meta, **unit})


def _in_first_channel_order(vol: Any, channel_axis: int, path: Path, first: Path, named: list) -> Any:
    """``vol`` with its channels in the first image's order when both files name the same channels in
    another order (trial 48: channels stored in another order trained as the same), a warning when the
    names differ; appends the names it ends with to ``named``."""
    from napari_medml.cli.layout import in_model_channel_order
    from napari_medml.io.axes import channel_names_of

    if not channel_names_of(vol):
        return vol
    if named:
        vol = in_model_channel_order(vol, channel_axis, named[0], f"image '{path}'", f"the first image '{first}' has")
    named.append(tuple(channel_names_of(vol)))
    return vol


def _read_labels(path: Path, axes: str | None) -> Any:
    """A labels file, read with the images' ``--axes`` (their channel aside) where the file's axes
    fit them: a 3x3x3 stack given ``--axes ZYX`` had its labels read as YXC all the same."""
    from napari_medml import io
    from napari_medml.errors import InputError

    if axes and axes.replace("C", ""):
        try:
            return io.read_volume(path, axes.replace("C", ""))
        except InputError:  # another number of axes (labels saved without the time axis...): the file's own
            pass
    return io.read_volume(path)


def network_dims(volumes: list, paths: list[Path], spatial_dims: int | None) -> int | None:
    """The network's dimensions for images read from ``paths`` (``io.Volume`` each):
    ``spatial_dims`` when given; 2 when some are 2D images and others volumes, whatever their
    order (a 2D network trains on the volumes' slices; said in one line); else None (each
    image's own, as ``image_layout`` decides). Before, the first file decided: a volume
    first refused the 2D images after it, a 2D image first took the volumes' slices."""
    from napari_medml.cli.layout import image_layout
    from napari_medml.errors import InputError

    if spatial_dims is not None or len(volumes) < 2:
        return spatial_dims
    flat, volume = [], False
    for vol, path in zip(volumes, paths):
        try:
            axes = image_layout(vol, path, None)[0].axes
        except InputError:  # said when the image is laid out for the network
            return None
        volume |= "Z" in axes
        if "Z" not in axes:
            flat.append(path)
    if not flat or not volume:
        return None
    shown = ", ".join(f"'{p}'" for p in flat[:3]) + (f" and {len(flat) - 3} more" if len(flat) > 3 else "")
    info(f"image{'s' if len(flat) > 1 else ''} {shown} {'are' if len(flat) > 1 else 'is'} 2D and the others "
         "volumes: a 2D network trains on the 2D images and the volumes' slices (for a 3D network, give "
         "--spatial-dims 3 and leave out the 2D images)")
    return 2


def in_first_unit(vol: Any, path: Path, spatial_dims: int, held: dict) -> Any:
    """``vol`` with its voxel size in the length unit of the first training image that names one.

    Trial 51: an OME-TIFF in µm and a NIfTI in mm were resampled to the median of their numbers,
    as if in one unit. Now the first file naming a unit sets it; a later file naming another
    known unit gets its spatial voxel size, position and affine in that unit, said in one line.

    Parameters
    ----------
    vol : Volume
        An image as read (``meta["unit"]``: its length unit, if it names one).
    path : Path
        Its file, for the line.
    spatial_dims : int
        The network's spatial dimensions.
    held : dict
        ``{"unit": ..., "path": ...}`` of the first file naming a unit; filled by the first such call.

    Returns
    -------
    Volume
    """
    from napari_medml.io.geometry import spatial_axes
    from napari_medml.io.units import in_unit, length_axes
    from napari_medml.io.volume import LENGTH_UNITS

    have = vol.meta.get("unit")
    if have not in LENGTH_UNITS:
        return vol
    if "unit" not in held:
        held.update(unit=have, path=path)
        return vol
    converted = in_unit(vol, held["unit"], length_axes(vol))  # Z too under a 2D network (review 51)
    if converted is not vol:
        show = lambda v: "x".join(f"{x:g}" for x in v)  # noqa: E731
        first, stop = spatial_axes(vol, spatial_dims)
        info(f"image '{path}' names its voxel size in {have} ({show(vol.spacing[first:stop])} {have}), the first image "
             f"'{held['path']}' in {held['unit']}: it is trained at {show(converted.spacing[first:stop])} "
             f"{held['unit']} (if a file's unit is wrong, fix its header)")
    return converted


def unknown_spacing_line(stored: dict[Path, tuple[float, ...] | None]) -> str:
    """A line naming the image files that store no voxel size (taken as 1 per axis) when other
    files store one that is not 1, or "": mixed, they are resampled to a median spacing that
    the files without one distort."""
    unknown = [path for path, sizes in stored.items() if sizes is None]
    known = sorted({"x".join(f"{v:g}" for v in sizes) for sizes in stored.values() if sizes is not None})
    if not unknown or not any(set(sizes) != {1.0} for sizes in stored.values() if sizes is not None):
        return ""
    shown = ", ".join(f"'{p}'" for p in unknown[:4]) + (f" and {len(unknown) - 4} more" if len(unknown) > 4 else "")
    example = next(k for k in known if set(k.split("x")) != {"1"})  # 1 per axis is what it already takes
    return (f"image{'s' if len(unknown) > 1 else ''} {shown} store{'' if len(unknown) > 1 else 's'} no voxel size "
            f"and {'are' if len(unknown) > 1 else 'is'} taken as 1 per axis, while the other files store theirs "
            f"({', '.join(known)}): if that is wrong, give theirs with --spacing (e.g. --spacing "
            f"{' '.join(example.split('x'))}), or save them with their voxel size (a TIFF's resolution, as ImageJ "
            "writes it, or NIfTI)")
